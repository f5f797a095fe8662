"""Graph work: finding GELU sites, the custom-op functions, and injecting them."""

"""The ``gelu-quant`` command line: thin click wrappers over library calls."""

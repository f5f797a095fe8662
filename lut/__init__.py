"""Pure numerics: from a range to a lookup-table or piecewise-polynomial spec, and its errors."""

"""Example projects released by `dropship demo` (data: see examples/hello)."""

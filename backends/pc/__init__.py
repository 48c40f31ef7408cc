"""backends/pc."""

"""The package version (one place; the cache key and run markers include it)."""
__version__ = "0.1.0"

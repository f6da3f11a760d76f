"""Hooks: connections and I/O (the build cache)."""

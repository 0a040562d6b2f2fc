"""ASTRAL safety testing: coverage matrix, test generator and oracle. Empty until that issue lands."""

"""Adapters that drive several sandboxes as one unit."""

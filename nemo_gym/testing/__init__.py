"""Test doubles shipped with the product: the vLLM simulator."""

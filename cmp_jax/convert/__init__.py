"""Conversion between cmp-jax variables and PyTorch state dicts."""

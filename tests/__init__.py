"""cmp-jax test suite."""

"""cmp-jax: Conditional Motion Propagation (Zhan et al., CVPR 2019) in JAX/Flax."""

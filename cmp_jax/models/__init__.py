"""Flax Linen modules of CMP: encoders, sparse motion encoder, decoders, composite."""

from cmp_jax.models.cmp import BACKBONES, CMP, DECODERS, build_model

__all__ = ["BACKBONES", "CMP", "DECODERS", "build_model"]

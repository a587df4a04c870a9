"""The discrete flow loss of the original (``DiscreteLoss``).

Logits at the decoder resolution are upsampled (bilinear, align-corners) to the
full target size, each flow component is quantised into C bins, and the loss is
the sum of two C-way cross-entropies (x, then y), each averaged over every pixel
of every image. No class weights, no masking. Computed in float32 whatever the
compute dtype.

Option (not in the original): ``motion_weight`` > 0 weights each pixel by
``1 + motion_weight * |flow|`` (|flow| in pixels) and averages with those
weights, so the few fast pixels of a mostly static or slowly moving batch count
more.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmp_jax.flow import FlowBins, resize_bilinear_align_corners


def discrete_flow_loss(
    logits: jax.Array, flow: jax.Array, bins: FlowBins, motion_weight: float = 0.0
) -> jax.Array:
    """Cross-entropy of binned flow, x plus y.

    Args:
      logits: (N, h, w, 2 * C) decoder output, x classifier first.
      flow: (N, H, W, 2) target flow in pixels, (dx, dy).
      bins: the quantisation (C = ``bins.num_bins``).
      motion_weight: 0 (the original): every pixel counts the same. > 0: pixel
        weights ``1 + motion_weight * |flow|`` (per pixel of target magnitude),
        normalised to sum to one over the batch.

    Returns:
      Scalar float32 loss: (weighted) mean CE of the x bins plus that of the y bins.
    """
    c = bins.num_bins
    if logits.shape[-1] != 2 * c:
        raise ValueError(f"expected {2 * c} logit channels for {c} bins, got {logits.shape[-1]}")
    if flow.shape[-1] != 2 or flow.shape[0] != logits.shape[0]:
        raise ValueError(f"flow must be (N, H, W, 2) with N = {logits.shape[0]}, got {flow.shape}")
    if motion_weight < 0:
        raise ValueError(f"motion_weight must be >= 0, got {motion_weight}")
    logits = resize_bilinear_align_corners(logits.astype(jnp.float32), flow.shape[1:3])
    targets = bins.quantize(flow)
    if motion_weight:
        weight = 1.0 + motion_weight * jnp.linalg.norm(flow.astype(jnp.float32), axis=-1)
        weight = weight / jnp.sum(weight)
    total = jnp.zeros((), jnp.float32)
    for axis in range(2):
        logp = jax.nn.log_softmax(logits[..., axis * c : (axis + 1) * c], axis=-1)
        picked = jnp.take_along_axis(logp, targets[..., axis : axis + 1], axis=-1)[..., 0]
        total = total - (jnp.sum(picked * weight) if motion_weight else jnp.mean(picked))
    return total

"""The discrete flow loss of the original (``DiscreteLoss``).

Logits at the decoder resolution are upsampled (bilinear, align-corners) to the
full target size, each flow component is quantised into C bins, and the loss is
the sum of two C-way cross-entropies (x, then y), each averaged over every pixel
of every image. No class weights, no masking. Computed in float32 whatever the
compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmp_jax.flow import FlowBins, resize_bilinear_align_corners


def discrete_flow_loss(logits: jax.Array, flow: jax.Array, bins: FlowBins) -> jax.Array:
    """Cross-entropy of binned flow, x plus y.

    Args:
      logits: (N, h, w, 2 * C) decoder output, x classifier first.
      flow: (N, H, W, 2) target flow in pixels, (dx, dy).
      bins: the quantisation (C = ``bins.num_bins``).

    Returns:
      Scalar float32 loss: mean CE of the x bins plus mean CE of the y bins.
    """
    c = bins.num_bins
    if logits.shape[-1] != 2 * c:
        raise ValueError(f"expected {2 * c} logit channels for {c} bins, got {logits.shape[-1]}")
    if flow.shape[-1] != 2 or flow.shape[0] != logits.shape[0]:
        raise ValueError(f"flow must be (N, H, W, 2) with N = {logits.shape[0]}, got {flow.shape}")
    logits = resize_bilinear_align_corners(logits.astype(jnp.float32), flow.shape[1:3])
    targets = bins.quantize(flow)
    total = jnp.zeros((), jnp.float32)
    for axis in range(2):
        logp = jax.nn.log_softmax(logits[..., axis * c : (axis + 1) * c], axis=-1)
        picked = jnp.take_along_axis(logp, targets[..., axis : axis + 1], axis=-1)
        total = total - jnp.mean(picked)
    return total

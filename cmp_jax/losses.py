"""The discrete flow loss of the original (``DiscreteLoss``).

Logits at the decoder resolution are upsampled (bilinear, align-corners) to the
full target size, each flow component is quantised into C bins, and the loss is
the sum of two C-way cross-entropies (x, then y), each averaged over every pixel
of every image. No class weights, no masking. Computed in float32 whatever the
compute dtype.

Options (not in the original):

* ``motion_weight`` > 0 weights each pixel by ``1 + motion_weight * |flow|``
  (|flow| in pixels) and averages with those weights, so the few fast pixels of
  a mostly static or slowly moving batch count more.
* ``label_sigma`` > 0 (pixels) replaces the one-hot target of each component by
  a Gaussian over the bin centres, ``q_k ~ exp(-(c_k - v)^2 / (2 sigma^2))``
  around the clamped value v: neighbouring bins learn from each example, and
  the soft-argmax read-out is not limited to bin centres.
* ``epe_weight`` > 0 adds that multiple of the mean end-point error (pixels)
  of the soft-argmax flow of the upsampled logits, the quantity evaluation
  reports (weighted as the cross-entropy with ``motion_weight``). The
  cross-entropy alone does not penalise a prediction split
  between "moves like the guidance" and "static": its expectation lies in
  between and under-reads fast motion; the EPE term does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmp_jax.flow import FlowBins, resize_bilinear_align_corners


def discrete_flow_loss(
    logits: jax.Array,
    flow: jax.Array,
    bins: FlowBins,
    motion_weight: float = 0.0,
    label_sigma: float = 0.0,
    epe_weight: float = 0.0,
) -> jax.Array:
    """Cross-entropy of binned flow, x plus y.

    Args:
      logits: (N, h, w, 2 * C) decoder output, x classifier first.
      flow: (N, H, W, 2) target flow in pixels, (dx, dy).
      bins: the quantisation (C = ``bins.num_bins``).
      motion_weight: 0 (the original): every pixel counts the same. > 0: pixel
        weights ``1 + motion_weight * |flow|`` (per pixel of target magnitude),
        normalised to sum to one over the batch.
      label_sigma: 0 (the original): one-hot targets (the bin of each value).
        > 0: Gaussian targets over the bin centres with this standard deviation
        in pixels.
      epe_weight: 0 (the original): cross-entropy only. > 0: plus this
        multiple of the mean end-point error in pixels of
        ``bins.expected_flow`` of the upsampled logits against ``flow``
        (with ``motion_weight``, the weighted mean).

    Returns:
      Scalar float32 loss: (weighted) mean CE of the x bins plus that of the y
      bins (plus ``epe_weight`` x mean EPE).
    """
    c = bins.num_bins
    if logits.shape[-1] != 2 * c:
        raise ValueError(f"expected {2 * c} logit channels for {c} bins, got {logits.shape[-1]}")
    if flow.shape[-1] != 2 or flow.shape[0] != logits.shape[0]:
        raise ValueError(f"flow must be (N, H, W, 2) with N = {logits.shape[0]}, got {flow.shape}")
    if motion_weight < 0 or label_sigma < 0 or epe_weight < 0:
        raise ValueError(
            "motion_weight, label_sigma and epe_weight must be >= 0, "
            f"got {motion_weight}, {label_sigma}, {epe_weight}"
        )
    logits = resize_bilinear_align_corners(logits.astype(jnp.float32), flow.shape[1:3])
    flow = flow.astype(jnp.float32)
    if not label_sigma:
        targets = bins.quantize(flow)
    if motion_weight:
        weight = 1.0 + motion_weight * jnp.linalg.norm(flow, axis=-1)
        weight = weight / jnp.sum(weight)
    total = jnp.zeros((), jnp.float32)
    for axis in range(2):
        logp = jax.nn.log_softmax(logits[..., axis * c : (axis + 1) * c], axis=-1)
        if label_sigma:
            value = jnp.clip(flow[..., axis : axis + 1], -bins.fmax, bins.fmax)
            soft = jax.nn.softmax(-jnp.square(jnp.asarray(bins.centres()) - value) / (2 * label_sigma**2), -1)
            picked = jnp.sum(soft * logp, axis=-1)
        else:
            picked = jnp.take_along_axis(logp, targets[..., axis : axis + 1], axis=-1)[..., 0]
        total = total - (jnp.sum(picked * weight) if motion_weight else jnp.mean(picked))
    if epe_weight:
        error = bins.expected_flow(logits) - flow
        # The small constant keeps the gradient finite where the error is exactly zero.
        epe = jnp.sqrt(jnp.sum(jnp.square(error), axis=-1) + 1e-12)
        total = total + epe_weight * (jnp.sum(epe * weight) if motion_weight else jnp.mean(epe))
    return total

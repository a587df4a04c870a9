"""End-point error: sums over pixels (per magnitude range), means, per-image means.

The end-point error (EPE) is accumulated as sums and pixel counts, overall and
per range of target flow magnitude, so that it can be summed across devices
(``lax.psum``) and over batches before :func:`summarize_epe` divides.
:func:`summarize_eval` turns the sums of a whole evaluation (the model's and
the baselines') into the ``eval/...`` metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Ranges [lo, hi) of target flow magnitude |flow| in pixels over which EPE is also reported.
MAGNITUDE_RANGES = ((0.0, 10.0), (10.0, 40.0), (40.0, math.inf))
# Key suffixes of the ranges: "0-10", "10-40", "40+".
MAGNITUDE_RANGE_NAMES = tuple(
    f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}" for lo, hi in MAGNITUDE_RANGES
)
# The densifying baselines every evaluation reports beside the model (``cmp_jax.evaluation.baselines``).
BASELINES = ("zero", "nearest", "splat")


def epe_sums(pred: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    """Sums of the end-point error and pixel counts, overall and per target-magnitude range.

    Pure ``jax.numpy`` without branching on values, so it runs inside ``jit`` and
    ``pmap``; the results are sums, to be ``lax.psum``-ed across devices and added
    over batches (in float64 on the host: float32 counts are exact only up to
    2**24 pixels) before :func:`summarize_epe`.

    Args:
      pred: (N, H, W, 2) predicted flow in pixels, (dx, dy).
      target: (N, H, W, 2) ground-truth flow in pixels, (dx, dy).

    Returns:
      float32 scalars: ``"epe_sum"``, the sum over all pixels of
      |pred - target| (Euclidean, pixels); ``"count"``, the number of pixels;
      and for each range name r in :data:`MAGNITUDE_RANGE_NAMES`
      ``"epe_sum/r"`` and ``"count/r"``, the same restricted to pixels whose
      target magnitude lies in the range [lo, hi).
    """
    if pred.shape != target.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (N, H, W, 2), got {pred.shape} and {target.shape}")
    pred = jnp.asarray(pred, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    epe = jnp.sqrt(jnp.sum(jnp.square(pred - target), axis=-1))
    magnitude = jnp.sqrt(jnp.sum(jnp.square(target), axis=-1))
    sums = {"epe_sum": jnp.sum(epe), "count": jnp.asarray(epe.size, jnp.float32)}
    for name, (lo, hi) in zip(MAGNITUDE_RANGE_NAMES, MAGNITUDE_RANGES, strict=True):
        inside = ((magnitude >= lo) & (magnitude < hi)).astype(jnp.float32)
        sums[f"epe_sum/{name}"] = jnp.sum(epe * inside)
        sums[f"count/{name}"] = jnp.sum(inside)
    return sums


def summarize_epe(sums: Mapping[str, float | np.ndarray], prefix: str) -> dict[str, float]:
    """Turns accumulated :func:`epe_sums` outputs into mean end-point errors.

    Args:
      sums: the keys of :func:`epe_sums`, each a scalar (Python float or
        size-1 array) summed over devices and batches.
      prefix: name of the metric, e.g. ``"epe"`` or ``"epe_nearest"``.

    Returns:
      ``{prefix: mean EPE, f"{prefix}/r": mean EPE over pixels in range r, ...}``
      in pixels, one entry per name r in :data:`MAGNITUDE_RANGE_NAMES`. A mean
      over zero pixels (a range no target pixel fell in) is NaN.
    """

    def mean(total_key: str, count_key: str) -> float:
        count = float(np.asarray(sums[count_key], np.float64).item())
        total = float(np.asarray(sums[total_key], np.float64).item())
        return total / count if count > 0 else math.nan

    means = {prefix: mean("epe_sum", "count")}
    for name in MAGNITUDE_RANGE_NAMES:
        means[f"{prefix}/{name}"] = mean(f"epe_sum/{name}", f"count/{name}")
    return means


def image_epe(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean end-point error of each image, over all its pixels.

    Pure ``jax.numpy``, like :func:`epe_sums`; the results are per image and
    are not to be summed across devices.

    Args:
      pred: (N, H, W, 2) predicted flow in pixels, (dx, dy).
      target: (N, H, W, 2) ground-truth flow in pixels, (dx, dy).

    Returns:
      float32 (N,): the mean of |pred - target| over each image's pixels.
    """
    if pred.shape != target.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (N, H, W, 2), got {pred.shape} and {target.shape}")
    diff = jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1)), axis=(1, 2))


def summarize_eval(sums: Mapping[str, float]) -> dict[str, float]:
    """The ``eval/...`` means from the sums of a whole evaluation.

    Args:
      sums: ``loss_sum`` and ``images`` (the loss times the images, and their
        number) and :func:`epe_sums` keys prefixed ``epe/`` (the model) and
        ``epe_<baseline>/`` for each of :data:`BASELINES` present, each summed
        over devices and batches.

    Returns:
      ``eval/loss`` (mean per image), ``eval/epe`` and ``eval/epe/<range>``,
      ``eval/epe_<baseline>`` and ``eval/epe_<baseline>/<range>`` (see
      :func:`summarize_epe`; NaN for a range without pixels).
    """
    out = {"eval/loss": sums["loss_sum"] / max(sums["images"], 1.0)}
    for prefix in ["epe"] + [f"epe_{name}" for name in BASELINES]:
        part = {k[len(prefix) + 1 :]: v for k, v in sums.items() if k.startswith(prefix + "/")}
        if part:
            out.update({f"eval/{k}": v for k, v in summarize_epe(part, prefix).items()})
    return out

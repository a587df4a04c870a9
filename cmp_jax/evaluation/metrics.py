"""Evaluation helpers: end-point error sums, densifying baselines, flow pictures.

Conventions: arrays are NHWC; flow has channels (dx, dy) in pixels (x to the
right, y down); ``sparse`` (N, H, W, 2) holds the flow at guidance pixels and 0
elsewhere, ``mask`` (N, H, W, 2) is 1.0 at guidance pixels (both channels) and 0
elsewhere; ``image`` (N, H, W, 3) is RGB normalised as (v - mean) / std on the
0-255 scale with the ImageNet mean and std.

The end-point error (EPE) is accumulated as sums and pixel counts, overall and
per range of target flow magnitude, so that it can be summed across devices
(``lax.psum``) and over batches before :func:`summarize_epe` divides. The
baselines (:func:`nearest_guidance_flow`, :func:`gaussian_splat_flow`) run in
NumPy on the host and say how much the network adds over densifying the
guidance without looking at the image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from cmp_jax.flow import flow_to_color

# Ranges [lo, hi) of target flow magnitude |flow| in pixels over which EPE is also reported.
MAGNITUDE_RANGES = ((0.0, 10.0), (10.0, 40.0), (40.0, math.inf))
# Key suffixes of the ranges: "0-10", "10-40", "40+".
MAGNITUDE_RANGE_NAMES = tuple(
    f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}" for lo, hi in MAGNITUDE_RANGES
)

# ImageNet statistics on the 0-255 scale, RGB; the input pipeline normalises with them.
IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)

# Gaussian splatting: the kernel is cut at this many sigmas along each axis.
_SPLAT_TRUNCATE = 4.0
# Blurred guidance weight (a lone guidance point has total weight 1) below which a
# pixel counts as out of reach of every guidance point.
_SPLAT_MIN_WEIGHT = 1e-20

# Guidance drawing on the image panel (RGB): a filled dot and an arrow along the vector.
_DOT_COLOUR = (0, 255, 0)
_ARROW_COLOUR = (255, 0, 0)
_DOT_RADIUS = 2


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


def _guided(mask: np.ndarray) -> np.ndarray:
    """Boolean (N, H, W) map of guidance pixels from an (N, H, W, 2) mask."""
    mask = np.asarray(mask)
    if mask.ndim != 4 or mask.shape[-1] != 2:
        raise ValueError(f"mask must be (N, H, W, 2), got {mask.shape}")
    return np.any(mask > 0, axis=-1)


def nearest_guidance_flow(sparse: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Baseline: every pixel takes the flow of its nearest guidance pixel.

    Distances are Euclidean in pixels (exact distance transform); ties go to
    whichever guidance pixel the transform picks. Guidance pixels keep their own
    flow.

    Args:
      sparse: (N, H, W, 2) flow in pixels at guidance pixels, 0 elsewhere.
      mask: (N, H, W, 2) 1.0 at guidance pixels, 0 elsewhere.

    Returns:
      float32 (N, H, W, 2) dense flow in pixels; all zeros for an image without
      guidance.
    """
    sparse = np.asarray(sparse, np.float32)
    guided = _guided(mask)
    dense = np.zeros_like(sparse)
    for i in range(sparse.shape[0]):
        if guided[i].any():
            # Indices of the nearest zero of the input, i.e. of the nearest guidance pixel.
            iy, ix = ndimage.distance_transform_edt(~guided[i], return_distances=False, return_indices=True)
            dense[i] = sparse[i, iy, ix]
    return dense


def gaussian_splat_flow(sparse: np.ndarray, mask: np.ndarray, sigma: float = 20.0) -> np.ndarray:
    """Baseline: normalised Gaussian splatting of the guidance vectors.

    Each pixel gets sum_k w_k f_k / sum_k w_k over guidance pixels k with flow
    f_k and w_k = exp(-d_k**2 / (2 sigma**2)), d_k the distance in pixels. This
    is the Gaussian blur of the sparse flow map that DragNUWA-style projects use
    to densify drags (sigma 20 px), except that we divide by the blurred mask,
    so a lone point keeps its magnitude instead of being scaled down by the
    kernel. Computed in float64 as two separable Gaussian filters with zero
    padding, cut at 4 sigma along each axis; pixels with no guidance point
    within that reach along both axes (blurred weight below 1e-20) get zero
    flow.

    Args:
      sparse: (N, H, W, 2) flow in pixels at guidance pixels, 0 elsewhere.
      mask: (N, H, W, 2) 1.0 at guidance pixels, 0 elsewhere.
      sigma: standard deviation of the Gaussian in pixels.

    Returns:
      float32 (N, H, W, 2) dense flow in pixels; all zeros for an image without
      guidance.
    """
    weight = _guided(mask).astype(np.float64)[..., None]
    # Blur the weighted flow and the weights together: channels (dx * w, dy * w, w).
    stacked = np.concatenate([np.asarray(sparse, np.float64) * weight, weight], axis=-1)
    blurred = ndimage.gaussian_filter(
        stacked, sigma=(0.0, sigma, sigma, 0.0), mode="constant", cval=0.0, truncate=_SPLAT_TRUNCATE
    )
    total = blurred[..., 2:]
    reached = total > _SPLAT_MIN_WEIGHT
    dense = np.where(reached, blurred[..., :2] / np.where(reached, total, 1.0), 0.0)
    return dense.astype(np.float32)


def denormalize_image(image: np.ndarray) -> np.ndarray:
    """Undoes the input pipeline's ImageNet normalisation.

    Args:
      image: (..., 3) float RGB, (v - mean) / std on the 0-255 scale.

    Returns:
      uint8 RGB (..., 3): v rounded and clipped to 0-255.
    """
    v = np.asarray(image, np.float32) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def draw_guidance(rgb: np.ndarray, sparse: np.ndarray, guided: np.ndarray) -> np.ndarray:
    """Draws a dot and an arrow along the guidance vector at each guidance pixel.

    Args:
      rgb: (H, W, 3) uint8 RGB image, drawn on in place.
      sparse: (H, W, 2) flow in pixels at guidance pixels.
      guided: (H, W) boolean map of guidance pixels.

    Returns:
      ``rgb``.
    """
    for y, x in zip(*np.nonzero(guided), strict=True):
        dx, dy = sparse[y, x]
        tip = (int(round(x + dx)), int(round(y + dy)))
        cv2.circle(rgb, (int(x), int(y)), _DOT_RADIUS, _DOT_COLOUR, thickness=-1, lineType=cv2.LINE_AA)
        cv2.arrowedLine(rgb, (int(x), int(y)), tip, _ARROW_COLOUR, 1, line_type=cv2.LINE_AA, tipLength=0.3)
    return rgb


def flow_pictures(
    image: np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    mask: np.ndarray,
    max_flow: float | None = None,
) -> np.ndarray:
    """Side-by-side pictures: image with guidance, target flow, predicted flow.

    The guidance vectors are read off ``target`` at the ``mask`` pixels (the
    guidance is sampled from the target flow). Both flows use the Middlebury
    colour wheel (:func:`cmp_jax.flow.flow_to_color`) with one normalisation per
    example, the largest target magnitude unless ``max_flow`` is given, so their
    colours are comparable.

    Args:
      image: (N, H, W, 3) float32 RGB, ImageNet-normalised on the 0-255 scale.
      target: (N, H, W, 2) ground-truth flow in pixels, (dx, dy).
      pred: (N, H, W, 2) predicted flow in pixels, (dx, dy).
      mask: (N, H, W, 2) 1.0 at guidance pixels, 0 elsewhere.
      max_flow: magnitude in pixels mapped to full saturation, for every example.

    Returns:
      uint8 RGB (N, H, 3 * W, 3): per example the image with a green dot and a
      red arrow per guidance vector, then the target flow, then the prediction.
    """
    image = np.asarray(image)
    target = np.asarray(target, np.float32)
    pred = np.asarray(pred, np.float32)
    guided = _guided(mask)
    rgb = denormalize_image(image)
    pictures = []
    for i in range(image.shape[0]):
        scale = max_flow
        if scale is None:
            # float64, as flow_to_color computes magnitudes: the largest one maps to exactly 1.
            scale = float(np.linalg.norm(target[i].astype(np.float64), axis=-1).max())
        panels = (
            draw_guidance(np.ascontiguousarray(rgb[i]), target[i], guided[i]),
            flow_to_color(target[i], max_flow=scale),
            flow_to_color(pred[i], max_flow=scale),
        )
        pictures.append(np.concatenate(panels, axis=1))
    return np.stack(pictures)

"""Densifying baselines: what the guidance alone predicts, without looking at the image.

They run in NumPy on the host and say how much the network adds: zero flow,
every pixel takes its nearest guidance vector (:func:`nearest_guidance_flow`),
and a normalised Gaussian splat of the guidance (:func:`gaussian_splat_flow`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

# Gaussian splatting: the kernel is cut at this many sigmas along each axis.
_SPLAT_TRUNCATE = 4.0
# Blurred guidance weight (a lone guidance point has total weight 1) below which a
# pixel counts as out of reach of every guidance point.
_SPLAT_MIN_WEIGHT = 1e-20


def guided_pixels(mask: np.ndarray) -> np.ndarray:
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
    guided = guided_pixels(mask)
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
    weight = guided_pixels(mask).astype(np.float64)[..., None]
    # Blur the weighted flow and the weights together: channels (dx * w, dy * w, w).
    stacked = np.concatenate([np.asarray(sparse, np.float64) * weight, weight], axis=-1)
    blurred = ndimage.gaussian_filter(
        stacked, sigma=(0.0, sigma, sigma, 0.0), mode="constant", cval=0.0, truncate=_SPLAT_TRUNCATE
    )
    total = blurred[..., 2:]
    reached = total > _SPLAT_MIN_WEIGHT
    dense = np.where(reached, blurred[..., :2] / np.where(reached, total, 1.0), 0.0)
    return dense.astype(np.float32)


def baseline_flows(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero, nearest-guidance and Gaussian-splat (sigma 20 px) flows of a device-shaped batch.

    Args:
      batch: host arrays shaped (D, B, H, W, C), at least ``sparse`` and ``mask``.

    Returns:
      name -> (D, B, H, W, 2) float32 flow in pixels, for each name of
      ``metrics.BASELINES``.
    """
    sparse = np.asarray(batch["sparse"])
    mask = np.asarray(batch["mask"])
    flat_sparse = sparse.reshape(-1, *sparse.shape[2:])
    flat_mask = mask.reshape(-1, *mask.shape[2:])
    return {
        "zero": np.zeros_like(sparse),
        "nearest": nearest_guidance_flow(flat_sparse, flat_mask).reshape(sparse.shape),
        "splat": gaussian_splat_flow(flat_sparse, flat_mask).reshape(sparse.shape),
    }

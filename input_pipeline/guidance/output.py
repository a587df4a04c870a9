"""Thinning of the watershed candidates, and the sampler's outputs: points, sparse flow and mask."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def thin_kept(first, second, d, rng):
    """Kept points of ``thin_candidates``.

    When the points are sorted by their first coordinate, the later points close
    to point i all come before the first one at least ``d`` away in it. The
    original also visits the pairs (i, j) with i > j, but by then one of the two
    is always dropped: j was visited first and either was dropped or dropped all
    its close points still kept.

    Args:
      first: (N,) int64 first coordinates.
      second: (N,) int64 second coordinates.
      d: distance in pixels (differences are compared in float64, as NumPy's
        ``fabs`` of the int64 differences).
      rng: ``np.random.Generator``; one ``rng.random()`` per contested pair
        (numba draws the same numbers from the same stream as NumPy).

    Returns:
      (N,) bool, True for the kept points.
    """
    n = len(first)
    ordered = True
    for i in range(1, n):
        ordered &= first[i] >= first[i - 1]
    kept = np.ones(n, np.bool_)
    for i in range(n):
        if not kept[i]:
            continue
        for j in range(i + 1, n):
            gap = float(abs(first[j] - first[i]))
            if ordered and gap >= d:
                break
            if kept[j] and gap < d and float(abs(second[j] - second[i])) < d:
                if rng.random() < 0.5:
                    kept[i] = False
                    break
                kept[j] = False
    return kept


def thin_candidates(points: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    """Randomly drops one point of every pair closer than ``d`` in both axes.

    Pairs (i, j), i < j, with ``|p_i - p_j| < d`` in both coordinates are visited
    in lexicographic (i, j) order; when both are still kept, one uniform number
    ``u = rng.random()`` decides: ``u < 0.5`` drops point i, otherwise point j.
    The rule is symmetric in the two coordinates, so points may be (x, y) or
    (row, col); the order of the points matters for reproducibility (the
    sampler passes them in row-major order).

    Args:
      points: (N, 2) integer pixel coordinates.
      d: distance in pixels.
      rng: random source; exactly one number is drawn per contested pair.

    Returns:
      (M, 2) the kept points, in their input order and dtype.
    """
    points = np.asarray(points).reshape(-1, 2)
    if len(points) < 2:
        return points
    coords = points.astype(np.int64)
    kept = thin_kept(np.ascontiguousarray(coords[:, 0]), np.ascontiguousarray(coords[:, 1]), float(d), rng)
    return points[kept]


def xy_points(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, 2) int32 (x, y) points from row and column index arrays."""
    return np.stack([cols, rows], axis=1).astype(np.int32).reshape(-1, 2)


@numba.njit(cache=True, nogil=True)
def _scatter(flow, points, sparse, mask):
    """Writes the flow at (N, 2) int64 (x, y) points into zeroed (H, W, 2) ``sparse`` and ``mask``.

    Returns:
      The number of distinct points, or -1 (nothing written) if a point lies
      outside the image.
    """
    h, w = flow.shape[0], flow.shape[1]
    for i in range(len(points)):
        if not (0 <= points[i, 0] < w and 0 <= points[i, 1] < h):
            return -1
    count = 0
    for i in range(len(points)):
        x, y = points[i, 0], points[i, 1]
        count += mask[y, x, 0] == 0
        sparse[y, x, 0], sparse[y, x, 1] = flow[y, x, 0], flow[y, x, 1]
        mask[y, x, 0], mask[y, x, 1] = 1.0, 1.0
    return count


def guidance_arrays(flow: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sparse flow, mask and the number of distinct points.

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels, checked.
      points: (N, 2) integer (x, y) pixel positions inside the image; repeats allowed.

    Returns:
      sparse: (H, W, 2) float32, the flow at the points and 0 elsewhere.
      mask: (H, W, 2) float32, 1 at the points (both channels) and 0 elsewhere.
      count: the number of distinct points.

    Raises:
      ValueError: a point lies outside the image.
    """
    h, w = flow.shape[:2]
    sparse = np.zeros((h, w, 2), np.float32)
    mask = np.zeros((h, w, 2), np.float32)
    count = _scatter(flow, np.asarray(points, np.int64).reshape(-1, 2), sparse, mask)
    if count < 0:
        raise ValueError(f"guidance points outside the {w}x{h} image")
    return sparse, mask, count

"""SciPy transcription of the original CMP guidance sampler, and random piecewise-rigid flows.

A plain, deliberately literal NumPy/SciPy transcription of ``flow_sampler``
(``utils/data_utils.py`` of the original code; ``docs/guidance_exactness.md``
says what it computes). It is the correctness reference of the fast sampler in this
package (the tests compare the two) and the speed baseline of
``scripts/benchmark.py sampler``; it is not meant to be fast.

Differences to the original, all in how randomness is drawn: the global
``np.random`` state is replaced by an explicit ``np.random.Generator``, and the
draws are made in the order (and with the calls) that ``input_pipeline.guidance``
also uses, so that both give identical points for the same seed:

* uniform: ``rng.integers(0, h, n)`` rows, then ``rng.integers(0, w, n)`` columns;
* watershed thinning: one ``rng.random()`` per contested pair; ``< 0.5`` drops the
  earlier point of the pair (in row-major candidate order), otherwise the later;
* single: ``rng.integers(n)`` over the non-zero-flow pixels in row-major order;
* merging: ``rng.permutation(n)``.

As in the original, the Sobel kernel is float32, so for float32 flow
``convolve2d`` computes and returns float32 edge strengths, and the
normalisation and threshold are float32 too.

Arrays are (H, W, ...) with rows = y and columns = x; flow channels are (dx, dy)
in pixels. Points are returned as (rows, cols) index arrays, like the original.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, signal

# Cast to float32 as in the original's get_edge.
SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]).astype(np.float32)


def motion_edges(flow: np.ndarray) -> np.ndarray:
    """Binary motion-edge map (``get_edge``, normalisation and threshold).

    Args:
      flow: (H, W, 2) float32 flow in pixels (as the original reads it).

    Returns:
      (H, W) bool, True at motion edges (computed in float32).
    """
    magnitudes = []
    for c in range(flow.shape[2]):
        gx = signal.convolve2d(flow[:, :, c], SOBEL, mode="same", boundary="symm")
        gy = signal.convolve2d(flow[:, :, c], SOBEL.T, mode="same", boundary="symm")
        magnitudes.append(np.sqrt(gx**2 + gy**2))
    edge = sum(magnitudes)
    edge = edge / max(edge.max(), 0.01)
    return edge > 0.1


def edge_distance(edges: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of every pixel to the nearest edge pixel, (H, W) float64."""
    return ndimage.distance_transform_edt(1 - edges.astype(np.float32))


def nms_candidates(distance: np.ndarray, k: int) -> np.ndarray:
    """K x K non-maximum suppression, border removal and ``> 0``: (H, W) bool candidates."""
    local_max = ndimage.maximum_filter(distance, footprint=np.ones((k, k)), mode="reflect")
    nms = distance.copy()
    nms[distance < local_max] = 0
    nms[0, :] = 0
    nms[:, 0] = 0
    nms[nms.shape[0] - 1, :] = 0
    nms[:, nms.shape[1] - 1] = 0
    return nms > 0


def neighbor_elim(
    rows: np.ndarray, cols: np.ndarray, d: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly drops one point of every still-valid pair closer than ``d`` in both axes."""
    valid = np.ones(len(rows), dtype=np.int64)
    row_dist = np.fabs(rows[:, None] - rows[None, :])
    col_dist = np.fabs(cols[:, None] - cols[None, :])
    idx1, idx2 = np.where((row_dist < d) & (col_dist < d))
    for i, j in zip(idx1, idx2, strict=True):
        if valid[i] and valid[j] and i != j:
            if rng.random() < 0.5:
                valid[i] = 0
            else:
                valid[j] = 0
    keep = np.where(valid == 1)
    return rows[keep], cols[keep]


def watershed_points(
    flow: np.ndarray, nms_ks: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Watershed (object) points as (rows, cols) on the full-resolution flow."""
    h, w = flow.shape[:2]
    ds = max(1, max(h, w) // 400)
    edges = motion_edges(flow[::ds, ::ds, :])
    candidates = nms_candidates(edge_distance(edges), nms_ks)
    rows, cols = np.where(candidates)
    rows, cols = neighbor_elim(rows, cols, (nms_ks - 1) / 2, rng)
    return rows * ds, cols * ds


def sample_points(
    flow: np.ndarray,
    strategy: list[str],
    bg_ratio: float,
    nms_ks: int,
    max_num_guide: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """All guidance points (rows, cols) of ``flow_sampler`` except ``full``."""
    h, w = flow.shape[:2]
    pts_h, pts_w = [], []
    if "grid" in strategy:
        stride = int(math.sqrt(1.0 / bg_ratio))
        start_h = int((h - h // stride * stride) / 2)
        start_w = int((w - w // stride * stride) / 2)
        mesh = np.meshgrid(np.arange(start_h, h, stride), np.arange(start_w, w, stride))
        pts_h.append(np.asarray(mesh[0].flat))
        pts_w.append(np.asarray(mesh[1].flat))
    if "uniform" in strategy:
        pts_h.append(rng.integers(0, h, int(bg_ratio * h * w)))
        pts_w.append(rng.integers(0, w, int(bg_ratio * h * w)))
    if "watershed" in strategy:
        rows, cols = watershed_points(flow, nms_ks, rng)
        pts_h.append(rows)
        pts_w.append(cols)
    if "single" in strategy:
        rows, cols = np.where((flow[:, :, 0] != 0) | (flow[:, :, 1] != 0))
        pick = rng.integers(len(rows))
        pts_h.append(rows[pick : pick + 1])
        pts_w.append(cols[pick : pick + 1])
    pts_h = np.concatenate(pts_h).astype(np.int64)
    pts_w = np.concatenate(pts_w).astype(np.int64)
    if max_num_guide == -1:
        max_num_guide = np.inf
    order = rng.permutation(len(pts_h))
    keep = order[np.arange(min(max_num_guide, len(order)))]
    return pts_h[keep], pts_w[keep]


def flow_sampler(
    flow: np.ndarray,
    strategy: list[str],
    bg_ratio: float,
    nms_ks: int,
    max_num_guide: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(sparse, mask), both (H, W, 2): flow at the guidance points and their 0/1 indicator."""
    if "full" in strategy:
        return flow.copy(), np.ones(flow.shape, dtype=np.int64)
    rows, cols = sample_points(flow, strategy, bg_ratio, nms_ks, max_num_guide, rng)
    sparse = np.zeros(flow.shape, dtype=flow.dtype)
    mask = np.zeros(flow.shape, dtype=np.int64)
    sparse[:, :, 0][(rows, cols)] = flow[:, :, 0][(rows, cols)]
    sparse[:, :, 1][(rows, cols)] = flow[:, :, 1][(rows, cols)]
    mask[:, :, 0][(rows, cols)] = 1
    mask[:, :, 1][(rows, cols)] = 1
    return sparse, mask


def piecewise_rigid_flow(
    h: int, w: int, rng: np.random.Generator, num_objects: int = 4, max_motion: float = 10.0
) -> np.ndarray:
    """Random piecewise-rigid flow: a few rectangles and ellipses over a moving background.

    Every region (the background and each object, later objects on top) moves
    rigidly: a random translation plus a small rotation about its centre.

    Args:
      h: height in pixels.
      w: width in pixels.
      rng: random source.
      num_objects: number of rectangles/ellipses.
      max_motion: translations are uniform in [-max_motion, max_motion] pixels.

    Returns:
      (h, w, 2) float32 flow (dx, dy) in pixels.
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)

    def rigid(cx: float, cy: float) -> np.ndarray:
        tx, ty = rng.uniform(-max_motion, max_motion, 2)
        angle = rng.uniform(-0.05, 0.05)
        c, s = math.cos(angle), math.sin(angle)
        dx = c * (x - cx) - s * (y - cy) + cx - x + tx
        dy = s * (x - cx) + c * (y - cy) + cy - y + ty
        return np.stack([dx, dy], axis=-1)

    flow = rigid(w / 2, h / 2)
    for _ in range(num_objects):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
        if rng.random() < 0.5:
            inside = (np.abs(x - cx) <= rx) & (np.abs(y - cy) <= ry)
        else:
            inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        flow[inside] = rigid(cx, cy)[inside]
    return flow.astype(np.float32)

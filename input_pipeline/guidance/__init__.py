"""Guidance sampling: which flow vectors the sparse motion encoder sees.

A fast reimplementation of the original CMP ``flow_sampler`` (``utils/data_utils.py`` of
the original code) that returns the same points as the literal SciPy
transcription in ``reference.py`` for the same random generator
(``docs/guidance_exactness.md`` says why). Strategies:

* ``grid``: a lattice with stride ``G = int(sqrt(1 / bg_ratio))`` (float
  truncation kept: 0.00003629 gives 165, not 166), centred with start offset
  ``int((L - (L // G) * G) / 2)`` per axis; no randomness.
* ``watershed``: one point near the middle of every moving region: the maxima
  of the distance to the motion edges (``edges``, ``distance``, ``nms``),
  thinned at random (``output``). Flows of 800 pixels a side or more are
  subsampled by ``ds = max(H, W) // 400`` first and the points scaled back.
* ``uniform``: ``int(bg_ratio * H * W)`` uniformly random pixels, with replacement.
* ``single``: one random pixel with non-zero flow.
* ``full``: the dense flow (all pixels).

Points of all strategies are concatenated in the fixed order grid, uniform,
watershed, single (whatever the order in the config), randomly permuted and
truncated to ``max_num_guide``. Random draws, in order: uniform rows then columns,
one uniform number per contested pair in the thinning, the ``single`` index, the
permutation.

Conventions: images are (H, W, ...) arrays indexed [row, column] = [y, x]; flow
channels are (dx, dy) in pixels; points are int32 (N, 2) arrays of (x, y) pixel
positions, x = column, y = row. The numba kernels compile on first use and are
cached in ``__pycache__``; their work arrays are per thread, so concurrent calls
(they release the GIL) share no state.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numba
import numpy as np

from input_pipeline.flow_io import check_flow
from input_pipeline.guidance.common import workspace
from input_pipeline.guidance.distance import edge_distance
from input_pipeline.guidance.edges import motion_edges, motion_edges_into
from input_pipeline.guidance.nms import nms_candidates, nms_work, watershed_candidates
from input_pipeline.guidance.output import guidance_arrays, thin_candidates, thin_kept, xy_points

__all__ = [
    "STRATEGIES",
    "SamplerConfig",
    "edge_distance",
    "grid_points",
    "grid_stride",
    "motion_edges",
    "nms_candidates",
    "points_to_guidance",
    "sample_guidance",
    "sample_points",
    "thin_candidates",
    "watershed_points",
]

STRATEGIES = ("grid", "watershed", "uniform", "single", "full")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Guidance sampling settings (config keys of the original in brackets).

    Attributes:
      strategy: names from ``STRATEGIES``, combined (``sample_strategy``). A single
        string is taken as one strategy.
      bg_ratio: background sampling ratio (``sample_bg_ratio``): grid stride
        ``int(sqrt(1 / bg_ratio))`` pixels, ``int(bg_ratio * H * W)`` uniform points.
      nms_ks: odd window size K in pixels of the watershed non-maximum suppression
        (``nms_ks``); candidates closer than ``(K - 1) / 2`` in both axes are thinned.
      max_num_guide: keep at most this many points after the random permutation;
        -1 = unlimited (``max_num_guide``). Ignored by ``full``.
    """

    strategy: tuple[str, ...] = ("grid", "watershed")
    bg_ratio: float = 0.00015625
    nms_ks: int = 41
    max_num_guide: int = -1

    def __post_init__(self):
        strategy = (self.strategy,) if isinstance(self.strategy, str) else tuple(self.strategy)
        object.__setattr__(self, "strategy", strategy)
        if not strategy:
            raise ValueError(f"strategy is empty; choose from {STRATEGIES}")
        unknown = [s for s in strategy if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown sampling strategy {unknown}; choose from {STRATEGIES}")
        if len(set(strategy)) != len(strategy):
            raise ValueError(f"strategy {strategy} names a strategy twice")
        if (
            isinstance(self.bg_ratio, bool)
            or not isinstance(self.bg_ratio, numbers.Real)
            or not 0 < self.bg_ratio <= 1
        ):
            raise ValueError(f"bg_ratio must be in (0, 1], got {self.bg_ratio!r}")
        if isinstance(self.nms_ks, bool) or not isinstance(self.nms_ks, numbers.Integral):
            raise ValueError(f"nms_ks must be an int, got {self.nms_ks!r}")
        if self.nms_ks < 1 or self.nms_ks % 2 == 0:
            raise ValueError(f"nms_ks must be odd and positive, got {self.nms_ks}")
        if isinstance(self.max_num_guide, bool) or not isinstance(self.max_num_guide, numbers.Integral):
            raise ValueError(f"max_num_guide must be an int, got {self.max_num_guide!r}")
        if self.max_num_guide < -1:
            raise ValueError(f"max_num_guide must be -1 (unlimited) or >= 0, got {self.max_num_guide}")

    @property
    def grid_stride(self) -> int:
        """Grid stride G in pixels, ``int(sqrt(1 / bg_ratio))``."""
        return grid_stride(self.bg_ratio)


def grid_stride(bg_ratio: float) -> int:
    """Grid stride G in pixels: ``int(sqrt(1 / bg_ratio))``, float truncation kept (0.00003629 -> 165)."""
    return int(math.sqrt(1.0 / bg_ratio))


def grid_points(h: int, w: int, bg_ratio: float) -> np.ndarray:
    """Background lattice with stride ``int(sqrt(1 / bg_ratio))``, centred.

    Args:
      h: image height in pixels.
      w: image width in pixels.
      bg_ratio: background sampling ratio.

    Returns:
      (N, 2) int32 (x, y) points, x-major (all rows of the first column first),
      as the original's ``meshgrid(...).flat``.
    """
    stride = grid_stride(bg_ratio)
    return _lattice(int((h - h // stride * stride) / 2), h, int((w - w // stride * stride) / 2), w, stride)


@numba.njit(cache=True, nogil=True)
def _lattice(y0, h, x0, w, stride):
    """(N, 2) int32 (x, y) points of ``range(x0, w, stride)`` x ``range(y0, h, stride)``, x-major."""
    ny, nx = len(range(y0, h, stride)), len(range(x0, w, stride))
    points = np.empty((nx * ny, 2), np.int32)
    i = 0
    for x in range(x0, w, stride):
        for y in range(y0, h, stride):
            points[i, 0], points[i, 1] = x, y
            i += 1
    return points


@numba.njit(cache=True, nogil=True)
def _watershed(flow, k, ds, rng, strength, edges, work):
    """``watershed_points`` in one compiled call: edges, candidates, thinning.

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels, C-contiguous, already
        subsampled by ``ds``.
      k: odd non-maximum-suppression window in pixels.
      ds: subsampling factor; the points are multiplied by it.
      rng: ``np.random.Generator`` of the thinning.
      strength: (H, W) float32 work space.
      edges: (H, W) bool work space.
      work: ``nms.NmsWork`` of at least H * W pixels.

    Returns:
      (N, 2) int32 (x, y) points in full-resolution pixels.
    """
    box = motion_edges_into(flow, strength, edges)
    rows, cols = watershed_candidates(edges, box, k, work)
    kept = thin_kept(rows, cols, (k - 1) / 2, rng)
    points = np.empty((kept.sum(), 2), np.int32)
    n = 0
    for i in range(len(kept)):
        if kept[i]:
            points[n, 0], points[n, 1] = cols[i] * ds, rows[i] * ds
            n += 1
    return points


def watershed_points(flow: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Object points: thinned maxima of the distance to the motion edges.

    Args:
      flow: (H, W, 2) flow (dx, dy) in pixels.
      k: odd non-maximum-suppression window in pixels (on the subsampled flow when
        ``max(H, W) >= 800``).
      rng: random source of the thinning.

    Returns:
      (N, 2) int32 (x, y) points in full-resolution pixels.
    """
    flow = check_flow(flow)
    ds = max(1, max(flow.shape[:2]) // 400)
    small = np.ascontiguousarray(flow[::ds, ::ds]) if ds > 1 else flow
    shape = small.shape[:2]
    return _watershed(
        small,
        k,
        ds,
        rng,
        workspace("strength", shape, np.float32),
        workspace("edges", shape, np.bool_),
        nms_work(math.prod(shape)),
    )


def sample_points(flow: np.ndarray, config: SamplerConfig, rng: np.random.Generator) -> np.ndarray:
    """Guidance points of all configured strategies, permuted and truncated.

    Args:
      flow: (H, W, 2) flow (dx, dy) in pixels.
      config: sampling settings.
      rng: random source (see the module docstring for the order of draws).

    Returns:
      (N, 2) int32 (x, y) pixel positions; may repeat a pixel (grid and watershed,
      uniform). With ``full``: every pixel once, row-major, and no truncation.
      ``single`` on a flow without any non-zero vector adds no point (the original
      fails there).
    """
    flow = check_flow(flow)
    h, w = flow.shape[:2]
    if "full" in config.strategy:
        ys, xs = np.divmod(np.arange(h * w), w)
        return xy_points(ys, xs)
    parts = []
    if "grid" in config.strategy:
        parts.append(grid_points(h, w, config.bg_ratio))
    if "uniform" in config.strategy:
        n = int(config.bg_ratio * h * w)
        ys = rng.integers(0, h, n)
        parts.append(xy_points(ys, rng.integers(0, w, n)))
    if "watershed" in config.strategy:
        parts.append(watershed_points(flow, config.nms_ks, rng))
    if "single" in config.strategy:
        moving = np.flatnonzero((flow[..., 0] != 0) | (flow[..., 1] != 0))
        if len(moving):
            ys, xs = np.divmod(moving[rng.integers(len(moving))], w)
            parts.append(xy_points(np.array([ys]), np.array([xs])))
    points = np.concatenate(parts) if parts else np.zeros((0, 2), np.int32)
    order = rng.permutation(len(points))
    if config.max_num_guide != -1:
        order = order[: config.max_num_guide]
    return points[order]


def points_to_guidance(flow: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sparse flow and mask from guidance points.

    Args:
      flow: (H, W, 2) flow (dx, dy) in pixels.
      points: (N, 2) integer (x, y) pixel positions inside the image; repeats allowed.

    Returns:
      sparse: (H, W, 2) float32, the flow at the points and 0 elsewhere.
      mask: (H, W, 2) float32, 1 at the points (both channels) and 0 elsewhere.
    """
    sparse, mask, _ = guidance_arrays(check_flow(flow), points)
    return sparse, mask


def sample_guidance(
    flow: np.ndarray, config: SamplerConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Samples guidance points and builds the sparse-motion input.

    Args:
      flow: (H, W, 2) flow (dx, dy) in pixels.
      config: sampling settings.
      rng: random source.

    Returns:
      sparse: (H, W, 2) float32 flow at the guidance pixels, 0 elsewhere (``full``:
        the dense flow).
      mask: (H, W, 2) float32, 1 at the guidance pixels (``full``: everywhere).
      count: number of distinct guidance pixels.
    """
    flow = check_flow(flow)
    h, w = flow.shape[:2]
    if "full" in config.strategy:
        return flow.copy(), np.ones((h, w, 2), np.float32), h * w
    return guidance_arrays(flow, sample_points(flow, config, rng))

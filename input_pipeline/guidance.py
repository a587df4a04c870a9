"""Guidance sampling: which flow vectors the sparse motion encoder sees.

A fast reimplementation of the original CMP ``flow_sampler`` (reference section 4)
that returns the same points as a literal SciPy transcription
(``tests/guidance_oracle.py``) for the same random generator. Strategies:

* ``grid``: a lattice with stride ``G = int(sqrt(1 / bg_ratio))`` (float
  truncation kept: 0.00003629 gives 165, not 166), centred with start offset
  ``int((L - (L // G) * G) / 2)`` per axis; no randomness.
* ``watershed``: one point near the middle of every moving region. Sobel
  gradients of both flow channels (symmetric borders), per-channel magnitudes
  summed, normalised by ``max(max, 0.01)`` and thresholded at ``> 0.1`` give the
  motion edges; the exact Euclidean distance to the nearest edge is kept where it
  equals its ``K x K`` local maximum (plateaus survive), the 1-pixel image border
  and distance 0 are dropped, and candidates closer than ``(K - 1) / 2`` in both
  axes are thinned at random. Flows larger than 799 pixels are subsampled by
  ``ds = max(H, W) // 400`` first and the points scaled back by ``ds``.
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
positions, x = column, y = row.

Exactness: the reference computes the motion edges in float64 (SciPy's
``convolve2d`` with the integer Sobel kernel), where the Sobel sums are exact.
Here they are computed in float32 with OpenCV, and the few pixels whose float32
strength lies within a proven rounding bound of the threshold are recomputed in
float64 the reference's way, so the edge map is the reference's bit for bit.
The distance transform is OpenCV's own exact ``DIST_MASK_PRECISE``
implementation; its Intel IPP variant, which OpenCV picks when it runs
single-threaded, is off by up to 2 ulp and gives equal distances different
values, so IPP is switched off (a per-thread OpenCV setting) around that call.

Speed: every full-image step is one OpenCV or NumPy call on float32 (OpenCV
releases the GIL); the K x K maximum uses log2(K) + 1 shifted maxima per axis,
independent of K. At 384 x 384, K = 81 one sample takes about 6 ms on one core
of the development machine (the SciPy reference about 50 ms), of which the exact
distance transform alone is about 2.5 ms.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import cv2
import numpy as np

STRATEGIES = ("grid", "watershed", "uniform", "single", "full")

# Above this many pixels, exact edge strengths are computed for the whole image.
_MAX_EXACT_PIXELS = 4096


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
        return int(math.sqrt(1.0 / self.bg_ratio))


def _check_flow(flow: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] < 1 or flow.shape[1] < 1:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def _nonzero(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the True pixels of an (H, W) mask, row-major (np.nonzero is slower)."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def _xy(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, 2) int32 (x, y) points from row and column index arrays."""
    return np.stack([cols, rows], axis=1).astype(np.int32).reshape(-1, 2)


_SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)


def _edge_strength_exact(flow: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float64 edge strength at some pixels, computed as the reference does.

    The Sobel sums of float32 values are exact in float64 (unless the values
    span more than ~2**27 in magnitude), so any summation order gives the
    reference's value; magnitudes and the channel sum use the same float64
    operations as the reference.

    Args:
      flow: (H, W, 2) float32 flow.
      rows: (N,) row (y) indices.
      cols: (N,) column (x) indices.

    Returns:
      (N,) float64 strengths.
    """
    h, w = flow.shape[:2]
    if len(rows) > _MAX_EXACT_PIXELS:  # e.g. a flow with the same gradient everywhere
        gx = cv2.Sobel(flow, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
        gy = cv2.Sobel(flow, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
        magnitude = np.sqrt(gx**2 + gy**2)
        return (magnitude[..., 0] + magnitude[..., 1])[rows, cols]
    offsets = np.arange(-1, 2)
    r = np.clip(rows[:, None] + offsets, 0, h - 1)  # symmetric border = clip for a 3x3 kernel
    c = np.clip(cols[:, None] + offsets, 0, w - 1)
    patch = flow[r[:, :, None], c[:, None, :]].astype(np.float64)  # (n, 3, 3, 2)
    gx = (patch * _SOBEL_X[:, :, None]).sum(axis=(1, 2))
    gy = (patch * _SOBEL_X.T[:, :, None]).sum(axis=(1, 2))
    magnitude = np.sqrt(gx**2 + gy**2)
    return magnitude[:, 0] + magnitude[:, 1]


def motion_edges(flow: np.ndarray) -> np.ndarray:
    """Binary motion-edge map of a flow field.

    Sobel gradients (3x3, symmetric borders) of each flow channel, gradient
    magnitude per channel, summed over the channels, divided by
    ``max(max, 0.01)`` and thresholded at ``> 0.1``. Computed in float32 with
    OpenCV; pixels whose float32 strength is too close to the threshold (or to
    the maximum) for rounding to be ruled out are recomputed in float64 as the
    reference does, so the map equals the float64 reference's bit for bit.

    Args:
      flow: (H, W, 2) flow (dx, dy) in pixels.

    Returns:
      (H, W) bool, True at motion edges; indexed [y, x].
    """
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    gx = cv2.Sobel(flow, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(flow, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    magnitude = cv2.magnitude(gx.reshape(h, 2 * w), gy.reshape(h, 2 * w)).reshape(h, w, 2)
    edge = np.add(magnitude[..., 0], magnitude[..., 1])
    # |float32 - float64 strength| <= 2**-16 * max|flow| (Sobel weights sum to 8 in
    # absolute value; a few roundings of 2**-24 each), doubled for safety.
    slack = 2.0**-15 * cv2.norm(flow.reshape(h, 2 * w), cv2.NORM_INF)
    peak32 = float(edge.max())
    # The float64 threshold 0.1 * max(peak, 0.01) lies in [low, high].
    low = 0.1 * max(peak32 - slack, 0.01) - slack
    high = 0.1 * max(peak32 + slack, 0.01) + slack
    low, high = low - 1e-6 * abs(low), high + 1e-6 * high
    edges = edge > high
    doubt = _nonzero((edge >= low) ^ edges)
    if len(doubt[0]):
        near_peak = _nonzero(edge >= peak32 - 2 * slack)
        peak = max(float(_edge_strength_exact(flow, *near_peak).max()), 0.01)
        edges[doubt] = _edge_strength_exact(flow, *doubt) / peak > 0.1
    return edges


def edge_distance(edges: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance in pixels from every pixel to the nearest edge pixel.

    Equals ``scipy.ndimage.distance_transform_edt(1 - edges)`` rounded to float32,
    including its behaviour without any edge pixel: SciPy then measures the
    distance to a virtual edge pixel at row -1, column 0, i.e. the distance at
    (y, x) is ``sqrt((y + 1)**2 + x**2)``.

    Args:
      edges: (H, W) bool edge map, indexed [y, x].

    Returns:
      (H, W) float32 distances; 0 at edge pixels.
    """
    edges = np.asarray(edges, dtype=bool)
    if not edges.any():
        h, w = edges.shape
        y = np.arange(1, h + 1, dtype=np.float64)[:, None]
        x = np.arange(w, dtype=np.float64)[None, :]
        return np.sqrt(y * y + x * x).astype(np.float32)
    src = np.ascontiguousarray(np.logical_not(edges)).view(np.uint8)
    use_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)  # IPP's transform is inexact (see the module docstring); per thread.
    try:
        return cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    finally:
        cv2.ipp.setUseIPP(use_ipp)


def _running_max_rows(a: np.ndarray, k: int) -> np.ndarray:
    """Maximum over the k rows centred on each row (k odd), clipped to the array.

    Doubling (sparse-table) scheme: log2(k) + 1 elementwise maxima of shifted views.
    """
    n = a.shape[0]
    half = k // 2
    m = cv2.copyMakeBorder(a, half, half, 0, 0, cv2.BORDER_CONSTANT, value=-np.inf)
    width = 1
    while 2 * width <= k:
        m = np.maximum(m[:-width], m[width:])  # m[i] = max of `2 * width` padded rows from i
        width *= 2
    return np.maximum(m[:n], m[k - width : k - width + n])


def _window_max(distance: np.ndarray, k: int) -> np.ndarray:
    """K x K maximum filter of a float32 image.

    Equals ``scipy.ndimage.maximum_filter(size=k, mode='reflect')``: the pixels
    that reflection brings into a window all lie inside the window clipped to
    the image, so the maximum over the clipped window is the same.
    """
    rows = _running_max_rows(distance, k)
    return cv2.transpose(_running_max_rows(cv2.transpose(rows), k))


def _nms_points(distance: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (row-major order) of the pixels that ``nms_candidates`` keeps."""
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    # ">= max(local max, smallest positive float32)" is ">= local max and > 0".
    keep = distance >= np.maximum(
        _window_max(distance, k), np.float32(np.finfo(np.float32).smallest_subnormal)
    )
    keep[[0, -1], :] = False
    keep[:, [0, -1]] = False
    return _nonzero(keep)


def nms_candidates(distance: np.ndarray, k: int) -> np.ndarray:
    """Watershed candidates: pixels equal to their K x K local maximum.

    Keeps pixels whose distance equals the maximum over the K x K window centred
    on them (ties kept), is > 0, and that are not on the 1-pixel image border.

    Args:
      distance: (H, W) float distances in pixels (``edge_distance``), [y, x].
      k: odd window size in pixels.

    Returns:
      (H, W) bool candidate map, indexed [y, x].
    """
    distance = np.asarray(distance)
    rows, cols = _nms_points(distance, k)
    candidates = np.zeros(distance.shape, dtype=bool)
    candidates[rows, cols] = True
    return candidates


def _close_pairs(points: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs i < j with both coordinate differences < d, sorted by (i, j).

    Args:
      points: (N, 2) int64 coordinates.
      d: distance in pixels.

    Returns:
      (i, j): two (P,) int64 arrays.
    """
    order = np.argsort(points[:, 0], kind="stable")
    first = points[order, 0]
    stop = np.searchsorted(first, first + d, side="left")  # end of the run with difference < d
    counts = np.maximum(stop - np.arange(1, len(first) + 1), 0)
    a = np.repeat(np.arange(len(first)), counts)
    b = np.arange(len(a)) - np.repeat(np.cumsum(counts) - counts, counts) + a + 1
    close = np.abs(points[order[a], 1] - points[order[b], 1]) < d
    a, b = order[a[close]], order[b[close]]
    if not np.array_equal(order, np.arange(len(order))):  # input not sorted by first coordinate
        a, b = np.minimum(a, b), np.maximum(a, b)
        by_pair = np.lexsort((b, a))
        a, b = a[by_pair], b[by_pair]
    return a, b


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
      d: distance in pixels (``(K - 1) / 2``).
      rng: random source.

    Returns:
      (M, 2) the kept points, in their input order and dtype.
    """
    points = np.asarray(points)
    coords = points.astype(np.int64).reshape(-1, 2)
    valid = [True] * len(coords)
    if len(coords) > 1:
        first, second = _close_pairs(coords, d)
        starts = np.flatnonzero(np.diff(first, prepend=-1))  # one run of pairs per first point
        ends = np.append(starts[1:], len(first))[: len(starts)]
        second = second.tolist()
        for i, start, end in zip(first[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
            if not valid[i]:  # all remaining pairs of i are skipped
                continue
            for j in second[start:end]:
                if valid[j]:
                    if rng.random() < 0.5:
                        valid[i] = False
                        break
                    valid[j] = False
    return points[np.array(valid, dtype=bool)]


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
    stride = int(math.sqrt(1.0 / bg_ratio))
    ys = np.arange(int((h - h // stride * stride) / 2), h, stride)
    xs = np.arange(int((w - w // stride * stride) / 2), w, stride)
    return _xy(np.tile(ys, len(xs)), np.repeat(xs, len(ys)))


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
    flow = _check_flow(flow)
    ds = max(1, max(flow.shape[:2]) // 400)
    small = np.ascontiguousarray(flow[::ds, ::ds]) if ds > 1 else flow
    rows, cols = _nms_points(edge_distance(motion_edges(small)), k)
    kept = thin_candidates(np.stack([rows, cols], axis=1), (k - 1) / 2, rng)
    return _xy(kept[:, 0] * ds, kept[:, 1] * ds)


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
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    if "full" in config.strategy:
        ys, xs = np.divmod(np.arange(h * w), w)
        return _xy(ys, xs)
    parts = []
    if "grid" in config.strategy:
        parts.append(grid_points(h, w, config.bg_ratio))
    if "uniform" in config.strategy:
        n = int(config.bg_ratio * h * w)
        ys = rng.integers(0, h, n)
        parts.append(_xy(ys, rng.integers(0, w, n)))
    if "watershed" in config.strategy:
        parts.append(watershed_points(flow, config.nms_ks, rng))
    if "single" in config.strategy:
        moving = np.flatnonzero((flow[..., 0] != 0) | (flow[..., 1] != 0))
        if len(moving):
            ys, xs = np.divmod(moving[rng.integers(len(moving))], w)
            parts.append(_xy(np.array([ys]), np.array([xs])))
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
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    points = np.asarray(points).reshape(-1, 2)
    xs, ys = points[:, 0], points[:, 1]
    if len(points) and (xs.min() < 0 or ys.min() < 0 or xs.max() >= w or ys.max() >= h):
        raise ValueError(f"guidance points outside the {w}x{h} image")
    sparse = np.zeros((h, w, 2), np.float32)
    mask = np.zeros((h, w, 2), np.float32)
    sparse[ys, xs] = flow[ys, xs]
    mask[ys, xs] = 1.0
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
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    if "full" in config.strategy:
        return flow.copy(), np.ones((h, w, 2), np.float32), h * w
    points = sample_points(flow, config, rng)
    sparse, mask = points_to_guidance(flow, points)
    count = len(np.unique(points[:, 1].astype(np.int64) * w + points[:, 0]))
    return sparse, mask, count

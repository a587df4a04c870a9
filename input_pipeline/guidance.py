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
values (and is slower), so IPP is switched off (a per-thread OpenCV setting)
around that call. Distances are square roots of integers (squared pixel
distances); below 2 * 800**2 (working images are < 800 pixels a side) distinct
integers keep distinct, ordered float32 roots, so float32 comparisons decide as
the reference's float64 ones. Further shortcuts, each exact:

* For K >= 3 no candidate lies outside the bounding box of the edge pixels: if
  every edge pixel is at or below row y, the pixel above a pixel of row y is
  farther from each of them, and it lies in the window. The distance transform
  is computed only on that box widened by K // 2 (clipped to the image), which
  holds every edge pixel and every window of a pixel in the box.
* A candidate is also the maximum of its 3 x 3 neighbourhood, so only those
  few hundred pixels are compared with their K x K maximum.
* In the thinning, the reference also visits the pairs (i, j) with i > j, but by
  then one of the two is always dropped: j was visited first and either was
  dropped or dropped all its close points still kept.

Speed: every full-image step is one OpenCV or NumPy call on float32 (OpenCV
releases the GIL); K x K maxima use log2(K) + 1 shifted maxima per axis,
independent of K. At 384 x 384, K = 81 one sample takes 4-5.5 ms on one core of
the development machine (the SciPy reference 40-65 ms; the machine's speed
drifts): edges about 1.2 ms, the exact distance transform on the widened edge box
about 1.6 ms (2.3 ms on the whole image), the non-maximum suppression about
0.7 ms, the thinning about 0.4 ms.
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
    gx = cv2.Sobel(flow, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT).reshape(h, 2 * w)
    gy = cv2.Sobel(flow, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT).reshape(h, 2 * w)
    magnitude = cv2.magnitude(gx, gy, gx)  # in place: channels interleaved along the rows
    edge = np.add(magnitude[:, 0::2], magnitude[:, 1::2])
    # |float32 - float64 strength| <= 2**-16 * max|flow| (Sobel weights sum to 8 in
    # absolute value; a few roundings of 2**-24 each), doubled for safety.
    slack = 2.0**-15 * cv2.norm(flow.reshape(h, 2 * w), cv2.NORM_INF)
    peak32 = float(edge.max())
    # The float64 threshold 0.1 * max(peak, 0.01) lies in [low, high].
    low = 0.1 * max(peak32 - slack, 0.01) - slack
    high = 0.1 * max(peak32 + slack, 0.01) + slack
    low, high = low - 1e-6 * abs(low), high + 1e-6 * high
    edges = edge > high
    if np.count_nonzero(edge >= low) > np.count_nonzero(edges):
        doubt = _nonzero((edge >= low) ^ edges)
        near_peak = _nonzero(edge >= peak32 - 2 * slack)
        peak = max(float(_edge_strength_exact(flow, *near_peak).max()), 0.01)
        edges[doubt] = _edge_strength_exact(flow, *doubt) / peak > 0.1
    return edges


def _distance_transform(not_edges: np.ndarray) -> np.ndarray:
    """OpenCV's exact Euclidean distance transform, with its inexact IPP variant off.

    Args:
      not_edges: (H, W) uint8, 0 at edge pixels and non-zero elsewhere; at least
        one edge pixel.

    Returns:
      (H, W) float32 distances in pixels to the nearest edge pixel.
    """
    use_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)  # IPP's transform is inexact (see the module docstring); per thread.
    try:
        return cv2.distanceTransform(not_edges, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    finally:
        cv2.ipp.setUseIPP(use_ipp)


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
    return _distance_transform(np.ascontiguousarray(np.logical_not(edges)).view(np.uint8))


def _running_max_rows(a: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Maximum over the k rows centred on each row (k odd), clipped to the array.

    Doubling (sparse-table) scheme: log2(k) + 1 elementwise maxima of shifted views.

    Args:
      a: (N, M) float32 array.
      k: odd window size in rows.
      rows: optional (R,) row indices; only their maxima are returned.

    Returns:
      (N, M) float32, or (R, M) when ``rows`` is given.
    """
    n = a.shape[0]
    half = k // 2
    m = cv2.copyMakeBorder(a, half, half, 0, 0, cv2.BORDER_CONSTANT, value=-np.inf)
    width = 1
    while 2 * width <= k:
        m = np.maximum(m[:-width], m[width:])  # m[i] = max of `2 * width` padded rows from i
        width *= 2
    if rows is None:
        return np.maximum(m[:n], m[k - width : k - width + n])
    return np.maximum(m[rows], m[rows + (k - width)])


def _nms_points(
    distance: np.ndarray, k: int, region: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a region that equal the maximum of their K x K window and are > 0.

    The window is centred on the pixel and clipped to the array, which equals
    ``scipy.ndimage.maximum_filter(size=k, mode='reflect')``: reflection only
    brings in pixels of the clipped window. For K >= 3 a kept pixel is also the
    maximum of its 3 x 3 neighbourhood, so only those (a few hundred in a
    distance map) are compared with their K x K maximum: the maximum over K rows
    (all columns of the rows concerned), then over K columns of the rows that
    hold such pixels.

    Args:
      distance: (H, W) float32 distances, indexed [y, x].
      k: odd window size in pixels.
      region: ``(top, bottom, left, right)``, the half-open row and column ranges
        searched; they must leave out the array's outermost row and column on
        every side.

    Returns:
      rows, cols: (N,) int64 indices of the kept pixels, in row-major order.
    """
    top, bottom, left, right = region
    if bottom <= top or right <= left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    inner = distance[top:bottom, left:right]
    if k == 1:
        rows, cols = _nonzero(inner > 0)
        return rows + top, cols + left
    peak = cv2.dilate(distance[top - 1 : bottom + 1, left - 1 : right + 1], None)[1:-1, 1:-1]
    rows, cols = _nonzero(inner >= peak)
    rows, cols = rows + top, cols + left
    value = distance[rows, cols]
    positive = value > 0
    rows, cols, value = rows[positive], cols[positive], value[positive]
    if not len(rows):
        return rows, cols
    half = k // 2
    # Only the maxima over the windows of these pixels are needed.
    first, last = max(0, rows[0] - half), rows[-1] + half + 1
    start, stop = max(0, cols.min() - half), cols.max() + half + 1
    new_line = np.diff(rows, prepend=-1) > 0  # rows are sorted
    column_max = _running_max_rows(distance[first:last, start:stop], k, rows[new_line] - first)
    window_max = _running_max_rows(cv2.transpose(column_max), k)  # [x - start, line]
    keep = value >= window_max[cols - start, np.cumsum(new_line) - 1]
    return rows[keep], cols[keep]


def nms_candidates(distance: np.ndarray, k: int) -> np.ndarray:
    """Watershed candidates: pixels equal to their K x K local maximum.

    Keeps pixels whose distance equals the maximum over the K x K window centred
    on them (ties kept), is > 0, and that are not on the 1-pixel image border.

    Args:
      distance: (H, W) float distances in pixels (``edge_distance``: square roots
        of integers, compared in float32), [y, x].
      k: odd window size in pixels.

    Returns:
      (H, W) bool candidate map, indexed [y, x].
    """
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    h, w = distance.shape
    candidates = np.zeros((h, w), dtype=bool)
    candidates[_nms_points(distance, k, (1, h - 1, 1, w - 1))] = True
    return candidates


def _watershed_candidates(edges: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (row-major) of ``nms_candidates(edge_distance(edges), k)``.

    For K >= 3 no candidate lies outside the bounding box of the edge pixels: above
    it, say, every edge pixel is below, so the pixel one row up is farther from all
    of them and lies in the window. Windows of pixels in the box reach at most
    K // 2 pixels beyond it, and every edge pixel lies inside, so the exact
    transform is computed only on the box widened by K // 2 (clipped to the image).

    Args:
      edges: (H, W) bool edge map, indexed [y, x].
      k: odd window size in pixels.

    Returns:
      rows, cols: (N,) int64 indices.
    """
    h, w = edges.shape
    x, y, box_w, box_h = cv2.boundingRect(edges.view(np.uint8))
    if k == 1 or box_w == 0:
        return _nms_points(edge_distance(edges), k, (1, h - 1, 1, w - 1))
    half = k // 2
    top, left = max(0, y - half), max(0, x - half)
    bottom, right = min(h, y + box_h + half), min(w, x + box_w + half)
    distance = _distance_transform(np.logical_not(edges[top:bottom, left:right]).view(np.uint8))
    region = (
        max(y, 1) - top,
        min(y + box_h, h - 1) - top,
        max(x, 1) - left,
        min(x + box_w, w - 1) - left,
    )
    rows, cols = _nms_points(distance, k, region)
    return rows + top, cols + left


def _close_later(coords: np.ndarray, d: float) -> np.ndarray:
    """Which later points are closer than ``d`` to each point in both axes, as bits.

    Only a band of later points is compared with each point: when the points are
    sorted by their first coordinate, up to the last one that is close in that
    coordinate; otherwise all of them.

    Args:
      coords: (N, 2) int64 coordinates, N >= 2.
      d: distance in pixels.

    Returns:
      (N, B) uint8 bit rows (``np.packbits`` little-endian order): bit t of row i
      is set iff point i + 1 + t exists and both its coordinate differences to
      point i are < d. B = 0 when no pair is close.
    """
    n = len(coords)
    reach = math.ceil(d) - 1  # integer differences < d are <= reach
    first = coords[:, 0]
    if np.all(first[1:] >= first[:-1]):  # the later points close to i come before stop[i]
        stop = np.searchsorted(first, first + reach, side="right")
    else:
        stop = np.full(n, n)
    band = int((stop - np.arange(n)).max()) - 1
    if reach < 0 or band < 1:
        return np.zeros((n, 0), np.uint8)
    coords = coords - coords.min(axis=0)  # in [0, span]: int16 holds all differences below
    span = int(coords.max()) + reach + 1
    signed, unsigned = (np.int16, np.uint16) if span < 2**15 else (np.int64, np.uint64)
    close = np.ones((n, band), dtype=bool)
    for axis in coords.T.astype(signed):
        far = np.full(band, -reach - 1, signed)  # never close: pads the ends of the last bands
        padded = np.concatenate([axis[1:], far])
        later = np.lib.stride_tricks.as_strided(padded, (n, band), padded.strides * 2, writeable=False)
        # later[i, t] = axis[i + 1 + t]; |later - axis| <= reach as one unsigned comparison.
        close &= (later - (axis - reach)[:, None]).view(unsigned) <= 2 * reach
    return np.packbits(close, axis=1, bitorder="little")


def thin_candidates(points: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    """Randomly drops one point of every pair closer than ``d`` in both axes.

    Pairs (i, j), i < j, with ``|p_i - p_j| < d`` in both coordinates are visited
    in lexicographic (i, j) order; when both are still kept, one uniform number
    ``u = rng.random()`` decides: ``u < 0.5`` drops point i, otherwise point j.
    The rule is symmetric in the two coordinates, so points may be (x, y) or
    (row, col); the order of the points matters for reproducibility (the
    sampler passes them in row-major order). The close points of each point are
    bits of a Python int, and so are the kept points.

    Args:
      points: (N, 2) integer pixel coordinates.
      d: distance in pixels.
      rng: random source, not used by anyone else meanwhile: up to N - 1 numbers
        are drawn at once, then the generator is reset and advanced by the
        number of contested pairs (``rng.random(n)`` gives the numbers of n
        ``rng.random()`` calls).

    Returns:
      (M, 2) the kept points, in their input order and dtype.
    """
    points = np.asarray(points).reshape(-1, 2)
    n = len(points)
    if n < 2:
        return points
    close = _close_later(points.astype(np.int64), d)
    bits, size = close.tobytes(), close.shape[1]
    state = rng.bit_generator.state
    draws = rng.random(n - 1).tolist()  # every draw drops a point
    used = 0
    kept = (1 << n) - 1  # bit i: point i is still kept
    for i in range(n):
        bit = 1 << i
        if not kept & bit:
            continue
        contested = (int.from_bytes(bits[i * size : (i + 1) * size], "little") << (i + 1)) & kept
        while contested:
            j = contested & -contested  # lowest index first
            used += 1
            if draws[used - 1] < 0.5:
                kept ^= bit
                break
            kept ^= j
            contested ^= j
    rng.bit_generator.state = state
    rng.random(used)
    keep = np.unpackbits(np.frombuffer(kept.to_bytes((n + 7) // 8, "little"), np.uint8), bitorder="little")
    return points[keep[:n].astype(bool)]


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
    rows, cols = _watershed_candidates(motion_edges(small), k)
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

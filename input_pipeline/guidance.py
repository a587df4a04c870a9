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

Exactness: every value the reference compares is computed here with the same
float64 operations, or replaced by an exact integer; the watershed stage is a
few numba kernels (compiled on first use and cached in ``__pycache__``; no
fast-math, so LLVM keeps IEEE semantics and contracts no multiply-adds).

* Edges: the reference's ``convolve2d`` converts the flow to float64 and, per
  output pixel, adds ``in * kernel`` over the kernel rows, then columns, of the
  flipped kernel, starting from 0.0; symmetric borders repeat the edge pixel
  (row -1 = row 0, row H = row H - 1). The kernel's weights are 0, +-1, +-2, so
  every product of a float32 value is exact in float64, and the sums are taken
  here in exactly that order: the Sobel responses are the reference's bit for
  bit, even where the float64 sums round (values spanning more than 2**26 in
  magnitude). The kernel's zero terms are left out, which changes at most the
  sign of a zero sum (erased by the square), except for non-finite flow
  (``inf * 0`` is NaN): then any non-finite input makes some strength
  non-finite, and the strengths are recomputed with the zero terms. Then
  ``sqrt(gx * gx + gy * gy)`` per channel (NumPy's ``x**2`` is ``x * x``;
  square roots are correctly rounded), the two channels added, the peak taken
  with NumPy's NaN semantics, ``max(peak, 0.01)``, and the division followed by
  the ``> 0.1`` comparison, as the reference does.
* Distances: SciPy's ``distance_transform_edt`` returns the float64 square root
  of the integer squared distance to the nearest edge pixel (without any edge
  pixel: to a virtual pixel at row -1, column 0). Squared distances are computed
  exactly in int64 (column distances, then Felzenszwalb and Huttenlocher's lower
  envelope of parabolas along the rows, intersections compared as fractions by
  cross-multiplication). Distinct integers below 2**52 have distinct, ordered
  float64 roots, so the non-maximum suppression compares the integers and decides
  as the reference (ties exactly where the squared distances are equal).
  ``edge_distance`` returns their float64 roots rounded to float32; below
  2 * 800**2 distinct integers keep distinct, ordered float32 roots.

Further shortcuts, each exact:

* For K >= 3 no candidate lies outside the bounding box of the edge pixels: if
  every edge pixel is at or below row y, the pixel above a pixel of row y is
  farther from each of them, and it lies in the window. The distance transform
  is computed only on that box widened by K // 2 (clipped to the image), which
  holds every edge pixel and every window of a pixel in the box.
* A candidate is also the maximum of its 3 x 3 neighbourhood (one vectorised
  pass), so only those few hundred pixels are compared with their K x K window,
  rows nearest the pixel first.
* In the thinning, the reference also visits the pairs (i, j) with i > j, but by
  then one of the two is always dropped: j was visited first and either was
  dropped or dropped all its close points still kept.

Speed: at 384 x 384, K = 81 one sample takes about 3-4.5 ms on one core of the
(shared, noisy) development machine, the SciPy reference 35-60 ms: edges about
0.7 ms, the exact squared distance transform on the widened edge box and the
non-maximum suppression together 1.2-2.1 ms (depending on the box; about
1.3 ms and 0.45 ms on the whole image), the thinning 0.3-0.5 ms. The first call
in a fresh environment compiles the kernels (7-10 s, 1-2 s more for the
float64 ``nms_candidates``); later processes load them from the cache in about
0.4 s.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numba
import numpy as np

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


def _check_flow(flow: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] < 1 or flow.shape[1] < 1:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def _xy(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, 2) int32 (x, y) points from row and column index arrays."""
    return np.stack([cols, rows], axis=1).astype(np.int32).reshape(-1, 2)


# The numba kernels below are compiled on first use (cached in __pycache__). They
# allocate all their buffers per call, so concurrent calls from several threads
# (nogil) share no mutable state.
_NO_EDGE = 1 << 40  # column distance of a column without any edge pixel


@numba.njit(cache=True, nogil=True)
def _load_row(flow, y, rows, slot):
    """Copies flow row y into ``rows[c, slot, 1:-1]`` (float64) with one repeated pixel each side."""
    w = flow.shape[1]
    first, second = rows[0, slot], rows[1, slot]
    for x in range(w):
        first[x + 1] = flow[y, x, 0]
        second[x + 1] = flow[y, x, 1]
    first[0], first[w + 1] = first[1], first[w]
    second[0], second[w + 1] = second[1], second[w]


@numba.njit(cache=True, nogil=True)
def _edge_strength(flow, literal):
    """Float64 edge strength, (H, W): per-channel Sobel magnitudes of (H, W, 2) flow, summed.

    Sums the terms in the order of SciPy's ``convolve2d`` (kernel rows, then
    columns, of the flipped kernel) with symmetric borders (row -1 = row 0, row H =
    row H - 1). ``literal`` also adds the kernel's zero terms (``x * 0.0``), which
    only matter for non-finite flow (``inf * 0`` is NaN); otherwise they add a
    zero and change at most the sign of a zero sum, which the squares erase.
    """
    h, w = flow.shape[0], flow.shape[1]
    rows = np.empty((2, 3, w + 2), np.float64)  # ring of 3 padded rows per channel
    strength = np.empty((h, w), np.float64)
    _load_row(flow, 0, rows, 0)
    for y in range(h):
        if y + 1 < h:
            _load_row(flow, y + 1, rows, (y + 1) % 3)
        out = strength[y]
        for c in range(2):
            a = rows[c, min(y + 1, h - 1) % 3]  # convolution row y + 1 - j for j = 0, 1, 2
            b = rows[c, y % 3]
            d = rows[c, max(y - 1, 0) % 3]
            for x in range(w):  # padded column x + 2 - i is image column x + 1 - i
                if literal:
                    gx = 0.0
                    gx += a[x + 2] * 1.0
                    gx += a[x + 1] * 0.0
                    gx += a[x] * -1.0
                    gx += b[x + 2] * 2.0
                    gx += b[x + 1] * 0.0
                    gx += b[x] * -2.0
                    gx += d[x + 2] * 1.0
                    gx += d[x + 1] * 0.0
                    gx += d[x] * -1.0
                    gy = 0.0
                    gy += a[x + 2] * 1.0
                    gy += a[x + 1] * 2.0
                    gy += a[x] * 1.0
                    gy += b[x + 2] * 0.0
                    gy += b[x + 1] * 0.0
                    gy += b[x] * 0.0
                    gy += d[x + 2] * -1.0
                    gy += d[x + 1] * -2.0
                    gy += d[x] * -1.0
                else:
                    gx = a[x + 2] - a[x] + 2.0 * b[x + 2] - 2.0 * b[x] + d[x + 2] - d[x]
                    gy = a[x + 2] + 2.0 * a[x + 1] + a[x] - d[x + 2] - 2.0 * d[x + 1] - d[x]
                magnitude = np.sqrt(gx * gx + gy * gy)
                out[x] = magnitude if c == 0 else out[x] + magnitude
    return strength


@numba.njit(cache=True, nogil=True)
def _peak(strength):
    """``strength.max()`` with NumPy's semantics (NaN if any value is NaN), of an (H, W) array."""
    h, w = strength.shape
    column_max = np.full(w, -np.inf)
    column_nan = np.zeros(w, np.bool_)
    for y in range(h):  # column-wise maxima: vectorised across the row
        row = strength[y]
        for x in range(w):
            value = row[x]
            column_max[x] = value if value > column_max[x] else column_max[x]
            column_nan[x] |= value != value
    peak = -np.inf
    for x in range(w):
        if column_nan[x]:
            return np.nan
        peak = max(peak, column_max[x])
    return peak


@numba.njit(cache=True, nogil=True)
def _least_above(peak):
    """The least float64 s with ``s / peak > 0.1`` (peak positive and finite).

    Rounded division is monotone in the dividend, so ``s / peak > 0.1`` holds
    exactly for the s >= this value: one comparison per pixel, not a division.
    """
    low = 0.1 * peak
    while low / peak > 0.1:
        low = np.nextafter(low, -np.inf)
    while not low / peak > 0.1:
        low = np.nextafter(low, np.inf)
    return low


@numba.njit(cache=True, nogil=True)
def _motion_edges(flow):
    """(H, W) bool edge map of (H, W, 2) float32 flow; see ``motion_edges``."""
    strength = _edge_strength(flow, False)
    peak = _peak(strength)
    if not np.abs(peak) < np.inf:  # a non-finite flow value: add the zero terms too
        strength = _edge_strength(flow, True)
        peak = _peak(strength)
    if 0.01 > peak:  # Python's max(peak, 0.01), NaN kept
        peak = 0.01
    h, w = strength.shape
    edges = np.empty((h, w), np.bool_)
    if not np.abs(peak) < np.inf:
        for y in range(h):
            for x in range(w):
                edges[y, x] = strength[y, x] / peak > 0.1
        return edges
    low = _least_above(peak)
    for y in range(h):
        for x in range(w):
            edges[y, x] = strength[y, x] >= low
    return edges


@numba.njit(cache=True, nogil=True)
def _squared_distance(edges, top, bottom, left, right):
    """Exact squared Euclidean distance to the nearest edge pixel, on a box of the edge map.

    Distances within each column of the box, then the lower envelope of the
    parabolas ``(x - q)**2 + g[q]**2`` along each row (Felzenszwalb and
    Huttenlocher), all in int64: the intersections of parabolas are compared as
    fractions by cross-multiplication, so no rounding is involved. Without any
    edge pixel in the box, SciPy's virtual edge pixel at image row -1, column 0
    is used (only meaningful for the whole image).

    Args:
      edges: (H, W) bool edge map, indexed [y, x].
      top: first row of the box.
      bottom: end row (exclusive).
      left: first column.
      right: end column (exclusive).

    Returns:
      (bottom - top, right - left) int64 squared distances in pixels**2.
    """
    bh, bw = bottom - top, right - left
    out = np.empty((bh, bw), np.int64)
    if bh <= 0 or bw <= 0:
        return out
    g = np.empty((bh, bw), np.int64)
    for x in range(bw):
        g[0, x] = 0 if edges[top, left + x] else _NO_EDGE
    for y in range(1, bh):
        for x in range(bw):
            g[y, x] = 0 if edges[top + y, left + x] else g[y - 1, x] + 1
    for y in range(bh - 2, -1, -1):
        for x in range(bw):
            g[y, x] = min(g[y, x], g[y + 1, x] + 1)
    if g[0].min() >= _NO_EDGE // 2:
        for y in range(bh):
            for x in range(bw):
                out[y, x] = (top + y + 1) ** 2 + (left + x) ** 2
        return out
    v = np.empty(bw, np.int64)  # columns of the envelope's parabolas
    f = np.empty(bw, np.int64)  # their g**2 + q**2
    zn = np.empty(bw, np.int64)  # parabola i is lowest from zn[i] / zd[i] on (zd > 0)
    zd = np.empty(bw, np.int64)
    for y in range(bh):
        column = g[y]
        k = -1
        for q in range(bw):
            if column[q] >= _NO_EDGE // 2:
                continue
            fq = column[q] * column[q] + q * q
            num, den = 0, 1
            while k >= 0:
                num, den = fq - f[k], 2 * (q - v[k])  # intersection with parabola k at num / den
                if k > 0 and num * zd[k] <= zn[k] * den:
                    k -= 1
                else:
                    break
            k += 1
            v[k], f[k], zn[k], zd[k] = q, fq, num, den
        row = out[y]
        begin = 0
        for j in range(k + 1):  # parabola j is lowest for the integers x > zn[j] / zd[j]
            end = bw if j == k else min(bw, max(0, zn[j + 1] // zd[j + 1] + 1))
            height, centre = f[j] - v[j] * v[j], v[j]
            for x in range(begin, end):
                row[x] = height + (x - centre) * (x - centre)
            begin = max(begin, end)
    return out


@numba.njit(cache=True, nogil=True)
def _nms(values, k, top, bottom, left, right):
    """Pixels of a region that equal the maximum of their K x K window and are > 0.

    The window is centred on the pixel and clipped to the array, which equals
    ``scipy.ndimage.maximum_filter(size=k, mode='reflect')``: reflection only
    brings in pixels of the clipped window. For K >= 3 a kept pixel is also the
    maximum of its 3 x 3 neighbourhood (one vectorised pass over the region), so
    only those few hundred pixels are compared with their K x K window, a row at
    a time, rows nearest the pixel first: a larger value is usually close.

    Args:
      values: (N, M) array (int64 squared distances or float distances), [y, x].
      k: odd window size in pixels.
      top: first row of the region searched.
      bottom: end row (exclusive).
      left: first column.
      right: end column (exclusive); the region must leave out the array's
        outermost row and column on every side.

    Returns:
      rows, cols: (P,) int64 indices of the kept pixels, in row-major order.
    """
    n, m = values.shape
    if bottom <= top or right <= left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flags = np.empty((bottom - top, right - left), np.bool_)
    if k == 1:
        for y in range(top, bottom):
            for x in range(left, right):
                flags[y - top, x - left] = values[y, x] > 0
        rows, cols = np.nonzero(flags)
        return rows + top, cols + left
    # Maxima of their 3 x 3 neighbourhood: maxima over 3 columns of 3 rows (vectorised).
    triple = np.empty((3, right - left), values.dtype)
    for y in range(top - 1, bottom + 1):
        row, out = values[y], triple[y % 3]
        for x in range(left, right):
            out[x - left] = max(max(row[x - 1], row[x]), row[x + 1])
        if y >= top + 1:
            centre, above, below, flag = values[y - 1], triple[(y - 2) % 3], triple[y % 3], flags[y - 1 - top]
            mid = triple[(y - 1) % 3]
            for x in range(left, right):
                value = centre[x]
                flag[x - left] = (value > 0) & (
                    value >= max(max(above[x - left], mid[x - left]), below[x - left])
                )
    rows, cols = np.nonzero(flags)
    rows += top
    cols += left
    # Then the K x K window. A kept neighbour processed before (left or above:
    # row-major order) is no larger, and so is its whole window: only the part of
    # the window outside the neighbour's needs checking (a row or a column along
    # ridges and plateaus). Otherwise the whole window, rows nearest the pixel
    # first (a larger value is usually close).
    half = k // 2
    keep = np.ones(len(rows), np.bool_)
    for i in range(len(rows)):
        y, x = rows[i], cols[i]
        value = values[y, x]
        y0, y1 = max(0, y - half), min(n, y + half + 1)
        x0, x1 = max(0, x - half), min(m, x + half + 1)
        ny, nx = -1, -1  # a kept neighbour, if any
        for dy, dx in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
            fy, fx = y + dy - top, x + dx - left
            if 0 <= fy < bottom - top and 0 <= fx < right - left and flags[fy, fx]:
                ny, nx = y + dy, x + dx
                break
        larger = False
        if ny >= 0:
            ny0, ny1 = max(0, ny - half), min(n, ny + half + 1)
            nx0, nx1 = max(0, nx - half), min(m, nx + half + 1)
            for yy in range(y0, y1):
                row = values[yy]
                if ny0 <= yy < ny1:  # columns outside the neighbour's window
                    for xx in range(x0, min(x1, nx0)):
                        larger |= row[xx] > value
                    for xx in range(max(x0, nx1), x1):
                        larger |= row[xx] > value
                else:
                    for xx in range(x0, x1):
                        larger |= row[xx] > value
                if larger:
                    break
        else:
            for step in range(2 * half + 1):
                yy = y + (step + 1) // 2 if step % 2 else y - step // 2
                if yy < y0 or yy >= y1:
                    continue
                row = values[yy]
                peak = row[x0]
                for xx in range(x0 + 1, x1):
                    peak = max(peak, row[xx])
                if peak > value:
                    larger = True
                    break
        keep[i] = not larger
        flags[y - top, x - left] = not larger
    return rows[keep], cols[keep]


@numba.njit(cache=True, nogil=True)
def _watershed_candidates(edges, k):
    """Rows and columns (row-major) of ``nms_candidates(edge_distance(edges), k)``.

    For K >= 3 no candidate lies outside the bounding box of the edge pixels: above
    it, say, every edge pixel is below, so the pixel one row up is farther from all
    of them and lies in the window. Windows of pixels in the box reach at most
    K // 2 pixels beyond it, and every edge pixel lies inside, so the exact
    transform is computed only on the box widened by K // 2 (clipped to the image).
    Squared distances are compared: the reference's float64 square roots of these
    integers (< 2**52) are distinct for distinct integers and in the same order.

    Args:
      edges: (H, W) bool edge map, indexed [y, x].
      k: odd window size in pixels.

    Returns:
      rows, cols: (N,) int64 indices.
    """
    h, w = edges.shape
    y0, y1, x0, x1 = h, -1, w, -1  # inclusive bounding box of the edge pixels
    for y in range(h):
        row = edges[y]
        for x in range(w):
            if row[x]:
                y0, y1 = min(y0, y), y
                x0, x1 = min(x0, x), max(x1, x)
    if k == 1 or y1 < 0:
        top, bottom, left, right = 0, h, 0, w
        region = (1, h - 1, 1, w - 1)
    else:
        half = k // 2
        top, bottom = max(0, y0 - half), min(h, y1 + 1 + half)
        left, right = max(0, x0 - half), min(w, x1 + 1 + half)
        region = (max(y0, 1) - top, min(y1 + 1, h - 1) - top, max(x0, 1) - left, min(x1 + 1, w - 1) - left)
    distance = _squared_distance(edges, top, bottom, left, right)
    rows, cols = _nms(distance, k, region[0], region[1], region[2], region[3])
    return rows + top, cols + left


def motion_edges(flow: np.ndarray) -> np.ndarray:
    """Binary motion-edge map of a flow field.

    Sobel gradients (3x3, symmetric borders) of each flow channel, gradient
    magnitude per channel, summed over the channels, divided by
    ``max(max, 0.01)`` and thresholded at ``> 0.1``, all in float64 with the
    reference's operations (see the module docstring), so the map equals the
    reference's bit for bit.

    Args:
      flow: (H, W, 2) flow (dx, dy) in pixels.

    Returns:
      (H, W) bool, True at motion edges; indexed [y, x].
    """
    return _motion_edges(_check_flow(flow))


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
    edges = np.ascontiguousarray(edges, dtype=bool)
    h, w = edges.shape
    return np.sqrt(_squared_distance(edges, 0, h, 0, w)).astype(np.float32)


def nms_candidates(distance: np.ndarray, k: int) -> np.ndarray:
    """Watershed candidates: pixels equal to their K x K local maximum.

    Keeps pixels whose distance equals the maximum over the K x K window centred
    on them (ties kept), is > 0, and that are not on the 1-pixel image border.

    Args:
      distance: (H, W) float distances in pixels, [y, x]; compared in float64
        (float32 input exactly converted).
      k: odd window size in pixels.

    Returns:
      (H, W) bool candidate map, indexed [y, x].
    """
    distance = np.ascontiguousarray(distance, dtype=np.float64)
    h, w = distance.shape
    candidates = np.zeros((h, w), dtype=bool)
    candidates[_nms(distance, k, 1, h - 1, 1, w - 1)] = True
    return candidates


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
    rows, cols = _watershed_candidates(_motion_edges(small), k)
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

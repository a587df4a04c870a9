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
* Edges, fast path: the same sums in float32 on the interleaved flow rows give
  estimates within ``2**-15 * max|flow|`` (+ ``2**-60`` for underflow) of those
  float64 strengths (a bound of the float32 rounding of 6-term sums of values
  up to 8 max|flow|, two squares, a square root and a sum, with a safety factor
  of 2; the tests see at most 5 % of it). Exact float64 strengths are computed
  only where the estimates cannot decide: the pixels within twice that of the
  largest estimate (their largest exact strength is the peak) and those within
  it of the threshold. Flows with a non-finite value or one above 1e15 (float32
  squares could overflow), or with more than 1/16 of the pixels near the peak,
  take the float64 path everywhere.
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
  farther from each of them, and it lies in the window. The sampler works only
  on that box widened by K // 2 (clipped to the image), which holds every edge
  pixel and every window of a pixel in the box.
* The sampler's non-maximum suppression (``_pruned_nms``, K >= 3) computes the
  exact transform only on every 10th row of the box (``_STEP``; fewer for small
  K). Those rows give every pixel an upper bound of its squared distance (to the
  nearest edge pixels found for the sampled rows above and below, and to the
  nearest edge pixel of its own column) and every window a lower bound of its
  maximum (the sampled values in it). Only the few hundred pixels whose upper
  bound reaches the lower bound of their window get exact distances, and are
  compared with their window, where a pixel needs its exact distance only if
  its upper bound exceeds the candidate's value. The public
  ``nms_candidates`` (any float map) compares each maximum of its 3 x 3
  neighbourhood with its K x K window instead.
* In the thinning, the reference also visits the pairs (i, j) with i > j, but by
  then one of the two is always dropped: j was visited first and either was
  dropped or dropped all its close points still kept.

Work arrays of the edge and watershed stages are kept per thread and reused
(``_workspace``): no allocation, zeroing or page faults per call.

Speed: at 384 x 384, K = 81 one sample takes about 0.55 ms on one core of the
(shared, noisy) development machine when its data are in cache, 0.85 ms when
it runs between calls of the SciPy oracle (``scripts/benchmark.py sampler``):
edges 0.12 (0.19) ms, the pruned non-maximum suppression 0.28 (0.41) ms, of
which the nearest edge rows 0.03, the exact sampled rows 0.12, the bounds
0.03 and the window checks 0.09 ms; the rest is thinning, the zeroed (H, W,
2) outputs and Python. The first call in a fresh environment compiles the
kernels (10-15 s); later processes load them from the cache in about 0.5 s.

Numba vectorises a loop only when its indexing is simple: an index
``i + offset`` (offset not a constant, or the loop variable not provably
non-negative) gets a wrap-around check for negative indices that keeps LLVM
from vectorising, so such indices go through ``_index`` (unsigned); loops that
alternate between two arrays are written out, not swapped; the upward pass of
``_nearest_edge_rows`` is a function of its own. These made the loops of the
window maximum 6x and of the upward pass 4x faster.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import threading

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


# The numba kernels below are compiled on first use (cached in __pycache__). Their
# large work arrays come from the calling thread's _workspace, the rest is allocated
# per call, so concurrent calls from several threads (nogil) share no mutable state.
_NO_EDGE = 1 << 24  # column distance of a column without any edge pixel (squares fit int64)
_WORKSPACES = threading.local()  # per-thread work arrays, see _workspace
# Float32 strength estimates: within _ESTIMATE_ERROR * max|flow| + _ESTIMATE_FLOOR of the float64
# strengths (see _motion_edges), for flows with |values| <= _ESTIMATE_FLOW_LIMIT (no overflow).
_ESTIMATE_FLOW_LIMIT = 1e15
_ESTIMATE_ERROR = 2.0**-15
_ESTIMATE_FLOOR = 2.0**-60
_STEP = 10  # most rows between the exact rows of the pruned NMS (fewer: (K // 2) // 3)


@numba.njit(cache=True, nogil=True, inline="always")
def _index(i):
    """Index ``i`` (known to be >= 0) as an unsigned integer.

    Numba wraps negative signed indices around (``a[-1]``), a select per access
    that keeps LLVM from vectorising loops over ``a[i + offset]``; unsigned
    indices skip it (a loop ``b[i] = max(a[i], a[i + s])`` ran 12x faster).
    """
    return numba.uint64(i)


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
def _magnitude(two, a_right, a_mid, a_left, b_right, b_left, d_right, d_mid, d_left):
    """Sobel gradient magnitude of one flow channel at one pixel, in the dtype of ``two``.

    ``a``, ``b``, ``d``: the rows below, at and above the pixel (convolution rows
    y + 1, y, y - 1); right, mid, left: columns x + 1, x, x - 1 (borders
    repeated). The terms are added in the order of SciPy's ``convolve2d`` with
    the kernel's zero terms left out.
    """
    gx = a_right - a_left + two * b_right - two * b_left + d_right - d_left
    gy = a_right + two * a_mid + a_left - d_right - two * d_mid - d_left
    return np.sqrt(gx * gx + gy * gy)


@numba.njit(cache=True, nogil=True)
def _edge_strength(flow, literal, strength):
    """Float64 edge strength, (H, W): per-channel Sobel magnitudes of (H, W, 2) flow, summed.

    Sums the terms in the order of SciPy's ``convolve2d`` (kernel rows, then
    columns, of the flipped kernel) with symmetric borders (row -1 = row 0, row H =
    row H - 1). ``literal`` also adds the kernel's zero terms (``x * 0.0``), which
    only matter for non-finite flow (``inf * 0`` is NaN); otherwise they add a
    zero and change at most the sign of a zero sum, which the squares erase.

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels.
      literal: add the zero terms too.
      strength: (H, W) float64, receives the strengths.

    Returns:
      ``strength.max()`` with NumPy's semantics (NaN if any strength is NaN).
    """
    h, w = flow.shape[0], flow.shape[1]
    rows = np.empty((2, 3, w + 2), np.float64)  # ring of 3 padded rows per channel
    column_max = np.full(w, -np.inf)  # column-wise maxima and NaN flags (vectorised across rows)
    column_nan = np.zeros(w, np.bool_)
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
                    magnitude = np.sqrt(gx * gx + gy * gy)
                else:
                    magnitude = _magnitude(
                        2.0, a[x + 2], a[x + 1], a[x], b[x + 2], b[x], d[x + 2], d[x + 1], d[x]
                    )
                if c == 0:
                    out[x] = magnitude
                else:
                    value = out[x] + magnitude
                    out[x] = value
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
def _strength_at(flow, y, x):
    """The float64 edge strength of ``_edge_strength`` (no zero terms) at pixel (y, x) alone."""
    h, w = flow.shape[0], flow.shape[1]
    below, above = min(y + 1, h - 1), max(y - 1, 0)
    right, left = min(x + 1, w - 1), max(x - 1, 0)
    total = 0.0
    for c in range(2):
        a, b, d = flow[below, :, c], flow[y, :, c], flow[above, :, c]
        magnitude = _magnitude(
            2.0,
            np.float64(a[right]),
            np.float64(a[x]),
            np.float64(a[left]),
            np.float64(b[right]),
            np.float64(b[left]),
            np.float64(d[right]),
            np.float64(d[x]),
            np.float64(d[left]),
        )
        total = magnitude if c == 0 else total + magnitude
    return total


@numba.njit(cache=True, nogil=True)
def _strength_estimate(flow, estimate, row_peak):
    """Float32 edge strengths of (H, W, 2) float32 flow: ``_edge_strength`` in float32.

    Works on the interleaved rows (dx, dy, dx, dy, ...): a pixel's neighbours in
    a channel are two values away, and the two channels' magnitudes of a pixel
    are adjacent. Non-negative float32 values are ordered as their int32 bit
    patterns, so maxima are taken on those (integer maxima vectorise).

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels, C-contiguous.
      estimate: (H, W) float32, receives the estimated strengths.
      row_peak: (H,) int32, receives the bit pattern of the largest estimate
        of each row.

    Returns:
      The largest ``|flow|`` (infinity or NaN if some value is not finite).
    """
    h, w = flow.shape[0], flow.shape[1]
    n = 2 * w
    two = np.float32(2.0)
    flat = flow.reshape((h, n))
    rows = np.empty((3, n + 4), np.float32)  # ring of 3 rows, one pixel repeated each side
    magnitude = np.empty(n, np.float32)
    largest = 0  # bit pattern of the largest |flow| (sign bit cleared)
    for y in range(-1, h):
        if y + 1 < h:
            source, padded = flat[y + 1], rows[(y + 1) % 3]
            bits = source.view(np.int32)
            for j in range(n):
                padded[_index(j + 2)] = source[j]
                largest = max(largest, bits[j] & 0x7FFFFFFF)
            padded[0], padded[1] = source[0], source[1]
            padded[n + 2], padded[n + 3] = source[n - 2], source[n - 1]
        if y < 0:
            continue
        a = rows[min(y + 1, h - 1) % 3]
        b = rows[y % 3]
        d = rows[max(y - 1, 0) % 3]
        for j in range(n):
            right, mid = _index(j + 4), _index(j + 2)
            magnitude[j] = _magnitude(two, a[right], a[mid], a[j], b[right], b[j], d[right], d[mid], d[j])
        out = estimate[y]
        for x in range(w):
            out[x] = magnitude[_index(2 * x)] + magnitude[_index(2 * x + 1)]
        bits = out.view(np.int32)
        peak = 0
        for x in range(w):
            peak = max(peak, bits[x])
        row_peak[y] = peak
    return np.float64(np.array([largest], np.int32).view(np.float32)[0])


@numba.njit(cache=True, nogil=True)
def _motion_edges(flow, estimate, strength, edges):
    """Edge map of (H, W, 2) float32 flow into ``edges`` (H, W) bool; see ``motion_edges``.

    The float32 estimates E(p) of the strengths S(p) (``_strength_estimate``)
    are within ``err = _ESTIMATE_ERROR * max|flow| + _ESTIMATE_FLOOR`` of them.
    The peak is the largest exact S among the pixels with E >= max E - 2 err
    (they include every pixel where S is largest); a pixel with E >= low + err
    is an edge, one with E < low - err is not, and the pixels in between are
    decided by their exact S. Flows with a value that is not finite or above
    ``_ESTIMATE_FLOW_LIMIT`` (float32 squares could overflow), or with more
    than 1/16 of the pixels near the peak, get exact float64 strengths
    everywhere (``_edge_strength``).

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels.
      estimate: (H, W) float32 work space.
      strength: (H, W) float64 work space (used for the exact fallback only).
      edges: (H, W) bool, receives the edge map.

    Returns:
      The inclusive bounding box (top, bottom, left, right) of the edge pixels;
      (H, -1, W, -1) without any.
    """
    h, w = flow.shape[0], flow.shape[1]
    row_peak = np.empty(h, np.int32)
    flow_max = _strength_estimate(flow, estimate, row_peak)
    exact = not flow_max <= _ESTIMATE_FLOW_LIMIT  # NaN too
    error = _ESTIMATE_ERROR * flow_max + _ESTIMATE_FLOOR
    peak = -np.inf
    if not exact:
        peaks = row_peak.view(np.float32)
        near = np.float64(peaks.max()) - 2.0 * error
        count = 0
        for y in range(h):
            if peaks[y] >= near:
                row = estimate[y]
                for x in range(w):
                    if row[x] >= near:
                        peak = max(peak, _strength_at(flow, y, x))
                        count += 1
        exact = count > h * w // 16
    if exact:
        peak = _edge_strength(flow, False, strength)
        if not np.abs(peak) < np.inf:  # a non-finite flow value: add the zero terms too
            peak = _edge_strength(flow, True, strength)
    if 0.01 > peak:  # Python's max(peak, 0.01), NaN kept
        peak = 0.01
    finite = np.abs(peak) < np.inf
    low = _least_above(peak) if finite else 0.0
    high, below = low + error, low - error
    column_any = np.zeros(w, np.bool_)
    top, bottom = h, -1
    for y in range(h):
        flags = edges[y]
        if exact:
            row = strength[y]
            if finite:  # one comparison per pixel, vectorised
                for x in range(w):
                    flags[x] = row[x] >= low
            else:
                for x in range(w):
                    flags[x] = row[x] / peak > 0.1
        else:
            row = estimate[y]
            unsure = False
            for x in range(w):
                flags[x] = row[x] >= high
                unsure |= (row[x] >= below) & (row[x] < high)
            if unsure:
                for x in range(w):
                    if below <= row[x] < high:
                        flags[x] = _strength_at(flow, y, x) >= low
        found = False
        for x in range(w):
            column_any[x] |= flags[x]
            found |= flags[x]
        if found:
            top, bottom = min(top, y), y
    left, right = w, -1
    for x in range(w):
        if column_any[x]:
            left, right = min(left, x), x
    return top, bottom, left, right


@numba.njit(cache=True, nogil=True)
def _envelope_scratch(n):
    """(4, n) int64 work space of ``_lower_envelope`` for rows of n pixels."""
    return np.empty((4, n), np.int64)


@numba.njit(cache=True, nogil=True)
def _lower_envelope(column, out, nearest, scratch):
    """Exact squared distances along one row from the column distances of its pixels.

    The lower envelope of the parabolas ``(x - q)**2 + column[q]**2``
    (Felzenszwalb and Huttenlocher) in int64: the intersections of parabolas are
    compared as fractions by cross-multiplication, so no rounding is involved.

    Args:
      column: (N,) int64 distance in pixels from each pixel of the row to the
        nearest edge pixel of its column; ``>= _NO_EDGE // 2`` for a column
        without any (at least one column must have one).
      out: (N,) int64, receives the squared distances in pixels**2.
      nearest: (N,) int64, receives the column of a nearest edge pixel.
      scratch: (4, N) int64 work space from ``_envelope_scratch``.
    """
    n = len(column)
    v, f, zn, zd = scratch[0], scratch[1], scratch[2], scratch[3]
    # v: columns of the envelope's parabolas; f: their g**2 + q**2; parabola i is
    # lowest from zn[i] / zd[i] on (zd > 0).
    k = -1  # (indices as _index: k >= 0 wherever it indexes)
    for q in range(n):
        gq = column[q]
        if gq >= _NO_EDGE // 2:
            continue
        fq = gq * gq + q * q
        num, den = 0, 1
        while k >= 0:
            top = _index(k)
            num, den = fq - f[top], 2 * (q - v[top])  # intersection with parabola k at num / den
            if k > 0 and num * zd[top] <= zn[top] * den:
                k -= 1
            else:
                break
        k += 1
        top = _index(k)
        v[top], f[top], zn[top], zd[top] = q, fq, num, den
    j = 0  # parabola j is lowest for the integers x > zn[j] / zd[j] (increasing in j)
    for x in range(n):
        while j < k and x * zd[_index(j + 1)] > zn[_index(j + 1)]:  # (multiplied, not divided)
            j += 1
        centre, height = v[_index(j)], f[_index(j)]
        out[x] = height - centre * centre + (x - centre) * (x - centre)
        nearest[x] = centre


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
    scratch = _envelope_scratch(bw)
    nearest = np.empty(bw, np.int64)
    for y in range(bh):
        _lower_envelope(g[y], out[y], nearest, scratch)
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
def _nearest_edge_rows(edges, top, bottom, left, right, nearest):
    """Row of the nearest edge pixel in the same column, on a box of the edge map.

    Args:
      edges: (H, W) bool edge map, indexed [y, x].
      top: first row of the box.
      bottom: end row (exclusive).
      left: first column.
      right: end column (exclusive).
      nearest: (bottom - top, right - left) int32, receives the rows in box
        coordinates; ``-_NO_EDGE`` or ``_NO_EDGE`` in a column of the box without
        any edge pixel.
    """
    bh, bw = bottom - top, right - left
    last = np.full(bw, -_NO_EDGE, np.int32)  # nearest edge row above (or on) the current row
    for y in range(bh):
        flags, row = edges[top + y, left:right], nearest[y]
        for x in range(bw):
            last[x] = y if flags[x] else last[x]
            row[x] = last[x]
    last[:] = _NO_EDGE  # now the nearest edge row below (or on)
    for t in range(bh):
        y = bh - 1 - t
        _nearer_below(edges[top + y, left:right], last, nearest[y], y)


@numba.njit(cache=True, nogil=True)
def _nearer_below(flags, last, row, y):
    """One row of the upward pass of ``_nearest_edge_rows``.

    A function of its own: inlined into the loop over the rows, bottom up, the
    loop over the columns ran 4 times slower (it vectorises badly there).

    Args:
      flags: (N,) bool edge pixels of box row y.
      last: (N,) int32 row of the nearest edge pixel at or below row y + 1;
        updated to row y.
      row: (N,) int32 row of the nearest edge pixel at or above row y; receives
        the nearer of the two (the one above on ties).
      y: box row.
    """
    y = np.int32(y)
    for x in range(len(row)):
        below = y if flags[x] else last[x]
        last[x] = below
        above = row[x]
        row[x] = below if below - y < y - above else above


@numba.njit(cache=True, nogil=True)
def _window_max(values, half, out, scratch):
    """Maximum over the window ``[x - half, x + half]`` (clipped) of every element.

    Doubling on the sequence padded with ``half`` elements of -1 each side
    (``values`` must be >= 0): after step j every element holds the maximum of
    the ``2**j`` elements starting at it, and a window of ``2 * half + 1`` is
    covered by two such runs. Every step is one vectorised pass.

    Args:
      values: (N,) int32 values >= 0.
      half: window radius in elements.
      out: (N,) int32, receives the window maxima.
      scratch: (2, >= N + 2 * half) int32 work space.
    """
    n, m = len(values), 2 * half + 1
    size = n + 2 * half
    first, second = scratch[0], scratch[1]
    for i in range(size):
        first[i] = values[_index(i - half)] if half <= i < half + n else -1
    length = 1  # the latest run: run[i] = max(padded[i : i + length])
    latest_second = False  # (two loops, not swapped arrays: those would not vectorise)
    while 2 * length <= m:
        if latest_second:
            for i in range(size - length):
                first[i] = max(second[i], second[_index(i + length)])
        else:
            for i in range(size - length):
                second[i] = max(first[i], first[_index(i + length)])
        latest_second = not latest_second
        length *= 2
    run = second if latest_second else first
    for x in range(n):  # window [x, x + m - 1] of the padded sequence: two runs
        out[x] = max(run[x], run[_index(x + m - length)])


@numba.njit(cache=True, nogil=True)
def _exact_squared(nearest, bound, y, x):
    """Exact squared distance of box pixel (y, x), given an upper bound on it.

    The minimum of ``(x - q)**2 + (y - nearest[y, q])**2`` over the columns q of the
    row; columns with ``(x - q)**2 >= bound`` cannot lower it, so only
    ``|x - q| < sqrt(bound)`` are visited, nearest first.

    Args:
      nearest: (BH, BW) int64 nearest edge rows from ``_nearest_edge_rows``.
      bound: an upper bound of the squared distance in pixels**2.
      y: row in the box.
      x: column in the box.

    Returns:
      The squared distance in pixels**2 (int64).
    """
    row = nearest[y]
    n = len(row)
    best = min(bound, (y - row[x]) * (y - row[x]))
    r = 1
    while r * r < best:
        if x - r >= 0:
            best = min(best, r * r + (y - row[x - r]) * (y - row[x - r]))
        if x + r < n:
            best = min(best, r * r + (y - row[x + r]) * (y - row[x + r]))
        if x - r < 0 and x + r >= n:
            break
        r += 1
    return best


@numba.njit(cache=True, nogil=True)
def _upper_bound(nearest, edge_row, edge_dx2, i, y, x):
    """Upper bound of the squared distance of box pixel (y, x) in row block i (not its sampled row).

    The squared distances to the nearest edge pixels of the sampled rows above
    (``i``) and below (``i + 1``) in the same column, and to the nearest edge pixel
    of its own column.
    """
    up, down, own = y - edge_row[i, x], y - edge_row[i + 1, x], y - nearest[y, x]
    return min(min(up * up + edge_dx2[i, x], down * down + edge_dx2[i + 1, x]), own * own)


@numba.njit(cache=True, nogil=True)
def _pruned_nms(edges, k, top, bottom, left, right, r0, r1, c0, c1, step, work32, work8):
    """``_nms`` of the squared distance transform on a box, computing few distances exactly.

    Exact squared distances (``_lower_envelope``) only on every ``step``-th row of
    the box and its last row, the sampled rows; they also give each of their
    pixels a nearest edge pixel. Row block i is sampled row i and the rows up to
    the next one. Any other pixel p has an upper bound U(p) of its squared
    distance (``_upper_bound``), and per block and column the largest U is
    bounded from the two ends of the block (a squared distance to a fixed pixel
    is convex along a column). A lower bound L(p) of the maximum over p's K x K
    window is the largest sampled value in the windows of all rows of p's block.
    p can only be a candidate if U(p) >= L(p) (a few hundred pixels at
    384 x 384, K = 81, found block by block and column by column); those get
    exact values (``_exact_squared``, starting from U(p)) and are compared with
    their window, where a pixel q needs its exact value only when U(q) exceeds
    p's value (skipping whole blocks and columns by their largest U first).
    Every decision is the one of the full transform.

    Args:
      edges: (H, W) bool edge map with at least one edge pixel inside the box.
      k: odd window size in pixels, >= 3.
      top: first row of the box; the box must hold every edge pixel and every
        image-clipped window of the region searched, and have sides < 2**15.
      bottom: end row (exclusive).
      left: first column.
      right: end column (exclusive).
      r0: first row of the region searched, in box coordinates.
      r1: end row (exclusive).
      c0: first column.
      c1: end column (exclusive).
      step: rows between sampled rows, >= 1.
      work32: (>= 2 * BH * BW,) int32 work space (BH, BW: the box's sides).
      work8: (>= BH * BW,) bool work space.

    Returns:
      rows, cols: (P,) int64 box indices of the candidates, row-major.
    """
    bh, bw = bottom - top, right - left
    half = k // 2
    if r1 <= r0 or c1 <= c0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nearest = work32[: bh * bw].reshape((bh, bw))
    _nearest_edge_rows(edges, top, bottom, left, right, nearest)
    sampled = np.arange(0, bh, step)
    if sampled[-1] != bh - 1:
        sampled = np.append(sampled, bh - 1)
    ns = len(sampled)
    # Squared distances are below bh**2 + bw**2 < 2**31; products are taken in int64.
    value = work32[bh * bw : 2 * bh * bw].reshape((bh, bw))  # exact squared distances where known
    known = work8[: bh * bw].reshape((bh, bw))
    known[:] = False
    edge_row = np.empty((ns, bw), np.int32)  # a nearest edge pixel of each sampled pixel:
    edge_dx2 = np.empty((ns, bw), np.int32)  # its row and squared column offset
    window = np.empty((ns, bw), np.int32)  # sampled values: maxima over the window's columns
    window_scratch = np.empty((2, bw + 2 * half), np.int32)
    scratch = _envelope_scratch(bw)
    column = np.empty(bw, np.int64)
    centre = np.empty(bw, np.int64)
    for i in range(ns):
        y = sampled[i]
        near = nearest[y]
        for x in range(bw):
            column[x] = abs(y - near[x])
        _lower_envelope(column, value[y], centre, scratch)
        known[y] = True
        for x in range(bw):
            edge_row[i, x] = near[centre[x]]
            edge_dx2[i, x] = (x - centre[x]) * (x - centre[x])
        _window_max(value[y], half, window[i], window_scratch)
    # Row block i: rows sampled[i] .. sampled[i + 1] - 1 (the last: row bh - 1).
    peak = np.empty((ns, bw), np.int32)  # per block and column, an upper bound of all values
    peak_window = np.empty((ns, bw), np.int32)  # its maxima over the window's columns
    lower = np.full((ns, bw), -1, np.int32)  # per block and column, the lower bound L
    found = [0][:0]  # box pixels y * bw + x with U >= L
    for i in range(ns):
        first = sampled[i]
        last = sampled[i + 1] - 1 if i + 1 < ns else bh - 1
        block_lower, block_peak = lower[i], peak[i]
        for j in range(ns):  # sampled rows inside the window of every row of the block
            if last - half <= sampled[j] <= first + half:
                window_j = window[j]
                for x in range(bw):
                    block_lower[x] = max(block_lower[x], window_j[x])
        block_peak[:] = value[first]
        if last > first:
            above_row, below_row, above_dx2, below_dx2 = (
                edge_row[i],
                edge_row[i + 1],
                edge_dx2[i],
                edge_dx2[i + 1],
            )
            near, far = first + 1, last
            for x in range(bw):  # the bounds from above and below peak at an end of the block
                a, b, c, d = near - above_row[x], far - above_row[x], near - below_row[x], far - below_row[x]
                from_above = max(a * a, b * b) + above_dx2[x]
                from_below = max(c * c, d * d) + below_dx2[x]
                block_peak[x] = max(block_peak[x], min(from_above, from_below))
        _window_max(block_peak, half, peak_window[i], window_scratch)
        rows_begin, rows_end = max(first, r0), min(last + 1, r1)
        if rows_begin >= rows_end:
            continue
        for x in range(c0, c1):
            if block_peak[x] == 0 or block_peak[x] < block_lower[x]:
                continue
            for y in range(rows_begin, rows_end):
                u = value[y, x] if y == first else _upper_bound(nearest, edge_row, edge_dx2, i, y, x)
                if u > 0 and u >= block_lower[x]:
                    found.append(y * bw + x)
    n = len(found)
    keep = np.zeros(n, np.bool_)
    for c in range(n):
        y, x = divmod(found[c], bw)
        block = np.searchsorted(sampled, y, side="right") - 1
        if not known[y, x]:
            value[y, x] = _exact_squared(
                nearest, _upper_bound(nearest, edge_row, edge_dx2, block, y, x), y, x
            )
            known[y, x] = True
        v = value[y, x]
        if v == 0 or v < lower[block, x]:
            continue
        y0, y1 = max(0, y - half), min(bh, y + half + 1)
        x0, x1 = max(0, x - half), min(bw, x + half + 1)
        larger = False
        for t in range(2 * ns):  # row blocks nearest first
            i = block + (t + 1) // 2 if t % 2 else block - t // 2
            if i < 0 or i >= ns:
                continue
            first = sampled[i]
            last = sampled[i + 1] - 1 if i + 1 < ns else bh - 1
            if last < y0 or first >= y1 or (y0 <= first and last < y1 and peak_window[i, x] <= v):
                continue
            block_peak = peak[i]
            for xx in range(x0, x1):
                if block_peak[xx] <= v:
                    continue
                for yy in range(max(first, y0), min(last + 1, y1)):
                    if known[yy, xx]:
                        q = value[yy, xx]
                    else:
                        q = _upper_bound(nearest, edge_row, edge_dx2, i, yy, xx)
                        if q > v:
                            q = _exact_squared(nearest, q, yy, xx)
                            value[yy, xx] = q
                            known[yy, xx] = True
                    if q > v:
                        larger = True
                        break
                if larger:
                    break
            if larger:
                break
        keep[c] = not larger
    kept = np.sort(np.array(found, np.int64)[keep])
    return kept // bw, kept % bw


@numba.njit(cache=True, nogil=True)
def _watershed_kernel(edges, box, k, work32, work8):
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
      box: inclusive bounding box (top, bottom, left, right) of the edge pixels,
        (H, -1, W, -1) without any (as ``_motion_edges`` returns it).
      k: odd window size in pixels.
      work32: (>= 2 * H * W,) int32 work space.
      work8: (>= H * W,) bool work space.

    Returns:
      rows, cols: (N,) int64 indices.
    """
    h, w = edges.shape
    y0, y1, x0, x1 = box
    if k == 1 or y1 < 0 or max(h, w) >= 1 << 15:  # (int32 squared distances below)
        rows, cols = _nms(_squared_distance(edges, 0, h, 0, w), k, 1, h - 1, 1, w - 1)
        return rows, cols
    half = k // 2
    top, bottom = max(0, y0 - half), min(h, y1 + 1 + half)
    left, right = max(0, x0 - half), min(w, x1 + 1 + half)
    r0, r1 = max(y0, 1) - top, min(y1 + 1, h - 1) - top
    c0, c1 = max(x0, 1) - left, min(x1 + 1, w - 1) - left
    step = max(1, min(_STEP, half // 3))
    rows, cols = _pruned_nms(edges, k, top, bottom, left, right, r0, r1, c0, c1, step, work32, work8)
    return rows + top, cols + left


def _workspace(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A work array of the calling thread, reused across calls (no page faults, no zeroing).

    Its contents are left over from an earlier call; it stays valid until the
    thread asks for ``name`` again.

    Args:
      name: which work array.
      shape: its shape.
      dtype: its dtype.

    Returns:
      A C-contiguous array of that shape and dtype.
    """
    buffers = _WORKSPACES.__dict__.setdefault("buffers", {})
    size = math.prod(shape) * np.dtype(dtype).itemsize
    buffer = buffers.get(name)
    if buffer is None or len(buffer) < size:
        buffer = buffers[name] = np.empty(size, np.uint8)
    return buffer[:size].view(dtype).reshape(shape)


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
    flow = _check_flow(flow)
    shape = flow.shape[:2]
    edges = np.empty(shape, bool)
    _motion_edges(
        flow, _workspace("estimate", shape, np.float32), _workspace("strength", shape, np.float64), edges
    )
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


@numba.njit(cache=True, nogil=True)
def _thin(first, second, d, rng):
    """Kept points of ``thin_candidates``.

    When the points are sorted by their first coordinate, the later points close
    to point i all come before the first one at least ``d`` away in it.

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
    kept = _thin(np.ascontiguousarray(coords[:, 0]), np.ascontiguousarray(coords[:, 1]), float(d), rng)
    return points[kept]


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
def _watershed(flow, k, ds, rng, estimate, strength, edges, work32, work8):
    """``watershed_points`` in one compiled call: edges, candidates, thinning.

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels, C-contiguous, already
        subsampled by ``ds``.
      k: odd non-maximum-suppression window in pixels.
      ds: subsampling factor; the points are multiplied by it.
      rng: ``np.random.Generator`` of the thinning.
      estimate: (H, W) float32 work space.
      strength: (H, W) float64 work space.
      edges: (H, W) bool work space.
      work32: (2 H W,) int32 work space.
      work8: (H W,) bool work space.

    Returns:
      (N, 2) int32 (x, y) points in full-resolution pixels.
    """
    box = _motion_edges(flow, estimate, strength, edges)
    rows, cols = _watershed_kernel(edges, box, k, work32, work8)
    kept = _thin(rows, cols, (k - 1) / 2, rng)
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
    flow = _check_flow(flow)
    ds = max(1, max(flow.shape[:2]) // 400)
    small = np.ascontiguousarray(flow[::ds, ::ds]) if ds > 1 else flow
    shape = small.shape[:2]
    size = math.prod(shape)
    return _watershed(
        small,
        k,
        ds,
        rng,
        _workspace("estimate", shape, np.float32),
        _workspace("strength", shape, np.float64),
        _workspace("edges", shape, np.bool_),
        _workspace("work32", (2 * size,), np.int32),
        _workspace("work8", (size,), np.bool_),
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
    sparse, mask, _ = _guidance(_check_flow(flow), points)
    return sparse, mask


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


def _guidance(flow: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``points_to_guidance`` of a checked flow, and the number of distinct points."""
    h, w = flow.shape[:2]
    sparse = np.zeros((h, w, 2), np.float32)
    mask = np.zeros((h, w, 2), np.float32)
    count = _scatter(flow, np.asarray(points, np.int64).reshape(-1, 2), sparse, mask)
    if count < 0:
        raise ValueError(f"guidance points outside the {w}x{h} image")
    return sparse, mask, count


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
    return _guidance(flow, sample_points(flow, config, rng))

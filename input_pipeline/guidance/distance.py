"""Exact Euclidean distance transform of the edge map, in integers.

SciPy's ``distance_transform_edt`` (step 3 of the original's watershed
strategy) returns the float64 square root of the integer squared distance to
the nearest edge pixel; the kernels here compute those integers exactly in
int64, so comparisons of distances decide as the original's (see
``docs/guidance_exactness.md``). The non-maximum suppression (``nms``) uses
them on a box and row by row.
"""

from __future__ import annotations

import numba
import numpy as np

from input_pipeline.guidance.common import Box, index

NO_EDGE = 1 << 24  # column distance of a column without any edge pixel (squares fit int64)


@numba.njit(cache=True, nogil=True)
def envelope_scratch(n):
    """(4, n) int64 work space of ``lower_envelope`` for rows of n pixels."""
    return np.empty((4, n), np.int64)


@numba.njit(cache=True, nogil=True)
def lower_envelope(column, out, nearest, scratch):
    """Exact squared distances along one row from the column distances of its pixels.

    The lower envelope of the parabolas ``(x - q)**2 + column[q]**2``
    (Felzenszwalb and Huttenlocher) in int64: the intersections of parabolas are
    compared as fractions by cross-multiplication, so no rounding is involved.

    Args:
      column: (N,) int64 distance in pixels from each pixel of the row to the
        nearest edge pixel of its column; ``>= NO_EDGE // 2`` for a column
        without any (at least one column must have one).
      out: (N,) int64, receives the squared distances in pixels**2.
      nearest: (N,) int64, receives the column of a nearest edge pixel.
      scratch: (4, N) int64 work space from ``envelope_scratch``.
    """
    n = len(column)
    v, f, zn, zd = scratch[0], scratch[1], scratch[2], scratch[3]
    # v: columns of the envelope's parabolas; f: their g**2 + q**2; parabola i is
    # lowest from zn[i] / zd[i] on (zd > 0).
    k = -1  # (indices as index(): k >= 0 wherever it indexes)
    for q in range(n):
        gq = column[q]
        if gq >= NO_EDGE // 2:
            continue
        fq = gq * gq + q * q
        num, den = 0, 1
        while k >= 0:
            top = index(k)
            num, den = fq - f[top], 2 * (q - v[top])  # intersection with parabola k at num / den
            if k > 0 and num * zd[top] <= zn[top] * den:
                k -= 1
            else:
                break
        k += 1
        top = index(k)
        v[top], f[top], zn[top], zd[top] = q, fq, num, den
    j = 0  # parabola j is lowest for the integers x > zn[j] / zd[j] (increasing in j)
    for x in range(n):
        while j < k and x * zd[index(j + 1)] > zn[index(j + 1)]:  # (multiplied, not divided)
            j += 1
        centre, height = v[index(j)], f[index(j)]
        out[x] = height - centre * centre + (x - centre) * (x - centre)
        nearest[x] = centre


@numba.njit(cache=True, nogil=True)
def squared_distance(edges, box):
    """Exact squared Euclidean distance to the nearest edge pixel, on a box of the edge map.

    Distances within each column of the box, then the lower envelope of the
    parabolas along each row (``lower_envelope``), all in int64. Without any
    edge pixel in the box, SciPy's virtual edge pixel at image row -1, column 0
    is used (only meaningful for the whole image).

    Args:
      edges: (H, W) bool edge map, indexed [y, x].
      box: the ``Box`` of the edge map to transform.

    Returns:
      (box rows, box columns) int64 squared distances in pixels**2.
    """
    top, bottom, left, right = box
    bh, bw = bottom - top, right - left
    out = np.empty((max(bh, 0), max(bw, 0)), np.int64)
    if bh <= 0 or bw <= 0:
        return out
    g = np.empty((bh, bw), np.int64)
    for x in range(bw):
        g[0, x] = 0 if edges[top, left + x] else NO_EDGE
    for y in range(1, bh):
        for x in range(bw):
            g[y, x] = 0 if edges[top + y, left + x] else g[y - 1, x] + 1
    for y in range(bh - 2, -1, -1):
        for x in range(bw):
            g[y, x] = min(g[y, x], g[y + 1, x] + 1)
    if g[0].min() >= NO_EDGE // 2:
        for y in range(bh):
            for x in range(bw):
                out[y, x] = (top + y + 1) ** 2 + (left + x) ** 2
        return out
    scratch = envelope_scratch(bw)
    nearest = np.empty(bw, np.int64)
    for y in range(bh):
        lower_envelope(g[y], out[y], nearest, scratch)
    return out


def edge_distance(edges: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance in pixels from every pixel to the nearest edge pixel.

    Equals ``scipy.ndimage.distance_transform_edt(1 - edges)`` rounded to float32,
    including its behaviour without any edge pixel: SciPy then measures the
    distance to a virtual edge pixel at row -1, column 0, i.e. the distance at
    (y, x) is ``sqrt((y + 1)**2 + x**2)``. Distinct squared distances below
    ``2 * 800**2`` keep distinct, ordered float32 roots.

    Args:
      edges: (H, W) bool edge map, indexed [y, x].

    Returns:
      (H, W) float32 distances; 0 at edge pixels.
    """
    edges = np.ascontiguousarray(edges, dtype=bool)
    h, w = edges.shape
    return np.sqrt(squared_distance(edges, Box(0, h, 0, w))).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def nearest_edge_rows(edges, box, nearest):
    """Row of the nearest edge pixel in the same column, on a box of the edge map.

    Args:
      edges: (H, W) bool edge map, indexed [y, x].
      box: the ``Box`` of the edge map.
      nearest: (box rows, box columns) int32, receives the rows in box
        coordinates; ``-NO_EDGE`` or ``NO_EDGE`` in a column of the box without
        any edge pixel.
    """
    top, bottom, left, right = box
    bh, bw = bottom - top, right - left
    last = np.full(bw, -NO_EDGE, np.int32)  # nearest edge row above (or on) the current row
    for y in range(bh):
        flags, row = edges[top + y, left:right], nearest[y]
        for x in range(bw):
            last[x] = y if flags[x] else last[x]
            row[x] = last[x]
    last[:] = NO_EDGE  # now the nearest edge row below (or on)
    for t in range(bh):
        y = bh - 1 - t
        _nearer_below(edges[top + y, left:right], last, nearest[y], y)


@numba.njit(cache=True, nogil=True)
def _nearer_below(flags, last, row, y):
    """One row of the upward pass of ``nearest_edge_rows``.

    A function of its own: inlined into the loop over the rows, bottom up, the
    loop over the columns vectorises badly.

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
def exact_squared(nearest, bound, y, x):
    """Exact squared distance of box pixel (y, x), given an upper bound on it.

    The minimum of ``(x - q)**2 + (y - nearest[y, q])**2`` over the columns q of the
    row; columns with ``(x - q)**2 >= bound`` cannot lower it, so only
    ``|x - q| < sqrt(bound)`` are visited, nearest first.

    Args:
      nearest: (BH, BW) int32 nearest edge rows from ``nearest_edge_rows``.
      bound: an upper bound of the squared distance in pixels**2.
      y: row in the box.
      x: column in the box.

    Returns:
      The squared distance in pixels**2.
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

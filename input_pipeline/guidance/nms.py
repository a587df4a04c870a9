"""Non-maximum suppression of the distance to the motion edges: the watershed candidates.

Steps 4-6 of the original's watershed strategy (``flow_sampler`` in its
``utils/data_utils.py``): pixels equal to the maximum of their K x K window, off the 1-pixel image
border, with a distance > 0. ``nms_candidates`` does it on any map;
``watershed_candidates``, the sampler's, on the exact squared distances of an
edge map, most of which it never computes (``_pruned_nms``). Why its decisions
are the original's: ``docs/guidance_exactness.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from input_pipeline.guidance.common import Box, index, workspace
from input_pipeline.guidance.distance import (
    envelope_scratch,
    exact_squared,
    lower_envelope,
    nearest_edge_rows,
    squared_distance,
)

_STEP = 10  # most rows between the exact rows of the pruned NMS (fewer: (K // 2) // 3)


class NmsWork(NamedTuple):
    """Flat work arrays of ``_pruned_nms``, each at least as long as the image has pixels.

    Attributes:
      nearest: int32, the nearest edge rows of the box's columns.
      value: int32, exact squared distances where known.
      known: bool, where ``value`` is known.
    """

    nearest: np.ndarray
    value: np.ndarray
    known: np.ndarray


def nms_work(size: int) -> NmsWork:
    """The calling thread's ``NmsWork`` for images of ``size`` pixels (see ``common.workspace``)."""
    return NmsWork(
        workspace("nms_nearest", (size,), np.int32),
        workspace("nms_value", (size,), np.int32),
        workspace("nms_known", (size,), np.bool_),
    )


@numba.njit(cache=True, nogil=True)
def _nms(values, k, region):
    """Pixels of a region that equal the maximum of their K x K window and are > 0.

    The window is centred on the pixel and clipped to the array, which equals
    ``scipy.ndimage.maximum_filter(size=k, mode='reflect')``: reflection only
    brings in pixels of the clipped window. For K >= 3 a kept pixel is also the
    maximum of its 3 x 3 neighbourhood (one vectorised pass over the region), so
    only those pixels are compared with their K x K window.

    Args:
      values: (N, M) array (int64 squared distances or float distances), [y, x].
      k: odd window size in pixels.
      region: the ``Box`` searched; it must leave out the array's outermost
        row and column on every side.

    Returns:
      rows, cols: (P,) int64 indices of the kept pixels, in row-major order.
    """
    n, m = values.shape
    top, bottom, left, right = region
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
    candidates[_nms(distance, k, Box(1, h - 1, 1, w - 1))] = True
    return candidates


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
        first[i] = values[index(i - half)] if half <= i < half + n else -1
    length = 1  # the latest run: run[i] = max(padded[i : i + length])
    latest_second = False  # (two loops, not swapped arrays: those would not vectorise)
    while 2 * length <= m:
        if latest_second:
            for i in range(size - length):
                first[i] = max(second[i], second[index(i + length)])
        else:
            for i in range(size - length):
                second[i] = max(first[i], first[index(i + length)])
        latest_second = not latest_second
        length *= 2
    run = second if latest_second else first
    for x in range(n):  # window [x, x + m - 1] of the padded sequence: two runs
        out[x] = max(run[x], run[index(x + m - length)])


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
def _pruned_nms(edges, k, box, region, step, work):
    """``_nms`` of the squared distance transform on a box, computing few distances exactly.

    Exact squared distances (``lower_envelope``) only on every ``step``-th row of
    the box and its last row, the sampled rows; they also give each of their
    pixels a nearest edge pixel. Row block i is sampled row i and the rows up to
    the next one. Any other pixel p has an upper bound U(p) of its squared
    distance (``_upper_bound``), and per block and column the largest U is
    bounded from the two ends of the block (a squared distance to a fixed pixel
    is convex along a column). A lower bound L(p) of the maximum over p's K x K
    window is the largest sampled value in the windows of all rows of p's block.
    p can only be a candidate if U(p) >= L(p), found block by block and column
    by column; those pixels get exact values (``exact_squared``, starting from
    U(p)) and are compared with their window, where a pixel q needs its exact
    value only when U(q) exceeds p's value (skipping whole blocks and columns by
    their largest U first). Every decision is the one of the full transform.

    Args:
      edges: (H, W) bool edge map with at least one edge pixel inside the box.
      k: odd window size in pixels, >= 3.
      box: the ``Box`` of the image transformed; it must hold every edge pixel
        and every image-clipped window of the region searched, and have sides
        < 2**15.
      region: the ``Box`` searched, in box coordinates.
      step: rows between sampled rows, >= 1.
      work: ``NmsWork`` of at least the box's size.

    Returns:
      rows, cols: (P,) int64 box indices of the candidates, row-major.
    """
    bh, bw = box.bottom - box.top, box.right - box.left
    r0, r1, c0, c1 = region
    half = k // 2
    if r1 <= r0 or c1 <= c0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nearest = work.nearest[: bh * bw].reshape((bh, bw))
    nearest_edge_rows(edges, box, nearest)
    sampled = np.arange(0, bh, step)
    if sampled[-1] != bh - 1:
        sampled = np.append(sampled, bh - 1)
    ns = len(sampled)
    # Squared distances are below bh**2 + bw**2 < 2**31; products are taken in int64.
    value = work.value[: bh * bw].reshape((bh, bw))  # exact squared distances where known
    known = work.known[: bh * bw].reshape((bh, bw))
    known[:] = False
    edge_row = np.empty((ns, bw), np.int32)  # a nearest edge pixel of each sampled pixel:
    edge_dx2 = np.empty((ns, bw), np.int32)  # its row and squared column offset
    window = np.empty((ns, bw), np.int32)  # sampled values: maxima over the window's columns
    window_scratch = np.empty((2, bw + 2 * half), np.int32)
    scratch = envelope_scratch(bw)
    column = np.empty(bw, np.int64)
    centre = np.empty(bw, np.int64)
    for i in range(ns):
        y = sampled[i]
        near = nearest[y]
        for x in range(bw):
            column[x] = abs(y - near[x])
        lower_envelope(column, value[y], centre, scratch)
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
            value[y, x] = exact_squared(nearest, _upper_bound(nearest, edge_row, edge_dx2, block, y, x), y, x)
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
                            q = exact_squared(nearest, q, yy, xx)
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
def watershed_candidates(edges, box, k, work):
    """Rows and columns (row-major) of ``nms_candidates(edge_distance(edges), k)``.

    For K >= 3 no candidate lies outside the bounding box of the edge pixels
    (``docs/guidance_exactness.md``), so the exact transform is needed only on
    that box widened by K // 2 (clipped to the image), which holds every window
    of a pixel in the box. Squared distances are compared: the original's
    float64 square roots of these integers (< 2**52) are distinct for distinct
    integers and in the same order.

    Args:
      edges: (H, W) bool edge map, indexed [y, x].
      box: the ``Box`` bounding the edge pixels, empty without any (as
        ``edges.motion_edges_into`` returns it).
      k: odd window size in pixels.
      work: ``NmsWork`` of at least H * W pixels.

    Returns:
      rows, cols: (N,) int64 indices.
    """
    h, w = edges.shape
    if k == 1 or box.bottom <= box.top or max(h, w) >= 1 << 15:  # (int32 squared distances below)
        return _nms(squared_distance(edges, Box(0, h, 0, w)), k, Box(1, h - 1, 1, w - 1))
    half = k // 2
    top, bottom = max(0, box.top - half), min(h, box.bottom + half)
    left, right = max(0, box.left - half), min(w, box.right + half)
    r0, r1 = max(box.top, 1) - top, min(box.bottom, h - 1) - top  # searched: off the image border
    c0, c1 = max(box.left, 1) - left, min(box.right, w - 1) - left
    region = Box(r0, r1, c0, c1)
    step = max(1, min(_STEP, half // 3))
    rows, cols = _pruned_nms(edges, k, Box(top, bottom, left, right), region, step, work)
    return rows + top, cols + left

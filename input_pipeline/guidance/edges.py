"""Motion edges: the flow's Sobel edge strengths in float32, as the original computes them, thresholded.

The original (``flow_sampler`` in its ``utils/data_utils.py``) convolves each float32 flow
channel with a float32 Sobel pair by ``scipy.signal.convolve2d(mode='same',
boundary='symm')``, adds the two channels' gradient magnitudes, divides by
``max(max, 0.01)`` and keeps ``> 0.1``, all in float32. The kernels below do
the same float32 operations in the same order, so the edge map is the
original's bit for bit; ``docs/guidance_exactness.md`` gives the argument.
"""

from __future__ import annotations

import numba
import numpy as np

from input_pipeline.flow_io import check_flow
from input_pipeline.guidance.common import Box, index, workspace

# Largest |flow| of the fast kernel: its Sobel sums (at most 8 |flow|) and their squares stay
# finite in float32, so no strength is infinite or NaN.
_FLOW_LIMIT = 1e18


@numba.njit(cache=True, nogil=True)
def _strengths(flow, strength, row_peak):
    """Edge strengths of finite flow, (H, W) float32: Sobel magnitudes of both channels, summed.

    Per channel ``sqrt(gx * gx + gy * gy)`` with the Sobel sums taken in the
    order of SciPy's float32 ``convolve2d`` (kernel rows, then columns, of the
    flipped kernel; symmetric borders repeat the edge pixel), leaving out the
    kernel's zero terms: they add a zero, which changes at most the sign of a
    zero sum (erased by the square), unless the flow is not finite. Works on the
    interleaved rows (dx, dy, dx, dy, ...): a pixel's neighbours in a channel are
    two values away, and the two magnitudes of a pixel are adjacent.
    Non-negative float32 values are ordered as their int32 bit patterns, so the
    maxima are taken on those (integer maxima vectorise).

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels, C-contiguous.
      strength: (H, W) float32, receives the strengths; exact (the original's)
        where the returned maximum is at most ``_FLOW_LIMIT``.
      row_peak: (H,) int32, receives the bit pattern of the largest strength of
        each row.

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
                padded[index(j + 2)] = source[j]
                largest = max(largest, bits[j] & 0x7FFFFFFF)
            padded[0], padded[1] = source[0], source[1]
            padded[n + 2], padded[n + 3] = source[n - 2], source[n - 1]
        if y < 0:
            continue
        a = rows[min(y + 1, h - 1) % 3]  # convolution rows y + 1, y, y - 1 (kernel rows 0, 1, 2)
        b = rows[y % 3]
        d = rows[max(y - 1, 0) % 3]
        for j in range(n):  # columns x + 1, x, x - 1 of the channel: j + 4, j + 2, j
            right, mid = index(j + 4), index(j + 2)
            gx = a[right] - a[j] + two * b[right] - two * b[j] + d[right] - d[j]
            gy = a[right] + two * a[mid] + a[j] - d[right] - two * d[mid] - d[j]
            magnitude[j] = np.sqrt(gx * gx + gy * gy)
        out = strength[y]
        for x in range(w):
            out[x] = magnitude[index(2 * x)] + magnitude[index(2 * x + 1)]
        bits = out.view(np.int32)
        peak = 0
        for x in range(w):
            peak = max(peak, bits[x])
        row_peak[y] = peak
    return np.float64(np.array([largest], np.int32).view(np.float32)[0])


@numba.njit(cache=True, nogil=True)
def _load_row(flow, y, rows, slot):
    """Copies flow row y into ``rows[c, slot, 1:-1]`` with one repeated pixel each side."""
    w = flow.shape[1]
    first, second = rows[0, slot], rows[1, slot]
    for x in range(w):
        first[x + 1] = flow[y, x, 0]
        second[x + 1] = flow[y, x, 1]
    first[0], first[w + 1] = first[1], first[w]
    second[0], second[w + 1] = second[1], second[w]


@numba.njit(cache=True, nogil=True)
def _literal_strengths(flow, strength):
    """Edge strengths of any flow, (H, W) float32: SciPy's ``convolve2d`` term for term.

    As ``_strengths``, but all nine terms of each Sobel sum, zero terms
    included: for flow that is not finite (``inf * 0`` is NaN) or so large that
    the sums or squares overflow.

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels.
      strength: (H, W) float32, receives the strengths.

    Returns:
      The largest strength with NumPy's semantics (NaN if any strength is NaN).
    """
    h, w = flow.shape[0], flow.shape[1]
    zero, one, two = np.float32(0.0), np.float32(1.0), np.float32(2.0)
    rows = np.empty((2, 3, w + 2), np.float32)  # ring of 3 padded rows per channel
    column_max = np.full(w, -np.inf, np.float32)  # column maxima and NaN flags (vectorised across rows)
    column_nan = np.zeros(w, np.bool_)
    _load_row(flow, 0, rows, 0)
    for y in range(h):
        if y + 1 < h:
            _load_row(flow, y + 1, rows, (y + 1) % 3)
        out = strength[y]
        for c in range(2):
            a = rows[c, min(y + 1, h - 1) % 3]  # convolution rows y + 1, y, y - 1
            b = rows[c, y % 3]
            d = rows[c, max(y - 1, 0) % 3]
            for x in range(w):  # padded columns x + 2, x + 1, x are image columns x + 1, x, x - 1
                gx = zero
                gx += a[x + 2] * one
                gx += a[x + 1] * zero
                gx += a[x] * -one
                gx += b[x + 2] * two
                gx += b[x + 1] * zero
                gx += b[x] * -two
                gx += d[x + 2] * one
                gx += d[x + 1] * zero
                gx += d[x] * -one
                gy = zero
                gy += a[x + 2] * one
                gy += a[x + 1] * two
                gy += a[x] * one
                gy += b[x + 2] * zero
                gy += b[x + 1] * zero
                gy += b[x] * zero
                gy += d[x + 2] * -one
                gy += d[x + 1] * -two
                gy += d[x] * -one
                magnitude = np.sqrt(gx * gx + gy * gy)
                if c == 0:
                    out[x] = magnitude
                else:
                    value = out[x] + magnitude
                    out[x] = value
                    column_max[x] = value if value > column_max[x] else column_max[x]
                    column_nan[x] |= value != value
    peak = np.float32(-np.inf)
    for x in range(w):
        if column_nan[x]:
            return np.float32(np.nan)
        peak = max(peak, column_max[x])
    return peak


@numba.njit(cache=True, nogil=True)
def _least_above(divisor):
    """The least float32 s with ``s / divisor > 0.1`` in float32 (divisor float32, positive, finite).

    Rounded division is monotone in the dividend, so the comparison holds
    exactly for the s >= this value: one comparison per pixel, not a division.
    """
    tenth = np.float32(0.1)
    low = tenth * divisor
    while low / divisor > tenth:
        low = np.nextafter(low, np.float32(-np.inf))
    while not low / divisor > tenth:
        low = np.nextafter(low, np.float32(np.inf))
    return low


@numba.njit(cache=True, nogil=True)
def motion_edges_into(flow, strength, edges):
    """Edge map of (H, W, 2) float32 flow into ``edges``; see ``motion_edges``.

    The strengths are divided by ``max(peak, 0.01)`` and compared with ``0.1``,
    both in float32 as NumPy does for a float32 array and a Python float; for a
    finite divisor as one comparison with ``_least_above(divisor)``.

    Args:
      flow: (H, W, 2) float32 flow (dx, dy) in pixels, C-contiguous.
      strength: (H, W) float32 work space; receives the edge strengths.
      edges: (H, W) bool, receives the edge map.

    Returns:
      The ``Box`` bounding the edge pixels; empty (H, 0, W, 0) without any.
    """
    h, w = flow.shape[0], flow.shape[1]
    row_peak = np.empty(h, np.int32)
    flow_max = _strengths(flow, strength, row_peak)
    if flow_max <= _FLOW_LIMIT:
        peak = row_peak.view(np.float32).max()
    else:  # infinite or NaN strengths are possible
        peak = _literal_strengths(flow, strength)
    floor, tenth = np.float32(0.01), np.float32(0.1)
    divisor = floor if floor > peak else peak  # Python's max(peak, 0.01), NaN kept
    finite = np.abs(divisor) < np.inf
    low = _least_above(divisor) if finite else np.float32(0.0)
    column_any = np.zeros(w, np.bool_)
    top, bottom = h, 0
    for y in range(h):
        row, flags = strength[y], edges[y]
        if finite:  # vectorised
            for x in range(w):
                flags[x] = row[x] >= low
        else:
            for x in range(w):
                flags[x] = row[x] / divisor > tenth
        found = False
        for x in range(w):
            column_any[x] |= flags[x]
            found |= flags[x]
        if found:
            top, bottom = min(top, y), y + 1
    left, right = w, 0
    for x in range(w):
        if column_any[x]:
            left, right = min(left, x), x + 1
    return Box(top, bottom, left, right)


def motion_edges(flow: np.ndarray) -> np.ndarray:
    """Binary motion-edge map of a flow field, the original's bit for bit.

    Sobel gradients (3x3, symmetric borders) of each flow channel, gradient
    magnitude per channel, summed over the channels, divided by
    ``max(max, 0.01)`` and thresholded at ``> 0.1``, all in float32 as the
    original computes them.

    Args:
      flow: (H, W, 2) flow (dx, dy) in pixels; converted to float32.

    Returns:
      (H, W) bool, True at motion edges; indexed [y, x].
    """
    flow = check_flow(flow)
    shape = flow.shape[:2]
    edges = np.empty(shape, bool)
    motion_edges_into(flow, workspace("strength", shape, np.float32), edges)
    return edges

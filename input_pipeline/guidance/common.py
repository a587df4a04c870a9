"""Helpers shared by the sampler's stages: pixel boxes, work arrays, unsigned indices."""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numba
import numpy as np

_WORKSPACES = threading.local()  # per-thread work arrays, see workspace


class Box(NamedTuple):
    """A rectangle of pixels: rows ``top <= y < bottom``, columns ``left <= x < right``.

    Empty when ``bottom <= top`` or ``right <= left``. Numba kernels take and
    build it as a named tuple.
    """

    top: int
    bottom: int
    left: int
    right: int


@numba.njit(cache=True, nogil=True, inline="always")
def index(i):
    """Index ``i`` (known to be >= 0) as an unsigned integer.

    Numba wraps negative signed indices around (``a[-1]``), a select per access
    that keeps LLVM from vectorising loops over ``a[i + offset]`` when the offset
    is not a constant or the loop variable is not provably non-negative;
    unsigned indices skip it.
    """
    return numba.uint64(i)


def workspace(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A work array of the calling thread, reused across calls (no page faults, no zeroing).

    Its contents are left over from an earlier call; it stays valid until the
    thread asks for ``name`` again. Threads never share one, so the numba
    kernels (which release the GIL) may run concurrently.

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

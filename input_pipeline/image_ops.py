"""Image geometry shared by the input pipeline, the config checks and ``scripts/extract_flow.py``.

``crop_size`` reads ``config.data.crop_size``; ``resize_short_side`` and
``resize_flow_short_side`` scale an image (and its flow) so that the shorter
side has a given length, with the original's rounding of the longer side.
Arrays are NumPy (H, W, C); flow is (H, W, 2) float32 of (dx, dy) in pixels.
This module imports NumPy and OpenCV only (no TensorFlow).
"""

from __future__ import annotations

import numbers
from typing import Any

import cv2
import numpy as np


def crop_size(value: Any) -> tuple[int, int]:
    """``config.data.crop_size`` as (height, width) in pixels.

    Args:
      value: (height, width) of positive ints, or one positive int for a square.

    Returns:
      (height, width).

    Raises:
      ValueError: any other value (bools are not ints here).
    """

    def positive_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0

    if positive_int(value):
        return int(value), int(value)
    if isinstance(value, tuple | list) and len(value) == 2 and all(positive_int(v) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"crop size must be (height, width) of positive ints or one positive int, got {value!r}")


def short_side_size(height: int, width: int, short_size: int) -> tuple[int, int]:
    """The (height, width) whose shorter side is ``short_size``, aspect ratio kept.

    The longer side is ``int(long * short_size / short)``, truncated as the
    original's resize computes it, so frames resized here have the sizes the
    original's training images had.

    Args:
      height: image height in pixels.
      width: image width in pixels.
      short_size: length of the shorter side after resizing, pixels.

    Returns:
      (new height, new width).
    """
    if height <= width:
        return short_size, int(width * short_size / height)
    return int(height * short_size / width), short_size


def resize_short_side(image: np.ndarray, short_size: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resizes so that the shorter side is ``short_size`` (sizes: ``short_side_size``).

    Args:
      image: (H, W, C) array (or (H, W)).
      short_size: length of the shorter side after resizing, pixels.
      interpolation: ``cv2.INTER_*`` flag; bicubic (OpenCV's, a = -0.75, no
        antialiasing) by default, as the input pipeline resizes frames.

    Returns:
      The resized image; ``image`` itself when its shorter side is already ``short_size``.
    """
    h, w = image.shape[:2]
    if min(h, w) == short_size:
        return image
    nh, nw = short_side_size(h, w, short_size)
    return cv2.resize(image, (nw, nh), interpolation=interpolation)


def resize_flow_short_side(flow: np.ndarray, short_size: int) -> np.ndarray:
    """Resizes a flow field as ``resize_short_side`` resizes its frame, scaling the vectors with it.

    Args:
      flow: (H, W, 2) float32, (dx, dy) pixels.
      short_size: length of the shorter side after resizing, pixels.

    Returns:
      (H', W', 2) float32: bilinear, both components multiplied by H' / H (as
      the original); ``flow`` itself when unchanged.
    """
    h = flow.shape[0]
    resized = resize_short_side(flow, short_size, cv2.INTER_LINEAR)
    if resized is flow:
        return flow
    return resized * np.float32(resized.shape[0] / h)

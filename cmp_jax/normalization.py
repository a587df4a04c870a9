"""Normalisation of the network's input images, and its inverse.

The network sees RGB images normalised one of two ways (``INPUT_NORMS``):

``"imagenet"``
  ``(v - mean) / std`` per channel on the 0-255 scale with the ImageNet
  statistics ``IMAGENET_MEAN`` / ``IMAGENET_STD`` (those of 0-1 images times
  255). The original trains with it, and so does the input pipeline: the
  released models expect it, and it is the default everywhere.
``"mofa"``
  ``v / 255 * 2 - 1``, in float32 as PyTorch computes it. MOFA-Video, the
  largest user of the released model, feeds the network this instead of the
  ImageNet normalisation it was trained with. Its only use is to reproduce
  the flows MOFA-Video (and the projects built on its code) get from the
  model; it is not how the model was trained.

Images are NumPy arrays (..., 3), RGB, values on the 0-255 scale (uint8 or
float). This module imports NumPy only, so the TensorFlow input pipeline,
inference and evaluation share it.
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
"""ImageNet mean of R, G, B on the 0-255 scale."""

IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)
"""ImageNet standard deviation of R, G, B on the 0-255 scale."""

INPUT_NORMS = ("imagenet", "mofa")
"""The accepted values of ``input_norm``."""


def _check(input_norm: str) -> None:
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")


def normalize(images: np.ndarray, input_norm: str = "imagenet") -> np.ndarray:
    """Normalises RGB images on the 0-255 scale for the network.

    ``"imagenet"`` is computed in float64 and rounded once to float32, so a
    uint8 value gives the same float32 whatever its container (the input
    pipeline's lookup table is this function applied to the 256 levels).
    ``"mofa"`` is computed in float32 as ``x * 2 - 1`` with ``x = v / 255``
    (torchvision's ``to_tensor``), bit for bit what MOFA-Video feeds.

    Args:
      images: (..., 3) RGB, 0-255, uint8 or float.
      input_norm: ``"imagenet"`` or ``"mofa"`` (module docstring).

    Returns:
      float32 array of the same shape.

    Raises:
      ValueError: an unknown ``input_norm``.
    """
    _check(input_norm)
    if input_norm == "mofa":
        return np.asarray(images, np.float32) / np.float32(255) * np.float32(2) - np.float32(1)
    mean, std = IMAGENET_MEAN.astype(np.float64), IMAGENET_STD.astype(np.float64)
    return ((np.asarray(images, np.float64) - mean) / std).astype(np.float32)


def denormalize(images: np.ndarray, input_norm: str = "imagenet") -> np.ndarray:
    """The inverse of ``normalize``, rounded to uint8.

    Args:
      images: (..., 3) float RGB as ``normalize`` returns it.
      input_norm: the normalisation the images went through.

    Returns:
      uint8 RGB (..., 3): the 0-255 values, rounded and clipped.

    Raises:
      ValueError: an unknown ``input_norm``.
    """
    _check(input_norm)
    v = np.asarray(images, np.float32)
    v = (v + 1) * np.float32(127.5) if input_norm == "mofa" else v * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.round(v), 0, 255).astype(np.uint8)

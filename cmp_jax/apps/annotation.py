"""Semi-automatic annotation: an object mask from a few clicks, as the original's demo.

Positive clicks mark the object, negative clicks mark what must stay out. The
image is propagated four times, each time with every positive click moving by
``velocity`` pixels in one direction (right, left, down, up) and every negative
click held still. Pixels that move with the positive clicks belong to the
object: the score is the mean over the four flows and both components of
|flow|, divided by its maximum, and the mask is score > ``threshold``.

With ``zoom_factor`` (at least two clicks), a square box around the clicks,
``zoom_factor`` times their extent, is cut out, resized to ``zoom_size``
(bicubic), scored, and its score resized back into the box (bilinear); the
score is 0 outside the box.

Points are (x, y) in pixels of the image (column, row).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cmp_jax.inference import Predictor

# The four directions of the positive clicks: right, left, down, up.
_DIRECTIONS = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))


def click_guidance(
    positive: Sequence[Sequence[float]], negative: Sequence[Sequence[float]], velocity: float
) -> list[list[tuple[float, float, float, float]]]:
    """The four guidance sets of the clicks.

    Args:
      positive: (x, y) points on the object.
      negative: (x, y) points that stay still.
      velocity: displacement in pixels given to the positive points.

    Returns:
      Four lists of arrows (x, y, dx, dy): set d moves every positive point by
      ``velocity`` along direction d (+x, -x, +y, -y); negative points get (0, 0).
    """
    if len(positive) == 0:
        raise ValueError("annotation needs at least one positive click")
    still = [(float(x), float(y), 0.0, 0.0) for x, y in negative]
    return [
        [(float(x), float(y), ux * velocity, uy * velocity) for x, y in positive] + still
        for ux, uy in _DIRECTIONS
    ]


def motion_score(flows: np.ndarray) -> np.ndarray:
    """Mean |flow| over the sets and both components, divided by its maximum.

    Args:
      flows: (G, H, W, 2) flow in pixels.

    Returns:
      float32 (H, W) score in [0, 1] (all zeros when nothing moves).
    """
    score = np.abs(np.asarray(flows, np.float32)).mean(axis=(0, 3))
    top = float(score.max())
    return score / top if top > 0 else score


def zoom_box(points: np.ndarray, zoom_factor: float, height: int, width: int) -> tuple[int, int, int]:
    """The square box (x0, y0, side) around the clicks used for zooming.

    Side = min(zoom_factor * extent, width, height), made even, at least 2;
    extent is the larger side of the clicks' bounding box. The box is centred
    on the bounding box and shifted to lie inside the image.
    """
    if len(points) < 2:
        raise ValueError("zooming needs at least two clicks")
    lo, hi = points.min(0), points.max(0)
    extent = float((hi - lo).max())
    side = int(min(zoom_factor * extent, width, height)) // 2 * 2
    side = max(side, 2)
    cx, cy = (lo + hi) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return x0, y0, side


def annotate(
    predictor: Predictor,
    image: np.ndarray,
    positive: Sequence[Sequence[float]],
    negative: Sequence[Sequence[float]] = (),
    *,
    velocity: float = 10.0,
    threshold: float = 0.5,
    zoom_factor: float | None = None,
    zoom_size: int = 384,
) -> tuple[np.ndarray, np.ndarray]:
    """An object mask from positive and negative clicks.

    Args:
      predictor: a trained CMP.
      image: (H, W, 3) RGB on the 0-255 scale.
      positive: (x, y) clicks on the object, pixels.
      negative: (x, y) clicks off the object, pixels.
      velocity: displacement in pixels given to the positive clicks (10 in
        the original demo).
      threshold: score threshold of the mask (0.5 in the original).
      zoom_factor: zoom around the clicks (module docstring); ``None`` for none.
      zoom_size: side in pixels the zoom box is resized to.

    Returns:
      (mask, score): bool (H, W) and float32 (H, W) in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    h, w = image.shape[:2]
    pos = np.asarray(positive, np.float64).reshape(-1, 2)
    neg = np.asarray(negative, np.float64).reshape(-1, 2)
    if zoom_factor is None:
        flows = predictor.propagate(predictor.encode(image), click_guidance(pos, neg, velocity))
        score = motion_score(flows)
    else:
        x0, y0, side = zoom_box(np.concatenate([pos, neg]), zoom_factor, h, w)
        crop = image[y0 : y0 + side, x0 : x0 + side]
        crop = cv2.resize(crop.astype(np.float32), (zoom_size, zoom_size), interpolation=cv2.INTER_CUBIC)
        crop = np.clip(crop, 0, 255)
        f = zoom_size / side

        def to_crop(p):
            return np.clip((p - (x0, y0) + 0.5) * f - 0.5, 0, zoom_size - 1)

        flows = predictor.propagate(
            predictor.encode(crop), click_guidance(to_crop(pos), to_crop(neg), velocity)
        )
        score = np.zeros((h, w), np.float32)
        small = cv2.resize(motion_score(flows), (side, side), interpolation=cv2.INTER_LINEAR)
        score[y0 : y0 + side, x0 : x0 + side] = small
    return score > threshold, score

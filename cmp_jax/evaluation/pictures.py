"""Flow pictures: image with the guidance arrows | target flow | predicted flow."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from cmp_jax.evaluation.baselines import guided_pixels
from cmp_jax.flow import flow_to_color
from cmp_jax.normalization import denormalize

# Guidance drawing on the image panel (RGB): a filled dot and an arrow along the vector.
_DOT_COLOUR = (0, 255, 0)
_ARROW_COLOUR = (255, 0, 0)
_DOT_RADIUS = 2


def draw_guidance(rgb: np.ndarray, sparse: np.ndarray, guided: np.ndarray) -> np.ndarray:
    """Draws a dot and an arrow along the guidance vector at each guidance pixel.

    Args:
      rgb: (H, W, 3) uint8 RGB image, drawn on in place.
      sparse: (H, W, 2) flow in pixels at guidance pixels.
      guided: (H, W) boolean map of guidance pixels.

    Returns:
      ``rgb``.
    """
    for y, x in zip(*np.nonzero(guided), strict=True):
        dx, dy = sparse[y, x]
        tip = (int(round(x + dx)), int(round(y + dy)))
        cv2.circle(rgb, (int(x), int(y)), _DOT_RADIUS, _DOT_COLOUR, thickness=-1, lineType=cv2.LINE_AA)
        cv2.arrowedLine(rgb, (int(x), int(y)), tip, _ARROW_COLOUR, 1, line_type=cv2.LINE_AA, tipLength=0.3)
    return rgb


def flow_pictures(
    image: np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    mask: np.ndarray,
    max_flow: float | None = None,
) -> np.ndarray:
    """Side-by-side pictures: image with guidance, target flow, predicted flow.

    The guidance vectors are read off ``target`` at the ``mask`` pixels (the
    guidance is sampled from the target flow). Both flows use the Middlebury
    colour wheel (:func:`cmp_jax.flow.flow_to_color`) with one normalisation per
    example, the largest target magnitude unless ``max_flow`` is given, so their
    colours are comparable.

    Args:
      image: (N, H, W, 3) float32 RGB, ImageNet-normalised on the 0-255 scale.
      target: (N, H, W, 2) ground-truth flow in pixels, (dx, dy).
      pred: (N, H, W, 2) predicted flow in pixels, (dx, dy).
      mask: (N, H, W, 2) 1.0 at guidance pixels, 0 elsewhere.
      max_flow: magnitude in pixels mapped to full saturation, for every example.

    Returns:
      uint8 RGB (N, H, 3 * W, 3): per example the image with a green dot and a
      red arrow per guidance vector, then the target flow, then the prediction.
    """
    image = np.asarray(image)
    target = np.asarray(target, np.float32)
    pred = np.asarray(pred, np.float32)
    guided = guided_pixels(mask)
    rgb = denormalize(image)
    pictures = []
    for i in range(image.shape[0]):
        scale = max_flow
        if scale is None:
            # float64, as flow_to_color computes magnitudes: the largest one maps to exactly 1.
            scale = float(np.linalg.norm(target[i].astype(np.float64), axis=-1).max())
        panels = (
            draw_guidance(np.ascontiguousarray(rgb[i]), target[i], guided[i]),
            flow_to_color(target[i], max_flow=scale),
            flow_to_color(pred[i], max_flow=scale),
        )
        pictures.append(np.concatenate(panels, axis=1))
    return np.stack(pictures)


def batch_pictures(batch: Mapping[str, np.ndarray], flow: np.ndarray, count: int) -> np.ndarray:
    """:func:`flow_pictures` of the first ``count`` examples of a device-shaped batch.

    Args:
      batch: host arrays shaped (D, B, H, W, C): ``image``, ``flow``, ``mask``.
      flow: (D, B, H, W, 2) predicted flow in pixels.
      count: examples to draw (fewer if the batch is smaller).

    Returns:
      uint8 RGB (count, H, 3 * W, 3).
    """

    def flat(x):
        x = np.asarray(x)
        return x.reshape(-1, *x.shape[2:])[:count]

    return flow_pictures(flat(batch["image"]), flat(batch["flow"]), flat(flow), flat(batch["mask"]))

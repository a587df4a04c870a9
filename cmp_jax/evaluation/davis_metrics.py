"""DAVIS-2017 semi-supervised metrics: region J, boundary F, per sequence and overall J&F.

The definitions follow the official ``davis2017-evaluation`` toolkit
(``davis2017/metrics.py`` and ``davis2017/evaluation.py``), reimplemented from
their description in NumPy and OpenCV:

* J (region similarity) is the IoU of a predicted and a ground-truth object
  mask; 1 when both are empty.
* F (contour accuracy) is the F-measure of boundary precision and recall.
  Boundaries are the ``seg2bmap`` ones (:func:`boundary_map`); a boundary pixel
  counts as matched when it lies within a disk of radius
  ``ceil(bound_th * image diagonal)`` pixels of the other mask's boundary.
  When one boundary map is empty the toolkit sets precision and recall to
  1 and 0 (whichever side is empty has precision or recall 1), so F = 0; when
  both are empty F = 1. "Empty" is about boundaries: a mask covering the whole
  image has no boundary.
* A sequence is scored on its frames 1 .. T-2: the toolkit drops the first
  frame (its masks are given) and also the last one (a convention inherited
  from DAVIS-2016); ``exclude_last=False`` scores 1 .. T-1.
* Each object's J and F are means over the scored frames; the benchmark's
  J-Mean and F-Mean are means over all objects of all sequences, and
  J&F-Mean = (J-Mean + F-Mean) / 2. A sequence's own J and F are means over
  its objects.

Void pixels (label 255 in DAVIS annotations) play no part in the
semi-supervised task: the toolkit turns them into background, and so must
the caller before :func:`evaluate_sequence`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import cv2
import numpy as np

# The DAVIS boundary tolerance: a fraction of the image diagonal.
DEFAULT_BOUND_TH = 0.008


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J: intersection over union of two masks.

    Args:
      pred: (H, W) predicted mask; nonzero is foreground.
      gt: (H, W) ground-truth mask; nonzero is foreground.

    Returns:
      |pred & gt| / |pred | gt| in [0, 1]; 1.0 when both masks are empty.
    """
    pred, gt = _as_masks(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a mask, as DAVIS's ``seg2bmap`` draws it.

    A pixel is a boundary pixel when it differs from at least one of its right,
    bottom and bottom-right neighbours that lie inside the image. The boundary
    therefore sits half a pixel towards the origin: it covers the mask's last
    row and column and the background row and column just before its first
    ones. Pixels outside the image are not compared, so the image border is
    never a boundary and a mask covering the whole image has none.

    Args:
      mask: (H, W) mask; nonzero is foreground.

    Returns:
      (H, W) bool boundary map.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    boundary = np.zeros_like(mask)
    boundary[:, :-1] |= mask[:, :-1] != mask[:, 1:]  # right neighbour
    boundary[:-1, :] |= mask[:-1, :] != mask[1:, :]  # bottom neighbour
    boundary[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]  # bottom-right neighbour
    return boundary


def boundary_radius(shape: tuple[int, int], bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Tolerance radius in pixels within which boundary pixels match.

    Args:
      shape: (H, W) of the image.
      bound_th: below 1, a fraction of the image diagonal sqrt(H**2 + W**2),
        rounded up; 1 or more, the radius itself in pixels (an integer).

    Returns:
      The radius in pixels (8 for DAVIS 480p, 480 x 854, at the default 0.008).
    """
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"a bound_th of 1 or more is a radius in pixels, a whole number, got {bound_th}")
        return int(bound_th)
    if bound_th <= 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    return math.ceil(bound_th * math.hypot(*shape))


def boundary_precision_recall(
    pred: np.ndarray, gt: np.ndarray, bound_th: float = DEFAULT_BOUND_TH
) -> tuple[float, float]:
    """Boundary precision and recall of a predicted mask, with the DAVIS tolerance.

    Args:
      pred: (H, W) predicted mask; nonzero is foreground.
      gt: (H, W) ground-truth mask; nonzero is foreground.
      bound_th: the tolerance, as :func:`boundary_radius` reads it.

    Returns:
      (precision, recall): the fraction of predicted boundary pixels within the
      tolerance disk of a ground-truth boundary pixel, and the fraction of
      ground-truth boundary pixels within it of a predicted one. With an empty
      predicted boundary (1, 0), an empty ground-truth boundary (0, 1), both
      empty (1, 1), as the official toolkit sets them.
    """
    pred, gt = _as_masks(pred, gt)
    pred_boundary = boundary_map(pred)
    gt_boundary = boundary_map(gt)
    n_pred = np.count_nonzero(pred_boundary)
    n_gt = np.count_nonzero(gt_boundary)
    if n_pred == 0 or n_gt == 0:
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    disk = _disk(boundary_radius(pred.shape, bound_th))
    pred_near = cv2.dilate(pred_boundary.astype(np.uint8), disk) != 0
    gt_near = cv2.dilate(gt_boundary.astype(np.uint8), disk) != 0
    precision = np.count_nonzero(pred_boundary & gt_near) / n_pred
    recall = np.count_nonzero(gt_boundary & pred_near) / n_gt
    return precision, recall


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Contour accuracy F: the F-measure of :func:`boundary_precision_recall`.

    Args:
      pred: (H, W) predicted mask; nonzero is foreground.
      gt: (H, W) ground-truth mask; nonzero is foreground.
      bound_th: the tolerance, as :func:`boundary_radius` reads it.

    Returns:
      2 P R / (P + R) in [0, 1]; 0 when P + R = 0. Hence 1 when both
      boundaries are empty and 0 when exactly one is.
    """
    precision, recall = boundary_precision_recall(pred, gt, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def evaluate_sequence(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    num_objects: int,
    bound_th: float = DEFAULT_BOUND_TH,
    exclude_last: bool = True,
) -> dict[str, np.ndarray | float]:
    """J and F of every object in every scored frame of one sequence, and their means.

    Args:
      pred_labels: (T, H, W) integer predicted label maps: 0 background,
        k in 1..num_objects object k.
      gt_labels: (T, H, W) integer ground-truth label maps, same labels (void
        pixels already mapped to 0).
      num_objects: number of objects of the sequence (in its first frame).
      bound_th: the boundary tolerance, as :func:`boundary_radius` reads it.
      exclude_last: score frames 1 .. T-2, as the official toolkit does (True),
        or 1 .. T-1 (False). Frame 0, whose masks are given, is never scored.

    Returns:
      ``"frames"``: (S,) int indices of the scored frames;
      ``"J_per_frame"``, ``"F_per_frame"``: (num_objects, S) float64, row k-1
      for object k; ``"J_per_object"``, ``"F_per_object"``: (num_objects,)
      their means over the scored frames; ``"J"``, ``"F"``: floats, the means
      of those over objects; ``"JF"``: (J + F) / 2.
    """
    pred_labels = np.asarray(pred_labels)
    gt_labels = np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape or pred_labels.ndim != 3:
        raise ValueError(
            f"pred_labels and gt_labels must both be (T, H, W), got {pred_labels.shape} and {gt_labels.shape}"
        )
    if num_objects < 1:
        raise ValueError(f"num_objects must be at least 1, got {num_objects}")
    for name, labels in (("pred_labels", pred_labels), ("gt_labels", gt_labels)):
        if labels.min() < 0 or labels.max() > num_objects:
            raise ValueError(f"{name} must lie in 0..{num_objects}, got {labels.min()}..{labels.max()}")
    frames = np.arange(1, len(gt_labels) - 1 if exclude_last else len(gt_labels))
    if frames.size == 0:
        raise ValueError(f"no frame to score in a sequence of {len(gt_labels)} frames")
    j = np.zeros((num_objects, frames.size))
    f = np.zeros((num_objects, frames.size))
    for k in range(num_objects):
        for i, t in enumerate(frames):
            pred, gt = pred_labels[t] == k + 1, gt_labels[t] == k + 1
            j[k, i] = region_j(pred, gt)
            f[k, i] = boundary_f(pred, gt, bound_th)
    j_objects, f_objects = j.mean(axis=1), f.mean(axis=1)
    j_mean, f_mean = float(j_objects.mean()), float(f_objects.mean())
    return {
        "frames": frames,
        "J_per_frame": j,
        "F_per_frame": f,
        "J_per_object": j_objects,
        "F_per_object": f_objects,
        "J": j_mean,
        "F": f_mean,
        "JF": (j_mean + f_mean) / 2,
    }


def summarize(sequences: Mapping[str, Mapping[str, np.ndarray | float]]) -> dict:
    """Benchmark means over sequences, as the DAVIS-2017 evaluation reports them.

    Every object of every sequence weighs the same: J-Mean and F-Mean are the
    means of the per-object means over all objects, and J&F-Mean is their
    average. This differs from averaging the per-sequence J&F whenever
    sequences have different numbers of objects.

    Args:
      sequences: sequence name -> the result of :func:`evaluate_sequence` (only
        ``"J_per_object"`` and ``"F_per_object"`` are read).

    Returns:
      ``"J"``, ``"F"``, ``"JF"``: the overall J-Mean, F-Mean and J&F-Mean;
      ``"num_objects"``: the number of objects averaged over;
      ``"sequences"``: name -> {``"J"``, ``"F"``, ``"JF"``}, each sequence's
      means over its own objects, in the order given.
    """
    if not sequences:
        raise ValueError("no sequence to summarize")
    j_objects = np.concatenate([np.asarray(r["J_per_object"], np.float64) for r in sequences.values()])
    f_objects = np.concatenate([np.asarray(r["F_per_object"], np.float64) for r in sequences.values()])
    rows = {}
    for name, result in sequences.items():
        j_seq = float(np.mean(result["J_per_object"]))
        f_seq = float(np.mean(result["F_per_object"]))
        rows[name] = {"J": j_seq, "F": f_seq, "JF": (j_seq + f_seq) / 2}
    j_mean, f_mean = float(j_objects.mean()), float(f_objects.mean())
    return {
        "J": j_mean,
        "F": f_mean,
        "JF": (j_mean + f_mean) / 2,
        "num_objects": int(j_objects.size),
        "sequences": rows,
    }


def _as_masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (H, W) masks of the same shape as bool arrays (nonzero is foreground)."""
    pred = np.asarray(pred) != 0
    gt = np.asarray(gt) != 0
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must both be (H, W), got {pred.shape} and {gt.shape}")
    return pred, gt


def _disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 structuring element: 1 where dy**2 + dx**2 <= r**2."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)

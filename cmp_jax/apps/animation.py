"""Guided video generation: arrows or trajectories -> flow per frame -> warped frames.

The original advertises this but ships no code; its author suggests predicting
flow with CMP and warping the image with it. For frame t (t = 1..T) every
trajectory contributes one guidance arrow at its start point holding its
displacement to frame t (as MOFA-Video drives CMP), CMP predicts the flow
from the image to frame t, and the image is warped by that flow:

* ``"forward"``: every pixel is splatted to its rounded target position,
  larger motions winning collisions (the original's forward warping layer
  truncates instead of rounding); pixels nothing landed on are filled from
  the nearest filled pixel.
* ``"backward"``: frame t samples the image at q - F(q) (bilinear, border
  replicated), which treats the forward flow as if it were given at the
  target pixels: no holes, but exact only where the flow is smooth.

All T guidance sets are propagated in one batch over a single encoding of
the image. Points are (x, y) in pixels; flow (dx, dy) in pixels.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from cmp_jax.inference import Predictor

WARPS = ("forward", "backward")


def linear_trajectories(arrows: Sequence[Sequence[float]], num_frames: int) -> np.ndarray:
    """Straight trajectories from arrows, reaching the arrow tips at the last frame.

    Args:
      arrows: P arrows (x, y, dx, dy) in pixels.
      num_frames: T frames after the first.

    Returns:
      float64 (P, T + 1, 2) positions (x, y); position t is start + t / T * (dx, dy).
    """
    a = np.asarray(arrows, np.float64).reshape(-1, 4)
    t = np.arange(num_frames + 1, dtype=np.float64)[None, :, None] / num_frames
    return a[:, None, :2] + t * a[:, None, 2:]


def frame_guidance(trajectories: np.ndarray) -> list[list[tuple[float, float, float, float]]]:
    """Guidance sets of frames 1..T: each trajectory's start and its displacement to frame t.

    Args:
      trajectories: (P, T + 1, 2) positions (x, y) in pixels; position 0 is in the image.

    Returns:
      T lists of P arrows (x0, y0, x_t - x0, y_t - y0).
    """
    traj = np.asarray(trajectories, np.float64)
    if traj.ndim != 3 or traj.shape[2] != 2 or traj.shape[1] < 2:
        raise ValueError(f"trajectories must be (P, T + 1, 2) with T >= 1, got shape {traj.shape}")
    start = traj[:, 0]
    return [
        [(x, y, dx, dy) for (x, y), (dx, dy) in zip(start, traj[:, t] - start, strict=True)]
        for t in range(1, traj.shape[1])
    ]


def forward_warp(
    image: np.ndarray, flow: np.ndarray, fill_holes: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Splats every pixel to its rounded target; larger motions win collisions.

    Args:
      image: (H, W, C) image.
      flow: (H, W, 2) flow in pixels from ``image`` to the output.
      fill_holes: copy the nearest filled pixel into pixels nothing landed on.

    Returns:
      (warped, holes): the warped image (dtype of ``image``) and a bool (H, W)
      map of the pixels nothing landed on (before filling).
    """
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    tx = np.rint(xs + flow[..., 0]).astype(np.int64)
    ty = np.rint(ys + flow[..., 1]).astype(np.int64)
    inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    magnitude = np.hypot(flow[..., 0], flow[..., 1])[inside]
    source = np.flatnonzero(inside)
    target = (ty * w + tx)[inside]
    # Largest motion first, so np.unique's first occurrence is the winner of each target.
    order = np.argsort(-magnitude, kind="stable")
    target, first = np.unique(target[order], return_index=True)
    source = source[order][first]
    out = np.zeros_like(image).reshape(h * w, -1)
    out[target] = image.reshape(h * w, -1)[source]
    holes = np.ones(h * w, bool)
    holes[target] = False
    out, holes = out.reshape(image.shape), holes.reshape(h, w)
    if fill_holes and holes.any() and not holes.all():
        _, (iy, ix) = ndimage.distance_transform_edt(holes, return_indices=True)
        out = out[iy, ix]
    return out, holes


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Frame whose pixel q is ``image`` at q - flow(q) (bilinear, border replicated).

    Args:
      image: (H, W, C) image.
      flow: (H, W, 2) flow in pixels, read at the output pixels.

    Returns:
      The warped image, dtype of ``image``.
    """
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = xs - flow[..., 0].astype(np.float32)
    map_y = ys - flow[..., 1].astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp(image: np.ndarray, flow: np.ndarray, method: str = "forward") -> np.ndarray:
    """``forward_warp`` (holes filled) or ``backward_warp`` of ``image`` by ``flow``."""
    if method == "forward":
        return forward_warp(image, flow)[0]
    if method == "backward":
        return backward_warp(image, flow)
    raise ValueError(f"unknown warp {method!r}; choose one of {WARPS}")


def animate(
    predictor: Predictor,
    image: np.ndarray,
    trajectories: np.ndarray,
    method: str = "forward",
    static_points: Sequence[Sequence[float]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Frames that move the image along the trajectories.

    Args:
      predictor: a trained CMP.
      image: (H, W, 3) uint8 RGB.
      trajectories: (P, T + 1, 2) positions (x, y) in pixels per frame
        (``linear_trajectories`` makes them from arrows).
      method: ``"forward"`` or ``"backward"`` warping (module docstring).
      static_points: (x, y) points held still in every frame.

    Returns:
      (frames, flows): uint8 (T + 1, H, W, 3) with frame 0 the image itself,
      and float32 (T, H, W, 2) the predicted flow from the image to frames 1..T.
    """
    if method not in WARPS:
        raise ValueError(f"unknown warp {method!r}; choose one of {WARPS}")
    image = np.asarray(image)
    still = [(float(x), float(y), 0.0, 0.0) for x, y in static_points]
    sets = [arrows + still for arrows in frame_guidance(trajectories)]
    flows = predictor.propagate(predictor.encode(image), sets)
    frames = [image] + [warp(image, f, method) for f in flows]
    return np.stack(frames).astype(np.uint8), flows


def write_video(frames: np.ndarray, path: str | pathlib.Path, fps: float = 8.0) -> pathlib.Path:
    """Writes uint8 RGB frames (T, H, W, 3) as a looping GIF (``.gif``) or an MP4 (``.mp4``)."""
    path = pathlib.Path(path)
    frames = np.asarray(frames, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    elif path.suffix.lower() == ".mp4":
        h, w = frames.shape[1:3]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write an MP4 to {path}")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
    else:
        raise ValueError(f"{path}: write a .gif or an .mp4")
    return path

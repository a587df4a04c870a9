"""Animate an image along arrows or trajectories with a trained CMP (guided video generation).

Usage::

    python scripts/animate.py --workdir DIR --image IMG --arrow x,y,dx,dy [--arrow ...] \
        [--trajectory "x0,y0;x1,y1;..."] [--still x,y ...] --frames 16 --out clip.gif

Each ``--arrow`` moves its start point in a straight line to its tip over
``--frames`` frames; each ``--trajectory`` lists a point's position in every
frame (frame 0 first; it needs ``--frames`` + 1 positions, or give only
trajectories and the frame count follows from them). ``--still`` points stay
put. For each frame CMP predicts the flow from the image and the image is
warped by it (``--warp forward``: splatting with hole filling; ``backward``:
sampling). Writes a GIF or MP4 (by ``--out``'s extension). The last line
printed gives the frame count and the largest predicted motion.

``--input-norm mofa`` feeds the network ``image / 255 * 2 - 1`` as MOFA-Video
does, for the flows MOFA-Video gets from the same model; the default,
``imagenet``, is the normalisation the model was trained with.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from cmp_jax.apps import cli
from cmp_jax.apps.animation import WARPS, animate, linear_trajectories, write_video


def _trajectory(text: str) -> np.ndarray:
    try:
        points = np.array([[float(v) for v in p.split(",")] for p in text.split(";")], np.float64)
    except ValueError:
        points = np.zeros((0, 0))
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2 or not np.isfinite(points).all():
        raise argparse.ArgumentTypeError(
            f"a trajectory is 'x0,y0;x1,y1;...' with >= 2 points of finite numbers, got {text!r}"
        )
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_model_args(parser)
    parser.add_argument("--arrow", type=cli.numbers(4, "--arrow"), action="append", default=[])
    parser.add_argument("--trajectory", type=_trajectory, action="append", default=[])
    parser.add_argument("--still", type=cli.numbers(2, "--still"), action="append", default=[])
    parser.add_argument("--frames", type=int, default=None, help="frames after the first (default 16)")
    parser.add_argument("--warp", choices=WARPS, default="forward")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--out", required=True, help="output .gif or .mp4")
    args = parser.parse_args(argv)

    if args.frames is not None and args.frames < 1:
        parser.error(f"--frames must be at least 1, got {args.frames}")
    if not (math.isfinite(args.fps) and args.fps > 0):
        parser.error(f"--fps must be a positive number, got {args.fps:g}")
    if not args.arrow and not args.trajectory:
        parser.error("give at least one --arrow or --trajectory")
    lengths = {len(t) - 1 for t in args.trajectory}
    if len(lengths) > 1 or (args.frames is not None and lengths and lengths != {args.frames}):
        parser.error(
            f"trajectories have {sorted(lengths)} steps; they must all have --frames = {args.frames}"
        )
    frames = args.frames if args.frames is not None else (lengths.pop() if lengths else 16)
    parts = [np.asarray(t)[None] for t in args.trajectory]
    if args.arrow:
        parts.append(linear_trajectories(args.arrow, frames))
    trajectories = np.concatenate(parts)

    image = cli.read_rgb(args.image)
    video, flows = animate(cli.load_predictor(args), image, trajectories, args.warp, args.still)
    write_video(video, args.out, args.fps)
    largest = float(np.hypot(flows[..., 0], flows[..., 1]).max())
    print(f"wrote {args.out}: {len(video)} frames, max |flow| {largest:.2f} px")


if __name__ == "__main__":
    main()

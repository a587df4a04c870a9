"""Object mask from a few clicks with a trained CMP (semi-automatic annotation).

Usage::

    python scripts/annotate.py --workdir DIR --image IMG --pos x,y [--pos ...] [--neg x,y ...] --out mask.png

Positive clicks (``--pos``) are moved in four directions by ``--velocity``
pixels, negative clicks (``--neg``) stay still; pixels that move with the
positive clicks form the mask (``cmp_jax.apps.annotation``). Writes the mask
(0/255 PNG) to ``--out`` and, with ``--overlay``, the image with the mask
tinted green. The last line printed gives the mask's share of the image.

``--input-norm mofa`` feeds the network ``image / 255 * 2 - 1`` as MOFA-Video
does, for the flows MOFA-Video gets from the same model; the default,
``imagenet``, is the normalisation the model was trained with.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from cmp_jax.apps import cli
from cmp_jax.apps.annotation import annotate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_model_args(parser)
    point = cli.numbers(2, "a click")
    parser.add_argument("--pos", type=point, action="append", required=True, help="x,y on the object")
    parser.add_argument("--neg", type=point, action="append", default=[], help="x,y off the object")
    parser.add_argument("--velocity", type=float, default=10.0, help="displacement of --pos, pixels")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask threshold on the score")
    parser.add_argument("--zoom", type=float, default=None, help="zoom factor around the clicks")
    parser.add_argument("--out", required=True, help="mask PNG")
    parser.add_argument("--overlay", default=None, help="also write the image with the mask tinted")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.velocity) and args.velocity > 0):
        parser.error(f"--velocity must be a positive number of pixels, got {args.velocity:g}")
    if not 0 <= args.threshold < 1:
        parser.error(
            f"--threshold must be in [0, 1) (the score's range; its maximum is 1), got {args.threshold:g}"
        )
    if args.zoom is not None:
        if not (math.isfinite(args.zoom) and args.zoom >= 1):
            parser.error(
                f"--zoom must be at least 1 (the box is --zoom times the clicks' extent; a smaller one "
                f"would cut clicks off), got {args.zoom:g}"
            )
        if len(args.pos) + len(args.neg) < 2:
            parser.error("--zoom needs at least two clicks (--pos and --neg together) to size its box")

    image = cli.read_rgb(args.image)
    mask, _ = annotate(
        cli.load_predictor(args),
        image,
        args.pos,
        args.neg,
        velocity=args.velocity,
        threshold=args.threshold,
        zoom_factor=args.zoom,
    )
    cli.write_rgb(args.out, mask.astype(np.uint8) * 255)
    if args.overlay:
        tinted = image.astype(np.float32)
        tinted[mask] = 0.5 * tinted[mask] + 0.5 * np.array([0, 255, 0], np.float32)
        cli.write_rgb(args.overlay, tinted.astype(np.uint8))
    print(f"wrote {args.out}: mask covers {mask.mean():.1%} of the image")


if __name__ == "__main__":
    main()

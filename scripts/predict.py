"""Image + arrows -> dense flow with a trained CMP.

Usage::

    python scripts/predict.py --workdir DIR --image IMG --arrow x,y,dx,dy [--arrow ...] --out OUT

Writes ``OUT.flo`` (Middlebury, the flow in pixels) and ``OUT.png`` (the flow
in the Middlebury colour coding with the arrows drawn on it). ``(x, y)`` is a
pixel of the image (column, row), ``(dx, dy)`` its displacement in pixels;
``0,0`` for dx, dy marks a point that stays still. The last line printed
gives the flow's size and largest magnitude.

``--input-norm mofa`` feeds the network ``image / 255 * 2 - 1`` as MOFA-Video
does, for the flows MOFA-Video gets from the same model; the default,
``imagenet``, is the normalisation the model was trained with.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

# ``python scripts/predict.py`` puts scripts/ on the path, not the repository root: add it, so the
# script runs from a clone without installing the project.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cmp_jax.apps import cli  # noqa: E402
from cmp_jax.evaluation import draw_guidance  # noqa: E402
from cmp_jax.flow import flow_to_color  # noqa: E402
from cmp_jax.inference import arrows_to_guidance  # noqa: E402
from input_pipeline import flow_io  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_model_args(parser)
    parser.add_argument(
        "--arrow", type=cli.numbers(4, "--arrow"), action="append", required=True, help="x,y,dx,dy (pixels)"
    )
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args(argv)

    image = cli.read_rgb(args.image)
    predictor = cli.load_predictor(args)
    flow = predictor.predict(image, [args.arrow])[0]
    flow_io.write_flo(f"{args.out}.flo", flow)
    sparse, mask = arrows_to_guidance(args.arrow, *image.shape[:2])
    picture = draw_guidance(flow_to_color(flow), sparse, mask[..., 0] > 0)
    cli.write_rgb(f"{args.out}.png", picture)
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    h, w = flow.shape[:2]
    print(f"wrote {args.out}.flo and {args.out}.png: flow {w}x{h}, max |flow| {magnitude.max():.2f} px")


if __name__ == "__main__":
    main()

"""Command-line plumbing shared by ``scripts/predict.py``, ``annotate.py`` and ``animate.py``."""

from __future__ import annotations

import argparse
import pathlib

import cv2
import numpy as np

from cmp_jax.inference import Predictor
from cmp_jax.normalization import INPUT_NORMS


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Adds ``--workdir``, ``--step``, ``--max-arrow``, ``--input-norm`` and ``--image``."""
    parser.add_argument("--workdir", required=True, help="cmp-jax workdir (training or import_torch.py)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument(
        "--max-arrow",
        type=float,
        default=None,
        help="largest arrow component in pixels run at full scale (default 0.8 * fmax)",
    )
    parser.add_argument(
        "--input-norm",
        choices=INPUT_NORMS,
        default="imagenet",
        help="image normalisation fed to the network: imagenet (default, as the model was trained) or "
        "mofa (image / 255 * 2 - 1, as MOFA-Video feeds the released model: for flows equal to its own)",
    )
    parser.add_argument("--image", required=True, help="input image (any format OpenCV reads)")


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The ``Predictor`` of ``--workdir`` / ``--step`` / ``--max-arrow`` / ``--input-norm``."""
    return Predictor.from_workdir(args.workdir, args.step, args.max_arrow, args.input_norm)


def read_rgb(path: str | pathlib.Path) -> np.ndarray:
    """Reads an image file as uint8 RGB (H, W, 3); raises naming the path when it cannot."""
    data = pathlib.Path(path).read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ValueError(f"{path}: cannot decode image ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | pathlib.Path, image: np.ndarray) -> None:
    """Writes uint8 RGB (H, W, 3) (or a single-channel image) to ``path``; raises when OpenCV cannot."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"OpenCV cannot write {path}")


def numbers(count: int, what: str):
    """An argparse type: ``count`` comma-separated numbers, e.g. ``x,y,dx,dy``."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers, got {text!r}")
        return values

    return parse

"""Prints the parameter count of every module of a CMP model and its output shape.

Usage::

    python scripts/summary.py [--config configs/yfcc_resnet.py] [--config.model.decoder=skip] [--size H W]

Shapes are traced abstractly (``jax.eval_shape``): nothing is allocated or
compiled. Counts include weights, biases and BatchNorm scale/shift, not the
running statistics. The last line is ``total <N>``.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Experiment config files import ``configs``, which is not an installed package.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cmp_jax import config_args  # noqa: E402
from cmp_jax.models import build_model  # noqa: E402

_BASE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "base.py"
_TOP_ORDER = {"image_encoder": 0, "flow_encoder": 1, "flow_decoder": 2}


def _natural_key(name: str) -> tuple:
    """Orders the three parts of CMP as data flows, others by name with numbers numeric."""
    parts = tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
    return (_TOP_ORDER.get(name, len(_TOP_ORDER)), parts)


def module_counts(params: Mapping, prefix: str = "") -> list[tuple[str, int]]:
    """(path, parameter count) of every module in a Flax params tree, depth first.

    Args:
      params: nested dict of parameter arrays or shape structs.
      prefix: path of ``params`` itself.

    Returns:
      A row per module (a dict node), parents before children.
    """
    rows = []
    for name in sorted(params, key=_natural_key):
        value = params[name]
        if isinstance(value, Mapping):
            path = f"{prefix}/{name}" if prefix else name
            total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(value))
            rows.append((path, total))
            rows.extend(module_counts(value, path))
    return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The flags; ``namespace.config`` is the experiment config (default: ``configs/base.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=(384, 384), metavar=("H", "W"),
                        help="input height and width in pixels (default 384 384)")  # fmt: skip
    parser.add_argument("--depth", type=int, default=None,
                        help="print modules down to this nesting depth (default: all)")  # fmt: skip
    return config_args.parse_args(parser, argv, default=str(_BASE))


def main(argv: list[str]) -> None:
    """Prints the summary of the config's model."""
    args = parse_args(argv)
    model = build_model(args.config.model, num_bins=args.config.flow.num_bins)
    h, w = args.size
    image = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    guide = jax.ShapeDtypeStruct((1, h, w, 2), jnp.float32)
    try:
        variables = jax.eval_shape(model.init, jax.random.key(0), image, guide, guide)
    except ValueError as err:
        sys.exit(f"error: {err}")
    logits = jax.eval_shape(model.apply, variables, image, guide, guide)
    rows = module_counts(variables["params"])
    width = max(len(path) for path, _ in rows) + 2
    print(f"CMP {model.backbone} + {model.decoder} decoder, input 1x{h}x{w}x3 (NHWC)")
    for path, count in rows:
        depth = path.count("/") + 1
        if args.depth is None or depth <= args.depth:
            print(f"{'  ' * (depth - 1)}{path.rsplit('/', 1)[-1]:<{width - 2 * (depth - 1)}}{count:>12,}")
    print(f"logits {tuple(logits.shape)} at stride {h // logits.shape[1]}; flow (1, {h}, {w}, 2)")
    print(f"total {sum(count for path, count in rows if '/' not in path)}")


if __name__ == "__main__":
    main(sys.argv[1:])

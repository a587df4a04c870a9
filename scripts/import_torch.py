"""Imports an original-layout PyTorch checkpoint into a new cmp-jax workdir.

Usage::

    python scripts/import_torch.py --checkpoint FILE --config CONFIG --workdir DIR [--step N]

``FILE`` is a checkpoint of the original repository (``{"step": N,
"state_dict": {"module.image_encoder.*", ...}}``, e.g. the released demo model
``ckpt_iter_42000.pth.tar``, whose missing ``num_batches_tracked`` are fine)
or a bare whole-model state dict, read with ``torch.load(weights_only=True)``
(a pickle that carries Python objects beyond tensors is refused, and so are
weights holding NaN or infinite values, each tensor named). ``CONFIG`` is the
experiment config file of its architecture (``configs/semiauto_resnet.py`` for
the demo model), with ``--config.field=value`` overrides as ``main.py`` takes
them. ``--step`` is the step recorded (default: the file's own ``step``, 0 for
a bare state dict). The file's ``num_batches_tracked`` go to
``DIR/num_batches_tracked.json``, so that ``export_torch.py`` writes them back
(``cmp_jax.convert.torch_io``). Missing, unexpected or mis-shaped keys are listed by name.
The checkpoint directory written is printed; ``main.py`` resumes training from
it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

# Experiment config files import ``configs``, which is not an installed package.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cmp_jax import config_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parses the flags (``--config`` as ``main.py`` reads it) and imports; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="import_torch.py",
        description=__doc__.splitlines()[0],
        epilog="--config FILE [--config.field=value ...]",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="PyTorch checkpoint (.pth / .pth.tar), original layout"
    )
    parser.add_argument("--workdir", required=True, help="new cmp-jax workdir to write")
    parser.add_argument("--step", type=int, default=None, help="step to record (default: the file's own)")
    args = config_args.parse_args(parser, argv)
    from cmp_jax.convert import torch_io  # imports PyTorch and JAX

    try:
        path, step = torch_io.import_checkpoint(args.checkpoint, args.config, args.workdir, args.step)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"import_torch.py: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote step {step} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Exports a cmp-jax checkpoint to PyTorch.

Usage::

    python scripts/export_torch.py --workdir DIR [--step N] --format {encoder,original} --out FILE

``--format original`` writes the whole model in the original repository's
checkpoint layout (``{"step": N, "state_dict": {"module.image_encoder.*", ...}}``);
``--format encoder`` writes the image encoder for fine-tuning: for a ResNet,
``FILE`` loads strictly into ``torchvision.models.resnet50()`` with
``fc = nn.Identity()`` and the 2048 -> 256 ``conv5`` head goes to
``<FILE stem>_conv5<FILE suffix>``; for BN-AlexNet, ``FILE`` is the state dict
of ``cmp_jax.torch_models.AlexNetBNFCN``. BatchNorm ``num_batches_tracked``
are the step N, or, in a workdir written by ``import_torch.py`` from a file
that had them, those values plus the steps trained since. See
``cmp_jax.convert.torch_io``.
The files written are printed, one a line.
"""

from __future__ import annotations

import argparse
import sys

from cmp_jax.convert import torch_io


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="cmp-jax workdir (config.json + checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    parser.add_argument("--format", required=True, choices=torch_io.FORMATS, help="what to export")
    parser.add_argument("--out", required=True, help="output .pth file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths = torch_io.export_workdir(args.workdir, args.out, args.format, args.step)
    except (FileNotFoundError, ValueError) as e:
        print(f"export_torch.py: error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Video label propagation J&F of frozen encoders (DAVIS-2017 protocol), side by side.

Usage::

    python scripts/eval_label_propagation.py --workdir W [--step S]
        [--synthetic N [--frames T] | --dataset davis/480p [--data-dir D] [--sequences a,b]]
        [--compare random] [--torch-encoder FILE] [--feature features]
        [--context 20] [--topk 10] [--radius 12] [--temperature 0.05] [--out DIR]

Encoders: the workdir's trained image encoder (``--workdir``, the newest or
``--step`` checkpoint, verified); with ``--compare random``, the same
architecture at the initialisation its training started from; with
``--torch-encoder FILE``, a torchvision ResNet state dict (e.g. ImageNet
weights on disk, the trunk without ``fc``) loaded into the same architecture's
image encoder, read at ``layer4`` (it has no ``conv5``). Clips: ``N`` held-out
synthetic clips of the workdir's procedural data (``config.label_prop`` says
how they are made; default 8 clips of ``--frames`` 8), or DAVIS-2017 through
TFDS (``input_pipeline.davis``; prepared beforehand, see docs/benchmarks.md).
Prints, per encoder, per-sequence J, F and J&F and the means (DAVIS-2017's
averaging, ``cmp_jax.evaluation.davis_metrics.summarize``); the last line is
``jf <J&F of the workdir's encoder>`` (points, 0-100). ``--out DIR`` writes
the predicted label maps as 8-bit PNGs in the DAVIS layout,
``DIR/<encoder>/<sequence>/<frame:05d>.png``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="trained cmp-jax workdir")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--synthetic", type=int, default=None, help="held-out synthetic clips (default 8)")
    data.add_argument("--dataset", default=None, help="davis/480p or davis/full_resolution (TFDS)")
    parser.add_argument("--frames", type=int, default=None, help="frames per synthetic clip")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir of the prepared DAVIS")
    parser.add_argument("--sequences", default=None, help="comma-separated DAVIS sequence names")
    parser.add_argument("--compare", choices=("random",), action="append", default=[])
    parser.add_argument("--torch-encoder", default=None, help="torchvision ResNet state dict (.pth)")
    parser.add_argument("--feature", default=None, help="encoder output (default: config.label_prop.feature)")
    for name, kind in (("context", int), ("topk", int), ("radius", int), ("temperature", float)):
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"default: config.label_prop.{name}")
    parser.add_argument("--out", default=None, help="write predicted masks here (DAVIS layout)")
    args = parser.parse_args(argv)
    for name in ("synthetic", "frames", "context", "topk", "radius"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    if args.temperature is not None and not args.temperature > 0:
        parser.error(f"--temperature must be positive, got {args.temperature}")
    return args


def _torch_encoder_variables(path: str, config, variables):
    """``variables`` with the image encoder's trunk replaced by a torchvision state dict's."""
    from cmp_jax.convert import torch_io, torch_layout

    state_dict, _ = torch_io.unwrap_checkpoint(torch_io.load_torch_file(path), path)
    trunk = {f"image_encoder.{k}": v for k, v in state_dict.items() if not k.startswith("fc.")}
    loaded = torch_layout.torch_to_flax_variables(trunk)
    out = {"params": dict(variables["params"]), "batch_stats": dict(variables["batch_stats"])}
    for group in ("params", "batch_stats"):
        encoder = dict(out[group]["image_encoder"])
        theirs = loaded.get(group, {}).get("image_encoder", {})
        missing = sorted(set(encoder) - set(theirs) - {"conv5"})
        if missing:
            sys.exit(
                f"{path}: no {group} for image encoder modules {missing[:8]}: not a torchvision ResNet trunk?"
            )
        encoder.update(theirs)
        out[group]["image_encoder"] = encoder
    return out


def _write_masks(out: pathlib.Path, predictions: dict[str, np.ndarray]) -> None:
    for name, labels in predictions.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for t, label in enumerate(labels):
            cv2.imwrite(str(folder / f"{t:05d}.png"), label.astype(np.uint8))


def main(argv: list[str] | None = None) -> None:
    """Scores each encoder on the clips and prints the tables."""
    args = parse_args(argv)
    from cmp_jax.evaluation import video_segmentation as vs
    from configs import base

    config, variables, step, model = vs.load_workdir(args.workdir, args.step, base.get_config().label_prop)
    protocol = {
        k: v if getattr(args, k) is None else getattr(args, k) for k, v in vs.protocol_of(config).items()
    }
    feature = args.feature or vs.feature_of(config)
    if args.dataset:
        from input_pipeline import davis

        names = args.sequences.split(",") if args.sequences else None
        resolution = args.dataset.split("/", 1)[1] if "/" in args.dataset else "480p"
        clips = [
            vs.Clip(*seq)
            for seq in davis.load_sequences("validation", resolution, args.data_dir, names=names)
        ]
    else:
        clips = vs.synthetic_clips(config, args.synthetic or 8, args.frames or config.label_prop.num_frames)
    encoders = {f"workdir (step {step})": (variables, feature)}
    if "random" in args.compare:
        encoders["random init"] = (vs.random_variables(config), feature)
    if args.torch_encoder:
        encoders[f"torch {pathlib.Path(args.torch_encoder).name}"] = (
            _torch_encoder_variables(args.torch_encoder, config, variables),
            "layer4",
        )
    frames = sum(len(c.frames) - 1 for c in clips)
    print(f"{len(clips)} clips ({frames} propagated frames); protocol {protocol}, feature {feature!r}")
    scores = {}
    for label, (encoder_variables, encoder_feature) in encoders.items():
        start = time.perf_counter()
        summary, predictions = vs.evaluate_encoder(model, encoder_variables, clips, protocol, encoder_feature)
        seconds = time.perf_counter() - start
        scores[label] = summary
        print(f"\n{label}: {seconds / max(frames, 1) * 1000:.0f} ms per frame")
        print("| sequence | J | F | J&F |\n| --- | --- | --- | --- |")
        for name, row in summary["sequences"].items():
            print(f"| {name} | {100 * row['J']:.1f} | {100 * row['F']:.1f} | {100 * row['JF']:.1f} |")
        print(
            f"| **mean** | {100 * summary['J']:.1f} | {100 * summary['F']:.1f} | {100 * summary['JF']:.1f} |"
        )
        if args.out:
            _write_masks(pathlib.Path(args.out) / label.split(" ")[0], predictions)
    print(f"jf {100 * scores[next(iter(scores))]['JF']:.2f}")


if __name__ == "__main__":
    main()

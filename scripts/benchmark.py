"""Speed benchmarks of cmp-jax parts.

Usage::

    python scripts/benchmark.py sampler [--repeats N] [--seed S]
    python scripts/benchmark.py pipeline [--seconds S]

Subcommands:

* ``sampler``: guidance sampling (``input_pipeline.guidance.sample_guidance``)
  against the literal SciPy transcription of the original
  (``tests/guidance_oracle.py``) on random piecewise-rigid flows, one core.
  Prints a markdown table; the last line is ``speedup <X>x`` at 384 x 384.
* ``pipeline``: the whole list-file path of the tf.data pipeline (JPEG
  frame and 8-bit flow images decoded, resized to short side 416, random crop
  384, grid + watershed guidance with K = 81, G = 200, batched), in child
  processes pinned to 1 and then 2 cores. Last line
  ``samples_per_s_per_core <X>`` (the 2-core rate divided by 2).

Each subcommand is a ``(help, add_arguments, run)`` entry of ``COMMANDS``.
BLAS/OpenMP pools are limited to one thread before NumPy is imported, so
timings are per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# ``tests`` is not an installed package: import it from the repository root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from input_pipeline import guidance  # noqa: E402
from tests import guidance_oracle  # noqa: E402

# (crop size, nms_ks K, sample_bg_ratio) of the released configs / the paper:
# G = int(sqrt(1 / bg_ratio)) = 133, 165, 200.
SAMPLER_SETTINGS = ((256, 49, 0.00005632), (320, 67, 0.00003629), (384, 81, 0.000025))


def _add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per size and sampler")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flows and the samplers")
    parser.add_argument("--flows", type=int, default=10, help="distinct random flows per size")


def _time_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_sampler(args: argparse.Namespace) -> None:
    """Times ours vs the SciPy oracle per sample, interleaved; medians in ms."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    print("| size | K | G | oracle ms | ours ms | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    speedup = math.nan
    for size, k, bg_ratio in SAMPLER_SETTINGS:
        config = guidance.SamplerConfig(strategy=("grid", "watershed"), bg_ratio=bg_ratio, nms_ks=k)
        flows = [
            guidance_oracle.piecewise_rigid_flow(size, size, rng, num_objects=int(rng.integers(1, 6)))
            for _ in range(args.flows)
        ]
        ours_rng = np.random.default_rng(args.seed)
        oracle_rng = np.random.default_rng(args.seed)

        def ours(flow, config=config, ours_rng=ours_rng):
            guidance.sample_guidance(flow, config, ours_rng)

        def oracle(flow, config=config, oracle_rng=oracle_rng):
            guidance_oracle.flow_sampler(
                flow, list(config.strategy), config.bg_ratio, config.nms_ks, config.max_num_guide, oracle_rng
            )

        ours(flows[0])
        oracle(flows[0])
        ours_s, oracle_s = [], []
        for i in range(args.repeats):
            flow = flows[i % len(flows)]
            if i % 2:
                ours_s.append(_time_call(lambda flow=flow: ours(flow)))
                oracle_s.append(_time_call(lambda flow=flow: oracle(flow)))
            else:
                oracle_s.append(_time_call(lambda flow=flow: oracle(flow)))
                ours_s.append(_time_call(lambda flow=flow: ours(flow)))
        oracle_ms = 1e3 * statistics.median(oracle_s)
        ours_ms = 1e3 * statistics.median(ours_s)
        speedup = oracle_ms / ours_ms
        print(f"| {size} | {k} | {config.grid_stride} | {oracle_ms:.2f} | {ours_ms:.3f} | {speedup:.1f}x |")
    print(f"speedup {speedup:.1f}x")


def _add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=int, default=48, help="distinct examples written to disk")
    parser.add_argument("--height", type=int, default=416, help="frame height in pixels")
    parser.add_argument("--width", type=int, default=555, help="frame width in pixels")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per core count")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic examples")


def _add_pipeline_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", required=True, help="list file to read")
    parser.add_argument("--cores", type=int, required=True, help="cores to pin the process to")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing")


def _write_benchmark_lists(root: str, count: int, height: int, width: int, seed: int) -> str:
    """Writes ``count`` synthetic examples in the original's format (JPEG frames, 8-bit flow JPEGs)."""
    from input_pipeline import flow_io, synthetic

    config = synthetic.SyntheticConfig(height=height, width=width)
    lines = []
    for i in range(count):
        ex = synthetic.generate_example(i, config, seed)
        names = [f"{i:05d}_1.jpg", f"{i:05d}_2.jpg", f"{i:05d}_x.jpg", f"{i:05d}_y.jpg"]
        cv2.imwrite(os.path.join(root, names[0]), ex["frame1"][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(os.path.join(root, names[1]), ex["frame2"][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        flow_io.write_flow_jpg(os.path.join(root, names[2]), os.path.join(root, names[3]), ex["flow"])
        lines.append(" ".join(names))
    path = os.path.join(root, "list.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_pipeline_worker(args: argparse.Namespace) -> None:
    """Child process: pinned to ``--cores`` cores, prints samples/s of the list pipeline."""
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cores)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(args.cores)
    tf.config.threading.set_intra_op_parallelism_threads(args.cores)
    from input_pipeline import guidance, pipeline

    source = pipeline.list_source([args.list], os.path.dirname(args.list), "jpg", False)
    transform = pipeline.TransformConfig(
        short_size=416,
        crop_size=(384, 384),
        train=True,
        sampler=guidance.SamplerConfig(bg_ratio=0.000025, nms_ks=81),
    )
    ds = pipeline.create_dataset(
        source, transform, local_batch=args.batch, local_devices=1, seed=0, num_parallel_calls=args.cores
    )
    it = ds.as_numpy_iterator()
    for _ in range(args.warmup):
        next(it)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        next(it)
        n += args.batch
    print(f"RESULT {n / (time.perf_counter() - start):.2f}")


def run_pipeline(args: argparse.Namespace) -> None:
    """The full list-file path at 416 -> 384 with guidance sampling on 1 and 2 cores."""
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        list_file = _write_benchmark_lists(root, args.examples, args.height, args.width, args.seed)
        rates = {}
        for cores in (1, 2):
            cmd = [
                sys.executable, os.path.abspath(__file__), "_pipeline_worker", "--list", list_file,
                "--cores", str(cores), "--seconds", str(args.seconds), "--batch", str(args.batch),
            ]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"pipeline worker on {cores} core(s) failed:\n{out.stderr[-4000:]}")
            rates[cores] = float(out.stdout.split("RESULT")[-1])
    print(f"frames {args.height}x{args.width} JPEG, flow as two 8-bit JPEGs; resize to short side 416, "
          "random crop 384x384, grid + watershed guidance (K=81, G=200)")  # fmt: skip
    print("| cores | samples/s | samples/s per core |")
    print("| --- | --- | --- |")
    for cores, rate in rates.items():
        print(f"| {cores} | {rate:.1f} | {rate / cores:.1f} |")
    print(f"scaling 1 -> 2 cores: {rates[2] / rates[1]:.2f}x")
    print(f"samples_per_s_per_core {rates[2] / 2:.1f}")


COMMANDS = {
    "sampler": ("guidance sampler vs the SciPy oracle", _add_sampler_arguments, run_sampler),
    "pipeline": ("list-file tf.data pipeline on 1 and 2 cores", _add_pipeline_arguments, run_pipeline),
    "_pipeline_worker": (
        "(internal) one pinned pipeline run",
        _add_pipeline_worker_arguments,
        run_pipeline_worker,
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text)
        add_arguments(subparser)
        subparser.set_defaults(run=run)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()

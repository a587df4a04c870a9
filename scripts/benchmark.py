"""Speed benchmarks of cmp-jax parts.

Usage::

    python scripts/benchmark.py sampler [--repeats N] [--seed S]
    python scripts/benchmark.py pipeline [--seconds S]
    python scripts/benchmark.py train_step [--config C [--config.x=v ...]] [--batch N] [--size S]
        [--repeats R] [--threads T] [--variants xla-f32,taps-f32,xla-bf16,taps-bf16]
    python scripts/benchmark.py inference [--config C [--config.x=v ...]] [--size S] [--sets G] [--repeats R]
    python scripts/benchmark.py propagation --workdir W [--config C | --lists L [L ...] [--root R]
        [--flow-type jpg|flo]] [--num-batches N] [--batch-size B] [--step S]
    python scripts/benchmark.py resolution_bound --config C [--strides 8,4,2] [--num-batches N]
    python scripts/benchmark.py label_propagation --workdir W [--clips N] [--frames T] [--feature F]
    python scripts/benchmark.py lists [--lines N]
    python scripts/benchmark.py throughput [--config C [--config.x=v ...]] [--per-device-batch B] [--steps N]
        [--dtypes float32,bfloat16]
    python scripts/benchmark.py memory [--configs yfcc_resnet,...] [--devices 1,2,4,8] [--accum K]

Subcommands:

* ``sampler``: guidance sampling (``input_pipeline.guidance.sample_guidance``)
  against the literal SciPy transcription of the original
  (``input_pipeline/guidance/reference.py``) on random piecewise-rigid flows, one core.
  Prints a markdown table; the last line is ``speedup <X>x`` at 384 x 384.
* ``pipeline``: the whole list-file path of the tf.data pipeline (JPEG
  frame and 8-bit flow images decoded, resized to short side 416, random crop
  384, grid + watershed guidance with K = 81, G = 200, batched), in child
  processes pinned to 1 and then 2 cores. Last line
  ``samples_per_s_per_core <X>`` (the 2-core rate divided by 2).
* ``train_step``: one jitted single-device ``cmp_jax.train.train_step``
  (state donated) per variant (conv formulation x compute dtype) against the
  PyTorch twin (``cmp_jax.torch_models.CMP``, same weights) doing the same
  step: forward, the discrete loss (logits upsampled bilinear align-corners
  to the crop, flow quantised as ``FlowBins.quantize``, CE x + CE y),
  backward, ``torch.optim.SGD(lr, momentum 0.9, weight_decay 1e-4)``. Same
  batch, same size, BatchNorm in training mode on both sides. Threads: the
  process is pinned (``sched_setaffinity``) to T cores before XLA or PyTorch
  start their thread pools (XLA sizes its pool from the affinity mask) and
  PyTorch gets ``torch.set_num_threads(T)``. Both are compiled/warmed up, then
  timed in interleaved rounds (the order rotates each round); medians. XLA's
  FLOP count per step comes from ``cost_analysis()`` of each compiled step;
  every GFLOP/s figure uses the count of the first ``xla`` variant (the same
  math; a taps program also counts the additions of its partial sums).
  Prints a markdown table; the last line is ``jax_over_torch <X>``, the
  img/s ratio of the first variant (default: the base config's).
* ``inference``: one image and ``--sets`` guidance sets (a MOFA-Video clip:
  24 frames' trajectories, the demo model ResNet-50 + skip decoder at 384 x
  384, random He-initialised weights), as ``Predictor.encode`` once + ``propagate`` of all
  sets, against the full model run on the image repeated once per set (what
  MOFA-Video does). Both jitted and warmed up, host preparation included on
  both sides, timed in alternating rounds; medians. Also prints the largest
  difference between the two flows. Last line ``speedup <X>x``.
* ``propagation``: not a speed benchmark but how well a trained model
  propagates: evaluates the newest checkpoint (or ``--step``) of the training
  workdir ``--workdir`` (its ``config.json`` gives the model) on a validation
  set, with ``cmp_jax.evaluation.evaluator.evaluate_workdir`` (the training
  loop's evaluator, pmapped over the local devices; centre crops, guidance
  seeded as in training). The data: ``--config C``, an experiment config file
  (``configs/*.py``) whose ``data`` and ``guidance`` groups (source, lists or
  synthetic generator, resize and crop, sampler) replace the workdir's; or
  ``--lists L ...`` (with ``--root``, ``--flow-type``), list files replacing
  the workdir config's ``data.val_lists``; or neither: the workdir's own
  validation set. ``--num-batches`` (default: the whole set) and
  ``--batch-size`` (default: the workdir's ``eval_batch_size``; a multiple of
  the local device count) bound the work. Prints the EPE of the model and of
  the zero, nearest-guidance and Gaussian-splat baselines, overall and per
  target-magnitude range, the model's ratio to nearest fill, and the fraction
  of images whose per-image EPE is below nearest fill's (the table the
  training loop prints at its end); last line ``epe_over_nearest <R>``
  (``eval/epe / eval/epe_nearest``). It writes nothing into the workdir. This
  is the supported way to evaluate a finished workdir, on its own or on other
  data: restarting ``main.py`` with ``num_train_steps`` equal to the last step
  does not evaluate (the start-of-run eval runs at step 0 only) and rewrites
  the workdir's ``config.json`` with the new data.
* ``resolution_bound``: not a speed benchmark either, but what an output
  resolution allows: on the validation set of the config file ``--config``
  (as the training loop's evaluator reads it, one device), the EPE of a
  model that is exact at 1/s of the crop (the target flow sampled on the
  grid of the align-corners read-out, (H - 1) / (H/s - 1) pixels apart, and
  upsampled back bilinearly, as ``flow.logits_to_flow`` does) for each
  stride s of ``--strides``, beside nearest-guidance fill, overall and per
  target-magnitude range. A model with ``model.upsample="bilinear"`` at
  encoder stride s cannot do better than its row.
* ``label_propagation``: representation quality, not speed: on ``--clips``
  held-out synthetic clips of a trained workdir's procedural data
  (``cmp_jax.evaluation.video_segmentation``), the video label propagation
  J, F and J&F (DAVIS-2017 protocol and metrics) of its trained encoder and of
  the initialisation its training started from, and the time per propagated
  frame (after one clip compiles). Last line ``jf_gain <G>``, the trained
  J&F minus the random one, in points.
* ``lists``: reading a list file of ``--lines`` (default 1M) jpg-type lines
  with YFCC-like relative paths (written to a temporary folder, read with a
  root), each reader in a fresh child process: the previous representation (a
  Python list of ``ListEntry`` built line by line, a private copy of that loop)
  against ``input_pipeline.lists.read_lists`` (a ``ListTable``). Prints wall
  seconds, the peak resident memory above the process's before the call and
  what stays resident after it, in a markdown table; last line
  ``lists_1M_mb <MB> (baseline <MB>), seconds <S> (baseline <S>)`` (peak MiB).
* ``throughput``: the accelerator benchmark (``cmp_jax.throughput``): the
  training loop's pmapped step of a config (default ``configs/yfcc_resnet.py``,
  ``--per-device-batch`` images on each local device, one random
  device-resident batch, so no input pipeline) for each compute dtype of
  ``--dtypes``: seconds per step, images/s over the local devices, achieved
  TFLOP/s per device (XLA's FLOP count of the compiled per-device program) and
  its share of the device's datasheet peak (``throughput.PEAKS``; none for the
  CPU or a device missing from the table). Last line ``images_per_s <X>`` of
  the first dtype.
* ``memory``: XLA's per-device memory plan (``memory_report.plan``: arguments +
  outputs + temporaries of the compiled, never-run train step) of each config of
  ``--configs`` with its global batch split over each device count of
  ``--devices``, in float32 and bfloat16, with and without
  ``grad_accum_steps=--accum``, compiled with ``--conv-impl`` (default ``xla``,
  the GPU/TPU formulation) by the backend at hand. A markdown table in GiB;
  ``-`` where the batch does not split.

Each subcommand is a ``(help, add_arguments, run)`` entry of ``COMMANDS``.
BLAS/OpenMP pools are limited to one thread before NumPy is imported, so
timings are per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# Without ``pip install -e .`` the packages are found from the repository root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cmp_jax import config_args  # noqa: E402
from input_pipeline import guidance  # noqa: E402
from input_pipeline.guidance import reference as guidance_oracle  # noqa: E402

_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"

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


_TRAIN_VARIANTS = ("xla-f32", "taps-f32", "xla-bf16", "taps-bf16")
_DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def _default_variants(model) -> str:
    """The four variants, the config's (conv_impl as resolved on this backend, dtype) first."""
    from cmp_jax.models.layers import resolve_conv_impl

    dtype = {v: k for k, v in _DTYPES.items()}.get(model.dtype, "f32")
    first = f"{resolve_conv_impl(model.get('conv_impl', 'xla'))}-{dtype}"
    return ",".join([first] + [v for v in _TRAIN_VARIANTS if v != first])


def _add_train_step_arguments(parser: argparse.ArgumentParser) -> None:
    config_args.add_argument(parser, "configs/base.py")
    parser.add_argument("--batch", type=int, default=2, help="images per step")
    parser.add_argument("--size", type=int, default=320, help="square crop side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument(
        "--threads", type=int, default=0, help="cores to pin to and torch threads (0: all available)"
    )
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated <conv_impl>-<f32|bf16> of {_TRAIN_VARIANTS}; the first gives "
        "jax_over_torch (default: all four, the base config's first)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch")


def _train_batch(batch: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """A random normalised image, ~1% guidance points and flow over +-60 px (ends clamp), NHWC."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    mask = (rng.random((batch, size, size, 1)) < 0.01).astype(np.float32).repeat(2, -1)
    flow = rng.uniform(-60, 60, (batch, size, size, 2)).astype(np.float32)
    return {
        "image": image,
        "sparse": flow * mask,
        "mask": mask,
        "flow": flow,
        "num_guides": mask[..., 0].sum((1, 2)).astype(np.int32),
    }


def _jax_train_steps(config, variants: list[str], host_batch: dict[str, np.ndarray]):
    """One compiled, state-donating ``train.train_step`` per variant.

    Returns:
      (steps: variant -> a call running one step and returning its loss;
      flops: variant -> XLA's FLOP count of the step; the first variant's
      initial variables, for the PyTorch twin).
    """
    import jax

    from cmp_jax import state as state_lib
    from cmp_jax import train

    steps: dict[str, Callable[[], float]] = {}
    flops: dict[str, float] = {}
    variables = None
    for v in variants:
        impl, dtype = v.split("-")
        config.model.conv_impl = impl
        config.model.dtype = _DTYPES[dtype]
        model, bins = state_lib.build_from_config(config)
        schedule = state_lib.learning_rate_schedule(config)
        state = state_lib.create_train_state(config, model, state_lib.create_optimizer(config, schedule))
        if variables is None:
            variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
        batch = jax.device_put(host_batch)
        step = jax.jit(
            functools.partial(train.train_step, bins=bins, schedule=schedule, axis_name=None),
            donate_argnums=0,
        )
        start = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops[v] = float((cost or {}).get("flops", math.nan))
        holder = [state]

        def jax_step(compiled=compiled, holder=holder, batch=batch):
            holder[0], metrics = compiled(holder[0], batch)
            jax.block_until_ready((holder[0], metrics))
            return float(metrics["loss"])

        print(f"{v}: compiled in {compile_s:.0f} s, first loss {jax_step():.4f}", flush=True)
        steps[v] = jax_step
    return steps, flops, variables


def _torch_train_step(config, variables, host_batch: dict[str, np.ndarray], size: int) -> Callable[[], float]:
    """The PyTorch twin's step on the same batch: forward, the discrete loss, backward, SGD."""
    import torch
    import torch.nn.functional as F

    from cmp_jax import torch_models

    m = config.model
    twin = torch_models.CMP(
        m.backbone, m.decoder, tuple(m.decoder_combo), m.output_stride, config.flow.num_bins
    ).train()
    torch_models.load_flax_variables(twin, variables)
    optimizer = torch.optim.SGD(
        twin.parameters(), lr=config.optim.lr, momentum=config.optim.momentum,
        weight_decay=config.optim.weight_decay,
    )  # fmt: skip
    nchw = {k: torch.from_numpy(np.ascontiguousarray(host_batch[k].transpose(0, 3, 1, 2))) for k in
            ("image", "sparse", "mask", "flow")}  # fmt: skip
    num_bins, fmax = config.flow.num_bins, config.flow.fmax
    width = 2.0 * fmax / num_bins

    def torch_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        logits = twin(nchw["image"], nchw["sparse"], nchw["mask"])
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True)
        # FlowBins.quantize: clamp inside +-fmax by 1e-3, floor into bins of width 2 fmax / C.
        flow = nchw["flow"].clamp(-fmax + 1e-3, fmax - 1e-3)
        target = ((flow + fmax) / width).floor().long().clamp(0, num_bins - 1)
        loss = F.cross_entropy(logits[:, :num_bins], target[:, 0]) + F.cross_entropy(
            logits[:, num_bins:], target[:, 1]
        )
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    print(f"torch: first loss {torch_step():.4f} ({torch.get_num_threads()} threads)", flush=True)
    return torch_step


def run_train_step(args: argparse.Namespace) -> None:
    """Jitted JAX train step per variant vs the PyTorch twin, interleaved; img/s and GFLOP/s."""
    available = sorted(os.sched_getaffinity(0))
    threads = args.threads or len(available)
    if threads > len(available):
        sys.exit(f"--threads {threads} but only {len(available)} cores are available")
    # Pin before XLA and PyTorch size their thread pools from the affinity mask.
    os.sched_setaffinity(0, available[:threads])
    config = config_args.parse(args.config_argv, default=str(_CONFIGS / "base.py"))
    if config.model.get("upsample", "bilinear") != "bilinear":
        sys.exit("the PyTorch twin has no convex upsampling: use --config.model.upsample=bilinear")
    variants = (args.variants or _default_variants(config.model)).split(",")
    for v in variants:
        if v not in _TRAIN_VARIANTS:
            sys.exit(f"unknown variant {v!r}; choose from {_TRAIN_VARIANTS}")
    # torch/torchvision before anything that imports TensorFlow (cmp_jax.train does, via clu).
    import torch

    from cmp_jax import torch_models  # noqa: F401 (imports torchvision before TensorFlow)

    torch.set_num_threads(threads)
    host_batch = _train_batch(args.batch, args.size, args.seed)
    config.data.crop_size = (args.size, args.size)
    config.batch_size = args.batch
    steps, flops, variables = _jax_train_steps(config, variants, host_batch)
    steps["torch"] = _torch_train_step(config, variables, host_batch, args.size)
    for _ in range(args.warmup):
        for fn in steps.values():
            fn()
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_time_call(steps[name]))
    seconds = {name: statistics.median(t) for name, t in times.items()}
    # The taps programs add their partial sums, which XLA counts: take the conv count.
    counted = next((v for v in variants if v.startswith("xla")), variants[0])
    step_flops = flops[counted]
    m = config.model
    print(
        f"{m.backbone} + {m.decoder} decoder, batch {args.batch} at {args.size}x{args.size}, "
        f"{threads} thread(s); {args.repeats} interleaved steps each, medians; "
        f"XLA FLOPs/step {step_flops / 1e9:.1f} G (cost_analysis of {counted}; "
        + ", ".join(f"{v}: {f / 1e9:.1f} G" for v, f in flops.items())
        + ")"
    )
    print("| implementation | s/step | img/s | GFLOP/s | vs torch |")
    print("| --- | --- | --- | --- | --- |")
    for name in ["torch"] + variants:
        s = seconds[name]
        label = "pytorch f32" if name == "torch" else f"jax {name.replace('-', ' ')}"
        print(
            f"| {label} | {s:.2f} | {args.batch / s:.2f} | {step_flops / s / 1e9:.0f} | "
            f"{seconds['torch'] / s:.2f}x |"
        )
    print(f"jax_over_torch {seconds['torch'] / seconds[variants[0]]:.2f}")


def _add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    config_args.add_argument(parser, "configs/semiauto_resnet.py (the demo model)")
    parser.add_argument("--size", type=int, default=384, help="square image side in pixels")
    parser.add_argument("--sets", type=int, default=24, help="guidance sets (frames of a clip)")
    parser.add_argument("--points", type=int, default=4, help="trajectories per clip")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per method")
    parser.add_argument("--seed", type=int, default=0)


def run_inference(args: argparse.Namespace) -> None:
    """Encode once + propagate G sets vs G full forwards of the same image; seconds per clip."""
    import jax
    import jax.numpy as jnp

    from cmp_jax.flow import FlowBins, logits_to_flow
    from cmp_jax.inference import Predictor, arrows_to_guidance, normalize_images
    from cmp_jax.models import build_model

    rng = np.random.default_rng(args.seed)
    size, sets = args.size, args.sets
    # He init: the original's tiny init would give (near) zero flow, and a vacuous comparison.
    config = config_args.parse(args.config_argv, default=str(_CONFIGS / "semiauto_resnet.py"))
    model = build_model(config.model, num_bins=config.flow.num_bins, init_scheme="he")
    small = jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 2)), jnp.zeros((1, 64, 64, 2))
    variables = jax.jit(model.init)(jax.random.key(args.seed), *small)  # parameters do not depend on size
    bins = FlowBins(config.flow.num_bins, config.flow.fmax)
    predictor = Predictor(model, variables, bins)
    image = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
    # Trajectories from random starts to random ends, frame t moved t / G of the way.
    starts = rng.uniform(0, size - 1, (args.points, 2))
    moves = rng.uniform(-30, 30, (args.points, 2))
    clip = [
        [(x, y, *(m * (t + 1) / sets)) for (x, y), m in zip(starts, moves, strict=True)] for t in range(sets)
    ]

    full = jax.jit(lambda v, img, sp, m: logits_to_flow(model.apply(v, img, sp, m), bins, img.shape[1:3]))

    def full_forwards() -> np.ndarray:
        guidance = [arrows_to_guidance(a, size, size) for a in clip]
        images = np.repeat(normalize_images(image), sets, axis=0)
        sparse = np.stack([g[0] for g in guidance])
        mask = np.stack([g[1] for g in guidance])
        return np.asarray(full(variables, images, sparse, mask))

    def encode_once() -> np.ndarray:
        return predictor.propagate(predictor.encode(image), clip)

    methods = {f"{sets} full forwards": full_forwards, "encode once + propagate": encode_once}
    outputs = {name: fn() for name, fn in methods.items()}  # compiles
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.repeats):
        for name in list(methods)[r % 2 :] + list(methods)[: r % 2]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    a, b = outputs.values()
    m = config.model
    print(f"{m.backbone} + {m.decoder} decoder, {size}x{size}, {sets} guidance sets, {jax.devices()[0]}")
    print(f"max |flow| {np.abs(a).max():.2f} px, max |difference| {np.abs(a - b).max():.2e} px")
    print("| method | s per clip | ms per frame |")
    print("| --- | --- | --- |")
    for name, t in medians.items():
        print(f"| {name} | {t:.2f} | {1000 * t / sets:.0f} |")
    baseline, ours = medians.values()
    print(f"speedup {baseline / ours:.2f}x")


def _add_propagation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="training workdir (config.json, checkpoints/)")
    config_args.add_argument(parser, None)
    parser.add_argument("--lists", nargs="+", default=None, help="list files replacing data.val_lists")
    parser.add_argument("--root", default=None, help="data.root for --lists (default: the workdir's)")
    parser.add_argument(
        "--flow-type",
        choices=("jpg", "flo"),
        default=None,
        help="data.flow_type for --lists (default: the workdir's)",
    )
    parser.add_argument("--num-batches", type=int, default=-1, help="eval batches (-1: the whole set)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="eval batch over all devices (default: the workdir's)"
    )
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")


def _describe_data(config) -> str:
    data = config.data
    crop = data.crop_size if isinstance(data.crop_size, int) else "x".join(str(c) for c in data.crop_size)
    if data.source == "lists":
        what = f"lists {', '.join(data.val_lists)} (root {data.root}, flow {data.flow_type})"
    elif data.source == "synthetic":
        what = f"synthetic (val_size {data.synthetic.val_size}, val_seed {data.synthetic.val_seed})"
    else:
        what = f"tfds {data.tfds.name} split {data.tfds.val_split}"
    return f"{what}, short side {data.short_size}, centre crop {crop}"


def run_propagation(args: argparse.Namespace) -> None:
    """Model vs zero / nearest / splat on a validation set: the summary table, then epe_over_nearest."""
    if (args.root is not None or args.flow_type is not None) and not args.lists:
        sys.exit("--root and --flow-type apply to --lists")
    if args.config_argv and args.lists:
        sys.exit("give --config (whose data and guidance define the eval data) or --lists, not both")
    import tensorflow as tf

    # TensorFlow only reads the data: keep it off the accelerators JAX uses.
    tf.config.experimental.set_visible_devices([], "GPU")
    tf.config.experimental.set_visible_devices([], "TPU")

    from cmp_jax import evaluation
    from cmp_jax import state as state_lib
    from cmp_jax.evaluation import evaluator

    config = evaluator.eval_config(
        state_lib.read_config(args.workdir),
        config_args.parse(args.config_argv) if args.config_argv else None,
        lists=args.lists,
        root=args.root,
        flow_type=args.flow_type,
        batch_size=args.batch_size,
        num_batches=args.num_batches,
    )
    metrics, info = evaluator.evaluate_workdir(args.workdir, config, step=args.step)
    print(
        f"{args.workdir}: checkpoint of step {info['step']}, {config.model.backbone} + "
        f"{config.model.decoder} decoder; {info['images']} images on {info['devices']} device(s)"
    )
    print(f"data: {_describe_data(config)}")
    print(evaluation.format_summary(metrics))
    ratio = evaluation.summary_scalars(metrics)["summary/epe_over_nearest"]
    print(f"epe_over_nearest {ratio:.3f}")


def _add_resolution_arguments(parser: argparse.ArgumentParser) -> None:
    config_args.add_argument(parser, None)
    parser.add_argument("--strides", default="8,4,2", help="output strides s to bound, comma-separated")
    parser.add_argument("--num-batches", type=int, default=-1, help="eval batches (-1: the whole set)")


def run_resolution_bound(args: argparse.Namespace) -> None:
    """EPE of the target flow at 1/s upsampled back, per stride, beside nearest fill."""
    import jax.numpy as jnp

    from cmp_jax import evaluation
    from cmp_jax.evaluation.baselines import nearest_guidance_flow
    from cmp_jax.flow import resize_bilinear_align_corners
    from input_pipeline import pipeline

    strides = [int(v) for v in args.strides.split(",")]
    config = config_args.parse(args.config_argv)
    dataset, _ = pipeline.create_from_config(
        config, "eval", local_batch=config.eval_batch_size, local_devices=1, process_index=0, process_count=1
    )
    if args.num_batches >= 0:
        dataset = dataset.take(args.num_batches)
    sums: dict[str, dict[str, float]] = {}

    def add(name: str, pred: np.ndarray, target: np.ndarray) -> None:
        for key, value in evaluation.epe_sums(jnp.asarray(pred), jnp.asarray(target)).items():
            sums.setdefault(name, {}).setdefault(key, 0.0)
            sums[name][key] += float(value)

    for batch in pipeline.numpy_batches(dataset):
        flow, sparse, mask = (batch[k][0] for k in ("flow", "sparse", "mask"))
        height, width = flow.shape[1:3]
        add("nearest", nearest_guidance_flow(sparse, mask), flow)
        for s in strides:
            if height % s or width % s:
                sys.exit(f"crop {height}x{width} is not a multiple of stride {s}")
            rows = np.round(np.linspace(0, height - 1, height // s)).astype(int)
            cols = np.round(np.linspace(0, width - 1, width // s)).astype(int)
            coarse = flow[:, rows][:, :, cols]
            add(
                f"exact at 1/{s}",
                np.asarray(resize_bilinear_align_corners(jnp.asarray(coarse), (height, width))),
                flow,
            )
    names = list(evaluation.MAGNITUDE_RANGE_NAMES)
    print(f"data: {_describe_data(config)}")
    print("| EPE (px) | all | " + " | ".join(f"{n} px" for n in names) + " |")
    print("| --- " * (len(names) + 2) + "|")
    for name, values in sums.items():
        means = evaluation.summarize_epe(values, "epe")
        cells = [means["epe"]] + [means[f"epe/{n}"] for n in names]
        print(f"| {name} | " + " | ".join("-" if math.isnan(v) else f"{v:.3f}" for v in cells) + " |")


def _add_label_propagation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="trained workdir of synthetic data")
    parser.add_argument("--clips", type=int, default=16, help="held-out synthetic clips")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: the config's)")
    parser.add_argument("--feature", default=None, help="encoder output (default: config.label_prop.feature)")


def run_label_propagation(args: argparse.Namespace) -> None:
    """Label propagation J&F of the trained encoder vs its random initialisation on held-out clips."""
    from cmp_jax.evaluation import video_segmentation as vs
    from configs import base

    config, variables, step, model = vs.load_workdir(args.workdir, None, base.get_config().label_prop)
    feature = args.feature or vs.feature_of(config)
    clips = vs.synthetic_clips(config, args.clips, args.frames or config.label_prop.num_frames)
    protocol = vs.protocol_of(config)
    frames = sum(len(c.frames) - 1 for c in clips)
    rows = {}
    for label, encoder_variables in (("trained", variables), ("random init", vs.random_variables(config))):
        vs.evaluate_encoder(model, encoder_variables, clips[:1], protocol, feature)  # compile
        start = time.perf_counter()
        summary, _ = vs.evaluate_encoder(model, encoder_variables, clips, protocol, feature)
        rows[label] = (summary, (time.perf_counter() - start) / frames)
    print(
        f"{args.workdir} (step {step}): {config.model.backbone}, feature {feature!r}; {len(clips)} held-out "
        f"synthetic clips of {clips[0].frames.shape[0]} frames {clips[0].frames.shape[1]}x"
        f"{clips[0].frames.shape[2]} (seed {config.label_prop.seed}); protocol {protocol}"
    )
    print("| encoder | J | F | J&F | ms per frame |\n| --- | --- | --- | --- | --- |")
    for label, (summary, seconds) in rows.items():
        print(
            f"| {label} | {100 * summary['J']:.1f} | {100 * summary['F']:.1f} | {100 * summary['JF']:.1f} | "
            f"{1000 * seconds:.0f} |"
        )
    gain = 100 * (rows["trained"][0]["JF"] - rows["random init"][0]["JF"])
    print(f"jf_gain {gain:.2f}")


def _add_lists_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the generated list file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated paths")


def _add_lists_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", required=True, help="list file to read")
    parser.add_argument("--root", required=True, help="root of its relative paths")
    parser.add_argument("--reader", choices=("baseline", "table"), required=True, help="which reader")


def _write_yfcc_like_list(path: str, lines: int, seed: int) -> None:
    """Writes ``lines`` jpg-type lines like the YFCC lists': random video folders and frame numbers."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for first in range(0, lines, 100_000):
            ids = rng.integers([0, 10**9, 0], [100, 10**10, 3000], (min(100_000, lines - first), 3))
            f.writelines(
                f"UnsupVideo_Frames/{s:02d}/{v}/{i:06d}.jpg UnsupVideo_Frames/{s:02d}/{v}/{i + 5:06d}.jpg "
                f"flow_origin/{s:02d}/{v}/{i:06d}_x.jpg flow_origin/{s:02d}/{v}/{i:06d}_y.jpg\n"
                for s, v, i in ids.tolist()
            )


def _baseline_read_list(list_file: str, root: str) -> list:
    """The previous ``read_lists`` on one jpg-type list: a Python list of ``ListEntry``, line by line."""
    from input_pipeline import lists

    prefix = os.path.join(root, "")
    entries = []
    with open(list_file, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            fields = text.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 4:
                raise lists.BadExampleError(f"{list_file} line {number}: expected 4 paths, got {len(fields)}")
            fields = [p if os.path.isabs(p) else prefix + p for p in fields]
            entries.append(lists.ListEntry(fields[0], fields[1], tuple(fields[2:]), list_file, number))
    return entries


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_lists_worker(args: argparse.Namespace) -> None:
    """Child process: reads the list once; prints seconds, peak and kept resident MiB, a check entry."""
    import gc
    import json
    import resource

    from input_pipeline import lists

    gc.collect()
    before = _resident_bytes()
    start = time.perf_counter()
    if args.reader == "baseline":
        entries = _baseline_read_list(args.list, args.root)
    else:
        entries, _ = lists.read_lists([args.list], args.root, "jpg")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    kept = _resident_bytes() - before
    mb = 1 / 2**20
    check = repr(entries[len(entries) // 2])
    result = {"seconds": seconds, "peak_mb": (peak - before) * mb, "kept_mb": kept * mb, "check": check}
    print("RESULT " + json.dumps({**result, "count": len(entries)}))


def run_lists(args: argparse.Namespace) -> None:
    """The previous list-of-entries reader vs ``read_lists``' table, each in a fresh process."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        list_file = os.path.join(root, "train.txt")
        _write_yfcc_like_list(list_file, args.lines, args.seed)
        size_mb = os.path.getsize(list_file) / 2**20
        results = {}
        for reader in ("baseline", "table"):
            cmd = [
                sys.executable, os.path.abspath(__file__), "_lists_worker", "--list", list_file,
                "--root", root, "--reader", reader,
            ]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not lines:
                raise RuntimeError(f"{reader} reader failed:\n{out.stdout}\n{out.stderr}")
            results[reader] = json.loads(lines[-1].removeprefix("RESULT "))
    old, new = results["baseline"], results["table"]
    if (old["count"], old["check"]) != (new["count"], new["check"]):
        raise RuntimeError(f"the readers disagree: {old} vs {new}")
    print(f"{args.lines} lines, {size_mb:.0f} MiB of list text; entry {new['count'] // 2}: {new['check']}")
    print("| reader | seconds | peak MiB | kept MiB |\n| --- | --- | --- | --- |")
    for label, r in (("list of ListEntry (previous)", old), ("ListTable (read_lists)", new)):
        print(f"| {label} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['kept_mb']:.0f} |")
    ratios = old["peak_mb"] / new["peak_mb"], old["seconds"] / new["seconds"]
    print("peak memory {:.1f}x lower, {:.1f}x faster".format(*ratios))
    print(
        f"lists_{args.lines / 1e6:g}M_mb {new['peak_mb']:.0f} (baseline {old['peak_mb']:.0f}), "
        f"seconds {new['seconds']:.2f} (baseline {old['seconds']:.2f})"
    )


def _add_throughput_arguments(parser: argparse.ArgumentParser) -> None:
    config_args.add_argument(parser, "configs/yfcc_resnet.py")
    parser.add_argument(
        "--per-device-batch",
        type=int,
        default=10,
        help="images per device and step (the original's per GPU: 10)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated model.dtype values")


def run_throughput(args: argparse.Namespace) -> None:
    """The training step of a config on every local device: img/s, TFLOP/s and share of the peak."""
    import jax

    from cmp_jax import throughput

    config = config_args.parse(args.config_argv, default=str(_CONFIGS / "yfcc_resnet.py"))
    device = jax.local_devices()[0]
    results = []
    for dtype in args.dtypes.split(","):
        config.model.dtype = dtype
        results.append(throughput.measure(config, args.per_device_batch, args.steps, args.warmup))
        print(f"{dtype}: {results[-1].seconds_per_step:.3f} s/step", flush=True)
    _, peak_name = throughput.device_peak(device.device_kind, "float32")
    m = config.model
    print(
        f"{m.backbone} + {m.decoder} decoder at {config.data.crop_size}, {jax.local_device_count()} x "
        f"{device.device_kind!r} ({device.platform}; peaks: {peak_name or 'not in the table'}), "
        f"{args.steps} steps after {args.warmup} warm-up, one random device-resident batch"
    )
    print(throughput.markdown_table(results))
    print(f"images_per_s {results[0].images_per_s:.1f}")


def _add_memory_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs",
        default="yfcc_resnet,yfcc_coco_resnet,semiauto_resnet,yfcc_alexnet,yfcc_alexnet_8gpu",
        help="comma-separated config names under configs/ (lip_resnet and yfcc_youtube_alexnet have "
        "the model, crop and batch of yfcc_resnet and yfcc_alexnet)",
    )
    parser.add_argument("--devices", default="1,2,4,8", help="device counts the global batch is split over")
    parser.add_argument(
        "--accum",
        type=int,
        default=4,
        help="grad_accum_steps of the accumulation columns (0: no such columns)",
    )
    parser.add_argument("--conv-impl", default="xla", help="model.conv_impl compiled (xla: what GPU/TPU run)")


def run_memory(args: argparse.Namespace) -> None:
    """XLA's per-device plan of the released configs' train step at several device counts."""
    import importlib

    from cmp_jax import memory_report

    variants = [("float32", 1), ("bfloat16", 1)]
    if args.accum > 1:
        variants += [("float32", args.accum), ("bfloat16", args.accum)]
    header = " | ".join(f"{d}" + (f", grad_accum_steps={k}" if k > 1 else "") for d, k in variants)
    print(f"| config | devices | batch/device | {header} |")
    print("| --- | --- | --- |" + " --- |" * len(variants))
    for name in args.configs.split(","):
        base_config = importlib.import_module(f"configs.{name}").get_config()
        for n in (int(v) for v in args.devices.split(",")):
            per_device = base_config.batch_size // n
            cells = []
            for dtype, k in variants:
                config = base_config.copy_and_resolve_references()
                config.model.dtype = dtype
                config.model.conv_impl = args.conv_impl
                config.grad_accum_steps = k
                if base_config.batch_size % n or per_device % k:
                    cells.append("-")
                    continue
                plan = memory_report.plan(config, per_device)
                cells.append(f"{plan.total / memory_report.GIB:.1f}")
                print(
                    f"  {name} x{n} {dtype} k={k}: {memory_report.describe(plan, None)}",
                    file=sys.stderr,
                    flush=True,
                )
            print(f"| `{name}` | {n} | {per_device} | " + " | ".join(cells) + " |", flush=True)


COMMANDS = {
    "sampler": ("guidance sampler vs the SciPy oracle", _add_sampler_arguments, run_sampler),
    "pipeline": ("list-file tf.data pipeline on 1 and 2 cores", _add_pipeline_arguments, run_pipeline),
    "_pipeline_worker": (
        "(internal) one pinned pipeline run",
        _add_pipeline_worker_arguments,
        run_pipeline_worker,
    ),
    "train_step": ("jitted JAX train step vs the PyTorch twin", _add_train_step_arguments, run_train_step),
    "inference": ("encode once + propagate many vs full forwards", _add_inference_arguments, run_inference),
    "propagation": (
        "a trained workdir's EPE vs zero / nearest / splat on any validation data",
        _add_propagation_arguments,
        run_propagation,
    ),
    "label_propagation": (
        "video label propagation J&F: a trained encoder vs its random initialisation",
        _add_label_propagation_arguments,
        run_label_propagation,
    ),
    "resolution_bound": (
        "EPE of a model exact at 1/s of the crop vs nearest fill",
        _add_resolution_arguments,
        run_resolution_bound,
    ),
    "lists": ("reading a 1M-line list file: list of entries vs ListTable", _add_lists_arguments, run_lists),
    "_lists_worker": ("(internal) one list reader run", _add_lists_worker_arguments, run_lists_worker),
    "throughput": (
        "a config's train step on the local accelerators: img/s, FLOP/s, share of peak",
        _add_throughput_arguments,
        run_throughput,
    ),
    "memory": (
        "XLA's per-device memory plan of the released configs at 1-8 devices",
        _add_memory_arguments,
        run_memory,
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text)
        add_arguments(subparser)
        subparser.set_defaults(run=run)
    config_argv, rest = config_args.split(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    args.config_argv = config_argv
    args.run(args)


if __name__ == "__main__":
    main()

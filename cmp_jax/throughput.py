"""Training throughput on the devices at hand: images/s, achieved FLOP/s and the share of the device's peak.

``measure`` compiles the training loop's own step (``cmp_jax.train.train_step``,
pmapped over every local device exactly as ``main.py`` runs it, state
donated) for a config and a per-device batch, feeds it one random
device-resident batch (so the input pipeline is not measured), and times a
run of steps after a warm-up. The work per step is XLA's FLOP count of the
compiled per-device program (``cost_analysis()``); divided by the measured
seconds per step it gives the achieved FLOP/s per device, which
``device_peak`` compares with the device's datasheet peak.

The peaks (``PEAKS``) are the vendors' dense (no structured sparsity) tensor
figures per device as JAX counts devices (a TPU v2/v3 core, a TPU v4/v5p
megacore chip, one GPU), in TFLOP/s. A float32 step is compared with the
peak that XLA's default precision uses for float32 convolutions and matmuls:
TF32 tensor cores on NVIDIA Ampere and newer, the plain float32 units on
older GPUs, one bfloat16 pass on TPUs. Devices missing from the table report
no fraction.
"""

from __future__ import annotations

import dataclasses
import re
import time

import jax
import ml_collections
import numpy as np

from cmp_jax import parallel, train
from cmp_jax import state as state_lib
from input_pipeline import image_ops

# (pattern matched against ``Device.device_kind``, name, float32 peak, bfloat16 peak), TFLOP/s per
# device; the first pattern that matches wins, so the more specific ones come first. None: the
# device has no such unit (bfloat16 is emulated on pre-Ampere GPUs).
PEAKS: tuple[tuple[str, str, float | None, float | None], ...] = (
    (r"\bB200\b", "NVIDIA B200 (TF32 / BF16 dense)", 1100.0, 2250.0),
    (r"\bH200\b", "NVIDIA H200 (TF32 / BF16 dense)", 494.7, 989.4),
    (r"\bH100\b.*\bPCIe\b", "NVIDIA H100 PCIe (TF32 / BF16 dense)", 378.0, 756.0),
    (r"\bH100\b", "NVIDIA H100 SXM (TF32 / BF16 dense)", 494.7, 989.4),
    (r"\bA100\b", "NVIDIA A100 (TF32 / BF16 dense)", 156.0, 312.0),
    (r"\bL4\b", "NVIDIA L4 (TF32 / BF16 dense)", 60.0, 121.0),
    (r"\bA10\b", "NVIDIA A10 (TF32 / BF16 dense)", 62.5, 125.0),
    (r"\bV100\b", "NVIDIA V100 SXM2 (FP32; no BF16 units)", 15.7, None),
    (r"\bT4\b", "NVIDIA T4 (FP32; no BF16 units)", 8.1, None),
    (r"^TPU v2\b", "TPU v2 core (BF16; float32 in one BF16 pass)", 22.5, 22.5),
    (r"^TPU v3\b", "TPU v3 core (BF16; float32 in one BF16 pass)", 61.5, 61.5),
    (r"^TPU v4\b", "TPU v4 chip (BF16; float32 in one BF16 pass)", 275.0, 275.0),
    (r"^TPU v5 lite\b|^TPU v5e\b", "TPU v5e chip (BF16; float32 in one BF16 pass)", 197.0, 197.0),
    (r"^TPU v5\b|^TPU v5p\b", "TPU v5p chip (BF16; float32 in one BF16 pass)", 459.0, 459.0),
    (r"^TPU v6 lite\b|^TPU v6e\b", "TPU v6e chip (BF16; float32 in one BF16 pass)", 918.0, 918.0),
)


def device_peak(device_kind: str, dtype: str) -> tuple[float | None, str | None]:
    """The peak of a device for a compute dtype.

    Args:
      device_kind: ``jax.Device.device_kind``, e.g. ``"NVIDIA H100 80GB HBM3"`` or ``"TPU v4"``.
      dtype: the model's compute dtype, ``"float32"`` or ``"bfloat16"``.

    Returns:
      (peak in TFLOP/s or None, the table row's name or None when no row matches).
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    for pattern, name, f32, bf16 in PEAKS:
        if re.search(pattern, device_kind):
            return (f32 if dtype == "float32" else bf16), name
    return None, None


@dataclasses.dataclass(frozen=True)
class Throughput:
    """One measured configuration.

    Attributes:
      dtype: compute dtype.
      devices: local devices the step ran on.
      per_device_batch: images per device and step.
      seconds_per_step: wall seconds per step (mean over the timed steps).
      flops_per_device_step: XLA's FLOP count of the per-device program.
      peak_tflops: the device's peak for ``dtype`` (None: unknown).
    """

    dtype: str
    devices: int
    per_device_batch: int
    seconds_per_step: float
    flops_per_device_step: float
    peak_tflops: float | None

    @property
    def images_per_s(self) -> float:
        """Images per second over all local devices."""
        return self.devices * self.per_device_batch / self.seconds_per_step

    @property
    def achieved_tflops(self) -> float:
        """Achieved TFLOP/s per device."""
        return self.flops_per_device_step / self.seconds_per_step / 1e12

    @property
    def fraction_of_peak(self) -> float | None:
        """Achieved over peak FLOP/s (None where the peak is unknown)."""
        return None if not self.peak_tflops else self.achieved_tflops / self.peak_tflops


def _random_batch(devices: int, batch: int, height: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """A (devices, batch, H, W, C) batch: normalised noise image, ~1 % guidance, flow within +-40 px."""
    rng = np.random.default_rng(seed)
    shape = (devices, batch, height, width)
    mask = (rng.random((*shape, 1)) < 0.01).astype(np.float32).repeat(2, -1)
    flow = rng.uniform(-40, 40, (*shape, 2)).astype(np.float32)
    return {
        "image": rng.standard_normal((*shape, 3)).astype(np.float32),
        "sparse": flow * mask,
        "mask": mask,
        "flow": flow,
        "num_guides": mask[..., 0].sum((2, 3)).astype(np.int32),
    }


def measure(
    config: ml_collections.ConfigDict, per_device_batch: int, steps: int = 20, warmup: int = 3, seed: int = 0
) -> Throughput:
    """Times the pmapped training step of ``config`` on every local device.

    Args:
      config: an experiment config; its ``model`` (dtype included), ``flow``,
        ``optim``, ``loss``, ``grad_accum_steps`` and ``data.crop_size`` are used.
      per_device_batch: images per device and step.
      steps: timed steps (one device sync at the end: throughput, not latency).
      warmup: untimed steps after compiling.
      seed: seed of the random batch.

    Returns:
      The measurement; ``peak_tflops`` from ``device_peak`` of the first local device.
    """
    if per_device_batch < 1 or steps < 1 or warmup < 0:
        raise ValueError(
            f"need per_device_batch >= 1, steps >= 1, warmup >= 0; got {per_device_batch}, {steps}, {warmup}"
        )
    config = ml_collections.ConfigDict(config.to_dict())
    devices = jax.local_device_count()
    config.batch_size = per_device_batch * devices
    model, bins = state_lib.build_from_config(config)
    schedule = state_lib.learning_rate_schedule(config)
    state = state_lib.create_train_state(config, model, state_lib.create_optimizer(config, schedule))
    step = parallel.pmap_step(train.configured_train_step(config, bins, schedule))
    height, width = image_ops.crop_size(config.data.crop_size)
    # Device-resident, split over the devices along the leading axis as pmap expects.
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (parallel.AXIS_NAME,))
    sharding = jax.sharding.NamedSharding(mesh, jax.P(parallel.AXIS_NAME))
    batch = jax.device_put(_random_batch(devices, per_device_batch, height, width, seed), sharding)
    state = parallel.replicate(state)
    compiled = step.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", float("nan")))
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - start) / steps
    dtype = str(config.model.dtype)
    peak, _ = device_peak(jax.local_devices()[0].device_kind, dtype)
    return Throughput(dtype, devices, per_device_batch, seconds, flops, peak)


def markdown_table(results: list[Throughput]) -> str:
    """A markdown table of measurements, one row each."""
    rows = [
        "| dtype | devices | batch/device | s/step | img/s | TFLOP/s/device | peak | of peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        peak = "-" if r.peak_tflops is None else f"{r.peak_tflops:g}"
        frac = "-" if r.fraction_of_peak is None else f"{100 * r.fraction_of_peak:.1f} %"
        rows.append(
            f"| {r.dtype} | {r.devices} | {r.per_device_batch} | {r.seconds_per_step:.3f} | "
            f"{r.images_per_s:.1f} | {r.achieved_tflops:.3f} | {peak} | {frac} |"
        )
    return "\n".join(rows)

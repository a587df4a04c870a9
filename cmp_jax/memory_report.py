"""Will the train step fit? XLA's memory analysis of the compiled step against the device's memory.

The training loop compiles its step ahead of time (``jax.pmap(...).lower(...)
.compile()``) and reads the per-device sizes XLA plans: arguments (state and
batch), outputs, temporaries (activations kept for the backward pass and
work space) and what outputs reuse of the (donated) arguments. On an
accelerator that reports its memory (``Device.memory_stats()["bytes_limit"]``)
a step that needs more stops before the first step with the numbers and the
switches that would make it fit, estimated for the case at hand; on the CPU
(no limit reported) the report is logged and training goes on.

``plan`` compiles the same step for any config and per-device batch without
allocating it (abstract state and batch), on whatever backend runs it: the
README's table of the released configs at 1-8 devices comes from it
(``scripts/benchmark.py memory``). A plan is the compiling backend's: XLA:CPU
and XLA:GPU fuse and schedule differently, and the CPU compiler merges
rematerialised recomputation back (``model.remat`` shows no saving there).
"""

from __future__ import annotations

import dataclasses
from typing import Any

GIB = 1024**3
# Share of the device memory a plan may use (XLA's allocator and fragmentation need the rest).
USABLE = 0.9


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Per-device bytes of a compiled train step.

    Attributes:
      arguments: inputs (state and batch).
      outputs: outputs not aliased to donated inputs.
      temporaries: XLA's temporaries (activations for the backward pass, work space).
      per_device_batch: examples per device and step.
    """

    arguments: int
    outputs: int
    temporaries: int
    per_device_batch: int

    @property
    def total(self) -> int:
        """Bytes the step needs at its peak, as planned."""
        return self.arguments + self.outputs + self.temporaries


def step_memory(compiled: Any, per_device_batch: int) -> StepMemory:
    """``StepMemory`` from a compiled step's ``memory_analysis()``."""
    stats = compiled.memory_analysis()
    return StepMemory(
        arguments=int(stats.argument_size_in_bytes),
        outputs=max(int(stats.output_size_in_bytes) - int(stats.alias_size_in_bytes), 0),
        temporaries=int(stats.temp_size_in_bytes),
        per_device_batch=per_device_batch,
    )


def plan(config: Any, per_device_batch: int) -> StepMemory:
    """The compiled train step's plan for a config, compiled for one device and never run.

    Args:
      config: an experiment config (``model``, ``flow``, ``optim``, ``loss``,
        ``grad_accum_steps`` and ``data.crop_size`` are used; BatchNorm is not
        synchronised: a single-device program).
      per_device_batch: examples per device and step (a multiple of
        ``grad_accum_steps``).

    Returns:
      XLA's plan on the default backend; the state is donated, as in training.
    """
    # Imported here: cmp_jax.train imports this module for its memory check.
    import jax
    import ml_collections

    from cmp_jax import state as state_lib
    from cmp_jax import train
    from input_pipeline import image_ops

    config = ml_collections.ConfigDict(config.to_dict())
    config.sync_batchnorm = False
    model, bins = state_lib.build_from_config(config)
    schedule = state_lib.learning_rate_schedule(config)
    tx = state_lib.create_optimizer(config, schedule)
    state = jax.eval_shape(lambda: state_lib.create_train_state(config, model, tx))
    h, w = image_ops.crop_size(config.data.crop_size)
    f32 = jax.numpy.float32
    batch = {
        "image": jax.ShapeDtypeStruct((per_device_batch, h, w, 3), f32),
        "sparse": jax.ShapeDtypeStruct((per_device_batch, h, w, 2), f32),
        "mask": jax.ShapeDtypeStruct((per_device_batch, h, w, 2), f32),
        "flow": jax.ShapeDtypeStruct((per_device_batch, h, w, 2), f32),
        "num_guides": jax.ShapeDtypeStruct((per_device_batch,), jax.numpy.int32),
    }
    step = train.configured_train_step(config, bins, schedule)
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
    return step_memory(compiled, per_device_batch)


def device_limit(device: Any) -> int | None:
    """Bytes the device can hold, or None where it does not say (CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def describe(memory: StepMemory, limit: int | None) -> str:
    """One line: the plan per device, and against the device's memory when known."""
    line = (
        f"train step per device: {memory.total / GIB:.2f} GiB (arguments {memory.arguments / GIB:.2f}, "
        f"temporaries {memory.temporaries / GIB:.2f}, outputs {memory.outputs / GIB:.2f}) for "
        f"{memory.per_device_batch} examples"
    )
    if limit is None:
        return line + "; the device reports no memory limit (CPU): not checked"
    return line + f"; the device holds {limit / GIB:.2f} GiB"


def suggestions(memory: StepMemory, limit: int, config: Any, devices: int) -> list[str]:
    """Switches that would make the step fit, estimated from the plan.

    Temporaries are taken to scale with the examples per micro-batch and the
    batch part of the arguments to be small; bfloat16 is taken to halve the
    temporaries. Estimates, to be checked by the next run's report.
    """
    budget = USABLE * limit - memory.arguments - memory.outputs
    out = []
    b = memory.per_device_batch
    k0 = int(config.get("grad_accum_steps", 1))
    per_example = memory.temporaries / max(b // k0, 1)
    if budget <= 0:
        return [
            f"the state and outputs alone ({(memory.arguments + memory.outputs) / GIB:.2f} GiB) leave "
            "no room: a smaller model, or a device with more memory (each holds the whole state)"
        ]
    fitting = [k for k in range(k0, b + 1) if b % k == 0 and per_example * (b // k) <= budget]
    if fitting:
        out.append(f"grad_accum_steps={fitting[0]} (micro-batches of {b // fitting[0]} per device)")
    if config.model.get("dtype", "float32") != "bfloat16" and memory.temporaries / 2 <= budget:
        out.append("model.dtype='bfloat16' (about half the temporaries)")
    if config.model.get("remat", "none") == "none":
        out.append("model.remat='blocks' (recompute each block in the backward pass)")
    largest = int(budget // per_example) * k0
    if 0 < largest < b:
        out.append(f"batch_size={largest * devices} ({largest} per device; changes the recipe)")
    elif largest == 0:
        out.append("even one example per device does not fit: use bfloat16, remat or smaller crops")
    return out


def check(memory: StepMemory, limit: int | None, config: Any, devices: int) -> None:
    """Raises ``MemoryError`` when the plan exceeds the device's memory, naming what would fit.

    Args:
      memory: the compiled step's plan.
      limit: the device's bytes, or None (not checked).
      config: the experiment config (for the switches already in use).
      devices: devices over all processes (for the global batch suggestion).
    """
    if limit is None or memory.total <= USABLE * limit:
        return
    fixes = "\n  ".join(suggestions(memory, limit, config, devices))
    raise MemoryError(
        f"{describe(memory, limit)}: it will not fit (XLA would fail with RESOURCE_EXHAUSTED at the "
        f"first step). What would fit, estimated from this plan:\n  {fixes}"
    )

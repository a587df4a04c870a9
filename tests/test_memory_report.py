"""The memory plan of the compiled train step, checked against the device's memory before training."""

import types

import pytest

from cmp_jax import memory_report, train
from configs import base
from tests.train_subprocess import tiny_config

GIB = memory_report.GIB


def _compiled(arguments, outputs, alias, temp):
    stats = types.SimpleNamespace(
        argument_size_in_bytes=arguments,
        output_size_in_bytes=outputs,
        alias_size_in_bytes=alias,
        temp_size_in_bytes=temp,
    )
    return types.SimpleNamespace(memory_analysis=lambda: stats)


def test_plan_reads_xla_sizes_and_subtracts_aliased_outputs():
    memory = memory_report.step_memory(_compiled(3 * GIB, 3 * GIB, 2 * GIB, 5 * GIB), per_device_batch=8)
    assert (memory.arguments, memory.outputs, memory.temporaries) == (3 * GIB, GIB, 5 * GIB)
    assert memory.total == 9 * GIB
    assert "9.00 GiB" in memory_report.describe(memory, None) and "not checked" in memory_report.describe(
        memory, None
    )


def test_a_plan_over_the_limit_names_the_switches_that_fit():
    config = base.get_config()
    # 1 GiB of state, 1 GiB of temporaries per example, 8 per device, 4 GiB device: 2.6 GiB left.
    memory = memory_report.StepMemory(arguments=GIB, outputs=0, temporaries=8 * GIB, per_device_batch=8)
    with pytest.raises(MemoryError) as info:
        memory_report.check(memory, 4 * GIB, config, devices=2)
    message = str(info.value)
    assert "9.00 GiB" in message and "holds 4.00 GiB" in message and "will not fit" in message
    assert "grad_accum_steps=4 (micro-batches of 2 per device)" in message
    assert "model.remat='blocks'" in message and "batch_size=4 (2 per device" in message
    assert "bfloat16" not in message  # half of 8 GiB still exceeds what is left
    memory_report.check(memory, 64 * GIB, config, devices=2)  # fits: no error
    memory_report.check(memory, None, config, devices=2)  # CPU: not checked


def test_training_stops_before_the_first_step_when_the_device_is_too_small(tmp_path, monkeypatch, caplog):
    # The tiny model's state (0.08 GiB) fits; its temporaries (0.11 GiB for one example) do not.
    monkeypatch.setattr(memory_report, "device_limit", lambda device: int(0.15 * GIB))
    with pytest.raises(MemoryError, match="will not fit") as info:
        train.train_and_evaluate(tiny_config(num_train_steps=1, eval_at_start=False), tmp_path / "run")
    assert "even one example per device does not fit" in str(info.value)
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists() or "train/loss" not in metrics.read_text()


def test_plan_compiles_any_config_without_devices_and_counts_the_batch_exactly():
    config = tiny_config()
    small, large = memory_report.plan(config, 2), memory_report.plan(config, 8)
    assert (small.per_device_batch, large.per_device_batch) == (2, 8)
    # The state is the same; the arguments differ by the six extra examples' bytes exactly:
    # image (3), sparse (2), mask (2) and flow (2) float32 channels at 32 x 32, plus num_guides.
    assert large.arguments - small.arguments == 6 * (32 * 32 * 9 * 4 + 4)
    assert large.temporaries > small.temporaries

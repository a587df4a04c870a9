"""Tests of cmp_jax/train.py end to end on 4 fake CPU devices (tests/conftest.py).

Every ``train_and_evaluate`` run uses ``tests/train_subprocess.tiny_config``
(ResNet-18 at output stride 32 on 32 x 32 synthetic crops). Runs are shared
between tests through module fixtures, and a persistent XLA compilation cache
(a temporary directory, for this module only) lets every later run of the same
config, including the killed subprocess, skip compilation.
"""

import functools
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from jax.experimental.compilation_cache import compilation_cache

from cmp_jax import checkpoint, inference, parallel, train
from cmp_jax import state as state_lib
from configs import base
from input_pipeline import lists, pipeline
from tests.train_subprocess import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "train_subprocess.py"

TRAIN_KEYS = ("train/loss", "train/lr", "train/num_guides", "train/steps_per_s", "train/images_per_s")
EVAL_KEYS = ("eval/epe", "eval/epe_zero", "eval/epe_nearest", "eval/epe_splat", "eval/loss")


class Run(NamedTuple):
    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    eval_metrics: dict


@pytest.fixture(scope="module", autouse=True)
def compilation_cache_dir(tmp_path_factory):
    """A persistent compilation cache for this module; the previous settings are restored after."""
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {name: getattr(jax.config, name) for name in names}
    path = tmp_path_factory.mktemp("jax_cache")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    compilation_cache.reset_cache()
    yield path
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def _records(workdir: pathlib.Path) -> list[dict]:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train_losses(workdir: pathlib.Path) -> dict[int, float]:
    """Step -> train/loss of the last line logged for that step."""
    return {r["step"]: r["train/loss"] for r in _records(workdir) if "train/loss" in r}


def _restore(workdir: pathlib.Path, step: int) -> dict:
    ckpt = checkpoint.Checkpointer(pathlib.Path(workdir) / "checkpoints")
    try:
        meta = ckpt._manager.item_metadata(step)
        meta = getattr(meta, "tree", meta)
        target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), meta)
        return ckpt.restore(step, target)
    finally:
        ckpt.close()


def _latest_step(workdir: pathlib.Path) -> int | None:
    ckpt = checkpoint.Checkpointer(pathlib.Path(workdir) / "checkpoints")
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def _assert_trees_close(actual, expected, rtol=1e-6, atol=1e-7):
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, e), a in zip(paths, jax.tree.leaves(actual), strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(e), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Run:
    """An uninterrupted 4-step run: checkpoints at 2 and 4, eval at 4."""
    workdir = tmp_path_factory.mktemp("full")
    config = tiny_config()
    return Run(workdir, config, train.train_and_evaluate(config, workdir))


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Run:
    """A fresh run of the same config stopped after step 2 (its last step and checkpoint)."""
    workdir = tmp_path_factory.mktemp("two_steps")
    config = tiny_config(num_train_steps=2)
    return Run(workdir, config, train.train_and_evaluate(config, workdir))


@pytest.fixture(scope="module")
def resumed_run(two_step_run, tmp_path_factory) -> Run:
    """A copy of ``two_step_run`` restarted with ``num_train_steps=4``."""
    workdir = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(two_step_run.workdir, workdir)
    config = tiny_config()
    return Run(workdir, config, train.train_and_evaluate(config, workdir))


def test_train_and_evaluate_writes_checkpoints_metrics_and_config(full_run):
    workdir, config, eval_metrics = full_run
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    assert _latest_step(workdir) == 4

    records = _records(workdir)
    train_lines = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4]
    for r in train_lines:
        for key in TRAIN_KEYS:
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["train/bad_examples"] == 0
    # lr_steps = (3,): steps 1-3 (0-based 0-2) at lr, step 4 decayed.
    lrs = [r["train/lr"] for r in train_lines]
    lr = config.optim.lr
    np.testing.assert_allclose(lrs, [lr, lr, lr, lr * config.optim.lr_decay], rtol=1e-6)
    # num_guides is the mean over the batch: at least the grid's (32 // 8) ** 2 points.
    assert all(r["train/num_guides"] >= 16 for r in train_lines)

    eval_lines = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in eval_lines] == [4]
    for key in EVAL_KEYS:
        assert math.isfinite(eval_lines[-1][key]) and eval_lines[-1][key] >= 0, key
    # The returned metrics are the last eval line (NaN, e.g. of an empty EPE range, is null).
    assert set(eval_metrics) == set(eval_lines[-1]) - {"step"}
    for key, value in eval_metrics.items():
        logged = eval_lines[-1][key]
        assert (logged is None) if math.isnan(value) else (logged == value), key
    # Each baseline's EPE differs from the zero flow's (they are computed, not copied).
    assert eval_metrics["eval/epe_nearest"] != eval_metrics["eval/epe_zero"]

    events = list(workdir.glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in workdir.iterdir())
    import tensorflow as tf

    tags = {
        value.tag
        for path in events
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    assert {"train/loss", "eval/epe", "eval/pictures"} <= tags

    written = json.loads((workdir / "config.json").read_text())
    assert written == json.loads(json.dumps(config.to_dict()))
    assert ml_collections.ConfigDict(written).num_train_steps == config.num_train_steps


def _guided_batch(devices: int, per_device: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random images and flows; guidance at 6 random pixels per image. Shaped (D, B, H, W, C)."""
    rng = np.random.default_rng(seed)
    n = devices * per_device
    image = rng.standard_normal((n, size, size, 3)).astype(np.float32)
    flow = rng.uniform(-8, 8, (n, size, size, 2)).astype(np.float32)
    mask = np.zeros((n, size, size, 2), np.float32)
    for i in range(n):
        ys, xs = rng.integers(0, size, 6), rng.integers(0, size, 6)
        mask[i, ys, xs] = 1.0
    batch = {
        "image": image,
        "sparse": flow * mask,
        "mask": mask,
        "flow": flow,
        "num_guides": mask[..., 0].sum((1, 2)).astype(np.int32),
    }
    return {k: v.reshape(devices, per_device, *v.shape[1:]) for k, v in batch.items()}


def test_sync_batchnorm_pmap_step_equals_one_device_step():
    config = tiny_config(sync_batchnorm=True)
    sync_model, bins = state_lib.build_from_config(config)
    plain_model, _ = state_lib.build_from_config(tiny_config(sync_batchnorm=False))
    assert sync_model.bn_axis_name == parallel.AXIS_NAME and plain_model.bn_axis_name is None
    devices, size = jax.local_device_count(), config.data.crop_size[0]
    assert devices == 4
    batch = _guided_batch(devices, 1, size)
    schedule = state_lib.learning_rate_schedule(config)
    state = state_lib.create_train_state(config, plain_model, state_lib.create_optimizer(config, schedule))
    step = functools.partial(train.train_step, bins=bins, schedule=schedule)

    # Reference: one device, the global batch, BatchNorm over all of it.
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
    ref_state, ref_metrics = jax.device_get(jax.jit(step)(state, flat))
    ref_loss = float(ref_metrics["loss"])

    p_step = parallel.pmap_step(step)
    sync_state, sync_metrics = p_step(parallel.replicate(state.replace(apply_fn=sync_model.apply)), batch)
    sync_loss = float(parallel.first_replica(sync_metrics)["loss"])
    np.testing.assert_allclose(sync_loss, ref_loss, rtol=2e-6)
    for replica in range(devices):  # every device holds the same, synchronised state
        params, stats = jax.tree.map(
            lambda x, r=replica: np.asarray(x)[r], (sync_state.params, sync_state.batch_stats)
        )
        _assert_trees_close(params, ref_state.params, rtol=1e-5, atol=1e-6)
        _assert_trees_close(stats, ref_state.batch_stats, rtol=1e-5, atol=1e-6)

    # The comparison is sensitive: per-device BatchNorm (one image per device)
    # normalises with other statistics; its loss, update and statistics differ.
    local_state, local_metrics = p_step(parallel.replicate(state), batch)
    local_loss = float(parallel.first_replica(local_metrics)["loss"])
    local_params, local_stats = parallel.first_replica((local_state.params, local_state.batch_stats))

    def max_diff(a, b):
        return max(
            float(np.max(np.abs(np.asarray(x) - y)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    print(
        f"loss: one device {ref_loss}, synced {sync_loss}, per device {local_loss}; per-device params "
        f"{max_diff(local_params, ref_state.params)}, stats {max_diff(local_stats, ref_state.batch_stats)}"
    )
    assert abs(local_loss - ref_loss) > 10 * 2e-6 * ref_loss, (local_loss, ref_loss)
    assert max_diff(local_params, ref_state.params) > 100 * 1e-6
    assert max_diff(local_stats, ref_state.batch_stats) > 100 * 1e-6


def test_grad_accumulation_averages_the_micro_batch_gradients():
    config = tiny_config(sync_batchnorm=False)
    model, bins = state_lib.build_from_config(config)
    schedule = state_lib.learning_rate_schedule(config)
    state = state_lib.create_train_state(config, model, state_lib.create_optimizer(config, schedule))
    batch = {k: v.reshape(-1, *v.shape[2:]) for k, v in _guided_batch(1, 4, config.data.crop_size[0]).items()}
    step = functools.partial(train.train_step, bins=bins, schedule=schedule)
    accumulated, metrics = jax.device_get(jax.jit(functools.partial(step, grad_accum_steps=2))(state, batch))

    # Reference: the two halves' gradients computed separately, averaged, one optimiser step.
    rng = jax.random.fold_in(state.rng, state.step)
    halves = [{k: v[i * 2 : (i + 1) * 2] for k, v in batch.items()} for i in range(2)]
    stats, losses, grads = state.batch_stats, [], []
    for i, half in enumerate(halves):
        loss, g, stats = train._loss_and_grads(
            state,
            stats,
            half,
            jax.random.fold_in(rng, i),
            bins,
            motion_weight=0.0,
            label_sigma=0.0,
            epe_weight=0.0,
        )
        losses.append(float(loss))
        grads.append(g)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    expected = jax.device_get(state.apply_gradients(grads=mean, batch_stats=stats))
    np.testing.assert_allclose(float(metrics["loss"]), np.mean(losses), rtol=1e-6)
    _assert_trees_close(accumulated.params, expected.params, rtol=1e-5, atol=1e-7)
    _assert_trees_close(accumulated.batch_stats, expected.batch_stats, rtol=1e-5, atol=1e-7)
    assert int(accumulated.step) == 1  # one optimiser step: the lr schedule counts steps, not micro-batches
    # ... and it is not the full-batch step (BatchNorm statistics per micro-batch differ).
    full, _ = jax.device_get(jax.jit(step)(state, batch))
    diffs = [
        np.max(np.abs(a - b))
        for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(accumulated.params), strict=True)
    ]
    assert max(diffs) > 1e-6
    with pytest.raises(ValueError, match="does not split into grad_accum_steps=3"):
        step(state, batch, grad_accum_steps=3)


def test_resume_after_stop_reproduces_the_uninterrupted_run(full_run, two_step_run, resumed_run):
    stopped = _train_losses(two_step_run.workdir)
    assert sorted(stopped) == [1, 2] and _latest_step(two_step_run.workdir) == 2
    full, resumed = _train_losses(full_run.workdir), _train_losses(resumed_run.workdir)
    assert sorted(resumed) == [1, 2, 3, 4]
    np.testing.assert_allclose([resumed[s] for s in (3, 4)], [full[s] for s in (3, 4)], rtol=1e-6, atol=0)
    # The continued run's evals: one at the stop (step 2), one at the end.
    assert [r["step"] for r in _records(resumed_run.workdir) if "eval/loss" in r] == [2, 4]
    np.testing.assert_allclose(
        resumed_run.eval_metrics["eval/loss"], full_run.eval_metrics["eval/loss"], rtol=1e-6
    )

    # The resumed run's step-4 state (parameters, BN statistics, momentum, RNG)
    # is the uninterrupted run's.
    resumed_state, full_state = _restore(resumed_run.workdir, 4), _restore(full_run.workdir, 4)
    assert int(resumed_state["step"]) == 4
    _assert_trees_close(resumed_state, full_state, rtol=1e-6, atol=1e-7)


def test_same_seed_same_first_losses_other_seed_differs(full_run, two_step_run, tmp_path):
    first, second = _train_losses(full_run.workdir), _train_losses(two_step_run.workdir)
    assert [first[s] for s in (1, 2)] == [second[s] for s in (1, 2)]
    other = tmp_path / "seed1"
    train.train_and_evaluate(tiny_config(seed=1, num_train_steps=1), other)
    # Another initialisation and other data: a different loss, beyond float32 noise.
    assert abs(_train_losses(other)[1] - first[1]) > 1e-5 * first[1]


def test_resume_with_other_shapes_raises_naming_the_parameter(full_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(full_run.workdir / "checkpoints" / "4", workdir / "checkpoints" / "4")
    config = tiny_config()
    config.flow.num_bins = 7
    with pytest.raises(checkpoint.CheckpointShapeError) as info:
        train.train_and_evaluate(config, workdir)
    message = str(info.value)
    # The decoder head outputs 2 * num_bins logits: 18 stored, 14 needed.
    assert "params/flow_decoder/head/kernel" in message and "params/flow_decoder/head/bias" in message
    assert "(18,)" in message and "(14,)" in message
    assert "image_encoder" not in message  # only the arrays that differ are named


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(two_step_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(two_step_run.workdir, workdir)
    config = tiny_config()
    # Step 3 starts from the good step-2 state (finite loss) and blows the
    # parameters up; BatchNorm makes the convs scale-invariant, so only an lr
    # near the float32 maximum overflows them.
    config.optim.lr = 1e38
    with pytest.raises(FloatingPointError, match=r"at step 4\b") as info:
        train.train_and_evaluate(config, workdir)
    assert "step 2" in str(info.value)  # names the kept checkpoint
    assert _latest_step(workdir) == 2
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2]
    losses = _train_losses(workdir)
    assert math.isfinite(losses[3]) and 4 not in losses  # the non-finite step is not logged


def test_non_finite_update_is_not_checkpointed(two_step_run, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    shutil.copytree(two_step_run.workdir, workdir)
    # Step 3's loss is finite (computed before the update), but its update makes
    # the parameters non-finite, and step 3 is the last step: it would be saved.
    # (An infinite optim.lr is refused by the config check, so the schedule is patched.)
    monkeypatch.setattr(state_lib, "learning_rate_schedule", lambda config: lambda step: float("inf"))
    config = tiny_config(num_train_steps=3)
    with pytest.raises(FloatingPointError, match=r"after step 3") as info:
        train.train_and_evaluate(config, workdir)
    assert "params/" in str(info.value)
    assert _latest_step(workdir) == 2


def test_sigkill_while_saving_resumes_from_the_last_complete_checkpoint(
    full_run, two_step_run, compilation_cache_dir, tmp_path
):
    # A training process resumes the step-2 workdir, saves every step and is
    # killed inside the save of step 3: written, not yet committed (renamed).
    workdir, marker = tmp_path / "run", tmp_path / "saving"
    shutil.copytree(two_step_run.workdir, workdir)
    overrides = {"num_train_steps": 4, "checkpoint_every_steps": 1}
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(workdir), json.dumps(overrides), "3", str(marker)]
        + [str(compilation_cache_dir)],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, f"training exited early:\n{proc.stderr.read()[-4000:]}"
            assert time.monotonic() < deadline, "the save of step 3 never reached its commit"
            time.sleep(0.2)
        tmp_dir = pathlib.Path(marker.read_text())
        # Killed while step 3's temporary directory holds the written, uncommitted checkpoint.
        assert tmp_dir.is_dir() and tmp_dir.parent == workdir / "checkpoints"
        assert tmp_dir.name.startswith("3") and tmp_dir.name != "3"
        assert any(tmp_dir.rglob("*")) and not (workdir / "checkpoints" / "3").exists()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert tmp_dir.exists()  # nothing cleaned up behind the killed process
    killed_losses = _train_losses(workdir)
    assert 3 in killed_losses  # step 3 ran (and was logged) before its save
    assert _latest_step(workdir) == 2  # the partial step 3 is not listed

    train.train_and_evaluate(tiny_config(**{**overrides, "num_train_steps": 3}), workdir)
    assert _latest_step(workdir) == 3 and (workdir / "checkpoints" / "3").is_dir()
    # Step 3 trained again after the resume, from the step-2 checkpoint; the
    # killed run's row of step 3 was dropped, so the step appears once.
    step3 = [r["train/loss"] for r in _records(workdir) if r["step"] == 3 and "train/loss" in r]
    assert step3 == [pytest.approx(killed_losses[3], rel=1e-6)]
    assert step3[0] == pytest.approx(_train_losses(full_run.workdir)[3], rel=1e-6)
    assert [r["step"] for r in _records(workdir) if "eval/loss" in r][-1] == 3


def _corrupt_newest(workdir: pathlib.Path, step: int) -> pathlib.Path:
    """Overwrites 4 kB inside the largest data file of a checkpoint with 0xFF (same size)."""
    files = [p for p in (workdir / "checkpoints" / str(step)).rglob("*") if p.is_file()]
    data = max(files, key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4096] = b"\xff" * 4096
    data.write_bytes(bytes(raw))
    return data


def test_corrupt_newest_checkpoint_is_moved_aside_and_training_falls_back(full_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(full_run.workdir, workdir)
    _corrupt_newest(workdir, 4)
    # The readers fall back to step 2 without touching the workdir, and refuse step 4 by name.
    _, _, step = state_lib.load_variables(workdir)
    assert step == 2 and (workdir / "checkpoints" / "4").is_dir()
    with pytest.raises(
        checkpoint.CheckpointCorruptError, match=r"checkpoints/4 is unusable: file .* has changed"
    ):
        state_lib.load_variables(workdir, 4)
    with pytest.raises(checkpoint.CheckpointCorruptError):
        inference.Predictor.from_workdir(workdir, step=4)
    # Training moves step 4 aside, resumes from step 2 and replays steps 3-4 exactly.
    train.train_and_evaluate(tiny_config(), workdir)
    assert (workdir / "checkpoints.corrupt" / "4").is_dir()
    assert _latest_step(workdir) == 4
    assert _train_losses(workdir) == pytest.approx(_train_losses(full_run.workdir), rel=1e-6)
    steps = [r["step"] for r in _records(workdir) if "train/loss" in r]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4]  # each step once in metrics.jsonl


_MAIN_UNTIL_FULL = """
import os, resource, runpy, signal, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.getcwd())
import jax
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
# Files cannot grow beyond 1 MB, as on a full disk; the checkpoint's arrays are larger.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
sys.argv = ["main.py", *sys.argv[2:]]
runpy.run_path("main.py", run_name="__main__")
"""


def test_failed_checkpoint_save_stops_training_with_one_message(compilation_cache_dir, tmp_path):
    workdir, config_file = tmp_path / "run", tmp_path / "tiny.py"
    config_file.write_text(
        "from tests.train_subprocess import tiny_config\n\n\ndef get_config():\n"
        "    return tiny_config(num_train_steps=6)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", _MAIN_UNTIL_FULL, str(compilation_cache_dir)]
        + [f"--config={config_file}", f"--workdir={workdir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: saving the checkpoint of step 2 into {workdir / 'checkpoints'} failed: "
        + errors[0].split(" failed: ", 1)[1]
    ]
    assert "File too large" in errors[0] and "no checkpoint is complete" in result.stderr
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr
    assert "exception not rethrown" not in result.stderr
    # Stopped at the first step after the failure was known: never reached step 6's save.
    assert max(r["step"] for r in _records(workdir)) < 6


def test_bad_examples_are_counted_once_over_both_pipelines_into_the_metrics(tmp_path, monkeypatch):
    # Every other example of both sources is the same corrupt file (one key); the
    # validation set also has one of its own. Both are skipped and counted once each.
    original = pipeline.source_from_config

    def with_bad_examples(config, split, *args, **kwargs):
        source = original(config, split, *args, **kwargs)

        def key(i):
            if i % 2 == 0:
                return "corrupt.flo"
            return "val-only.flo" if split == "eval" and i == 1 else ("ok", split, i)

        def load(i):
            if isinstance(key(i), str):
                raise lists.BadExampleError(f"{key(i)}: bad")
            return source.load(i)

        return pipeline.Source(source.size, load, key=key)

    monkeypatch.setattr(pipeline, "source_from_config", with_bad_examples)
    config = tiny_config(num_train_steps=3, checkpoint_every_steps=3)
    config.data.skip_bad_examples = True
    config.data.synthetic.val_size = 8
    config.eval_every_steps = 2
    metrics = train.train_and_evaluate(config, tmp_path / "run")
    assert math.isfinite(metrics["eval/epe"])
    # Step 3 is logged after the eval at step 2 has met its own bad example.
    assert [r["train/bad_examples"] for r in _records(tmp_path / "run") if "train/loss" in r] == [1, 1, 2]


def test_missing_data_and_bad_values_fail_before_anything_is_built_or_written(tmp_path, monkeypatch):
    from configs import yfcc_resnet

    monkeypatch.chdir(tmp_path)  # the config's relative list paths resolve to nothing here
    built = []
    monkeypatch.setattr(state_lib, "build_from_config", lambda *a: built.append(a))
    with pytest.raises(FileNotFoundError, match=r"2 missing") as info:
        train.train_and_evaluate(yfcc_resnet.get_config(), tmp_path / "run")
    assert "lists/train.txt does not exist" in str(info.value) and "lists/val.txt does not exist" in str(
        info.value
    )
    config = tiny_config()
    config.data.crop_size = (65,)
    with pytest.raises(ValueError, match=r"data\.crop_size=\(65,\): expected \(height, width\)"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not built and not (tmp_path / "run").exists()


def test_optimizer_matches_torch_sgd():
    config = base.get_config()
    config.optim.lr_steps = (2, 4)
    tx = state_lib.create_optimizer(config, state_lib.learning_rate_schedule(config))
    rng = np.random.default_rng(0)
    # Parameters far larger than the gradients, so the weight decay term matters.
    params = {
        "w": rng.normal(0, 5, (3, 4)).astype(np.float32),
        "b": rng.normal(0, 5, (4,)).astype(np.float32),
    }
    grads = [
        jax.tree.map(lambda p: rng.normal(0, 1e-3, p.shape).astype(np.float32), params) for _ in range(6)
    ]

    torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.SGD(torch_params.values(), lr=config.optim.lr, momentum=0.9, weight_decay=1e-4)
    jax_params = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(jax_params)
    update = jax.jit(tx.update)
    for i, g in enumerate(grads):
        lr = config.optim.lr * config.optim.lr_decay ** sum(s <= i for s in config.optim.lr_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        for k, p in torch_params.items():
            p.grad = torch.tensor(g[k])
        opt.step()
        updates, opt_state = update(g, opt_state, jax_params)
        jax_params = optax.apply_updates(jax_params, updates)
        for k, p in torch_params.items():
            np.testing.assert_allclose(
                np.asarray(jax_params[k]), p.detach().numpy(), rtol=1e-6, err_msg=f"{k} {i}"
            )
    moved = {k: np.abs(np.asarray(jax_params[k]) - params[k]).max() for k in params}
    assert all(v > 1e-4 for v in moved.values()), moved


def test_learning_rate_schedule_default_steps():
    config = base.get_config()
    config.optim.lr_steps = ()
    config.num_train_steps = 10
    schedule = state_lib.learning_rate_schedule(config)
    steps = (round(10 * 2 / 3.5), round(10 * 3 / 3.5))
    assert steps == (6, 9) != (int(10 * 2 / 3.5), int(10 * 3 / 3.5))  # rounding, not truncation
    lrs = [float(schedule(i)) for i in range(10)]
    expected = [0.1 * 0.1 ** sum(s <= i for s in steps) for i in range(10)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)

    config.num_train_steps = 42_000  # the paper's 42k iterations: decay at 24k and 36k
    default = state_lib.learning_rate_schedule(config)
    config.optim.lr_steps = (24_000, 36_000)
    explicit = state_lib.learning_rate_schedule(config)
    for i in (0, 23_999, 24_000, 35_999, 36_000, 41_999):
        assert float(default(i)) == float(explicit(i)), i


def test_learning_rate_schedule_cosine_and_warmup():
    config = base.get_config()
    config.num_train_steps = 20
    config.optim.lr = 0.2
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 4
    schedule = state_lib.learning_rate_schedule(config)
    lrs = np.array([float(schedule(i)) for i in range(21)])
    t = np.clip((np.arange(21) - 4) / 16, 0, 1)
    expected = 0.2 * 0.5 * (1 + np.cos(np.pi * t)) * np.minimum(1, (np.arange(21) + 1) / 4)
    np.testing.assert_allclose(lrs, expected, rtol=1e-5, atol=1e-7)
    assert lrs[0] == pytest.approx(0.05) and lrs[4] == pytest.approx(0.2) and lrs[20] == pytest.approx(0)
    # Warm-up on top of the step decay; lr_steps are not read by the cosine schedule.
    config.optim.schedule = "step"
    config.optim.lr_steps = (10,)
    step = state_lib.learning_rate_schedule(config)
    assert [round(float(step(i)), 6) for i in (0, 3, 9, 10)] == [0.05, 0.2, 0.2, 0.02]
    config.optim.schedule = "linear"
    with pytest.raises(ValueError, match="optim.schedule"):
        state_lib.learning_rate_schedule(config)


def test_local_batch_size_names_the_config_field():
    assert jax.local_device_count() == 4 and jax.process_count() == 1
    assert parallel.local_batch_size(8) == 8
    with pytest.raises(ValueError, match=r"config\.batch_size=6 .*4 local devices"):
        parallel.local_batch_size(6)
    with pytest.raises(ValueError, match=r"config\.eval_batch_size=2\b"):
        parallel.local_batch_size(2, "eval_batch_size")
    with pytest.raises(ValueError, match=r"config\.batch_size=0\b"):
        parallel.local_batch_size(0)


def test_train_and_evaluate_rejects_a_batch_that_does_not_divide(tmp_path):
    with pytest.raises(ValueError, match=r"config\.batch_size=6\b"):
        train.train_and_evaluate(tiny_config(batch_size=6), tmp_path)


def test_end_of_training_summary_row_and_table(full_run):
    records = _records(full_run.workdir)
    summary = [r for r in records if any(k.startswith("summary/") for k in r)]
    assert len(summary) == 1 and summary[0]["step"] == full_run.config.num_train_steps
    assert records[-1] is summary[0]  # written after the final eval
    metrics = full_run.eval_metrics
    assert 0.0 <= metrics["eval/frac_below_nearest"] <= 1.0
    assert summary[0]["summary/frac_below_nearest"] == metrics["eval/frac_below_nearest"]
    assert summary[0]["summary/epe_over_nearest"] == pytest.approx(
        metrics["eval/epe"] / metrics["eval/epe_nearest"], rel=1e-12
    )
    for name in ("0-10", "10-40", "40+"):
        ratio = summary[0][f"summary/epe_over_nearest/{name}"]  # null for a range without pixels
        model, nearest = metrics[f"eval/epe/{name}"], metrics[f"eval/epe_nearest/{name}"]
        if math.isnan(model) or math.isnan(nearest):
            assert ratio is None, name
        else:
            assert ratio == pytest.approx(model / nearest, rel=1e-12), name

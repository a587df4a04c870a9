"""Trust in checkpoints (cmp_jax/checkpoint.py): manifests, verified restore, fallback, save failures.

Small host trees stand in for training states here; tests/test_train.py runs the
same faults through the training loop and the workdir readers.
"""

import json
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cmp_jax import checkpoint
from cmp_jax import state as state_lib
from configs import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tree(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "step": np.asarray(seed, np.int32),
        "params": {"conv": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)}},
        "batch_stats": {"bn": {"mean": rng.normal(size=(8,)).astype(np.float32)}},
    }


def _zeros_like(tree: dict) -> dict:
    return jax.tree.map(np.zeros_like, tree)


@pytest.fixture
def saved(tmp_path) -> pathlib.Path:
    """``checkpoints/`` with complete checkpoints of steps 1 and 2 (values from seeds 1 and 2)."""
    directory = tmp_path / "checkpoints"
    ckpt = checkpoint.Checkpointer(directory)
    for step in (1, 2):
        ckpt.save(step, _tree(step))
    ckpt.close()
    return directory


def _data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest file of a step directory (array data)."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint.MANIFEST]
    return max(files, key=lambda p: p.stat().st_size)


def _restore(directory: pathlib.Path, step: int):
    ckpt = checkpoint.Checkpointer(directory)
    try:
        return ckpt.restore(step, _zeros_like(_tree(step)))
    finally:
        ckpt.close()


def test_manifest_lists_every_file_and_restore_verifies(saved):
    manifest = json.loads((saved / "2" / checkpoint.MANIFEST).read_text())
    on_disk = {str(p.relative_to(saved / "2")) for p in (saved / "2").rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {checkpoint.MANIFEST}
    assert any(name.endswith("_METADATA") for name in manifest["files"])
    restored = _restore(saved, 2)
    np.testing.assert_array_equal(restored["params"]["conv"]["kernel"], _tree(2)["params"]["conv"]["kernel"])


def test_changed_bytes_of_the_same_size_are_detected(saved):
    data = _data_file(saved / "2")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\xff" * 64
    data.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.CheckpointCorruptError, match="has changed on disk") as info:
        _restore(saved, 2)
    assert str(data.relative_to(saved / "2")) in str(info.value) and str(saved / "2") in str(info.value)


def test_truncated_file_and_empty_metadata_are_named(saved):
    data = _data_file(saved / "2")
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(
        checkpoint.CheckpointCorruptError, match=r"bytes, \d+ were written \(truncated"
    ) as info:
        _restore(saved, 2)
    assert data.name in str(info.value)
    (saved / "1" / "default" / "_METADATA").write_text("")
    with pytest.raises(checkpoint.CheckpointCorruptError, match="default/_METADATA has 0 bytes"):
        _restore(saved, 1)


def test_checkpoint_without_manifest_is_checked_for_finiteness(saved, tmp_path):
    (saved / "2" / checkpoint.MANIFEST).unlink()
    np.testing.assert_array_equal(
        _restore(saved, 2)["batch_stats"]["bn"]["mean"], _tree(2)["batch_stats"]["bn"]["mean"]
    )
    # An old-style checkpoint holding NaN (nothing to compare its files with).
    nan_dir = tmp_path / "nan"
    tree = _tree(3)
    tree["params"]["conv"]["kernel"][0, 0, 0, 0] = np.nan
    ckpt = checkpoint.Checkpointer(nan_dir)
    ckpt.save(3, tree)
    ckpt.close()
    (nan_dir / "3" / checkpoint.MANIFEST).unlink()
    with pytest.raises(
        checkpoint.CheckpointCorruptError, match=r"NaN or infinite values in 1 arrays \(params/conv/kernel\)"
    ):
        _restore(nan_dir, 3)
    # Without a manifest, Orbax's own read error is reported with the path.
    data = _data_file(saved / "2")
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(checkpoint.CheckpointCorruptError, match="Orbax cannot read it") as info:
        _restore(saved, 2)
    assert str(saved / "2") in str(info.value)


def test_restore_newest_falls_back_and_moves_the_failed_one_aside(saved):
    data = _data_file(saved / "2")
    data.write_bytes(data.read_bytes()[:10])
    ckpt = checkpoint.Checkpointer(saved)
    try:
        # Readers fall back without touching the directory.
        tree, step = ckpt.restore_newest(_zeros_like(_tree(1)))
        assert step == 1 and (saved / "2").is_dir()
        np.testing.assert_array_equal(tree["params"]["conv"]["kernel"], _tree(1)["params"]["conv"]["kernel"])
        # Training moves it aside (not deleted) and no longer lists it.
        tree, step = ckpt.restore_newest(_zeros_like(_tree(1)), move_aside=True)
        assert step == 1 and ckpt.all_steps() == [1]
    finally:
        ckpt.close()
    aside = saved.parent / "checkpoints.corrupt" / "2"
    assert not (saved / "2").exists() and (aside / data.relative_to(saved / "2")).is_file()


def test_restore_newest_when_every_checkpoint_fails_names_each(saved):
    for step in (1, 2):
        data = _data_file(saved / str(step))
        data.write_bytes(data.read_bytes()[:10])
    ckpt = checkpoint.Checkpointer(saved)
    try:
        with pytest.raises(
            checkpoint.CheckpointCorruptError, match="no checkpoint passed the checks"
        ) as info:
            ckpt.restore_newest(_zeros_like(_tree(1)))
    finally:
        ckpt.close()
    assert str(saved / "1") in str(info.value) and str(saved / "2") in str(info.value)


def _abstract_state(**model) -> dict:
    config = synthetic.get_config()
    config.model.update(model)
    return state_lib._template(config)


@pytest.mark.parametrize("change", [{"backbone": "resnet34"}, {"decoder": "skip", "upsample": "bilinear"}])
def test_other_backbone_or_decoder_gets_our_structure_error(tmp_path, change):
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
    try:
        ckpt.save(1, _abstract_state(**change))
        ckpt.wait_until_finished()
        with pytest.raises(
            checkpoint.CheckpointShapeError, match="does not match the config's model"
        ) as info:
            ckpt.restore(1, _abstract_state())
    finally:
        ckpt.close()
    message = str(info.value)
    assert "unexpected in checkpoint" in message and "partial_restore" not in message
    assert ("image_encoder/layer1_2" if "backbone" in change else "params/flow_decoder/") in message


_SAVE_UNTIL_FULL = textwrap.dedent(
    """
    import resource, signal, sys, time
    import numpy as np
    from cmp_jax import checkpoint

    ckpt = checkpoint.Checkpointer(sys.argv[1])
    tree = {"a": np.random.default_rng(0).normal(size=50000).astype(np.float32)}
    ckpt.save(1, tree)
    ckpt.wait_until_finished()
    # Writes beyond 20 kB fail with EFBIG from now on, as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
    ckpt.save(2, tree)
    try:
        for _ in range(600):
            ckpt.poll()
            time.sleep(0.05)
        print("no error")
    except checkpoint.CheckpointSaveError as e:
        print("ERROR", e)
    finally:
        ckpt.close()
    """
)


def test_failed_async_save_is_reported_once_without_orbax_noise(tmp_path):
    directory = tmp_path / "checkpoints"
    result = subprocess.run(
        [sys.executable, "-c", _SAVE_UNTIL_FULL, str(directory)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ERROR saving the checkpoint of step 2 into " + str(directory))
    assert "File too large" in result.stdout and "newest complete checkpoint is step 1" in result.stdout
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr
    assert "ERROR:absl" not in result.stderr

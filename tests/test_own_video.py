"""The own-video recipe of the README at a tiny size, and what it relies on.

``test_three_commands`` renders two short videos of moving textured shapes
and runs the three steps as a user would: ``scripts/extract_flow.py`` with a
time split (a subprocess, without PYTHONPATH), training with
``configs/own_video.py`` and ``--config.data.root=OUT`` parsed by
``config_flags`` exactly as ``main.py`` parses them (plus overrides to a tiny
model and two steps; in this process, on the 4 fake CPU devices of
``tests/conftest.py``), then ``scripts/predict.py`` on a validation frame
(a subprocess). The other tests check that every config field whose value is
None can be set from the command line, and that an eval batch larger than the
validation set shrinks instead of stopping the run.
"""

import importlib.util
import json
import logging
import os
import pathlib
import subprocess
import sys

import cv2
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from cmp_jax import checkpoint
from input_pipeline import flow_io, lists

# config_flags loads config files with the deprecated importlib load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
SIZE = 96  # video frames are SIZE x SIZE
FRAMES = 40
GAP = 2


def parse_config(*args: str) -> ml_collections.ConfigDict:
    """``--config=...`` and ``--config.x=...`` parsed as main.py does (a fresh FlagValues)."""
    argv = ["main.py", *args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


def _none_fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out += _none_fields(value, f"{prefix}{key}.")
        elif value is None:
            out.append(prefix + key)
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.name != "__init__.py"))
def test_every_none_field_can_be_set_on_the_command_line(name):
    path = CONFIG_DIR / f"{name}.py"
    fields = _none_fields(parse_config(f"--config={path}"))
    assert {"data.root", "data.tfds.data_dir"} <= set(fields)
    config = parse_config(f"--config={path}", *(f"--config.{f}=/set/{f}" for f in fields))
    for field in fields:
        value = config
        for part in field.split("."):
            value = value[part]
        assert value == f"/set/{field}"


def test_placeholders_read_back_as_none(tmp_path):
    config = parse_config(f"--config={CONFIG_DIR / 'base.py'}")
    assert config.data.root is None and config.data.tfds.data_dir is None
    assert config.to_dict()["data"]["root"] is None
    checkpoint.write_config(tmp_path / "config.json", config)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["tfds"]["data_dir"] is None
    config = parse_config(
        f"--config={CONFIG_DIR / 'base.py'}", "--config.data.root=/x", "--config.data.tfds.data_dir=/y"
    )
    assert (config.data.root, config.data.tfds.data_dir) == ("/x", "/y")
    assert config.to_dict()["data"]["root"] == "/x"


def test_list_files_are_found_under_root(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train.txt").write_text("a.jpg b.jpg f.flo\n")
    entries, _ = lists.read_lists(["train.txt"], root=str(tmp_path / "out"), flow_type="flo")
    assert entries[0].frame1 == str(tmp_path / "out" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    entries, _ = lists.read_lists(["out/train.txt"], root="out", flow_type="flo")  # as given, from the cwd
    assert entries[0].source == "out/train.txt"
    with pytest.raises(FileNotFoundError, match="nor does"):
        lists.read_lists(["val.txt"], root="out", flow_type="flo")


def test_evaluator_shrinks_an_eval_batch_larger_than_the_validation_set(caplog):
    from cmp_jax.evaluation.evaluator import Evaluator
    from tests.train_subprocess import tiny_config

    config = tiny_config(eval_batch_size=16)
    config.data.synthetic.val_size = 6
    with caplog.at_level(logging.WARNING):
        evaluator = Evaluator(config, lambda *args, **kwargs: None)
    assert (evaluator.local_batch, evaluator.num_batches) == (4, 1)  # 4 devices: 6 -> 4
    assert "eval_batch_size=16" in caplog.text and "6 validation examples" in caplog.text
    config.data.synthetic.val_size = 3
    with pytest.raises(ValueError, match="3 examples, fewer than its 4 local devices"):
        Evaluator(config, lambda *args, **kwargs: None)


def _texture(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.random((h, w, 3), np.float32), (0, 0), sigma)
    noise -= noise.min()
    return (255 * noise / noise.max()).astype(np.uint8)


def render_video(path: pathlib.Path, seed: int) -> None:
    """FRAMES frames, SIZE x SIZE: a textured background panning 1 px/frame under two textured shapes.

    A square and a disc, each carrying its own texture, move 1-2 px per frame in different directions.
    """
    rng = np.random.default_rng(seed)
    margin = FRAMES + 8
    background = _texture(rng, SIZE + 2 * margin, SIZE + 2 * margin, 3)
    square, disc = _texture(rng, 28, 28, 1.5), _texture(rng, 24, 24, 1.5)
    disc_mask = np.hypot(*np.mgrid[-11.5:12.5, -11.5:12.5]) < 12
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (SIZE, SIZE))
    assert writer.isOpened(), "OpenCV cannot encode MJPG"
    sign = 1 if seed == 0 else -1
    for t in range(FRAMES):
        frame = background[margin : margin + SIZE, margin + t : margin + t + SIZE].copy()
        y, x = 30 + sign * (t - 20), 34 + sign * int(1.5 * (t - 20))  # stays inside the frame
        frame[y : y + 28, x : x + 28] = square
        y, x = 40 - sign * (t - 20), 36 + sign * (t - 20)
        region = frame[y : y + 24, x : x + 24]
        region[disc_mask] = disc[disc_mask]
        writer.write(frame)
    writer.release()


def _frame_index(path: str) -> int:
    return int(os.path.splitext(os.path.basename(path))[0])


TINY = (
    "--config.model.output_stride=32",
    "--config.model.img_enc_dim=16",
    "--config.model.decoder_combo=(1,)",
    "--config.flow.num_bins=9",
    "--config.flow.fmax=10.0",
    "--config.data.short_size=34",
    "--config.data.crop_size=(32, 32)",
    "--config.data.num_parallel_calls=1",
    "--config.data.prefetch=1",
    "--config.guidance.bg_ratio=0.015625",
    "--config.guidance.nms_ks=5",
    "--config.batch_size=4",
    "--config.sync_batchnorm=True",
    "--config.eval_batch_size=16",  # more than the 10 validation pairs: shrinks to 8
    "--config.num_pictures=1",
    "--config.num_train_steps=2",
    "--config.eval_every_steps=0",
    "--config.eval_at_start=False",
    "--config.checkpoint_every_steps=2",
    "--config.log_every_steps=1",
    "--config.max_to_keep=1",
)


def test_three_commands(tmp_path):
    videos, out, workdir = tmp_path / "videos", tmp_path / "out", tmp_path / "run"
    videos.mkdir()
    for seed in (0, 1):
        render_video(videos / f"clip{seed}.avi", seed)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    # 1. Frames, flow and the split lists.
    extract = subprocess.run(
        [sys.executable, "scripts/extract_flow.py", "--videos", str(videos), "--out", str(out),
         "--gap", str(GAP), "--val-fraction", "0.25"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert extract.returncode == 0, extract.stdout + extract.stderr
    # Per video: pairs 0, 2, ..., 36 (19); validation the last 5 (28..36); training those ending more
    # than GAP frames before frame 28 (0..22, 12); 24 and 26 in neither list.
    train_lines = (out / "train.txt").read_text().splitlines()
    val_lines = (out / "val.txt").read_text().splitlines()
    assert (len(train_lines), len(val_lines)) == (24, 10), extract.stdout
    assert "pairs written: 38" in extract.stdout
    for clip in ("clip0.avi", "clip1.avi"):
        train = {f for line in train_lines for f in line.split()[:2] if f"/{clip}/" in f}
        val = {f for line in val_lines for f in line.split()[:2] if f"/{clip}/" in f}
        assert train and val and not train & val
        assert max(map(_frame_index, train)) + GAP < min(map(_frame_index, val)) == 28

    # 2. Training, with the command line of the README plus the tiny overrides.
    from cmp_jax import train

    config = parse_config(f"--config={CONFIG_DIR / 'own_video.py'}", f"--config.data.root={out}", *TINY)
    assert config.data.root == str(out)
    train.train_and_evaluate(config, workdir)
    assert checkpoint.Checkpointer(workdir / "checkpoints").latest_step() == 2
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/epe" in r]
    assert evals and evals[-1]["step"] == 2
    assert all(np.isfinite(evals[-1][k]) for k in ("eval/epe", "eval/epe_zero", "eval/epe_nearest"))
    assert json.loads((workdir / "config.json").read_text())["data"]["root"] == str(out)

    # 3. Prediction on a validation frame (never trained on) from one arrow.
    image = out / val_lines[0].split()[0]
    predict = subprocess.run(
        [sys.executable, "scripts/predict.py", "--workdir", str(workdir), "--image", str(image),
         "--arrow", "30,30,3,0", "--out", str(tmp_path / "pred")],
        cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stdout + predict.stderr
    flow = flow_io.read_flo(tmp_path / "pred.flo")
    assert flow.shape == (SIZE, SIZE, 2) and np.isfinite(flow).all()
    assert (tmp_path / "pred.png").is_file()


def test_own_video_config_docstring_commands():
    """The docstring's commands name the options that exist and the lists the config reads."""
    spec = importlib.util.spec_from_file_location("own_video_under_test", CONFIG_DIR / "own_video.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    assert "--val-fraction" in module.__doc__ and "--config.data.root=OUT" in module.__doc__
    assert (tuple(config.data.train_lists), tuple(config.data.val_lists)) == (("train.txt",), ("val.txt",))
    assert config.data.source == "lists" and config.data.flow_type == "jpg"
    assert f"--resize {config.data.short_size}" in module.__doc__

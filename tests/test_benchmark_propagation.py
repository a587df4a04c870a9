"""Tests of ``scripts/benchmark.py propagation`` on a tiny workdir, on 4 fake CPU devices.

The workdir is written by ``state.save_variables`` (random He-normal weights
for ``tests/train_subprocess.tiny_config``'s model, no training), so the
checkpoint costs no training step. The benchmark runs in this process
(``benchmark.main``); its printed numbers are checked against the EPE of the
same eval batches computed here with ``cmp_jax.evaluation`` and a plain
single-device forward pass.
"""

import hashlib
import importlib.util
import math
import pathlib
import re

import cv2
import jax
import numpy as np
import pytest

from cmp_jax import config_args, evaluation
from cmp_jax import state as state_lib
from cmp_jax.evaluation import evaluator
from cmp_jax.flow import logits_to_flow
from input_pipeline import pipeline
from input_pipeline.flow_io import write_flo
from tests.helpers import random_inputs, random_variables
from tests.train_subprocess import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEP = 7


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark():
    return _load_benchmark()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    """config.json, checkpoints 3 (zero head: flow 0) and 7 (random weights), a metrics.jsonl."""
    path = tmp_path_factory.mktemp("workdir")
    config = tiny_config()
    model, _ = state_lib.build_from_config(config)
    model = model.clone(bn_axis_name=None)
    variables = random_variables(model, *random_inputs(1, 32, 32), seed=1)
    zero = jax.tree.map(np.copy, variables)
    head = zero["params"]["flow_decoder"]["head"]
    head["kernel"], head["bias"] = np.zeros_like(head["kernel"]), np.zeros_like(head["bias"])
    state_lib.save_variables(path, config, zero, 3)
    state_lib.save_variables(path, config, variables, STEP)
    (path / "metrics.jsonl").write_text('{"step": 7, "eval/epe": 1.0}\n')
    return path


def _snapshot(path: pathlib.Path) -> dict[str, tuple]:
    """Every file and directory under ``path``: modification time, size and content hash."""
    out = {}
    for p in sorted(path.rglob("*")):
        stat = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(path))] = (stat.st_mtime_ns, stat.st_size, digest)
    return out


def _reference(workdir: pathlib.Path, config, step: int | None = None) -> dict[str, float]:
    """EPE means of the model and the baselines and the per-image fraction, computed directly."""
    _, variables, _ = state_lib.load_variables(workdir, step)
    model, bins = state_lib.build_from_config(config)
    model = model.clone(bn_axis_name=None)

    @jax.jit
    def predict(image, sparse, mask):
        logits = model.apply(variables, image, sparse, mask, train=False)
        return logits_to_flow(logits, bins, image.shape[1:3])

    local_batch = config.eval_batch_size
    dataset, source = pipeline.create_from_config(config, "eval", local_batch=local_batch)
    batches = source.size // local_batch
    if config.num_eval_batches > 0:
        batches = min(batches, config.num_eval_batches)
    flows = {name: [] for name in ("model", *evaluation.BASELINES)}
    targets = []
    for batch in dataset.take(batches).as_numpy_iterator():
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
        flows["model"].append(np.asarray(predict(flat["image"], flat["sparse"], flat["mask"])))
        flows["zero"].append(np.zeros_like(flat["flow"]))
        flows["nearest"].append(evaluation.nearest_guidance_flow(flat["sparse"], flat["mask"]))
        flows["splat"].append(evaluation.gaussian_splat_flow(flat["sparse"], flat["mask"]))
        targets.append(flat["flow"])
    target = np.concatenate(targets)
    out, per_image = {"images": float(len(target))}, {}
    for name, parts in flows.items():
        flow = np.concatenate(parts)
        prefix = "epe" if name == "model" else f"epe_{name}"
        sums = {k: np.asarray(v, np.float64) for k, v in evaluation.epe_sums(flow, target).items()}
        out.update({f"eval/{k}": v for k, v in evaluation.summarize_epe(sums, prefix).items()})
        per_image[name] = np.linalg.norm(flow.astype(np.float64) - target, axis=-1).mean(axis=(1, 2))
    out["eval/frac_below_nearest"] = float(np.mean(per_image["model"] < per_image["nearest"]))
    return out


def _parse(output: str) -> tuple[dict[str, float], list[str]]:
    """The printed table as eval metric keys (NaN for "-"), and the output lines."""
    lines = output.strip().splitlines()
    header = next(line for line in lines if line.startswith("| EPE (px) |"))
    columns = [""] + ["/" + c.removesuffix(" px") for c in header.strip("| ").split(" | ")[2:]]
    rows = {"model": "eval/epe", **{name: f"eval/epe_{name}" for name in evaluation.BASELINES}}
    rows["model / nearest"] = "summary/epe_over_nearest"
    values = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in rows:
            for col, cell in zip(columns, cells[1:], strict=True):
                values[rows[cells[0]] + col] = math.nan if cell == "-" else float(cell)
        match = re.fullmatch(r"images where the model's EPE is below nearest fill's: (\S+)", line)
        if match:
            values["eval/frac_below_nearest"] = float(match.group(1))
    return values, lines


def _check_printed(printed: dict[str, float], want: dict[str, float], images: int) -> None:
    for key, value in want.items():
        if key == "images":
            continue
        if math.isnan(value):
            assert math.isnan(printed[key]), key
        else:
            assert printed[key] == pytest.approx(value, abs=6e-4), key  # printed with 3 decimals
    frac = printed["eval/frac_below_nearest"]
    assert 0.0 <= frac <= 1.0
    assert frac == pytest.approx(want["eval/frac_below_nearest"], abs=6e-4)
    below = round(frac * images)
    assert abs(below - frac * images) < 1e-3 * images + 1e-9  # a whole number of images


def _run(benchmark, capsys, *argv: str) -> str:
    capsys.readouterr()
    benchmark.main(["propagation", *argv])
    return capsys.readouterr().out


def test_propagation_on_a_config_file_matches_direct_evaluation(benchmark, workdir, tmp_path, capsys):
    before = _snapshot(workdir)
    config_file = tmp_path / "eval_data.py"
    config_file.write_text(
        "from tests.train_subprocess import tiny_config\n\n\n"
        "def get_config():\n"
        "    config = tiny_config()\n"
        "    config.data.synthetic.val_size = 12\n"
        "    config.data.synthetic.val_seed = 5\n"
        "    config.data.synthetic.max_object_shift = 16.0\n"
        "    return config\n"
    )
    argv = ["--workdir", str(workdir), "--config", str(config_file), "--batch-size", "4"]
    out = _run(benchmark, capsys, *argv, "--num-batches", "2")
    printed, lines = _parse(out)

    # The last line parses and is the model's EPE over nearest fill's.
    match = re.fullmatch(r"epe_over_nearest (\d+\.\d{3})", lines[-1])
    assert match, lines[-1]
    assert float(match.group(1)) == pytest.approx(printed["eval/epe"] / printed["eval/epe_nearest"], abs=2e-3)
    assert f"checkpoint of step {STEP}," in out and "8 images on 4 device(s)" in out
    assert "synthetic (val_size 12, val_seed 5)" in out

    data_config = config_args.parse([f"--config={config_file}"])
    config = evaluator.eval_config(state_lib.read_config(workdir), data_config, batch_size=4, num_batches=2)
    want = _reference(workdir, config)
    assert want["images"] == 8
    _check_printed(printed, want, 8)
    assert float(match.group(1)) == pytest.approx(want["eval/epe"] / want["eval/epe_nearest"], abs=6e-4)
    # The baselines were computed, not copied: nearest fill differs from zero flow.
    assert want["eval/epe_nearest"] != want["eval/epe_zero"]
    assert _snapshot(workdir) == before  # nothing written, touched or removed


def _write_flo_lists(root: pathlib.Path, n: int = 4, size: int = 40) -> pathlib.Path:
    """``n`` examples (JPEG frames, .flo flow) and a list file in another directory.

    Even examples move a small square on a static background (zero flow beats
    nearest fill, which spreads the square's vector around it), odd ones most
    of the image (nearest fill beats zero flow).
    """
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    lines = []
    for i in range(n):
        frame = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        flow = np.zeros((size, size, 2), np.float32)
        if i % 2:
            flow[4:36, 4:36] = rng.uniform(-15, 15, 2)
        else:
            flow[18:23, 18:23] = (12.0, -9.0)
        cv2.imwrite(str(root / "data" / f"f{i}_1.jpg"), frame)
        cv2.imwrite(str(root / "data" / f"f{i}_2.jpg"), frame)
        write_flo(str(root / "data" / f"f{i}.flo"), flow)
        lines.append(f"f{i}_1.jpg f{i}_2.jpg f{i}.flo")
    list_file = root / "lists" / "val.txt"
    list_file.parent.mkdir()
    list_file.write_text("\n".join(lines) + "\n")
    return list_file


def test_propagation_on_list_files_and_an_older_step(benchmark, workdir, tmp_path, capsys):
    before = _snapshot(workdir)
    list_file = _write_flo_lists(tmp_path)
    root = str(tmp_path / "data")
    argv = ["--workdir", str(workdir), "--lists", str(list_file), "--root", root, "--flow-type", "flo"]
    out = _run(benchmark, capsys, *argv, "--batch-size", "4", "--step", "3")
    printed, lines = _parse(out)
    assert "checkpoint of step 3," in out and "4 images on 4 device(s)" in out
    assert lines[-1].startswith("epe_over_nearest ")

    config = evaluator.eval_config(
        state_lib.read_config(workdir), lists=[str(list_file)], root=root, flow_type="flo", batch_size=4
    )
    want = _reference(workdir, config, step=3)
    assert want["images"] == 4
    _check_printed(printed, want, 4)
    # Step 3's head is zero: every logit 0, so the soft-argmax flow is the mean bin centre, 0.
    assert printed["eval/epe"] == pytest.approx(printed["eval/epe_zero"], abs=1e-3)
    # Zero flow beats nearest fill on the small squares, not on the large ones.
    assert printed["eval/frac_below_nearest"] == 0.5
    # Nearest fill is exact on the large squares: the ratio is undefined there, not infinite.
    assert printed["eval/epe_nearest/10-40"] == 0.0 and math.isnan(printed["summary/epe_over_nearest/10-40"])
    assert _snapshot(workdir) == before


def test_propagation_rejects_root_without_lists(benchmark, workdir):
    with pytest.raises(SystemExit, match="--lists"):
        benchmark.main(["propagation", "--workdir", str(workdir), "--root", "/tmp"])


def test_resolution_bound_rows(tmp_path, capsys):
    config_file = tmp_path / "tiny.py"
    config_file.write_text(
        "from tests.train_subprocess import tiny_config\n\n\ndef get_config():\n"
        "    config = tiny_config()\n    config.eval_batch_size = 2\n    return config\n"
    )
    _load_benchmark().main(["resolution_bound", "--config", str(config_file), "--strides", "1,8"])
    rows = {
        line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:3]]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and not line.startswith("| EPE") and "---" not in line
    }
    assert rows["exact at 1/1"] == [0.0]  # the target itself
    # Nearest fill as the training loop's evaluator computes it on the same examples.
    config = tiny_config()
    config.eval_batch_size = 2
    dataset, _ = pipeline.create_from_config(config, "eval", local_batch=2, local_devices=1)
    epes = []
    for batch in dataset.as_numpy_iterator():
        nearest = evaluation.baselines.nearest_guidance_flow(batch["sparse"][0], batch["mask"][0])
        epes.append(np.linalg.norm(nearest - batch["flow"][0], axis=-1))
    assert rows["nearest"][0] == pytest.approx(float(np.mean(epes)), abs=1e-3)
    assert 0 < rows["exact at 1/8"][0] < 10

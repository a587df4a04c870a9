"""Label propagation J&F end to end: clips, encoders, the script, the benchmark, the training hook."""

import importlib.util
import pathlib
import re

import cv2
import jax
import numpy as np
import pytest

from cmp_jax import state as state_lib
from cmp_jax import train
from cmp_jax.evaluation import video_segmentation as vs
from configs import base
from tests.train_subprocess import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    """A tiny workdir whose weights differ from the initialisation (He-normal, another seed)."""
    config = tiny_config()
    model, _ = state_lib.build_from_config(config)
    other = state_lib.build_from_config(tiny_config(seed=5))[0].clone(init_scheme="he")
    image, guide = np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, 32, 32, 2), np.float32)
    variables = jax.device_get(other.clone(bn_axis_name=None).init(jax.random.key(5), image, guide, guide))
    path = tmp_path_factory.mktemp("lp") / "run"
    state_lib.save_variables(path, config, variables, step=3)
    return path


def test_synthetic_clips_are_held_out_relabelled_and_deterministic():
    config = tiny_config()
    clips = vs.synthetic_clips(config, 3, 4)
    again = vs.synthetic_clips(config, 3, 4)
    assert len(clips) == 3
    for clip, same in zip(clips, again, strict=True):
        assert clip.frames.shape == (4, 34, 34, 3) and clip.masks.shape == (4, 34, 34)
        assert clip.num_objects >= 1
        # Objects of frame 0 are 1..K, consecutive; none appears later that frame 0 lacks.
        assert set(np.unique(clip.masks[0])) - {0} == set(range(1, clip.num_objects + 1))
        assert clip.masks.max() <= clip.num_objects
        np.testing.assert_array_equal(clip.frames, same.frames)
    config.label_prop.seed += 1
    assert not np.array_equal(vs.synthetic_clips(config, 1, 4)[0].frames, clips[0].frames)


def test_feature_of_alexnet_is_its_only_output():
    config = tiny_config()
    assert vs.feature_of(config) == "layer4"
    config.model.backbone = "alexnet"
    assert vs.feature_of(config) == "features"


def test_script_compares_encoders_and_writes_davis_layout(workdir, tmp_path, capsys):
    out = tmp_path / "masks"
    argv = [
        "--workdir",
        str(workdir),
        "--synthetic",
        "2",
        "--frames",
        "3",
        "--compare",
        "random",
        "--out",
        str(out),
    ]
    _load_script("eval_label_propagation").main(argv)
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    jf = float(re.fullmatch(r"jf (\d+\.\d\d)", lines[-1]).group(1))
    means = re.findall(r"\| \*\*mean\*\* \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", printed)
    assert len(means) == 2  # the workdir's encoder and its random initialisation
    assert jf == pytest.approx(float(means[0][2]), abs=0.06)
    for j, f, jandf in means:
        assert 0 <= float(j) <= 100 and float(jandf) == pytest.approx((float(j) + float(f)) / 2, abs=0.06)
    assert "workdir (step 3)" in printed and "random init" in printed
    written = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert len(written) == 2 * 2 * 3 and pathlib.Path("workdir/synthetic_000/00000.png") in written
    first = cv2.imread(str(out / "workdir" / "synthetic_000" / "00000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(first, vs.synthetic_clips(tiny_config(), 1, 3)[0].masks[0])


def test_benchmark_reports_the_gain(workdir, capsys):
    _load_script("benchmark").main(
        ["label_propagation", "--workdir", str(workdir), "--clips", "2", "--frames", "3"]
    )
    printed = capsys.readouterr().out
    rows = dict(re.findall(r"\| (trained|random init) \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", printed))
    gain = float(re.fullmatch(r"jf_gain (-?\d+\.\d\d)", printed.strip().splitlines()[-1]).group(1))
    assert gain == pytest.approx(float(rows["trained"]) - float(rows["random init"]), abs=0.06)


def test_training_logs_label_propagation_at_each_eval(tmp_path):
    assert vs.training_evaluator(base.get_config(), None) is None  # off in the released configs
    config = tiny_config(num_train_steps=1, checkpoint_every_steps=1)
    config.label_prop.num_clips = 1
    config.label_prop.num_frames = 3
    metrics = train.train_and_evaluate(config, tmp_path / "run")
    assert 0 <= metrics["eval/label_prop/j"] <= 1 and 0 <= metrics["eval/label_prop/f"] <= 1
    assert metrics["eval/label_prop/jf"] == pytest.approx(
        (metrics["eval/label_prop/j"] + metrics["eval/label_prop/f"]) / 2
    )


def test_torch_encoder_replaces_the_trunk(workdir, tmp_path):
    import torch
    import torchvision

    net = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    config, variables, _ = state_lib.load_variables(workdir)
    loaded = _load_script("eval_label_propagation")._torch_encoder_variables(str(path), config, variables)
    ours = loaded["params"]["image_encoder"]
    np.testing.assert_array_equal(
        ours["conv1"]["kernel"], net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        loaded["batch_stats"]["image_encoder"]["layer4_1"]["bn2"]["var"],
        net.layer4[1].bn2.running_var.numpy(),
    )
    # conv5 (not in torchvision) and the flow parts stay the workdir's.
    np.testing.assert_array_equal(
        ours["conv5"]["kernel"], variables["params"]["image_encoder"]["conv5"]["kernel"]
    )
    assert loaded["params"]["flow_decoder"] is variables["params"]["flow_decoder"]

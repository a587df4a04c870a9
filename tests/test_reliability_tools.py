"""Bad inputs to the tools get early, exact errors (issue 12): PyTorch files, CLI flags, videos, arrows.

Scripts run as subprocesses of this Python; everything is tiny (abstract model shapes, a 6-frame
video, a ResNet-18 at stride 32 on a 64 x 96 image).
"""

import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import cv2
import numpy as np
import pytest
import torch

from cmp_jax.convert import torch_io
from cmp_jax.flow import FlowBins
from cmp_jax.inference import MIN_SCALE, Predictor, arrows_to_guidance
from cmp_jax.models import CMP
from tests.helpers import random_inputs, random_variables
from tests.train_subprocess import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
# os.system is posix.system on Linux (nt.system on Windows): what the pickle names.
SYSTEM = f"{os.system.__module__}.system"


def _run(script: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


class _Shell:
    """Unpickling an instance runs ``os.system(command)``: the classic malicious checkpoint."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _config_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "tiny_config.py"
    path.write_text(
        textwrap.dedent('''
            """The tiny test config as a config file."""
            from tests.train_subprocess import tiny_config


            def get_config():
                return tiny_config()
            ''')
    )
    return path


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_os_system_pickle_is_refused_in_our_words(tmp_path, zip_format):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"w": torch.zeros(2)}, "extra": _Shell(f"touch {marker}")}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(torch_io.UnsafeCheckpointError) as info:
        torch_io.load_torch_file(path)
    message = str(info.value)
    assert f"refusing to load {path}: it contains Python objects beyond tensors" in message
    assert "cmp-jax will not execute them" in message
    assert "weights_only" not in message and info.value.__cause__ is None
    assert info.value.__suppress_context__  # PyTorch's advice is not chained under ours either
    if zip_format:
        assert f"({SYSTEM})" in message  # named where PyTorch can list it statically
    assert not marker.exists()


def test_torchscript_archive_is_refused_in_our_words(tmp_path):
    path = tmp_path / "scripted.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; files of it exist
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(torch_io.UnsafeCheckpointError, match="is a TorchScript archive") as info:
        torch_io.load_torch_file(path)
    assert "weights_only" not in str(info.value) and "will not execute it" in str(info.value)


def test_import_script_refuses_os_system_pickle(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "x": _Shell(f"touch {marker}")}, path)
    done = _run(
        "import_torch.py",
        f"--checkpoint={path}",
        f"--config={_config_file(tmp_path)}",
        f"--workdir={tmp_path / 'w'}",
    )
    assert done.returncode == 1, done.stderr
    assert f"import_torch.py: error: refusing to load {path}: it contains Python objects" in done.stderr
    assert SYSTEM in done.stderr and "weights_only" not in done.stderr
    assert not marker.exists() and not (tmp_path / "w").exists()


def _state_dict(config) -> dict[str, torch.Tensor]:
    """A whole-model state dict of ``config``'s shapes (zeros), as the original writes it."""
    return {
        f"module.{key}": torch.zeros(shape, dtype=torch.int64 if key.endswith("tracked") else torch.float32)
        for key, shape in torch_io.model_torch_shapes(config).items()
    }


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path):
    sd = _state_dict(tiny_config())
    sd["module.image_encoder.conv1.weight"][0, 0, 0, :3] = torch.tensor([np.nan, np.inf, -np.inf])
    sd["module.flow_decoder.head.bias"][1] = np.nan
    with pytest.raises(ValueError) as info:
        torch_io.unwrap_checkpoint({"step": 3, "state_dict": sd}, "ckpt.pth")
    message = str(info.value)
    assert "ckpt.pth: 2 tensor(s) hold NaN or infinite values" in message
    assert "module.image_encoder.conv1.weight (1 NaN, 2 infinite of 9408 values)" in message
    assert "module.flow_decoder.head.bias (1 NaN, 0 infinite of 18 values)" in message

    path = tmp_path / "diverged.pth.tar"
    torch.save({"step": 3, "state_dict": sd}, path)
    done = _run(
        "import_torch.py",
        f"--checkpoint={path}",
        f"--config={_config_file(tmp_path)}",
        f"--workdir={tmp_path / 'w'}",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 tensor(s)" not in done.stderr and "module.flow_decoder.head.bias (1 NaN" in done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "script,args,error",
    [
        ("animate.py", ["--arrow", "5,5,2,0", "--frames", "0"], "--frames must be at least 1, got 0"),
        ("animate.py", ["--arrow", "5,5,2,0", "--frames", "-2"], "--frames must be at least 1, got -2"),
        ("animate.py", ["--arrow", "5,5,2,0", "--fps", "0"], "--fps must be a positive number, got 0"),
        ("animate.py", ["--trajectory", "1,2;nan,3"], "with >= 2 points of finite numbers, got '1,2;nan,3'"),
        ("annotate.py", ["--pos", "5,5", "--velocity", "0"], "--velocity must be a positive number"),
        ("annotate.py", ["--pos", "5,5", "--threshold", "1"], "--threshold must be in [0, 1)"),
        ("annotate.py", ["--pos", "5,5", "--threshold", "-0.1"], "--threshold must be in [0, 1)"),
        ("annotate.py", ["--pos", "5,5", "--neg", "9,9", "--zoom", "0.5"], "--zoom must be at least 1"),
        ("annotate.py", ["--pos", "5,5", "--zoom", "4"], "--zoom needs at least two clicks"),
    ],
)
def test_nonsensical_cli_values_are_argparse_errors(tmp_path, script, args, error):
    # Refused while parsing: neither the workdir nor the image is opened.
    done = _run(script, "--workdir", tmp_path / "none", "--image", tmp_path / "none.png", *args, "--out", "x")
    assert done.returncode == 2, done.stderr
    assert f"{script}: error: " in done.stderr and error in done.stderr, done.stderr


def test_extract_flow_names_max_frames_when_it_leaves_no_pair(tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for t in range(6):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, 4 * t : 4 * t + 8] = 255
        writer.write(frame)
    writer.release()
    done = _run(
        "extract_flow.py", "--videos", video, "--out", tmp_path / "out", "--gap", 4, "--max-frames", 3
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"WARNING {video}: 3 frame(s) used (--max-frames 3), fewer than --gap + 1 = 5: no pairs "
        "(lower --gap or raise --max-frames)" in done.stderr
    ), done.stderr
    assert "lower --gap or raise --max-frames. The list files were not rewritten." in done.stderr


def test_arrows_that_would_need_a_scale_below_the_floor_are_refused():
    bins = FlowBins(num_bins=9, fmax=10.0)
    model = CMP(num_bins=9, backbone="resnet18", output_stride=32, img_enc_dim=16, decoder_combo=(1,))
    predictor = Predictor(model, random_variables(model, *random_inputs(1, 32, 32), seed=5), bins, 8.0)
    assert MIN_SCALE == 1 / 8 and predictor.longest_arrow == 64.0
    features = predictor.encode(np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(ValueError) as info:
        predictor.propagate(features, [[(1, 2, 0, 0)], [(1, 2, 0, 0), (10, 20, 3, -5000)]])
    assert str(info.value) == (
        "guidance set 1: arrow 1 at (x=10, y=20) with vector (dx=3, dy=-5000) is too long: a 5000 px "
        "component would need the image run at scale 0.0016, below the floor MIN_SCALE = 1/8; arrow "
        "components can be at most max_arrow / MIN_SCALE = 64 px (max_arrow = 8 px)"
    )
    sparse, mask = arrows_to_guidance([(10, 20, 65, 0)], 64, 96)
    with pytest.raises(ValueError, match=r"guidance set 0: the arrow at \(x=10, y=20\) .* a 65 px component"):
        predictor.propagate(features, sparse=sparse[None], mask=mask[None])
    # At the limit the set runs at the floor scale itself.
    flow = predictor.propagate(features, [[(10, 20, 64, 0)]])
    assert sorted(features.encoded) == [MIN_SCALE, 1.0] and np.isfinite(flow).all()

"""PyTorch conversion: export formats, import, round trips, refused pickles, the scripts.

One set of random weights per architecture (module-scoped fixture), BN running
statistics calibrated to the test input as in ``test_torch_parity.py``, so an
absolute tolerance on the logits means something. Sizes are the smallest that
keep every BatchNorm well conditioned with one image: the coarsest decoder
branch (pooling by 4 in the plain decoder, by 8 in the skip decoder) must
still see 2 x 2 values per channel, hence 64 x 64 for ResNet-50 + plain
(stride 8), 128 x 128 for ResNet-50 + skip and 256 x 256 for AlexNet
(stride 32); with a single value the calibrated variance is 0.
"""

import collections
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch
import torchvision

from cmp_jax import checkpoint, state, torch_models
from cmp_jax.convert import torch_io, torch_layout
from configs import base
from tests.helpers import calibrate, random_inputs, random_variables
from tests.train_subprocess import tiny_config

torch.set_num_threads(2)
ROOT = pathlib.Path(__file__).resolve().parents[1]

# name: (backbone, decoder, input side, parameter count of the original (reference section 1.9),
# BatchNorm layers)
ARCHS = {
    "resnet50_plain": ("resnet50", "plain", 64, 25_497_510, 61),
    "resnet50_skip": ("resnet50", "skip", 128, 28_516_422, 72),
    "alexnet": ("alexnet", "plain", 256, 32_502_694, 15),
}


def _nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x).transpose(0, 3, 1, 2))


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _assert_identical(got, want):
    """Same tree structure, float32 leaves, bit-identical values."""
    want = jax.tree.map(np.asarray, want)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for path, g in jax.tree_util.tree_flatten_with_path(got)[0]:
        w = want
        for k in path:
            w = w[k.key]
        assert g.dtype == np.float32 and g.shape == w.shape, jax.tree_util.keystr(path)
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32)), jax.tree_util.keystr(path)


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request):
    """Config, calibrated variables, inputs, Flax logits and encoder features of one architecture."""
    backbone, decoder, side, num_params, num_bn = ARCHS[request.param]
    config = base.get_config()
    config.model.backbone, config.model.decoder = backbone, decoder
    config.data.crop_size = (side, side)
    model, _ = state.build_from_config(config)
    inputs = random_inputs(1, side, side, seed=3, density=0.05)
    variables = random_variables(model, *inputs, seed=1)
    variables = jax.jit(lambda v: calibrate(model, v, *inputs))(variables)
    variables = jax.tree.map(np.asarray, variables)

    def forward(v, image, sparse, mask):
        def both(m, image, sparse, mask):
            feats = m.encode(image)
            return m.propagate(feats, sparse, mask), feats

        return model.apply(v, image, sparse, mask, method=both)

    logits, feats = jax.tree.map(np.asarray, jax.jit(forward)(variables, *inputs))
    return dict(
        config=config,
        variables=variables,
        inputs=inputs,
        logits=logits,
        feats=feats,
        num_params=num_params,
        num_bn=num_bn,
    )


def test_round_trip_through_original_file_is_bit_identical(arch, tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    torch.save(torch_io.original_checkpoint(arch["variables"], step=7), path)
    sd, step = torch_io.unwrap_checkpoint(torch_io.load_torch_file(path), str(path))
    assert step == 7
    _assert_identical(torch_io.variables_from_state_dict(sd, arch["config"], str(path)), arch["variables"])


def test_original_export_has_the_original_layout_and_logits(arch):
    ckpt = torch_io.original_checkpoint(arch["variables"], step=42000)
    sd = ckpt["state_dict"]
    assert ckpt["step"] == 42000 and isinstance(sd, collections.OrderedDict)
    assert {k.split(".")[1] for k in sd} == {"image_encoder", "flow_encoder", "flow_decoder"}
    assert all(k.startswith("module.") for k in sd)
    tracked = [v for k, v in sd.items() if k.endswith(".num_batches_tracked")]
    assert len(tracked) == arch["num_bn"] and all(v.dtype == torch.int64 and v == 42000 for v in tracked)
    learned = sum(v.numel() for k, v in sd.items() if k.endswith((".weight", ".bias")))
    assert learned == arch["num_params"]

    backbone, decoder = arch["config"].model.backbone, arch["config"].model.decoder
    # As the original loads it: strictly, into its model wrapped in a DataParallel ("module.").
    twin = torch.nn.DataParallel(torch_models.CMP(backbone, decoder)).eval()
    twin.load_state_dict(sd, strict=True)
    with torch.no_grad():
        ref = _nhwc(twin(*(_nchw(x) for x in arch["inputs"])))
    logits = arch["logits"]
    assert logits.shape == ref.shape
    assert 0.3 < logits.std() < 100, "logits should have a non-trivial scale"
    assert np.abs(logits - ref).max() <= 1e-4


def test_encoder_export_loads_into_torch_and_features_match(arch):
    config, feats = arch["config"], arch["feats"]
    encoder, head = torch_io.encoder_state_dicts(config, arch["variables"], step=3)
    image = _nchw(arch["inputs"][0])
    if config.model.backbone == "alexnet":
        assert head is None
        net = torch_models.AlexNetBNFCN().eval()
        net.load_state_dict(encoder, strict=True)
        with torch.no_grad():
            ref = _nhwc(net(image)["features"])
        assert np.abs(feats["features"] - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
        return
    net = torchvision.models.resnet50()
    net.fc = torch.nn.Identity()
    net.load_state_dict(encoder, strict=True)
    torch_models.apply_cmp_dilation(net, 8)
    conv5 = torch.nn.Conv2d(2048, 256, 1)
    conv5.load_state_dict(head, strict=True)
    net.eval()
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(image))))
        layer4 = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        pooled = net(image)  # the stock forward: global average pool of layer4, fc = Identity
        features = _nhwc(conv5(layer4))
        layer4 = _nhwc(layer4)
    scale = np.abs(layer4).max()
    assert feats["layer4"].shape == layer4.shape and scale > 0.1
    assert np.abs(feats["layer4"] - layer4).max() <= 1e-4 * max(1.0, scale)
    np.testing.assert_allclose(pooled.numpy(), layer4.mean((1, 2)), rtol=1e-5, atol=1e-6)
    assert np.abs(feats["features"] - features).max() <= 1e-4 * max(1.0, np.abs(features).max())


@pytest.fixture(scope="module")
def tiny():
    """The tiny training config and random variables of its model (ResNet-18, 9 bins)."""
    config = tiny_config()
    model, _ = state.build_from_config(config)
    inputs = random_inputs(1, 32, 32)
    return config, random_variables(model.clone(bn_axis_name=None), *inputs, seed=5)


def test_import_without_num_batches_tracked(tiny, tmp_path):
    """The released checkpoint's shape: no num_batches_tracked, an optimizer entry, a step."""
    config, variables = tiny
    ckpt = torch_io.original_checkpoint(variables, step=42)
    ckpt["state_dict"] = collections.OrderedDict(
        (k, v) for k, v in ckpt["state_dict"].items() if not k.endswith("num_batches_tracked")
    )
    ckpt["optimizer"] = {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9, "params": [0, 1]}]}
    path = tmp_path / "ckpt_iter_42.pth.tar"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)  # as PyTorch 0.4 wrote it
    workdir = tmp_path / "imported"
    ckpt_dir, step = torch_io.import_checkpoint(path, config, workdir)
    assert step == 42 and ckpt_dir == (workdir / "checkpoints" / "42").absolute()
    assert not (workdir / torch_io.TRACKED_FILE).exists()  # exports write the step, as before
    _, loaded, loaded_step = state.load_variables(workdir)
    assert loaded_step == 42
    _assert_identical(loaded, variables)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        torch_io.import_checkpoint(path, config, workdir)


def test_num_batches_tracked_round_trips_through_import_and_export(tiny, tmp_path):
    """A file with step 5 and other, per-layer num_batches_tracked gets them back on export."""
    config, variables = tiny
    ckpt = torch_io.original_checkpoint(variables, step=5)
    sd = ckpt["state_dict"]
    keys = [k for k in sd if k.endswith(".num_batches_tracked")]
    given = {k: 7 + i for i, k in enumerate(keys)}
    for key, count in given.items():
        sd[key] = torch.tensor(count, dtype=torch.int64)
    path = tmp_path / "ckpt.pth.tar"
    torch.save(ckpt, path)
    workdir = tmp_path / "imported"
    torch_io.import_checkpoint(path, config, workdir)
    # The training state is the one without num_batches_tracked.
    _assert_identical(state.load_variables(workdir)[1], variables)

    out = tmp_path / "back.pth.tar"
    torch_io.export_workdir(workdir, out, "original")
    back = torch.load(out, weights_only=True)
    assert back["step"] == 5
    assert {k: int(back["state_dict"][k]) for k in keys} == given
    assert all(back["state_dict"][k].dtype == torch.int64 for k in keys)
    for key, value in sd.items():
        assert torch.equal(back["state_dict"][key], value), key

    # The image encoder export carries the image encoder's values.
    enc = tmp_path / "enc.pth"
    torch_io.export_workdir(workdir, enc, "encoder")
    trunk = torch.load(enc, weights_only=True)
    tracked = {k: int(v) for k, v in trunk.items() if k.endswith(".num_batches_tracked")}
    prefix = "module.image_encoder."
    assert tracked == {k.removeprefix(prefix): v for k, v in given.items() if k.startswith(prefix)}

    # Training on from the import counts on from the file's values, a layer at a time.
    assert torch_io.tracked_counts(workdir, 8) == {k.removeprefix("module."): v + 3 for k, v in given.items()}
    # Without the record (trained from scratch, or the released model): the step.
    assert torch_io.tracked_counts(tmp_path / "nothing", 8) == {}


def test_bare_state_dict_without_prefix_imports(tiny, tmp_path):
    config, variables = tiny
    sd = {
        k.removeprefix("module."): v
        for k, v in torch_io.original_checkpoint(variables, 0)["state_dict"].items()
    }
    path = tmp_path / "bare.pth"
    torch.save(sd, path)
    _, step = torch_io.import_checkpoint(path, config, tmp_path / "w", step=11)
    assert step == 11
    _assert_identical(state.load_variables(tmp_path / "w")[1], variables)


def test_mismatched_keys_are_named(tiny):
    config, variables = tiny
    sd, _ = torch_io.unwrap_checkpoint(torch_io.original_checkpoint(variables, 0), "test")
    del sd["image_encoder.layer1.0.conv1.weight"]
    sd["image_encoder.fc.weight"] = np.zeros((10, 512), np.float32)
    sd["flow_decoder.head.bias"] = np.zeros((198,), np.float32)
    with pytest.raises(checkpoint.CheckpointShapeError) as info:
        torch_io.variables_from_state_dict(sd, config, "my.pth")
    message = str(info.value)
    assert "my.pth" in message and "3 keys" in message
    assert "image_encoder.layer1.0.conv1.weight: missing" in message
    assert "image_encoder.fc.weight: unexpected" in message
    assert "flow_decoder.head.bias: has shape (198,), the model needs (18,)" in message


def test_layout_rejects_keys_without_flax_counterpart():
    with pytest.raises(ValueError, match=r"fc\.weight \(10, 4\)"):
        torch_layout.torch_to_flax_variables({"fc.weight": np.zeros((10, 4), np.float32)})


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    for i, text in enumerate(["not a checkpoint", "hello"]):  # fail in the unpickler, or before it
        path = tmp_path / f"notes{i}.pth"
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"notes{i}\.pth is not a PyTorch") as info:
            torch_io.load_torch_file(path)
        assert not isinstance(info.value, torch_io.UnsafeCheckpointError)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        torch_io.load_torch_file(tmp_path / "missing.pth")


def _touch(path: str) -> None:
    pathlib.Path(path).touch()


class _RunsCode:
    """Unpickling an instance calls ``_touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _touch, (self.marker,)


def test_pickle_with_code_is_refused(tiny, tmp_path):
    config, variables = tiny
    marker = tmp_path / "code_ran"
    ckpt = torch_io.original_checkpoint(variables, 0)
    ckpt["extra"] = _RunsCode(marker)
    path = tmp_path / "evil.pth.tar"
    torch.save(ckpt, path)
    with pytest.raises(
        torch_io.UnsafeCheckpointError,
        match=r"refusing to load .*evil\.pth\.tar.*tests\.test_convert\._touch",
    ):
        torch_io.import_checkpoint(path, config, tmp_path / "w")
    assert not marker.exists() and not (tmp_path / "w").exists()
    torch.load(path, weights_only=False)  # the file does run code when loaded unsafely
    assert marker.exists()


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_scripts_end_to_end(tiny, tmp_path):
    config, variables = tiny
    source = tmp_path / "source"
    state.save_variables(source, config, variables, step=5)
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(
        textwrap.dedent('''
            """The tiny test config as a config file."""
            from tests.train_subprocess import tiny_config


            def get_config():
                return tiny_config()
            ''')
    )

    out = tmp_path / "export" / "cmp.pth.tar"
    done = _run("export_torch.py", "--workdir", str(source), "--format", "original", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(out)]
    target = tmp_path / "target"
    done = _run(
        "import_torch.py", f"--checkpoint={out}", f"--config={config_file}", f"--workdir={target}", "--step=9"
    )
    assert done.returncode == 0, done.stderr
    _, loaded, step = state.load_variables(target)
    assert step == 9
    _assert_identical(loaded, variables)

    enc = tmp_path / "export" / "enc.pth"
    done = _run(
        "export_torch.py", "--workdir", str(source), "--step", "5", "--format", "encoder", "--out", str(enc)
    )
    assert done.returncode == 0, done.stderr
    head_file = tmp_path / "export" / "enc_conv5.pth"
    assert done.stdout.split() == [str(enc), str(head_file)]
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.load_state_dict(torch.load(enc, weights_only=True), strict=True)
    head = torch.load(head_file, weights_only=True)
    assert set(head) == {"weight", "bias"} and head["weight"].shape == (16, 512, 1, 1)
    kernel = variables["params"]["image_encoder"]["conv5"]["kernel"]
    np.testing.assert_array_equal(head["weight"].numpy(), kernel.transpose(3, 2, 0, 1))

    # A config override (as main.py takes them) that no longer fits: the keys are named.
    done = _run(
        "import_torch.py",
        f"--checkpoint={out}",
        f"--config={config_file}",
        "--config.flow.num_bins=5",
        f"--workdir={tmp_path / 'mismatch'}",
    )
    assert done.returncode == 1
    assert (
        "flow_decoder.head.weight: has shape (18, 128, 1, 1), the model needs (10, 128, 1, 1)" in done.stderr
    )
    assert not (tmp_path / "mismatch").exists()


def test_export_of_a_missing_workdir_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        torch_io.export_workdir(tmp_path / "nowhere", tmp_path / "x.pth", "original")
    with pytest.raises(ValueError, match="unknown format 'onnx'"):
        torch_io.export_workdir(tmp_path / "nowhere", tmp_path / "x.pth", "onnx")


def test_original_export_of_a_convex_upsampling_model_is_refused(tmp_path):
    config = tiny_config()
    config.model.upsample = "convex"
    template = state._template(config)
    variables = {"params": template["params"], "batch_stats": template["batch_stats"]}
    state.save_variables(tmp_path / "run", config, variables, step=1)
    with pytest.raises(ValueError, match=r"model.upsample='convex', which the original code does not have"):
        torch_io.export_workdir(tmp_path / "run", tmp_path / "x.pth", "original")
    assert not (tmp_path / "x.pth").exists()
    written = torch_io.export_workdir(tmp_path / "run", tmp_path / "enc.pth", "encoder")
    assert written[0] == tmp_path / "enc.pth" and written[0].is_file()

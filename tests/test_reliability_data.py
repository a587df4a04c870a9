"""Bad data and configs fail early and exactly: flow bound, config validation, missing files, counting."""

import importlib
import os
import pkgutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import configs
from cmp_jax import config_check
from cmp_jax.evaluation import evaluator
from configs import base
from input_pipeline import flow_io, lists, pipeline

H, W = 48, 64


def _write_example(root, name, flow_value=0.0):
    """frame1/frame2 PNGs and a .flo whose pixel (3, 4) dy is ``flow_value``; returns the list line."""
    frame = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    cv2.imwrite(os.path.join(root, f"{name}_1.png"), frame)
    cv2.imwrite(os.path.join(root, f"{name}_2.png"), frame)
    flow = np.zeros((H, W, 2), np.float32)
    flow[10:30, 10:40] = (3.0, -2.0)
    flow[3, 4, 1] = flow_value
    flow_io.write_flo(os.path.join(root, f"{name}.flo"), flow)
    return f"{name}_1.png {name}_2.png {name}.flo"


def _write_list(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def _config(root, train_lines, val_lines, skip=False):
    config = base.get_config()
    config.data.root = str(root)
    config.data.train_lists = (_write_list(root / "train.txt", train_lines),)
    config.data.val_lists = (_write_list(root / "val.txt", val_lines),)
    config.data.flow_type = "flo"
    config.data.skip_bad_examples = skip
    config.data.short_size = H
    config.data.crop_size = (H, H)
    config.guidance.bg_ratio = 1 / 256
    config.guidance.nms_ks = 9
    config.eval_batch_size = 4
    return config


# --- flow values beyond data.max_flow_magnitude -------------------------------------------------


def test_flo_holding_1e30_is_a_bad_example_naming_the_file_and_the_value(tmp_path):
    lines = [_write_example(str(tmp_path), f"ok{i}") for i in range(3)] + [
        _write_example(str(tmp_path), "huge", 1e30)
    ]
    config = _config(tmp_path, lines, lines)
    assert config.data.max_flow_magnitude == 1e4
    ds, _ = pipeline.create_from_config(config, "eval", local_batch=4, local_devices=1)
    with pytest.raises(
        Exception, match=r"val\.txt line 4: flow \S*huge\.flo holds 1 value beyond \+-10000 px"
    ):
        next(ds.as_numpy_iterator())

    config.data.skip_bad_examples = True
    counter = pipeline.BadExampleCounter()
    ds, _ = pipeline.create_from_config(config, "train", local_batch=4, local_devices=1, counter=counter)
    batch = next(ds.as_numpy_iterator())
    assert np.abs(batch["flow"]).max() == 3.0  # trained on the good examples only
    (message,) = counter.messages.values()
    assert "huge.flo" in message and "the largest 1e+30 px (dy at row 3, column 4)" in message


def test_flow_bound_is_inclusive_and_configurable(tmp_path):
    line = _write_example(str(tmp_path), "big", 1e4)
    (entry,), _ = lists.read_lists([_write_list(tmp_path / "l.txt", [line])], str(tmp_path), "flo")
    assert lists.load_example(entry, max_flow_magnitude=1e4)["flow"][3, 4, 1] == 1e4
    with pytest.raises(lists.BadExampleError, match=r"l\.txt line 1: flow .*big\.flo .*beyond \+-9999 px"):
        lists.load_example(entry, max_flow_magnitude=9999)
    with pytest.raises(ValueError, match="holds 1 NaN or infinite values"):  # even with no bound
        flow_io.check_flow_values(np.array([[[np.inf, 0.0]]], np.float32), max_magnitude=np.inf)


def test_tfds_flow_beyond_the_bound_is_a_bad_example(tmp_path):
    from input_pipeline.tfds_builder import CmpFlow

    manual = tmp_path / "manual"
    manual.mkdir()
    line = "f_1.png f_2.png fx.png fy.png"
    frame = np.zeros((H, W, 3), np.uint8)
    cv2.imwrite(str(manual / "f_1.png"), frame)
    cv2.imwrite(str(manual / "f_2.png"), frame)
    flow = np.zeros((H, W, 2), np.float32)
    flow[5, 6, 0] = -30.0
    for name, plane in zip(("fx.png", "fy.png"), flow_io.encode_flow_jpg(flow), strict=True):
        cv2.imwrite(str(manual / name), plane)
    _write_list(manual / "train.txt", [line])
    _write_list(manual / "val.txt", [line])
    builder = CmpFlow(config="lists", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)), file_format="array_record"
    )
    source = pipeline.tfds_source("cmp_flow/lists", str(tmp_path / "tfds"), "train", max_flow_magnitude=20)
    want = (
        r"TFDS cmp_flow/lists split 'train' \(process 0 of 1\) example 0 \(\S*train\.txt:1\): flow holds 1 "
    )
    with pytest.raises(lists.BadExampleError, match=want + r"value beyond \+-20 px"):
        source.load(0)

    config = base.get_config()
    config.data.source = "tfds"
    config.data.tfds.data_dir = str(tmp_path / "tfds")
    pipeline.check_sources(config)
    config.data.tfds.val_split = "val"
    with pytest.raises(FileNotFoundError, match=r"data\.tfds\.val_split 'val': .* has no split val"):
        pipeline.check_sources(config)


# --- config validation ------------------------------------------------------------------------


def test_every_shipped_config_validates():
    for module in pkgutil.iter_modules(configs.__path__):
        config_check.validate_config(importlib.import_module(f"configs.{module.name}").get_config())


def test_crop_size_65_names_the_field_and_the_form():
    config = base.get_config()
    config.data.crop_size = (65,)  # what --config.data.crop_size=65 gives
    with pytest.raises(
        ValueError, match=r"data\.crop_size=\(65,\): expected \(height, width\) of positive ints"
    ):
        config_check.validate_config(config)
    config.data.crop_size = (65, 64)
    with pytest.raises(ValueError, match=r"multiples of the encoder stride 8 .*e\.g\. \(64, 64\)"):
        config_check.validate_config(config)
    config.data.crop_size = (16, 16)  # stride 8, decoder branch 4 needs 32
    with pytest.raises(ValueError, match=r"data\.crop_size=\(16, 16\): expected both sides at least 32"):
        config_check.validate_config(config)


def test_every_bad_value_is_named_at_once():
    config = base.get_config()
    config.data.short_size = 0
    config.batch_size = -2
    config.eval_batch_size = 0
    config.num_train_steps = -1
    config.log_every_steps = 0
    config.checkpoint_every_steps = 0
    config.optim.lr = 0.0
    config.guidance.bg_ratio = 2.0
    config.data.source = "list"
    config.data.max_flow_magnitude = -1.0
    config.flow.num_bins = 98
    config.model.backbone = "resnet51"
    with pytest.raises(ValueError) as info:
        config_check.validate_config(config)
    message = str(info.value)
    assert message.startswith("invalid config, 12 problems:")
    for expected in [
        "data.short_size=0: expected a positive int",
        "batch_size=-2: expected a positive int",
        "eval_batch_size=0: expected a positive int",
        "num_train_steps=-1: expected an int >= 0",
        "log_every_steps=0: expected a positive int",
        "checkpoint_every_steps=0: expected a positive int",
        "optim.lr=0.0: expected a positive finite learning rate",
        "guidance: bg_ratio must be in (0, 1], got 2.0",
        "data.source='list': expected one of ('lists', 'synthetic', 'tfds')",
        "data.max_flow_magnitude=-1.0: expected a positive number",
        "flow.num_bins=98: expected a positive odd int",
        "model.backbone='resnet51': expected one of",
    ]:
        assert expected in message, (expected, message)


# --- missing data, before anything is built -----------------------------------------------------


def test_check_sources_names_every_missing_list_and_first_line_file(tmp_path):
    lines = [_write_example(str(tmp_path), f"ok{i}") for i in range(7)]
    lines[1] = "gone_1.png ok1_2.png ok1.flo"
    lines[6] = "ok6_1.png ok6_2.png beyond_line_5.flo"  # only the first 5 examples of a list are checked
    config = _config(tmp_path, ["# header", *lines], ["ok0_1.png ok0_2.png gone.flo"])
    config.data.train_lists = (*config.data.train_lists, "lists/missing_train.txt")
    with pytest.raises(FileNotFoundError) as info:
        pipeline.check_sources(config)
    message = str(info.value)
    assert message.startswith("3 missing (data.source='lists'):\n")
    assert f"{tmp_path}/gone_1.png (named on {tmp_path}/train.txt line 3)" in message
    assert f"{tmp_path}/gone.flo (named on {tmp_path}/val.txt line 1)" in message
    assert (
        f"list file lists/missing_train.txt does not exist (nor does {tmp_path}/lists/missing_train.txt)"
        in message
    )
    assert "beyond_line_5" not in message
    assert "Point data.root" in message

    config.data.root = str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"data\.root \S*elsewhere is not a directory"):
        pipeline.check_sources(config)


def test_check_sources_names_a_missing_tfds_dataset(tmp_path):
    config = base.get_config()
    config.data.source = "tfds"
    config.data.tfds.data_dir = str(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"data\.tfds\.data_dir \S*absent is not a directory"):
        pipeline.check_sources(config)
    (tmp_path / "tfds").mkdir()
    config.data.tfds.data_dir = str(tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match=r"TFDS dataset cmp_flow/lists is not prepared in \S*tfds"):
        pipeline.check_sources(config)
    assert not os.listdir(tmp_path / "tfds")  # nothing downloaded or prepared


def test_check_sources_with_nothing_missing_passes(tmp_path):
    lines = [_write_example(str(tmp_path), f"ok{i}") for i in range(2)]
    pipeline.check_sources(_config(tmp_path, lines, lines))
    config = base.get_config()
    config.data.source = "synthetic"
    pipeline.check_sources(config)


# --- one bad example, read by the training and the eval pipeline, counts once ------------------------


def test_bad_example_in_train_and_val_lists_is_counted_and_logged_once(tmp_path, caplog):
    good = [_write_example(str(tmp_path), f"ok{i}") for i in range(4)]
    bad = _write_example(str(tmp_path), "gone")
    os.remove(tmp_path / "gone.flo")
    config = _config(tmp_path, [*good[:2], bad, *good[2:]], [bad, *good], skip=True)
    # A malformed line in a list file that both read counts once as well.
    shared = _write_list(tmp_path / "shared.txt", ["ok0_1.png ok0_2.png", good[3]])
    config.data.train_lists = (*config.data.train_lists, shared)
    config.data.val_lists = (*config.data.val_lists, shared)
    counter = pipeline.BadExampleCounter()
    with caplog.at_level("WARNING"):
        evaluation = evaluator.Evaluator(config, lambda *args, **kwargs: None, counter=counter)
        list(evaluation.dataset.take(evaluation.num_batches).as_numpy_iterator())
        train_ds, _ = pipeline.create_from_config(
            config, "train", local_batch=4, local_devices=4, counter=counter
        )
        iterator = train_ds.as_numpy_iterator()
        for _ in range(3):  # more than an epoch
            next(iterator)
    assert counter.count == 2
    assert sum("gone.flo" in m for m in counter.messages.values()) == 1
    assert sum("shared.txt line 1" in m for m in counter.messages.values()) == 1
    logged = [r.getMessage() for r in caplog.records if "skipped bad example" in r.getMessage()]
    assert len(logged) == 2, logged


def test_upsample_choice_and_its_decoder_are_checked():
    config = base.get_config()
    config.model.upsample = "nearest"
    with pytest.raises(
        ValueError, match=r"model.upsample='nearest': expected one of \('bilinear', 'convex'\)"
    ):
        config_check.validate_config(config)
    config.model.upsample = "convex"
    config.model.decoder = "skip"
    with pytest.raises(ValueError, match=r"model.upsample='convex': needs model.decoder='plain'"):
        config_check.validate_config(config)


def test_bad_example_error_is_unwrapped(tmp_path):
    lines = [_write_example(str(tmp_path), "huge", 1e30)] + [
        _write_example(str(tmp_path), f"ok{i}") for i in range(3)
    ]
    config = _config(tmp_path, lines, lines)
    ds, _ = pipeline.create_from_config(config, "eval", local_batch=4, local_devices=1)
    with pytest.raises(lists.BadExampleError) as info:
        next(pipeline.numpy_batches(ds))
    message = str(info.value)
    assert (
        message.startswith(f"{tmp_path / 'val.txt'} line 1: flow ")
        and "huge.flo holds 1 value beyond" in message
    )
    assert "function_node" not in message and "data.skip_bad_examples=True" in message


def test_grad_accum_steps_must_divide_the_batch():
    config = base.get_config()
    config.grad_accum_steps = 3
    with pytest.raises(
        ValueError, match=r"grad_accum_steps=3: expected a positive int dividing batch_size=160"
    ):
        config_check.validate_config(config)
    config.grad_accum_steps = 4
    config_check.validate_config(config)

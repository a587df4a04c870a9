"""Tests of the tf.data pipeline: transforms, shapes, determinism, resume, sharding, bad data."""

import os

import cv2
import numpy as np
import pytest

from cmp_jax import normalization
from configs import base
from input_pipeline import guidance, lists, pipeline, synthetic
from input_pipeline.flow_io import encode_flow_jpg, write_flo

SAMPLER = guidance.SamplerConfig(strategy=("grid", "watershed"), bg_ratio=1 / 400, nms_ks=9)


def _fake_source(n=6, h=40, w=56, bad=()):
    """In-memory examples: random images, piecewise-constant flows; ``bad`` indices raise."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    flows = np.zeros((n, h, w, 2), np.float32)
    for i in range(n):
        flows[i, h // 4 : 3 * h // 4, w // 4 : w // 2] = rng.uniform(-20, 20, 2)
        flows[i] += rng.uniform(-3, 3, 2)

    def load(i):
        if i in bad:
            raise lists.BadExampleError(f"fake.txt line {i + 1}: broken example {i}")
        return images[i], flows[i]

    return pipeline.Source(size=n, load=load), images, flows


def _transform(train=True, size=(32, 48), short=40, flip=False):
    return pipeline.TransformConfig(short_size=short, crop_size=size, train=train, flip=flip, sampler=SAMPLER)


def _batches(ds, n):
    it = ds.as_numpy_iterator()
    return [next(it) for _ in range(n)]


def test_crop_pads_centred_and_offsets_stay_in_range():
    ys, xs = np.mgrid[:20, :30]
    image = np.stack([ys + 1, xs + 1, np.ones_like(ys)], -1)  # pixel (y, x) holds (y + 1, x + 1, 1)
    flow = np.ones((20, 30, 2), np.float32)
    centre, cflow = pipeline.crop(image, flow, (10, 10), None)
    np.testing.assert_array_equal(centre, image[5:15, 10:20])
    padded, pflow = pipeline.crop(image, flow, (24, 36), None)
    assert padded.shape == (24, 36, 3)
    assert padded[:2].max() == 0 and padded[:, :3].max() == 0 and pflow[-2:].max() == 0
    np.testing.assert_array_equal(padded[2:22, 3:33], image)
    rng = np.random.default_rng(0)
    offsets = {tuple(pipeline.crop(image, flow, (10, 10), rng)[0][0, 0, :2] - 1) for _ in range(300)}
    oy, ox = zip(*offsets, strict=True)
    # int(u * (L - crop)) with u in [0, 1): 0 .. L - crop - 1, the last offset never drawn.
    assert (min(oy), max(oy), min(ox), max(ox)) == (0, 9, 0, 19)


def test_normalize_uses_imagenet_stats_on_0_255():
    image = np.broadcast_to(np.array([123.675, 116.28, 103.53]), (2, 2, 3)).round().astype(np.uint8)
    out = pipeline.normalize(image)
    assert out.dtype == np.float32
    mean, std = normalization.IMAGENET_MEAN, normalization.IMAGENET_STD
    np.testing.assert_allclose(out, (image - mean) / std, rtol=1e-6)
    # The lookup table is the shared normalisation, bit for bit.
    every = np.random.default_rng(2).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pipeline.normalize(every), normalization.normalize(every))


def test_flip_negates_dx():
    image = np.random.default_rng(1).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    flow = np.zeros((32, 48, 2), np.float32)
    flow[:, :24] = [5.0, 3.0]
    cfg = _transform(size=(32, 48), short=32, flip=True)
    flipped = None
    for seed in range(20):
        out = pipeline.transform_example(image, flow, cfg, np.random.default_rng(seed))
        if out["flow"][0, -1, 0] == -5.0:
            flipped = out
    assert flipped is not None, "no flip in 20 draws at p = 0.5"
    np.testing.assert_allclose(flipped["flow"][:, 24:], np.broadcast_to([-5.0, 3.0], (32, 24, 2)))
    np.testing.assert_allclose(flipped["image"], pipeline.normalize(image[:, ::-1]), rtol=1e-6)


def test_batches_have_device_shapes_and_consistent_guidance():
    source, _, _ = _fake_source()
    ds = pipeline.create_dataset(source, _transform(), local_batch=4, local_devices=2, seed=0)
    (batch,) = _batches(ds, 1)
    assert batch["image"].shape == (2, 2, 32, 48, 3) and batch["image"].dtype == np.float32
    for key in ("sparse", "mask", "flow"):
        assert batch[key].shape == (2, 2, 32, 48, 2) and batch[key].dtype == np.float32
    assert batch["num_guides"].shape == (2, 2) and batch["num_guides"].dtype == np.int32
    mask = batch["mask"]
    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(mask[..., 0], mask[..., 1])
    np.testing.assert_array_equal(batch["sparse"], batch["flow"] * mask)
    np.testing.assert_array_equal(batch["num_guides"], mask[..., 0].sum((-1, -2)))
    assert batch["num_guides"].min() > 0


def test_same_seed_same_data_and_resume_sees_the_same_batches():
    source, _, _ = _fake_source()
    make = lambda seed, start=0: pipeline.create_dataset(  # noqa: E731
        source, _transform(), local_batch=4, local_devices=2, seed=seed, start_step=start
    )
    full = _batches(make(0), 4)  # 16 samples: crosses epoch boundaries (6 examples)
    again = _batches(make(0), 4)
    resumed = _batches(make(0, start=2), 2)
    other = _batches(make(1), 1)
    for a, b in zip(full, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(full[2:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(full[0]["image"], other[0]["image"])


def test_every_example_once_per_epoch():
    n = 6
    source, images, _ = _fake_source(n=n, h=32, w=48)
    cfg = _transform(size=(32, 48), short=32)
    (batch,) = _batches(pipeline.create_dataset(source, cfg, local_batch=n, local_devices=1, seed=3), 1)
    seen = sorted(
        int(np.argmin([np.abs(pipeline.normalize(img) - out).sum() for img in images]))
        for out in batch["image"][0]
    )
    assert seen == list(range(n))


def test_eval_is_one_ordered_pass_with_centre_crops():
    source, images, _ = _fake_source(n=5)
    cfg = _transform(train=False, short=40)
    ds = pipeline.create_dataset(
        source, cfg, local_batch=2, local_devices=1, seed=0, num_samples=5, shuffle=False
    )
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2  # the incomplete third batch is dropped
    want = pipeline.normalize(images[1][4:36, 4:52])
    np.testing.assert_allclose(batches[0]["image"][0, 1], want, rtol=1e-6)


def test_bad_examples_raise_by_default_and_are_counted_when_skipped():
    source, _, _ = _fake_source(bad=(2,))
    ds = pipeline.create_dataset(source, _transform(), local_batch=6, local_devices=1, seed=0, shuffle=False)
    with pytest.raises(Exception, match="fake.txt line 3"):
        _batches(ds, 1)
    counter = pipeline.BadExampleCounter()
    whole = _transform(size=(40, 56), short=40)  # no random crop: compare examples exactly
    ds = pipeline.create_dataset(
        source, whole, local_batch=6, local_devices=1, seed=0, shuffle=False,
        skip_bad_examples=True, counter=counter,
    )  # fmt: skip
    batches = _batches(ds, 3)  # three passes over the data: the bad example is counted once
    assert counter.count == 1
    (message,) = counter.messages.values()
    assert "fake.txt line 3" in message
    assert batches[0]["image"].shape[1] == 6
    # Sample 2 got example 3 in its place; sample 3 is example 3 as well.
    np.testing.assert_array_equal(batches[0]["flow"][0, 2], batches[0]["flow"][0, 3])


def test_processes_read_disjoint_shards(tmp_path):
    config = synthetic.SyntheticConfig(height=48, width=48)
    shards = [pipeline.synthetic_source(config, 10, seed=0, process_index=p, process_count=2) for p in (0, 1)]
    assert [s.size for s in shards] == [5, 5]
    a, _ = shards[0].load(0)
    b, _ = shards[1].load(0)
    np.testing.assert_array_equal(a, synthetic.generate_example(0, config, 0)["frame1"])
    np.testing.assert_array_equal(b, synthetic.generate_example(1, config, 0)["frame1"])


def _write_list_dataset(root, n=4, h=48, w=64, flow_type="jpg"):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        flow = np.zeros((h, w, 2), np.float32)
        flow[10:30, 10:40] = rng.uniform(-20, 20, 2)
        cv2.imwrite(os.path.join(root, f"f{i}_1.jpg"), frame[..., ::-1])
        cv2.imwrite(os.path.join(root, f"f{i}_2.jpg"), frame[..., ::-1])
        if flow_type == "jpg":
            fx, fy = encode_flow_jpg(flow)
            cv2.imwrite(os.path.join(root, f"f{i}_x.png"), fx)
            cv2.imwrite(os.path.join(root, f"f{i}_y.png"), fy)
            lines.append(f"f{i}_1.jpg f{i}_2.jpg f{i}_x.png f{i}_y.png")
        else:
            write_flo(os.path.join(root, f"f{i}.flo"), flow)
            lines.append(f"f{i}_1.jpg f{i}_2.jpg f{i}.flo")
    list_file = os.path.join(root, "train.txt")
    with open(list_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    return list_file


@pytest.mark.parametrize("flow_type", ["jpg", "flo"])
def test_create_from_config_reads_list_files(tmp_path, flow_type):
    list_file = _write_list_dataset(str(tmp_path), flow_type=flow_type)
    config = base.get_config()
    config.data.train_lists = (list_file,)
    config.data.val_lists = (list_file,)
    config.data.root = str(tmp_path)
    config.data.flow_type = flow_type
    config.data.short_size = 48
    config.data.crop_size = (48, 48)
    config.guidance.bg_ratio = 1 / 256
    config.guidance.nms_ks = 9
    ds, source = pipeline.create_from_config(config, "train", local_batch=4, local_devices=4)
    assert source.size == 4
    (batch,) = _batches(ds, 1)
    assert batch["flow"].shape == (4, 1, 48, 48, 2)
    assert np.abs(batch["flow"]).max() > 5
    ev, _ = pipeline.create_from_config(config, "eval", local_batch=2, local_devices=2)
    assert len(list(ev.as_numpy_iterator())) == 2


def test_missing_file_error_names_list_and_line(tmp_path):
    list_file = _write_list_dataset(str(tmp_path))
    os.remove(tmp_path / "f1_x.png")
    source = pipeline.list_source([list_file], str(tmp_path), "jpg", False)
    ds = pipeline.create_dataset(
        source, _transform(size=(48, 48), short=48), local_batch=4, local_devices=1, seed=0, shuffle=False
    )
    with pytest.raises(Exception, match=r"train\.txt.*2.*f1_x\.png|f1_x\.png.*train\.txt"):
        _batches(ds, 1)


def test_synthetic_config_source():
    config = base.get_config()
    config.data.source = "synthetic"
    config.data.synthetic.height = config.data.synthetic.width = 64
    config.data.synthetic.train_size = 8
    config.data.short_size = 64
    config.data.crop_size = (64, 64)
    config.guidance.bg_ratio = 1 / 400
    config.guidance.nms_ks = 9
    ds, source = pipeline.create_from_config(config, "train", local_batch=8)
    assert source.size == 8
    (batch,) = _batches(ds, 1)
    assert batch["image"].shape == (4, 2, 64, 64, 3)  # jax.local_device_count() = 4 (conftest)
    with pytest.raises(ValueError, match="unknown data.source"):
        config.data.source = "webdataset"
        pipeline.create_from_config(config, "train", local_batch=4, local_devices=2)


def test_synthetic_fields_reach_the_generator():
    config = base.get_config()
    config.data.synthetic.max_object_radius = 0.3
    config.data.synthetic.max_objects = 2
    gen = pipeline.synthetic_config(config.data.synthetic)
    assert (gen.max_object_radius, gen.max_objects) == (0.3, 2)
    assert (gen.height, gen.max_object_shift) == (416, 30.0)
    config.data.synthetic.max_object_speed = 3.0
    with pytest.raises(ValueError, match="max_object_speed"):
        pipeline.synthetic_config(config.data.synthetic)


def test_list_shards_have_equal_sizes(tmp_path):
    list_file = _write_list_dataset(str(tmp_path), n=5)
    sizes = [pipeline.list_source([list_file], str(tmp_path), "jpg", False, p, 2).size for p in (0, 1)]
    assert sizes == [2, 2]  # the fifth entry is dropped so both processes run the same eval steps


def test_frames_decode_as_rgb_like_bgr_then_convert(tmp_path):
    """Frames decoded straight to RGB equal OpenCV's BGR decode flipped (colour, grey and RGBA files)."""
    rng = np.random.default_rng(5)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), (7, 7), 2)
    images = {"colour.jpg": smooth[..., :3], "grey.jpg": smooth[..., 0], "rgba.png": smooth}
    flow_x, flow_y = encode_flow_jpg(np.zeros((37, 53, 2), np.float32))
    cv2.imwrite(str(tmp_path / "x.png"), flow_x)
    cv2.imwrite(str(tmp_path / "y.png"), flow_y)
    for name, image in images.items():
        cv2.imwrite(str(tmp_path / name), image)
        (tmp_path / "list.txt").write_text(f"{name} {name} x.png y.png\n")
        (entry,), _ = lists.read_lists([str(tmp_path / "list.txt")], str(tmp_path), "jpg")
        example = lists.load_example(entry)
        expected = cv2.cvtColor(cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for key in ("frame1", "frame2"):
            assert example[key].shape == (37, 53, 3), name
            np.testing.assert_array_equal(example[key], expected, err_msg=name)


def test_keep_freed_memory_reuses_freed_blocks():
    """After ``keep_freed_memory`` freed blocks are reused: no fresh pages (glibc).

    By default glibc trims the freed top of the heap here, so every round faults
    in all 2304 pages again.
    """
    import resource

    if not pipeline.keep_freed_memory():
        pytest.skip("no glibc mallopt")

    def faults_of_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [np.empty(3 << 19, np.uint8) for _ in range(6)]  # 6 x 1.5 MB, like one example
        for block in blocks:
            block.fill(1)
        del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_round()
    assert min(faults_of_round() for _ in range(3)) < 100

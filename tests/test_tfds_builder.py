"""Tests of the cmp_flow TFDS builder: built by the CLI and the API, in process and on Beam, read back."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from input_pipeline import lists, pipeline, synthetic
from input_pipeline.tfds_builder import CmpFlow, cmp_flow
from tests.test_pipeline import _write_list_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tfds_cli_builds_synthetic_and_pipeline_reads_it(tmp_path):
    data_dir = str(tmp_path / "tfds")
    cmd = [
        sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build", "cmp_flow",
        "--imports", "input_pipeline.tfds_builder", "--config", "synthetic_tiny",
        "--data_dir", data_dir, "--file_format", "array_record",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    shards = [pipeline.tfds_source("cmp_flow/synthetic_tiny", data_dir, "train", p, 2) for p in (0, 1)]
    assert [s.size for s in shards] == [32, 32]
    config = synthetic.SyntheticConfig(height=64, width=64)
    generated = [synthetic.generate_example(i, config, 0) for i in range(64)]
    by_flow = {g["flow"].tobytes(): g for g in generated}
    seen = set()
    for shard in shards:
        for i in range(shard.size):
            frame, flow = shard.load(i)
            want = by_flow[flow.tobytes()]  # flow is stored losslessly: an exact match exists
            assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
            assert np.abs(frame.astype(int) - want["frame1"]).mean() < 8  # JPEG
            seen.add(flow.tobytes())
    assert len(seen) == 64  # the two process shards are disjoint and cover the split


def test_lists_config_packs_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    list_file = _write_list_dataset(str(manual), n=3)
    os.rename(list_file, manual / "train.txt")
    (manual / "val.txt").write_text((manual / "train.txt").read_text().splitlines()[0] + "\n")
    builder = CmpFlow(config="lists", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)), file_format="array_record"
    )
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["validation"].num_examples == 1
    source = pipeline.tfds_source("cmp_flow/lists", str(tmp_path / "tfds"), "train")
    entries, _ = lists.read_lists([str(manual / "train.txt")], str(manual), "jpg")
    flows = sorted(float(lists.load_example(e)["flow"].sum()) for e in entries)
    got = sorted(float(source.load(i)[1].sum()) for i in range(source.size))
    np.testing.assert_allclose(got, flows)


def _beam_config(manual: str | None, workers: int = 1, **kwargs) -> tfds.download.DownloadConfig:
    """A DownloadConfig that builds on Beam's local FnApiRunner (threads when ``workers`` > 1)."""
    flags = ["--runner=FnApiRunner"]
    if workers > 1:
        flags += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_threading"]
    return tfds.download.DownloadConfig(manual_dir=manual, beam_options=PipelineOptions(flags), **kwargs)


def _split_examples(builder, split: str) -> list[dict]:
    """The stored examples of a split in record order, ``key`` as str."""
    data = builder.as_data_source(split=split)
    out = []
    for i in range(len(data)):
        example = dict(data[i])
        key = example["key"]
        example["key"] = key.decode() if isinstance(key, bytes) else str(key)
        out.append(example)
    return out


def test_row_ranges_cover_every_row_once():
    assert cmp_flow.row_ranges(0) == []
    assert cmp_flow.row_ranges(3) == [(0, 1), (1, 2), (2, 3)]
    for count in (1023, 1025, 10_000, 100_000):
        ranges = cmp_flow.row_ranges(count)
        assert ranges[0][0] == 0 and ranges[-1][1] == count
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert max(stop - start for start, stop in ranges) <= cmp_flow._MAX_ROWS_PER_ELEMENT
        assert len(ranges) >= min(count, cmp_flow._MIN_ELEMENTS)


def test_lists_config_on_beam_matches_load_example_and_in_process_build(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    list_file = _write_list_dataset(str(manual), n=5)
    os.rename(list_file, manual / "train.txt")
    (manual / "val.txt").write_text("# comment\n" + (manual / "train.txt").read_text().splitlines()[3] + "\n")
    on_beam = CmpFlow(config="lists", data_dir=str(tmp_path / "beam"))
    on_beam.download_and_prepare(
        download_config=_beam_config(str(manual), workers=2), file_format="array_record"
    )
    in_process = CmpFlow(config="lists", data_dir=str(tmp_path / "plain"))
    in_process.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)), file_format="array_record"
    )
    frame_feature = on_beam.info.features["frame1"]
    for split, name in (("train", "train.txt"), ("validation", "val.txt")):
        assert on_beam.info.splits[split].shard_lengths == in_process.info.splits[split].shard_lengths
        entries, _ = lists.read_lists([str(manual / name)], str(manual), "jpg")
        want = {f"{e.source}:{e.line}": lists.load_example(e, frame2=False) for e in entries}
        got = _split_examples(on_beam, split)
        assert sorted(g["key"] for g in got) == sorted(want)  # every line once, keys as before
        for example in got:
            loaded = want[example["key"]]
            np.testing.assert_array_equal(example["flow"], loaded["flow"])  # stored losslessly
            jpeg = frame_feature.decode_example_np(frame_feature.encode_example(loaded["frame1"]))
            np.testing.assert_array_equal(example["frame1"], jpeg)  # the same JPEG as TFDS writes
        for a, b in zip(got, _split_examples(in_process, split), strict=True):  # same order as in process
            assert a["key"] == b["key"]
            np.testing.assert_array_equal(a["frame1"], b["frame1"])
            np.testing.assert_array_equal(a["flow"], b["flow"])


def test_lists_config_on_beam_stops_at_a_bad_example(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    list_file = _write_list_dataset(str(manual), n=2)
    lines = open(list_file).read().splitlines()
    (manual / "train.txt").write_text(f"{lines[0]}\n{lines[1].replace('f1_x.png', 'gone_x.png')}\n")
    (manual / "val.txt").write_text(lines[0] + "\n")
    builder = CmpFlow(config="lists", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(
        lists.BadExampleError, match=r"train\.txt line 2: missing file .*gone_x\.png.*examples_in_range"
    ):
        builder.download_and_prepare(download_config=_beam_config(str(manual)), file_format="array_record")


def test_synthetic_config_on_beam_keeps_keys_and_flows(tmp_path):
    builder = CmpFlow(config="synthetic_tiny", data_dir=str(tmp_path / "tfds"))
    config = _beam_config(None, workers=2, max_examples_per_split=6)  # the cap applies on Beam too
    builder.download_and_prepare(download_config=config, file_format="array_record")
    generator = synthetic.SyntheticConfig(height=64, width=64)
    for split, seed in (("train", 0), ("validation", 1)):
        got = {e["key"]: e for e in _split_examples(builder, split)}
        assert sorted(got) == sorted(f"synthetic:{seed}:{i}" for i in range(6))
        for i in range(6):
            want = synthetic.generate_example(i, generator, seed, frame2=False)["flow"]
            np.testing.assert_array_equal(got[f"synthetic:{seed}:{i}"]["flow"], want)

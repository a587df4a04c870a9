"""Tests of the cmp_flow TFDS builder: built by the CLI and the API, read back by the pipeline."""

import os
import subprocess
import sys

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import lists, pipeline, synthetic
from input_pipeline.tfds_builder import CmpFlow
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

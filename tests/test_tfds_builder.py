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
    frame, flow = shards[0].load(3)
    want = synthetic.generate_example(3, synthetic.SyntheticConfig(height=64, width=64), 0)
    np.testing.assert_array_equal(flow, want["flow"])  # flow is stored losslessly
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert np.abs(frame.astype(int) - want["frame1"]).mean() < 8  # JPEG
    frame_b, _ = shards[1].load(0)
    want_b = synthetic.generate_example(32, synthetic.SyntheticConfig(height=64, width=64), 0)
    assert np.abs(frame_b.astype(int) - want_b["frame1"]).mean() < 8  # second half of the split


def test_lists_config_packs_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    list_file = _write_list_dataset(str(manual), n=3, flow_type="flo")
    os.rename(list_file, manual / "train.txt")
    (manual / "val.txt").write_text((manual / "train.txt").read_text().splitlines()[0] + "\n")
    builder = CmpFlow(config="lists", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)), file_format="array_record"
    )
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["validation"].num_examples == 1
    source = pipeline.tfds_source("cmp_flow/lists", str(tmp_path / "tfds"), "train")
    entries, _ = lists.read_lists([str(manual / "train.txt")], str(manual), "flo")
    flows = sorted(float(lists.load_example(e)["flow"].sum()) for e in entries)
    got = sorted(float(source.load(i)[1].sum()) for i in range(source.size))
    np.testing.assert_allclose(got, flows)

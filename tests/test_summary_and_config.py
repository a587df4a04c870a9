"""Tests of scripts/summary.py and configs/base.py."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from cmp_jax.flow import FlowBins
from cmp_jax.models import build_model
from configs import base
from tests.helpers import count_params

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _summary(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "summary.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


@pytest.mark.parametrize(
    "backbone,decoder,size,total,logits",
    [
        ("resnet50", "plain", [], 25_497_510, "(1, 48, 48, 198)"),
        ("resnet50", "skip", ["--size", "256", "320"], 28_516_422, "(1, 128, 160, 198)"),
        ("alexnet", "plain", ["--size", "384", "320"], 32_502_694, "(1, 12, 10, 198)"),
    ],
)
def test_summary_prints_modules_shape_and_total(backbone, decoder, size, total, logits):
    out = _summary(f"--config.model.backbone={backbone}", f"--config.model.decoder={decoder}", *size)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == f"total {total}"
    assert logits in lines[-2]
    rows = [line for line in lines[1:-2] if line[:1].isalpha()]
    top = {row.split()[0]: int(row.split()[1].replace(",", "")) for row in rows}
    assert sum(top[k] for k in ("image_encoder", "flow_encoder", "flow_decoder")) == total
    assert top["flow_encoder"] == 4_000
    # Every nested module is listed too, indented under its parent.
    assert any(line.startswith("  head ") for line in lines)


def test_summary_reports_bad_size():
    out = _summary("--config", str(ROOT / "configs" / "yfcc_alexnet.py"), "--size", "400", "384")
    assert out.returncode != 0
    assert "400x384" in out.stderr and "stride 32" in out.stderr


def test_base_config_builds_the_original_model():
    config = base.get_config()
    model = build_model(config.model, num_bins=config.flow.num_bins)
    bins = FlowBins(**config.flow)
    assert (bins.num_bins, bins.fmax) == (99, 50.0)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    g = jax.ShapeDtypeStruct((1, 64, 64, 2), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x, g, g)
    assert count_params(variables["params"]) == 25_497_510

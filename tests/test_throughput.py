"""Tests of cmp_jax.throughput: the peak table lookup and the derived figures."""

import pytest

from cmp_jax import throughput


@pytest.mark.parametrize(
    ("kind", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "float32", 494.7),
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
        ("NVIDIA H100 PCIe", "bfloat16", 756.0),
        ("NVIDIA H200", "bfloat16", 989.4),
        ("NVIDIA A100-SXM4-80GB", "float32", 156.0),
        ("NVIDIA A10", "bfloat16", 125.0),  # not taken for an A100
        ("Tesla V100-SXM2-16GB", "bfloat16", None),  # no bfloat16 units
        ("TPU v4", "float32", 275.0),
        ("TPU v5 lite", "bfloat16", 197.0),  # v5e, not v5p
        ("TPU v5", "bfloat16", 459.0),
        ("cpu", "float32", None),
    ],
)
def test_device_peak_matches_the_specific_row(kind, dtype, peak):
    got, name = throughput.device_peak(kind, dtype)
    assert got == peak
    assert (name is None) == (kind == "cpu")


def test_device_peak_rejects_other_dtypes():
    with pytest.raises(ValueError, match="float16"):
        throughput.device_peak("TPU v4", "float16")


def test_derived_figures_and_table():
    r = throughput.Throughput("bfloat16", 8, 10, 0.5, 2e12, 989.4)
    assert r.images_per_s == pytest.approx(160.0)  # 8 devices x 10 images / 0.5 s
    assert r.achieved_tflops == pytest.approx(4.0)
    assert r.fraction_of_peak == pytest.approx(4.0 / 989.4)
    unknown = throughput.Throughput("float32", 1, 2, 1.0, 1e9, None)
    assert unknown.fraction_of_peak is None
    table = throughput.markdown_table([r, unknown]).splitlines()
    assert table[2].split("|")[-2].strip() == "0.4 %"
    assert table[3].split("|")[-2].strip() == "-"

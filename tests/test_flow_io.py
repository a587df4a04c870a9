"""Tests of input_pipeline.flow_io: .flo files, 8-bit flow images, atomic writes."""

import os

import cv2
import numpy as np
import pytest

from input_pipeline import flow_io

STEP = 100 / 255  # px per 8-bit level


def _random_flow(shape=(7, 11), scale=20.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape + (2,)) * scale).astype(np.float32)


def _smooth_flow(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([10 * np.sin(x / 15) + 3, -8 * np.cos(y / 11)], axis=-1)


def test_flo_round_trip_exact_and_no_temp_files(tmp_path):
    flow = _random_flow()
    path = str(tmp_path / "a.flo")
    flow_io.write_flo(path, flow)
    back = flow_io.read_flo(path)
    assert back.dtype == np.float32 and back.shape == (7, 11, 2)
    np.testing.assert_array_equal(back, flow)
    assert flow_io.read_flo_header(path) == (7, 11)
    assert os.path.getsize(path) == 12 + 7 * 11 * 2 * 4
    assert os.listdir(tmp_path) == ["a.flo"]


def test_flo_layout_is_middlebury(tmp_path):
    """Header = float32 202021.25, int32 width, int32 height; then row-major (H, W, 2) float32."""
    path = str(tmp_path / "a.flo")
    flow = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    flow_io.write_flo(path, flow)
    raw = open(path, "rb").read()
    assert raw[:4] == b"PIEH"
    assert tuple(np.frombuffer(raw, "<i4", count=2, offset=4)) == (3, 2)
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4", offset=12), flow.ravel())


def _header(magic=flow_io.FLO_MAGIC, width=4, height=3):
    return np.array([magic], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"PIE", "truncated .flo header"),
        (_header(magic=1.0) + bytes(96), "not a .flo file"),
        (_header() + bytes(95), "implies 108"),
        (_header() + bytes(97), "implies 108"),
        (_header(width=0), "invalid .flo size"),
        (_header(height=-2), "invalid .flo size"),
    ],
)
def test_read_flo_errors_name_path_and_problem(tmp_path, data, problem):
    path = str(tmp_path / "bad.flo")
    open(path, "wb").write(data)
    with pytest.raises(ValueError, match=problem) as info:
        flow_io.read_flo(path)
    assert path in str(info.value)
    with pytest.raises(ValueError, match=problem):
        flow_io.read_flo_header(path)


def test_read_flo_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        flow_io.read_flo(str(tmp_path / "missing.flo"))


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3), (0, 5, 2)])
def test_write_flo_rejects_bad_shapes(tmp_path, shape):
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        flow_io.write_flo(str(tmp_path / "a.flo"), np.zeros(shape, np.float32))
    assert not os.listdir(tmp_path)


def test_decode_flow_jpg_known_values():
    x = np.array([[0, 127, 128, 255]], np.uint8)
    y = x[:, ::-1].copy()
    flow = flow_io.decode_flow_jpg(x, y)
    assert flow.dtype == np.float32 and flow.shape == (1, 4, 2)
    expected = np.array([-50, 127 * STEP - 50, 128 * STEP - 50, 50], np.float32)
    np.testing.assert_allclose(flow[0, :, 0], expected, atol=1e-5)
    np.testing.assert_allclose(flow[0, :, 1], expected[::-1], atol=1e-5)
    np.testing.assert_allclose(flow[0, 1:3, 0], [-0.196, 0.196], atol=1e-3)  # no exact zero


def test_decode_flow_jpg_every_level_exactly():
    """All 256 levels in both channels, also from non-contiguous planes: float32(v / 255 * 100 - 50)."""
    rng = np.random.default_rng(3)
    levels = rng.permutation(np.tile(np.arange(256, dtype=np.uint8), 8)).reshape(32, 64)
    for x, y in [(levels, levels[::-1]), (levels[:, ::2], levels[::-1, 1::2])]:
        flow = flow_io.decode_flow_jpg(x, y)
        for channel, plane in enumerate((x, y)):
            expected = (plane.astype(np.float64) * (100 / 255) - 50).astype(np.float32)
            np.testing.assert_array_equal(flow[..., channel], expected)


def test_decode_flow_jpg_rejects_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        flow_io.decode_flow_jpg(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="flow y image is"):
        flow_io.decode_flow_jpg(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))


def test_encode_decode_round_trip_within_half_step():
    flow = np.random.default_rng(1).uniform(-70, 70, (32, 40, 2)).astype(np.float32)
    x, y = flow_io.encode_flow_jpg(flow)
    assert x.dtype == y.dtype == np.uint8 and x.shape == y.shape == (32, 40)
    back = flow_io.decode_flow_jpg(x, y)
    np.testing.assert_allclose(back, np.clip(flow, -50, 50), atol=STEP / 2 + 1e-4)
    assert np.abs(flow).max() > 60 and np.abs(back).max() == 50  # clipped
    # The 256 levels themselves encode exactly.
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(flow_io.encode_flow_jpg(flow_io.decode_flow_jpg(levels, levels))[0], levels)


def test_encode_rejects_non_finite():
    flow = np.zeros((2, 2, 2), np.float32)
    flow[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        flow_io.encode_flow_jpg(flow)


def test_flow_image_files_png_exact_jpg_close(tmp_path):
    flow = _smooth_flow()
    xp, yp = str(tmp_path / "f_x.png"), str(tmp_path / "f_y.png")
    flow_io.write_flow_jpg(xp, yp, flow)
    assert cv2.imread(xp, cv2.IMREAD_UNCHANGED).ndim == 2  # grayscale files
    np.testing.assert_array_equal(
        flow_io.read_flow_jpg(xp, yp), flow_io.decode_flow_jpg(*flow_io.encode_flow_jpg(flow))
    )
    xj, yj = str(tmp_path / "f_x.jpg"), str(tmp_path / "f_y.jpg")
    flow_io.write_flow_jpg(xj, yj, flow, jpeg_quality=95)
    assert open(xj, "rb").read(2) == b"\xff\xd8"  # JPEG, chosen by the extension
    err = np.abs(flow_io.read_flow_jpg(xj, yj) - flow)
    assert err.mean() < 0.2 and err.max() < 1.0
    assert sorted(os.listdir(tmp_path)) == ["f_x.jpg", "f_x.png", "f_y.jpg", "f_y.png"]


def test_read_flow_jpg_errors_name_paths(tmp_path):
    xp, yp = str(tmp_path / "x.png"), str(tmp_path / "y.png")
    cv2.imwrite(xp, np.zeros((4, 5), np.uint8))
    cv2.imwrite(yp, np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match="5x4 but flow y image") as info:
        flow_io.read_flow_jpg(xp, yp)
    assert xp in str(info.value) and yp in str(info.value)
    bad = str(tmp_path / "bad.png")
    open(bad, "wb").write(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image") as info:
        flow_io.read_flow_jpg(xp, bad)
    assert bad in str(info.value)
    with pytest.raises(FileNotFoundError):
        flow_io.read_flow_jpg(xp, str(tmp_path / "missing.png"))


def test_encode_image_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="cannot encode"):
        flow_io.encode_image(str(tmp_path / "a.unknown"), np.zeros((2, 2), np.uint8))


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "sub" / "a.flo")

    def fail(src, dst):
        raise KeyboardInterrupt  # as if the run were interrupted between write and rename

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        flow_io.write_flo(path, np.zeros((2, 2, 2), np.float32))
    assert os.listdir(tmp_path / "sub") == []


def test_written_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = tmp_path / "f.flo"
        flow_io.write_flo(str(path), np.zeros((2, 3, 2), np.float32))
        assert (os.stat(path).st_mode & 0o777) == 0o666 & ~flow_io._UMASK
    finally:
        os.umask(mask)


def test_check_flow_returns_contiguous_float32_and_names_the_shape():
    flow = np.arange(4 * 6 * 2, dtype=np.float64).reshape(4, 6, 2)[:, ::2]
    checked = flow_io.check_flow(flow)
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    np.testing.assert_array_equal(checked, flow)
    same = np.zeros((3, 5, 2), np.float32)
    assert flow_io.check_flow(same) is same
    for shape in [(4, 5), (4, 5, 3), (0, 5, 2)]:
        with pytest.raises(ValueError, match=rf"shape \(H, W, 2\) with H, W > 0, got \({shape[0]}, 5"):
            flow_io.check_flow(np.zeros(shape))

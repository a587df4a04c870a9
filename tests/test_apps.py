"""Annotation, animation and the predict / annotate / animate scripts."""

import pathlib
import runpy
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from cmp_jax import state
from cmp_jax.apps import animation, annotation
from cmp_jax.flow import FlowBins
from cmp_jax.inference import Predictor
from cmp_jax.models import CMP
from input_pipeline import flow_io
from tests.helpers import constant_flow_variables, random_inputs, random_variables
from tests.train_subprocess import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINS = FlowBins(num_bins=9, fmax=10.0)


def _scene(h=96, w=128):
    """A blue background with a red disc (centre (80, 40), radius 18); the disc's mask."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = (40, 80, 160)
    ys, xs = np.mgrid[0:h, 0:w]
    disc = (xs - 80) ** 2 + (ys - 40) ** 2 <= 18**2
    image[disc] = (210, 40, 40)
    return image, disc


class RegionPredictor:
    """A constructed propagator: each arrow moves the whole region (red or not) it starts in.

    It stands in for a CMP that has learnt objectness, so that the annotation
    logic (four directions, still negatives, score, threshold, zoom mapping)
    is checked against a known answer; regions are found anew in every image
    it encodes, including zoomed and resized crops.
    """

    def encode(self, image):
        red = np.asarray(image, np.float32)[..., 0] > 128
        return [cv2.connectedComponents(m.astype(np.uint8))[1] + 1000 * m for m in (red, ~red)]

    def propagate(self, features, arrows):
        red_labels, other_labels = features
        labels = np.where(red_labels > 1000, red_labels, -other_labels)
        flows = np.zeros((len(arrows), *labels.shape, 2), np.float32)
        for g, guidance in enumerate(arrows):
            for x, y, dx, dy in guidance:
                flows[g][labels == labels[int(round(y)), int(round(x))]] = (dx, dy)
        return flows


def test_click_guidance_moves_positives_four_ways_and_holds_negatives():
    sets = annotation.click_guidance([(5, 6)], [(1, 2)], velocity=30)
    assert [s[0][2:] for s in sets] == [(30, 0), (-30, 0), (0, 30), (0, -30)]
    assert all(s[1] == (1.0, 2.0, 0.0, 0.0) for s in sets)
    with pytest.raises(ValueError, match="positive click"):
        annotation.click_guidance([], [(1, 2)], 10)


def test_annotation_mask_covers_the_clicked_object():
    image, disc = _scene()
    mask, score = annotation.annotate(RegionPredictor(), image, [(80, 40)], [(10, 10)])
    assert score.max() == pytest.approx(1.0)
    assert mask[disc].mean() == 1.0 and mask[~disc].mean() == 0.0
    # Swapping the clicks marks the background instead.
    inverse, _ = annotation.annotate(RegionPredictor(), image, [(10, 10)], [(80, 40)])
    assert inverse[~disc].mean() == 1.0 and inverse[disc].mean() == 0.0


def test_zoomed_annotation_maps_the_score_back_into_the_box():
    image, disc = _scene()
    clicks = [(72, 36), (88, 44)]
    x0, y0, side = annotation.zoom_box(np.array(clicks, float), 4.0, *image.shape[:2])
    assert side == 64 and 0 <= x0 <= 72 and x0 + side >= 88 and 0 <= y0 and y0 + side <= 96
    mask, score = annotation.annotate(RegionPredictor(), image, clicks, zoom_factor=4.0, zoom_size=128)
    assert not score[:, : x0 - 1].any() and not score[: y0 - 1].any()  # nothing outside the box
    box = np.zeros_like(disc)
    box[y0 : y0 + side, x0 : x0 + side] = True
    inter = (mask & disc).sum()
    assert inter / disc.sum() > 0.95 and (mask & ~disc).sum() / max(inter, 1) < 0.05
    with pytest.raises(ValueError, match="two clicks"):
        annotation.annotate(RegionPredictor(), image, [(80, 40)], zoom_factor=2.0)


def test_forward_warp_of_a_translation_moves_every_pixel_by_it():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    flow = np.zeros((40, 50, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.2, -2.0  # rounds to (3, -2)
    warped, holes = animation.forward_warp(image, flow)
    np.testing.assert_array_equal(warped[:-2, 3:], image[2:, :-3])
    # Uncovered: the first 3 columns and the last 2 rows, filled from their nearest neighbour.
    expected_holes = np.zeros((40, 50), bool)
    expected_holes[:, :3] = expected_holes[-2:] = True
    np.testing.assert_array_equal(holes, expected_holes)
    np.testing.assert_array_equal(warped[10, 0], warped[10, 3])
    unfilled, _ = animation.forward_warp(image, flow, fill_holes=False)
    assert not unfilled[holes].any()


def test_forward_warp_lets_the_larger_motion_win():
    image = np.zeros((5, 8, 1), np.uint8)
    image[2, 1], image[2, 5] = 100, 200
    flow = np.zeros((5, 8, 2), np.float32)
    flow[2, 1, 0] = 3.0  # (1, 2) -> (4, 2)
    flow[2, 5, 0] = -1.0  # (5, 2) -> (4, 2): smaller motion, loses
    flow[2, 4, 0] = 2.0  # the pixel at (4, 2) leaves, so only the two collide there
    warped, _ = animation.forward_warp(image, flow, fill_holes=False)
    assert warped[2, 4, 0] == 100


def test_backward_warp_of_a_translation():
    image = np.random.default_rng(1).integers(0, 256, (30, 30, 3)).astype(np.uint8)
    flow = np.zeros((30, 30, 2), np.float32)
    flow[..., 0] = -4.0
    np.testing.assert_array_equal(animation.backward_warp(image, flow)[:, :-4], image[:, 4:])
    with pytest.raises(ValueError, match="unknown warp"):
        animation.warp(image, flow, "sideways")


def test_trajectories_and_frame_guidance():
    traj = animation.linear_trajectories([(10, 20, 8, -4)], 4)
    np.testing.assert_allclose(traj[0], [[10, 20], [12, 19], [14, 18], [16, 17], [18, 16]])
    sets = animation.frame_guidance(traj)
    assert len(sets) == 4 and sets[1] == [(10.0, 20.0, 4.0, -2.0)] and sets[3] == [(10.0, 20.0, 8.0, -4.0)]


def test_animation_of_a_constant_translation_moves_the_pixels():
    """A constructed CMP that predicts dx = +4.44 px everywhere: every frame is the image shifted by 4."""
    model = CMP(backbone="resnet18", output_stride=32, img_enc_dim=16, decoder_combo=(1,), num_bins=9)
    predictor = Predictor(model, constant_flow_variables(model, 32, 6, 4), BINS)
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    traj = animation.linear_trajectories([(30, 30, 4, 0)], 3)
    frames, flows = animation.animate(predictor, image, traj, "forward", static_points=[(5, 5)])
    assert frames.shape == (4, 64, 64, 3) and flows.shape == (3, 64, 64, 2)
    np.testing.assert_array_equal(frames[0], image)
    for frame in frames[1:]:
        np.testing.assert_array_equal(frame[:, 4:], image[:, :-4])
    back, _ = animation.animate(predictor, image, traj, "backward")
    # Backward: pixel x samples the image at x - 4.44, between x - 5 and x - 4.
    f = BINS.centres()[6] - 4
    expected = (1 - f) * image[:, 1:-4] + f * image[:, :-5]
    # OpenCV quantises the weights to 1/32 (up to 255 / 64 levels) and rounds; a wrong shift is ~100 off.
    assert np.abs(back[1, :, 5:] - expected).max() <= 4.5


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_write_video_round_trip(tmp_path, suffix):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    for t in range(5):
        frames[t, :, t * 8 : t * 8 + 8] = 255
    path = animation.write_video(frames, tmp_path / f"clip{suffix}")
    if suffix == ".gif":
        with Image.open(path) as gif:
            assert gif.n_frames == 5 and gif.size == (48, 32)
            gif.seek(3)
            assert np.asarray(gif.convert("L"))[:, 24:32].min() > 200
    else:
        video = cv2.VideoCapture(str(path))
        read = []
        ok, frame = video.read()
        while ok:
            read.append(frame)
            ok, frame = video.read()
        assert len(read) == 5 and read[0].shape == (32, 48, 3)
        assert read[3][:, 24:32].mean() > 200 and read[3][:, :16].mean() < 50
    with pytest.raises(ValueError, match=".gif or an .mp4"):
        animation.write_video(frames, tmp_path / "clip.avi")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny cmp-jax workdir (random weights) and an image file."""
    path = tmp_path_factory.mktemp("tools")
    config = tiny_config()
    model, _ = state.build_from_config(config)
    variables = random_variables(model.clone(bn_axis_name=None), *random_inputs(1, 32, 32), seed=4)
    state.save_variables(path / "run", config, variables, step=5)
    image, _ = _scene(48, 72)
    cv2.imwrite(str(path / "image.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def _run_script(name, *args):
    argv = sys.argv
    sys.argv = [name, *map(str, args)]
    try:
        runpy.run_path(str(ROOT / "scripts" / name), run_name="__main__")
    finally:
        sys.argv = argv


def test_predict_script_writes_flo_and_picture(workdir, capsys):
    out = workdir / "pred"
    arrows = [(20.0, 10.0, 3.0, -1.0), (60.0, 40.0, 0.0, 0.0)]
    cli_args = sum((["--arrow", ",".join(map(str, a))] for a in arrows), [])
    _run_script(
        "predict.py", "--workdir", workdir / "run", "--image", workdir / "image.png", *cli_args, "--out", out
    )
    assert "flow 72x48" in capsys.readouterr().out
    flow = flow_io.read_flo(f"{out}.flo")
    image = cv2.cvtColor(cv2.imread(str(workdir / "image.png")), cv2.COLOR_BGR2RGB)
    expected = Predictor.from_workdir(workdir / "run").predict(image, [arrows])[0]
    np.testing.assert_allclose(flow, expected, atol=1e-6)
    picture = cv2.imread(f"{out}.png")
    assert picture.shape == (48, 72, 3)
    # The arrows' start dots are drawn in green on the colour-coded flow.
    assert tuple(picture[12, 20]) == (0, 255, 0) and tuple(picture[42, 60]) == (0, 255, 0)


def test_input_norm_flag_reaches_the_predictor(workdir, capsys):
    out = workdir / "pred_mofa"
    arrow = (20.0, 10.0, 3.0, -1.0)
    _run_script(
        "predict.py",
        *("--workdir", workdir / "run", "--image", workdir / "image.png"),
        *("--arrow", ",".join(map(str, arrow)), "--input-norm", "mofa", "--out", out),
    )
    capsys.readouterr()
    image = cv2.cvtColor(cv2.imread(str(workdir / "image.png")), cv2.COLOR_BGR2RGB)
    mofa = Predictor.from_workdir(workdir / "run", input_norm="mofa").predict(image, [[arrow]])[0]
    np.testing.assert_allclose(flow_io.read_flo(f"{out}.flo"), mofa, atol=1e-6)
    assert np.abs(mofa - Predictor.from_workdir(workdir / "run").predict(image, [[arrow]])[0]).max() > 1e-3
    with pytest.raises(SystemExit):
        _run_script("predict.py", "--workdir", workdir / "run", "--image", workdir / "image.png",
                    "--arrow", "1,1,0,0", "--input-norm", "torch", "--out", out)  # fmt: skip
    assert "invalid choice: 'torch'" in capsys.readouterr().err


def test_annotate_and_animate_scripts(workdir, capsys):
    common = ["--workdir", workdir / "run", "--image", workdir / "image.png"]
    _run_script("annotate.py", *common, "--pos", "30,20", "--neg", "5,5", "--out", workdir / "mask.png")
    assert "mask covers" in capsys.readouterr().out
    mask = cv2.imread(str(workdir / "mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (48, 72) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255

    _run_script(
        "animate.py",
        *common,
        "--arrow",
        "30,20,6,0",
        "--trajectory",
        "5,5;5,6;5,7",
        "--out",
        workdir / "clip.gif",
    )
    assert "3 frames" in capsys.readouterr().out
    with Image.open(workdir / "clip.gif") as gif:
        # Pillow merges identical consecutive frames into one longer frame: count time, not frames.
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
        assert abs(sum(durations) - 3 * 125) <= 3 * 5 and gif.size == (72, 48)  # GIF counts in 10 ms
    with pytest.raises(SystemExit):
        _run_script(
            "animate.py", *common, "--trajectory", "5,5;5,6", "--frames", "4", "--out", workdir / "x.gif"
        )

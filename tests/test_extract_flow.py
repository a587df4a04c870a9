"""End-to-end tests of scripts/extract_flow.py on synthetic videos with a known translation.

The frames are crops of a smooth random texture moving by SHIFT pixels per frame, so the true forward
flow over a gap of g frames is g * SHIFT everywhere; it is compared with the extracted flow read back
through ``input_pipeline.lists``, away from the border (BORDER px) where content enters the view.
"""

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from input_pipeline import lists

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "extract_flow.py")
H, W = 128, 160
SHIFT = np.array([3.0, -2.0])  # (dx, dy) px per frame
BORDER = 16


def _frames(n, seed=0, h=H, w=W):
    """List of n BGR uint8 (h, w, 3) frames of a blurred-noise texture translated by SHIFT per frame."""
    rng = np.random.default_rng(seed)
    margin = int(np.abs(SHIFT).max() * n) + 8
    texture = cv2.GaussianBlur(rng.random((h + 2 * margin, w + 2 * margin), np.float32), (0, 0), 3)
    texture = (255 * (texture - texture.min()) / (texture.max() - texture.min())).astype(np.uint8)
    frames = []
    for t in range(n):
        x0, y0 = margin - int(SHIFT[0]) * t, margin - int(SHIFT[1]) * t
        frames.append(cv2.cvtColor(texture[y0 : y0 + h, x0 : x0 + w], cv2.COLOR_GRAY2BGR))
    return frames


def _write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert writer.isOpened(), "OpenCV cannot encode MJPG"
    for frame in frames:
        writer.write(frame)
    writer.release()


def _run(*args, expect_rc=0):
    """Runs the script; returns (stdout, summary counts dict)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, env=env)
    assert proc.returncode == expect_rc, proc.stdout + proc.stderr
    match = re.search(
        r"(\w+) ok: (\d+), failed: (\d+), pairs written: (\d+), skipped existing: (\d+)", proc.stdout
    )
    counts = None
    if match:
        counts = dict(zip(["ok", "failed", "written", "skipped"], map(int, match.groups()[1:]), strict=True))
    return proc.stdout + proc.stderr, counts


def _epes(list_file, root, flow_type, truth):
    """Mean interior end-point error of every pair in the list, in pixels; checks the example shapes."""
    entries, skipped = lists.read_lists([list_file], root=root, flow_type=flow_type)
    assert skipped == 0
    epes = []
    for entry in entries:
        ex = lists.load_example(entry)
        h, w = ex["flow"].shape[:2]
        assert ex["frame1"].shape == ex["frame2"].shape == (h, w, 3)
        interior = ex["flow"][BORDER : h - BORDER, BORDER : w - BORDER]
        epes.append(float(np.linalg.norm(interior - truth, axis=-1).mean()))
    return entries, epes


def _snapshot(folder):
    """{relative path: mtime_ns} of every file under folder."""
    return {
        os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, files in os.walk(folder)
        for f in files
    }


def test_videos_flo_dis_resume_and_bad_video(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    (videos / "sub").mkdir(parents=True)
    _write_video(videos / "sub" / "my clip.avi", _frames(7))  # whitespace becomes _ in outputs
    (videos / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (videos / "notes.txt").write_text("not a video, ignored")
    args = ["--videos", videos, "--out", out, "--gap", 2, "--format", "flo", "--workers", 1]

    log, counts = _run(*args)
    assert counts == {"ok": 1, "failed": 1, "written": 3, "skipped": 0}, log
    assert "FAILED" in log and "bad.mp4" in log
    entries, epes = _epes(out / "list.txt", out, "flo", 2 * SHIFT)
    print("DIS .flo EPE per pair (px):", epes)
    assert len(entries) == 3 and max(epes) < 1.0
    assert entries[1].frame1.endswith("frames/sub/my_clip.avi/000002.jpg")
    assert entries[1].flow[0].endswith("flow/sub/my_clip.avi/000002_000004.flo")
    assert not [f for f in _snapshot(out) if f.endswith(".tmp")]

    # Resume: nothing is recomputed or rewritten (the list is rewritten with the same lines).
    before, list_text = _snapshot(out), (out / "list.txt").read_text()
    log, counts = _run(*args)
    assert counts == {"ok": 1, "failed": 1, "written": 0, "skipped": 3}, log
    after = _snapshot(out)
    assert after.keys() == before.keys()
    assert {f: t for f, t in after.items() if f != "list.txt"} == {
        f: t for f, t in before.items() if f != "list.txt"
    }
    assert (out / "list.txt").read_text() == list_text

    # A missing and a truncated .flo (as from an interrupted tool) are recomputed; nothing else is.
    (out / "flow/sub/my_clip.avi/000000_000002.flo").unlink()
    flo = out / "flow/sub/my_clip.avi/000004_000006.flo"
    flo.write_bytes(flo.read_bytes()[:100])
    _, counts = _run(*args)
    assert counts["written"] == 2 and counts["skipped"] == 1
    assert max(_epes(out / "list.txt", out, "flo", 2 * SHIFT)[1]) < 1.0

    # Other settings on the same --out are refused.
    log, _ = _run(*args[:-4], "--format", "jpg", expect_rc=1)
    assert "use another --out" in log


def test_frames_jpg_resize_two_workers(tmp_path):
    """Folders of PNG frames, --resize halving the size, jpg flow pairs (lossy), absolute list paths.

    The frames are 2H x 2W so that the flow is computed at H x W: DIS on a smaller image has too few
    pyramid levels for a 12 px motion.
    """
    frames_dir, out = tmp_path / "frames", tmp_path / "out"
    for name, seed in (("seq10", 1), ("seq2", 2)):
        (frames_dir / name).mkdir(parents=True)
        for t, frame in enumerate(_frames(9, seed, 2 * H, 2 * W)):
            assert cv2.imwrite(str(frames_dir / name / f"img{t}.png"), frame)  # img10 would sort after img9
    (frames_dir / "broken").mkdir()
    (frames_dir / "broken" / "0.png").write_bytes(b"not a png")
    (frames_dir / "broken" / "1.png").write_bytes(b"not a png")

    log, counts = _run(
        "--frames", frames_dir, "--out", out, "--gap", 4, "--resize", H, "--format", "jpg",
        "--list", "lists/train.txt", "--absolute-paths", "--workers", 2,
    )  # fmt: skip
    assert counts == {"ok": 2, "failed": 1, "written": 4, "skipped": 0}, log
    assert "sequences ok" in log and "broken" in log
    # Half resolution: 4 frames * SHIFT / 2. The 8-bit levels (0.2 px) and JPEG add a little error.
    entries, epes = _epes(out / "lists" / "train.txt", None, "jpg", 4 * SHIFT / 2)
    print("DIS jpg EPE per pair (px):", epes)
    assert max(epes) < 1.0
    assert all(os.path.isabs(p) for e in entries for p in (e.frame1, e.frame2, *e.flow))
    assert [os.path.basename(os.path.dirname(e.frame1)) for e in entries] == ["seq2"] * 2 + ["seq10"] * 2
    assert entries[0].flow[0].endswith("flow/seq2/000000_000004_x.jpg")
    assert lists.load_example(entries[0])["frame1"].shape == (H, W, 3)


def test_farneback_overlapping_pairs(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    _write_video(videos / "clip.avi", _frames(5))
    _, counts = _run(
        "--videos", videos / "clip.avi", "--out", out, "--gap", 2, "--step", 1,
        "--method", "farneback", "--format", "flo",
    )  # fmt: skip
    assert counts == {"ok": 1, "failed": 0, "written": 3, "skipped": 0}
    entries, epes = _epes(out / "list.txt", out, "flo", 2 * SHIFT)
    print("Farneback .flo EPE per pair (px):", epes)
    assert [os.path.basename(e.frame1) for e in entries] == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert max(epes) < 1.0


def test_no_input_found(tmp_path):
    (tmp_path / "empty").mkdir()
    log, _ = _run("--videos", tmp_path / "empty", "--out", tmp_path / "out", expect_rc=1)
    assert "no videos found" in log


def _load_script():
    """scripts/extract_flow.py as a module (for its pure functions)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("extract_flow_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _list_frames(path):
    """(lines, set of the frame paths of every line) of a list file."""
    lines = path.read_text().splitlines()
    frames = set()
    for line in lines:
        frames.update(line.split()[:2])
    return lines, frames


def _index(frame):
    return int(os.path.splitext(os.path.basename(frame))[0])


def test_split_pairs():
    split_pairs = _load_script().split_pairs
    starts = list(range(0, 23, 2))  # 12 pairs (t, t + 2)
    assert split_pairs(starts, 2, 0.0, 2) == (starts, [])
    # 3 validation pairs (from frame 18); training pairs end more than 2 frames before frame 18.
    assert split_pairs(starts, 2, 0.25, 2) == ([0, 2, 4, 6, 8, 10, 12], [18, 20, 22])
    assert split_pairs(starts, 2, 0.25, 0) == ([0, 2, 4, 6, 8, 10, 12, 14], [18, 20, 22])
    # Overlapping pairs (step 1, gap 3): no training pair reaches the validation frames.
    train, val = split_pairs(list(range(10)), 3, 0.2, 0)
    assert val == [8, 9] and train == [0, 1, 2, 3, 4] and max(train) + 3 < min(val)
    # A single pair goes to validation (at least one validation pair per input).
    assert split_pairs([0], 5, 0.1, 5) == ([], [0])
    assert split_pairs([], 5, 0.5, 5) == ([], [])


def test_time_split_caps_resume_and_refusal(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    _write_video(videos / "a.avi", _frames(30))
    args = ["--videos", videos, "--out", out, "--gap", 2, "--format", "flo"]

    # 25 frames -> pairs 0, 2, ..., 22; validation 18, 20, 22; training 0..12 (12 + 2 + 2 < 18).
    log, counts = _run(*args, "--val-fraction", 0.25, "--max-frames", 25)
    assert counts == {"ok": 1, "failed": 0, "written": 12, "skipped": 0}, log
    assert "in no list: 2" in log
    train, train_frames = _list_frames(out / "train.txt")
    val, val_frames = _list_frames(out / "val.txt")
    assert (len(train), len(val)) == (7, 3)
    assert not train_frames & val_frames
    assert max(map(_index, train_frames)) + 2 < min(map(_index, val_frames)) == 18
    assert not (out / "list.txt").exists()
    recorded = json.loads((out / "extract_flow.json").read_text())["lists"]
    assert recorded["train.txt"]["role"] == "train" and recorded["val.txt"]["role"] == "val"
    assert recorded["val.txt"]["val_fraction"] == 0.25 and recorded["val.txt"]["max_frames"] == 25
    _epes(out / "val.txt", out, "flo", 2 * SHIFT)

    # Other caps on the same lists: both lists are rewritten together, nothing is recomputed.
    # 6 pairs (0..10): validation 8, 10; training 0, 2 (2 + 2 + 2 < 8).
    log, counts = _run(*args, "--val-fraction", 0.25, "--max-pairs", 6)
    assert counts == {"ok": 1, "failed": 0, "written": 0, "skipped": 6}, log
    assert [_index(line.split()[0]) for line in (out / "train.txt").read_text().splitlines()] == [0, 2]
    assert [_index(line.split()[0]) for line in (out / "val.txt").read_text().splitlines()] == [8, 10]
    assert json.loads((out / "extract_flow.json").read_text())["lists"]["train.txt"]["max_pairs"] == 6

    # Rewriting one list of the split without the other is refused; another list name is fine.
    for other in (["--list", "train.txt"], ["--list", "val.txt"]):
        log, _ = _run(*args, *other, expect_rc=1)
        assert "earlier split" in log, log
    assert len((out / "train.txt").read_text().splitlines()) == 2
    _, counts = _run(*args, "--max-pairs", 3)
    assert counts["skipped"] == 3 and len((out / "list.txt").read_text().splitlines()) == 3


def test_truncated_and_too_short_videos(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    _write_video(videos / "truncated.avi", _frames(20))
    data = (videos / "truncated.avi").read_bytes()
    (videos / "truncated.avi").write_bytes(data[: len(data) // 2])  # the header still says 20 frames
    capture = cv2.VideoCapture(str(videos / "truncated.avi"))
    promised, decoded = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while capture.grab():
        decoded += 1
    capture.release()
    assert promised == 20 and 4 < decoded < 20, (promised, decoded)
    _write_video(videos / "short.avi", _frames(3))

    log, counts = _run("--videos", videos, "--out", out, "--gap", 4)
    assert counts == {"ok": 2, "failed": 0, "written": (decoded - 4 + 3) // 4, "skipped": 0}, log
    assert re.search(rf"WARNING \S*truncated\.avi: .*promises 20 frames but only {decoded} ", log), log
    assert re.search(r"WARNING \S*short\.avi: 3 frame\(s\), fewer than --gap \+ 1 = 5: no pairs", log), log

    # Only the short video: no pair at all is an error, and no list is written.
    log, counts = _run("--videos", videos / "short.avi", "--out", tmp_path / "out2", "--gap", 4, expect_rc=1)
    assert counts["written"] == 0 and "error: no pairs" in log, log
    assert not (tmp_path / "out2" / "list.txt").exists()
    # Splitting a video too short to leave a training pair is an error too.
    log, _ = _run(
        "--videos", videos / "short.avi", "--out", tmp_path / "out3", "--gap", 1, "--val-fraction", 0.5,
        expect_rc=1,
    )  # fmt: skip
    assert "error: no training pairs" in log, log


def test_runs_without_installing_the_project(tmp_path):
    """``python scripts/extract_flow.py`` from another folder, with site-packages but no .pth files.

    ``-S`` skips ``site`` (so an editable install's path hook is not loaded); PYTHONPATH gives the
    third-party packages back. The script must find ``input_pipeline`` from its own location.
    """
    import site
    import sysconfig

    _write_video(tmp_path / "clip.avi", _frames(3))
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))
    check = subprocess.run(
        [sys.executable, "-S", "-c", "import input_pipeline"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert check.returncode != 0, "input_pipeline importable without the repository: the test proves nothing"
    proc = subprocess.run(
        [sys.executable, "-S", SCRIPT, "--videos", "clip.avi", "--out", "out", "--gap", "1"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len((tmp_path / "out" / "list.txt").read_text().splitlines()) == 2


def test_resize_frame_has_the_original_sizes_and_averages_when_shrinking(tmp_path):
    module = _load_script()
    frame = np.random.default_rng(3).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    assert module.resize_frame(frame, None) is frame
    small = module.resize_frame(frame, 52)
    assert small.shape == (52, 92, 3)  # int(160 * 52 / 90) = int(92.4)
    np.testing.assert_array_equal(small, cv2.resize(frame, (92, 52), interpolation=cv2.INTER_AREA))
    large = module.resize_frame(frame, 100)
    assert large.shape == (100, 177, 3)  # int(177.8), not round()'s 178
    np.testing.assert_array_equal(large, cv2.resize(frame, (177, 100), interpolation=cv2.INTER_CUBIC))

    # Outputs resized before the rounding was recorded are refused: their frames would not match new flow.
    settings = module.Settings(
        out=str(tmp_path), gap=5, step=5, resize=52, method="dis", format="flo", flow_ext="jpg",
        jpeg_quality=95, absolute_paths=False,
    )  # fmt: skip
    (tmp_path / "extract_flow.json").write_text(json.dumps({"resize": 52, "method": "dis", "format": "flo"}))
    with pytest.raises(SystemExit, match="use another --out"):
        module.check_settings(settings, {})

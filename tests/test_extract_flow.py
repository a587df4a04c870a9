"""End-to-end tests of scripts/extract_flow.py on synthetic videos with a known translation.

The frames are crops of a smooth random texture moving by SHIFT pixels per frame, so the true forward
flow over a gap of g frames is g * SHIFT everywhere; it is compared with the extracted flow read back
through ``input_pipeline.lists``, away from the border (BORDER px) where content enters the view.
"""

import os
import re
import subprocess
import sys

import cv2
import numpy as np

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

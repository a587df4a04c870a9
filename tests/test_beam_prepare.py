"""scripts/prepare_beam.py against scripts/extract_flow.py: the same files from the same options.

Two tiny rendered videos (a textured background panning under a textured square) and one corrupt
``.mp4`` go through ``extract_flow.main`` into one folder and ``prepare_beam.main`` (Beam's local
runner, in this process) into another; every output file must be byte-identical, the failed video
counted, and a second Beam run must skip every pair and change nothing.
"""

import importlib.util
import json
import os
import re
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W, FRAMES = 48, 64, 10


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"{name}_under_test", os.path.join(REPO, "scripts", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    return _load("extract_flow"), _load("prepare_beam")


def _render(path, seed):
    """FRAMES frames of H x W: a noise background panning 1 px/frame, a square moving (2, 1) px/frame."""
    rng = np.random.default_rng(seed)

    def texture(h, w, sigma):
        t = cv2.GaussianBlur(rng.random((h, w, 3), np.float32), (0, 0), sigma)
        return (255 * (t - t.min()) / (t.max() - t.min())).astype(np.uint8)

    background, square = texture(H + 2 * FRAMES, W + 2 * FRAMES, 2), texture(14, 14, 1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert writer.isOpened(), "OpenCV cannot encode MJPG"
    for t in range(FRAMES):
        frame = background[FRAMES : FRAMES + H, FRAMES + t : FRAMES + t + W].copy()
        frame[10 + t : 24 + t, 8 + 2 * t : 22 + 2 * t] = square
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for seed in (0, 1):
        _render(folder / f"clip{seed}.avi", seed)
    (folder / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    return folder


def _files(folder):
    """{relative path: (bytes, mtime_ns)} of every file under folder."""
    out = {}
    for d, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (f.read(), os.stat(path).st_mtime_ns)
    return out


def _run(main, argv, capsys):
    """Runs a script's main in this process; returns (exit status, summary counts, stdout + stderr)."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    stdout = captured.out
    last = stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"videos ok: (\d+), failed: (\d+), pairs written: (\d+), skipped existing: (\d+)", last
    )
    assert match, stdout
    counts = dict(zip(("ok", "failed", "written", "skipped"), map(int, match.groups()), strict=True))
    return rc, counts, stdout + captured.err


def test_same_files_as_extract_flow_then_resume(scripts, videos, tmp_path, capsys):
    extract_flow, prepare_beam = scripts
    a, b = tmp_path / "a", tmp_path / "b"
    options = ["--videos", videos, "--gap", 2, "--format", "flo", "--val-fraction", 0.25]

    rc, counts, _ = _run(extract_flow.main, [*options, "--out", a], capsys)
    # Per video: pairs 0, 2, 4, 6; validation 6; training 0, 2 (2 + 2 + 2 < 6).
    assert rc == 0 and counts == {"ok": 2, "failed": 1, "written": 8, "skipped": 0}
    rc, beam_counts, log = _run(prepare_beam.main, [*options, "--out", b], capsys)
    assert rc == 0 and beam_counts == counts
    beam_counters = "videos_ok 2, videos_failed 1, pairs_written 8, pairs_skipped 0, pairs_done 8"
    assert f"beam counters: {beam_counters}" in log
    assert f"FAILED {videos / 'bad.mp4'}: " in log  # named by its absolute path

    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()  # no temporary folder or file left behind
    assert sum(f.endswith(".flo") for f in files_a) == 8
    for name in files_a:
        assert files_a[name][0] == files_b[name][0], name
    assert (a / "train.txt").read_text() == (b / "train.txt").read_text()
    assert len((b / "val.txt").read_text().splitlines()) == 2
    assert json.loads((a / "extract_flow.json").read_text()) == json.loads(
        (b / "extract_flow.json").read_text()
    )

    # Resume: every pair is skipped; only the list files are rewritten, with the same text.
    rc, counts, _ = _run(prepare_beam.main, [*options, "--out", b], capsys)
    assert rc == 0 and counts == {"ok": 2, "failed": 1, "written": 0, "skipped": 8}
    again = _files(b)
    assert again.keys() == files_b.keys()
    for name, (data, mtime) in again.items():
        assert data == files_b[name][0], name
        if name not in ("train.txt", "val.txt"):
            assert mtime == files_b[name][1], name


def test_jpg_resize_absolute_paths_from_relative_out(scripts, videos, tmp_path, capsys, monkeypatch):
    """8-bit flow pairs, overlapping pairs, --resize, absolute list paths from a relative --out."""
    extract_flow, prepare_beam = scripts
    monkeypatch.chdir(tmp_path)
    options = ["--videos", videos, "--gap", 3, "--step", 1, "--resize", 36, "--list", "lists/all.txt"]
    options += ["--max-pairs", 4, "--absolute-paths"]
    _run(extract_flow.main, [*options, "--out", "a"], capsys)
    rc, counts, _ = _run(prepare_beam.main, [*options, "--out", "b"], capsys)
    assert rc == 0 and counts == {"ok": 2, "failed": 1, "written": 8, "skipped": 0}
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert sum(f.endswith("_x.jpg") for f in files_b) == 8
    for name in files_a:
        if name != os.path.join("lists", "all.txt"):
            assert files_a[name][0] == files_b[name][0], name
    cwd = os.getcwd()  # what os.path.abspath resolves against
    lines = (tmp_path / "b" / "lists" / "all.txt").read_text()
    assert lines.count(f"{cwd}/b/frames/clip1.avi/000003.jpg") == 2
    assert (tmp_path / "a" / "lists" / "all.txt").read_text().replace(f"{cwd}/a/", f"{cwd}/b/") == lines
    assert cv2.imread(str(tmp_path / "b" / "frames" / "clip0.avi" / "000000.jpg")).shape == (36, 48, 3)


def test_beam_options_pass_through_and_unknown_options_are_refused(scripts, videos, tmp_path, capsys):
    _, prepare_beam = scripts
    data = ["--videos", str(videos), "--out", str(tmp_path)]
    args, beam_args = prepare_beam.parse_args([*data, "--runner=DirectRunner", "--direct_num_workers", "2"])
    assert args.gap == 5 and args.list == "list.txt"
    assert beam_args == ["--runner=DirectRunner", "--direct_num_workers", "2"]
    for wrong in (["--gapp", "2"], ["--workers", "2"]):
        with pytest.raises(SystemExit):
            prepare_beam.parse_args([*data, *wrong])
        assert f"unrecognized arguments: {wrong[0]}" in capsys.readouterr().err

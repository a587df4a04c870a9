"""Tests of input_pipeline.lists: list parsing, example loading and its error messages."""

import concurrent.futures
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from input_pipeline import flow_io, lists

H, W = 24, 32


def _frame(seed):
    """uint8 (H, W, 3) RGB frame with a different mean per channel (catches BGR/RGB swaps)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.integers(0, 60, (H, W, 3)) + np.array([190, 100, 10]), 0, 255).astype(np.uint8)


def _write_rgb(path, rgb):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture
def data(tmp_path):
    """Two frames, a .flo and a PNG flow pair in tmp_path/data; returns the arrays."""
    d = tmp_path / "data"
    d.mkdir()
    f1, f2 = _frame(1), _frame(2)
    _write_rgb(d / "f1.png", f1)
    _write_rgb(d / "f2.png", f2)
    flow = np.random.default_rng(3).uniform(-40, 40, (H, W, 2)).astype(np.float32)
    flow_io.write_flo(str(d / "flow.flo"), flow)
    flow_io.write_flow_jpg(str(d / "fx.png"), str(d / "fy.png"), flow)
    return {"frame1": f1, "frame2": f2, "flow": flow}


def _write_list(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_read_lists_jpg_root_comments_and_line_numbers(tmp_path, data):
    lst = _write_list(
        tmp_path / "train.txt",
        [
            "# a comment",
            "data/f1.png data/f2.png data/fx.png data/fy.png",
            "",
            f"  {tmp_path}/data/f1.png data/f2.png   data/fx.png\tdata/fy.png  ",
        ],
    )
    entries, skipped = lists.read_lists([lst], root=str(tmp_path))
    assert skipped == 0 and len(entries) == 2
    e = entries[0]
    assert (e.frame1, e.frame2) == (f"{tmp_path}/data/f1.png", f"{tmp_path}/data/f2.png")
    assert e.flow == (f"{tmp_path}/data/fx.png", f"{tmp_path}/data/fy.png")
    assert (e.source, e.line) == (lst, 2)
    assert entries[1].line == 4 and entries[1].frame1 == f"{tmp_path}/data/f1.png"  # absolute kept
    # Without root, paths stay as written (relative to the working directory, as in the original).
    entries, _ = lists.read_lists(lst)
    assert entries[0].frame1 == "data/f1.png" and entries[1].frame1 == f"{tmp_path}/data/f1.png"


def test_read_lists_concatenates_in_order(tmp_path):
    a = _write_list(tmp_path / "a.txt", ["a1 a2 a.flo", "b1 b2 b.flo"])
    b = _write_list(tmp_path / "b.txt", ["c1 c2 c.flo"])
    entries, _ = lists.read_lists([b, a], flow_type="flo")
    assert [e.frame1 for e in entries] == ["c1", "a1", "b1"]
    assert [(e.source, e.line) for e in entries] == [(b, 1), (a, 1), (a, 2)]
    assert entries[0].flow == ("c.flo",)
    single, _ = lists.read_lists(tmp_path / "b.txt", flow_type="flo")  # one path-like is accepted
    assert single[0].source == b and isinstance(single[0].source, str)


def test_wrong_column_count_raises_or_is_skipped(tmp_path):
    lst = _write_list(tmp_path / "mixed.txt", ["a b c d", "a b c", "", "e f g h", "a b c d e"])
    with pytest.raises(lists.BadExampleError, match="mixed.txt line 2: expected 4 paths") as info:
        lists.read_lists([lst])
    assert "got 3" in str(info.value)
    entries, skipped = lists.read_lists([lst], skip_bad_examples=True)
    assert skipped == 2 and [e.line for e in entries] == [1, 4]
    with pytest.raises(lists.BadExampleError, match="mixed.txt line 1: expected 3 paths"):
        lists.read_lists([lst], flow_type="flo")


def test_missing_list_file_always_raises(tmp_path):
    lst = _write_list(tmp_path / "ok.txt", ["a b c d"])
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        lists.read_lists([lst, missing], skip_bad_examples=True)
    with pytest.raises(ValueError, match="flow_type"):
        lists.read_lists([lst], flow_type="png")


@pytest.mark.parametrize("flow_type", ["jpg", "flo"])
def test_load_example_round_trip(tmp_path, data, flow_type):
    flow_cols = "data/fx.png data/fy.png" if flow_type == "jpg" else "data/flow.flo"
    lst = _write_list(tmp_path / "l.txt", [f"data/f1.png data/f2.png {flow_cols}"])
    entries, _ = lists.read_lists([lst], root=str(tmp_path), flow_type=flow_type)
    ex = lists.load_example(entries[0])
    assert set(ex) == {"frame1", "frame2", "flow"}
    assert ex["frame1"].dtype == np.uint8 and ex["frame1"].shape == (H, W, 3)
    np.testing.assert_array_equal(ex["frame1"], data["frame1"])  # RGB order, PNG lossless
    np.testing.assert_array_equal(ex["frame2"], data["frame2"])
    assert ex["flow"].dtype == np.float32 and ex["flow"].shape == (H, W, 2)
    if flow_type == "flo":
        np.testing.assert_array_equal(ex["flow"], data["flow"])
    else:
        np.testing.assert_allclose(ex["flow"], data["flow"], atol=100 / 255 / 2 + 1e-4)


def _corrupt(d, case):
    """Breaks the data of the fixture in one way; returns (list line, offending path, flow type)."""
    jpg, flo = "f1.png f2.png fx.png fy.png", "f1.png f2.png flow.flo"
    if case == "missing frame":
        return "gone.png f2.png fx.png fy.png", "gone.png", "jpg"
    if case == "missing flow image":
        return "f1.png f2.png fx.png gone_y.png", "gone_y.png", "jpg"
    if case == "missing flo":
        return "f1.png f2.png gone.flo", "gone.flo", "flo"
    if case == "undecodable frame":
        (d / "f2.png").write_bytes(b"garbage")
        return jpg, "f2.png", "jpg"
    if case == "undecodable flow image":
        (d / "fx.png").write_bytes(b"")
        return jpg, "fx.png", "jpg"
    if case == "frame size mismatch":
        _write_rgb(d / "f2.png", np.zeros((H, W + 2, 3), np.uint8))
        return jpg, "f2.png", "jpg"
    if case == "flow size mismatch":
        flow_io.write_flo(str(d / "flow.flo"), np.zeros((H + 1, W, 2), np.float32))
        return flo, "flow.flo", "flo"
    if case == "flow x/y size mismatch":
        cv2.imwrite(str(d / "fy.png"), np.zeros((H, W - 1), np.uint8))
        return jpg, "fy.png", "jpg"
    if case == "non-finite flow":
        flow = np.zeros((H, W, 2), np.float32)
        flow[3, 4, 1] = np.inf
        flow_io.write_flo(str(d / "flow.flo"), flow)
        return flo, "flow.flo", "flo"
    if case == "bad flo magic":
        (d / "flow.flo").write_bytes(bytes(12 + H * W * 8))
        return flo, "flow.flo", "flo"
    if case == "frame is a folder":
        (d / "dir.png").mkdir()
        return "dir.png f2.png flow.flo", "dir.png", "flo"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing frame",
        "missing flow image",
        "missing flo",
        "undecodable frame",
        "undecodable flow image",
        "frame size mismatch",
        "flow size mismatch",
        "flow x/y size mismatch",
        "non-finite flow",
        "bad flo magic",
        "frame is a folder",
    ],
)
def test_load_example_errors_name_list_line_and_path(tmp_path, data, case):
    d = tmp_path / "data"
    line, bad, flow_type = _corrupt(d, case)
    lst = _write_list(tmp_path / "my_list.txt", ["# header", line])
    entries, _ = lists.read_lists([lst], root=str(d), flow_type=flow_type)
    with pytest.raises(lists.BadExampleError) as info:
        lists.load_example(entries[0])
    message = str(info.value)
    assert f"{lst} line 2" in message
    assert str(d / bad) in message


def test_load_example_is_thread_safe(tmp_path, data):
    lst = _write_list(tmp_path / "l.txt", ["data/f1.png data/f2.png data/fx.png data/fy.png"] * 3)
    entries, _ = lists.read_lists([lst], root=str(tmp_path))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lists.load_example, list(entries) * 10))
    for ex in results:
        np.testing.assert_array_equal(ex["frame1"], data["frame1"])
        np.testing.assert_array_equal(ex["flow"], results[0]["flow"])


def test_load_example_relative_paths_without_root(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lst = _write_list(tmp_path / "l.txt", ["data/f1.png data/f2.png data/flow.flo"])
    entries, _ = lists.read_lists([lst], flow_type="flo")
    assert not os.path.isabs(entries[0].frame1)
    np.testing.assert_array_equal(lists.load_example(entries[0])["flow"], data["flow"])


def test_load_example_without_frame2_checks_it_exists(tmp_path, data):
    lst = _write_list(tmp_path / "l.txt", ["data/f1.png data/f2.png data/flow.flo"])
    (entry,) = lists.read_lists([lst], root=str(tmp_path), flow_type="flo")[0]
    out = lists.load_example(entry, frame2=False)
    assert set(out) == {"frame1", "flow"}
    np.testing.assert_array_equal(out["frame1"], data["frame1"])
    os.remove(tmp_path / "data" / "f2.png")
    with pytest.raises(lists.BadExampleError, match=r"l\.txt line 1: missing file .*f2\.png"):
        lists.load_example(entry, frame2=False)


def _previous_read_lists(paths, root, flow_type):
    """The oracle: the entries and bad line numbers as the previous Python loop over text lines made them."""
    columns = 2 + lists.FLOW_COLUMNS[flow_type]
    prefix = None if root is None else os.path.join(root, "")
    entries, bad = [], []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                fields = text.split()
                if not fields or fields[0].startswith("#"):
                    continue
                if len(fields) != columns:
                    bad.append((path, number, text.strip()))
                    continue
                fields = [p if prefix is None or os.path.isabs(p) else prefix + p for p in fields]
                entries.append(lists.ListEntry(fields[0], fields[1], tuple(fields[2:]), path, number))
    return entries, bad


# Every kind of line the scanner must treat as text-mode reading and str.split() do: comments (also
# indented, and "#" inside a path), blank and space-only lines, tabs, \v \f \x1c-\x1f, CR LF and lone CR
# line breaks, absolute paths, non-ASCII paths and a non-ASCII space (U+00A0, split by str.split()).
_AWKWARD = {
    "jpg": (
        b"# header\r\n"
        b"a/1.jpg a/2.jpg f/1_x.jpg f/1_y.jpg\r\n"
        b"\r\n"
        b"   \t \n"
        b"  # indented comment with four fields\n"
        b"b#1.jpg\tb/2.jpg  /abs/f_x.jpg\x0bf_y.jpg\n"
        b"c/1.jpg c/2.jpg c/x.jpg\x1cc/y.jpg\rd/1.jpg d/2.jpg\x0cd/x.jpg d/y.jpg\r"
        b"caf\xc3\xa9/1.jpg caf\xc3\xa9/2.jpg x.jpg\xc2\xa0y.jpg\n"
        b"e/1.jpg e/2.jpg e/x.jpg e/y.jpg"
    ),
    "flo": b"a/1.jpg a/2.jpg a.flo\n\n#c\n/abs/1.jpg b/2.jpg\x1fb.flo  \r\nc/1.jpg c/2.jpg c.flo\n",
}


@pytest.mark.parametrize("flow_type", ["jpg", "flo"])
@pytest.mark.parametrize("tiny_pieces", [False, True])
def test_table_matches_the_previous_loop(tmp_path, monkeypatch, flow_type, tiny_pieces):
    if tiny_pieces:  # every line break and block boundary case, on small files
        monkeypatch.setattr(lists, "_READ_BYTES", 7)
        monkeypatch.setattr(lists, "_BLOCK_BYTES", 5)
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_bytes(_AWKWARD[flow_type])
    second.write_bytes(b"\n\r\n\r" + _AWKWARD[flow_type])  # the same lines, 3 further down
    paths = [str(first), str(second), str(first)]
    for root in (None, str(tmp_path / "root")):
        want, _ = _previous_read_lists(paths, root, flow_type)
        table, skipped = lists.read_lists(paths, root, flow_type)
        assert skipped == 0 and len(table) == len(want) >= 9
        assert list(table) == want
        assert [table[i] for i in range(-len(want), 0)] == want
    if flow_type == "jpg":  # a non-ASCII path; U+00A0 split "x.jpg\xa0y.jpg" in two
        assert want[-2].frame1.endswith("caf\xe9/1.jpg") and want[-2].flow[-1].endswith("root/y.jpg")
    k = len(want) // 3
    assert [e.line for e in want[k : 2 * k]] == [e.line + 3 for e in want[:k]]
    assert table.nbytes == table.rows.nbytes + sum(map(len, table.blocks))


def test_bad_lines_are_reported_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(lists, "_READ_BYTES", 16)  # the bad lines fall in different pieces
    lst = tmp_path / "bad.txt"
    lst.write_bytes(b"a b c d\nshort line here\r\n\n# x\ne f g h\none two three four five\nlast\n")
    want, bad = _previous_read_lists([str(lst)], None, "jpg")
    with pytest.raises(lists.BadExampleError) as info:
        lists.read_lists([lst])
    assert str(info.value) == f"{lst} line 2: expected 4 paths for flow type 'jpg', got 3: 'short line here'"
    calls = []
    table, skipped = lists.read_lists([lst], skip_bad_examples=True, on_skip=lambda *a: calls.append(a))
    assert list(table) == want and skipped == len(bad) == 3
    assert (
        [key for key, _ in calls]
        == [(os.path.realpath(lst), n) for _, n, _ in bad]
        == [(os.path.realpath(lst), n) for n in (2, 6, 7)]
    )
    assert calls[2][1].endswith("got 1: 'last'")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 b c d\n")
    with pytest.raises(UnicodeDecodeError):  # as reading the file as UTF-8 text did
        lists.read_lists([tmp_path / "latin1.txt"])


def _yfcc_like_lines(count, seed=0):
    """``count`` jpg-type lines with YFCC-like relative paths (random videos and frames)."""
    rng = np.random.default_rng(seed)
    lines = []
    for shard, video, frame in rng.integers([0, 10**9, 0], [100, 10**10, 3000], (count, 3)).tolist():
        folder = f"{shard:02d}/{video}"
        lines.append(
            f"UnsupVideo_Frames/{folder}/{frame:06d}.jpg UnsupVideo_Frames/{folder}/{frame + 5:06d}.jpg "
            f"flow_origin/{folder}/{frame:06d}_x.jpg flow_origin/{folder}/{frame:06d}_y.jpg"
        )
    return lines


def test_sharding_slices_and_indexing_give_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(lists, "_BLOCK_BYTES", 300)  # many blocks
    lst = _write_list(tmp_path / "l.txt", _yfcc_like_lines(103))
    table, _ = lists.read_lists([lst], root="/data/yfcc")
    want = list(table)
    assert want == _previous_read_lists([lst], "/data/yfcc", "jpg")[0]
    assert len(table.blocks) > 10
    for count in (1, 2, 4, 8):
        for p in range(count):
            shard = table[: len(table) - len(table) % count][p::count]
            assert isinstance(shard, lists.ListTable) and shard.blocks is table.blocks
            assert list(shard) == want[: len(want) - len(want) % count][p::count]
            assert np.shares_memory(shard.rows, table.rows)  # a view, nothing copied
    picked = [5, 0, 102, -1, 5]
    assert list(table[picked]) == [want[i] for i in picked] == list(table[np.array(picked)])
    mask = np.arange(len(table)) % 3 == 0
    assert list(table[mask]) == [e for e, m in zip(want, mask, strict=True) if m]
    assert table[np.int64(7)] == want[7] and len(table[200:]) == 0 and not table[200:] and not table[[]]
    for bad in (103, -104):
        with pytest.raises(IndexError):
            table[bad]
    with pytest.raises(IndexError):
        table[:, 0]


def test_table_memory_per_line(tmp_path):
    # The previous list of ListEntry held about 1.1 kB per line like these (the text is ~170 bytes).
    lines = _yfcc_like_lines(10_000)
    table, _ = lists.read_lists([_write_list(tmp_path / "l.txt", lines)], root=str(tmp_path))
    assert len(table) == 10_000 and table[-1].line == 10_000
    assert table.rows.nbytes == 20 * 10_000
    assert table.nbytes < 60 * 10_000


def test_table_reads_from_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(lists, "_BLOCK_BYTES", 500)  # the threads keep replacing the cached block
    table, _ = lists.read_lists([_write_list(tmp_path / "l.txt", _yfcc_like_lines(400))])
    want = list(table)
    order = np.random.default_rng(1).permutation(np.tile(np.arange(400), 5)).tolist()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(table.__getitem__, order))
    assert got == [want[i] for i in order]


def test_benchmark_lists_runs():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, os.path.join(root, "scripts", "benchmark.py"), "lists", "--lines", "2000"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    assert "| ListTable (read_lists) |" in out[-3]
    assert re.fullmatch(r"lists_0.002M_mb \d+ \(baseline \d+\), seconds [\d.]+ \(baseline [\d.]+\)", out[-1])

"""List files of the original CMP and loading of the examples they name.

A list file has one example per line, whitespace-separated paths (so paths cannot contain spaces):

* flow type ``"jpg"``: ``frame1 frame2 flow_x flow_y`` -- the flow as two 8-bit images
  (``flow_io.read_flow_jpg``; the name is the original's, PNG files work too);
* flow type ``"flo"``: ``frame1 frame2 flow.flo`` -- Middlebury flow (``flow_io.read_flo``).

The flow is the forward flow from frame1 to frame2. Several list files are concatenated in the given
order. Blank lines and lines starting with ``#`` are ignored (line numbers still count them). The original
uses the paths as given; here an optional root folder is prepended to relative paths (absolute paths are
kept), which reads the lists written by ``scripts/extract_flow.py`` with ``root=<its --out>``.

``read_lists`` returns the entries as a ``ListTable``, a compact sequence of ``ListEntry`` (the list text
compressed, one int32 row per example) that builds each entry when indexed and slices into shards.

``load_example`` returns NumPy arrays: frames uint8 (H, W, 3) RGB, flow float32 (H, W, 2) of (dx, dy) in
pixels. It keeps no state and OpenCV releases the GIL while decoding, so it is fast and safe to run in
several threads (e.g. under ``tf.numpy_function`` in a parallel ``tf.data`` map). Every problem with an
example raises ``BadExampleError`` whose message names the list file, the line number and the path.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import typing
import zlib
from collections.abc import Callable, Hashable, Iterator, Sequence

import cv2
import numpy as np

from input_pipeline import flow_io

FLOW_COLUMNS = {"jpg": 2, "flo": 1}
"""Number of flow paths per line for each flow type (after the two frame paths)."""

# Decoded straight to RGB order (libjpeg writes RGB; no BGR -> RGB pass afterwards).
_IMREAD_RGB = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
_MAX_LOGGED_SKIPS = 10

_READ_BYTES = 1 << 22
"""List file bytes read and scanned per NumPy pass (bounds the scan's temporary arrays)."""
_BLOCK_BYTES = 1 << 14
"""Target uncompressed size of a ``ListTable`` block: one random access inflates one block (~20 us)."""
_ZLIB_LEVEL = 1
"""Fastest zlib level: list text still shrinks about 7x (paths share long prefixes)."""
_ROW_FIELDS = 5
"""Columns of ``ListTable.rows``: block, offset, length, source, line."""
# The single bytes ``str.split()`` splits at: ASCII space, \t, \n, \v, \f, \r and \x1c-\x1f. Text with
# non-ASCII bytes is split by ``str.split()`` itself (it also splits at e.g. U+00A0).
_ASCII_SPACE = np.array([chr(c).isspace() for c in range(128)] + [False] * 128)


@dataclasses.dataclass(frozen=True, slots=True)
class ListEntry:
    """One line of a list file, with root already applied to the paths.

    Attributes:
      frame1: first frame (the flow's source).
      frame2: second frame.
      flow: one ``.flo`` path or two flow image paths (x, y).
      source: the list file the line comes from.
      line: 1-based line number in ``source``.
    """

    frame1: str
    frame2: str
    flow: tuple[str, ...]
    source: str
    line: int

    @property
    def where(self) -> str:
        """``"<list file> line <n>"``, the prefix of error messages about this entry."""
        return f"{self.source} line {self.line}"


class BadExampleError(ValueError):
    """A list line or the files it names are unusable; the message names list file, line and path."""


class ListTable(Sequence[ListEntry]):
    """The entries of list files in compact columnar form: a sequence of ``ListEntry`` built on demand.

    A line with YFCC-like paths costs about 50 bytes here, against about 600 in a Python list of
    entries (``python scripts/benchmark.py lists``). The text of the list files (every line break made
    LF) is kept zlib-compressed in blocks of about ``_BLOCK_BYTES`` of whole lines; each row (one
    example) is a line of one block. Indexing with an integer inflates that line's block (the last block
    is cached, so reading rows in order inflates each block once), splits the line and applies the root,
    giving the same ``ListEntry`` as a list would. Indexing with a slice, an integer array or a boolean
    mask gives another table sharing the blocks (basic slices copy nothing), e.g. one process's shard
    ``table[: n - n % P][p::P]``.

    Built by ``read_lists``; safe to read from several threads.

    Attributes:
      rows: int32 (N, 5): per row the block index, byte offset and byte length of its line in the
        inflated block, the index into ``sources`` of its list file, and its 1-based line number.
      blocks: zlib-compressed UTF-8 text blocks.
      sources: list file paths (as ``locate_list_file`` found them).
      prefix: prepended to relative paths (the root with a trailing separator), or ``None``.
    """

    __slots__ = ("rows", "blocks", "sources", "prefix", "_cache")

    def __init__(
        self, rows: np.ndarray, blocks: Sequence[bytes], sources: Sequence[str], prefix: str | None
    ) -> None:
        if rows.dtype != np.int32 or rows.ndim != 2 or rows.shape[1] != _ROW_FIELDS:
            raise ValueError(f"rows must be int32 (N, {_ROW_FIELDS}), got {rows.dtype} {rows.shape}")
        self.rows = rows
        self.blocks = blocks
        self.sources = sources
        self.prefix = prefix
        self._cache: tuple[int, bytes] = (-1, b"")  # (block index, inflated block), replaced as a whole

    def __len__(self) -> int:
        return len(self.rows)

    @typing.overload
    def __getitem__(self, index: int) -> ListEntry: ...

    @typing.overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> ListTable: ...

    def __getitem__(self, index):
        if isinstance(index, int | np.integer):
            return self._entry(index)
        if not isinstance(index, slice):
            index = np.asarray(index)
            index = index.astype(np.intp) if index.size == 0 and index.dtype != bool else index
        rows = self.rows[index]
        if rows.ndim != 2:
            raise IndexError(f"ListTable index must select rows, got {index!r}")
        return ListTable(rows, self.blocks, self.sources, self.prefix)

    def __iter__(self) -> Iterator[ListEntry]:
        for i in range(len(self.rows)):
            yield self._entry(i)

    def __repr__(self) -> str:
        return f"ListTable({len(self)} entries from {len(self.sources)} list file(s), {self.nbytes} bytes)"

    @property
    def nbytes(self) -> int:
        """Bytes held: the row array and the compressed blocks (shared with tables sliced from it)."""
        return self.rows.nbytes + sum(len(b) for b in self.blocks)

    def _block(self, index: int) -> bytes:
        cached = self._cache
        if cached[0] != index:
            cached = (index, zlib.decompress(self.blocks[index]))
            self._cache = cached
        return cached[1]

    def _entry(self, index: int) -> ListEntry:
        n = len(self.rows)
        if not -n <= index < n:
            raise IndexError(f"ListTable index {index} out of range for {n} entries")
        block, offset, length, source, line = self.rows[index].tolist()
        fields = self._block(block)[offset : offset + length].decode("utf-8").split()
        fields = _with_root(fields, self.prefix)
        return ListEntry(fields[0], fields[1], tuple(fields[2:]), self.sources[source], line)


def locate_list_file(list_file: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The path of a list file: a relative one is looked up under ``root`` first, then as given.

    Args:
      list_file: the list file as configured.
      root: the data root (``None``: the path as given only).

    Returns:
      The path that exists.

    Raises:
      FileNotFoundError: neither exists; the message names both places.
    """
    list_file = os.fspath(list_file)
    under_root = None if root is None else os.path.join(root, list_file)
    if under_root is not None and os.path.isfile(under_root):
        return under_root
    if not os.path.isfile(list_file):
        where = "" if under_root is None else f" (nor does {under_root})"
        raise FileNotFoundError(f"list file {list_file} does not exist{where}")
    return list_file


def _with_root(paths: Sequence[str], prefix: str | None) -> list[str]:
    """``prefix + path`` for the relative paths (``prefix`` ends with a separator; ``None``: unchanged)."""
    if prefix is None:
        return list(paths)
    return [p if os.path.isabs(p) else prefix + p for p in paths]


def _pieces(f: typing.BinaryIO, size: int) -> Iterator[bytes]:
    """The bytes of a file opened in binary mode, in pieces of whole lines with every line break made LF.

    CR LF and a lone CR end a line too, as when the file is read in text mode (universal newlines), so
    line numbers are those of ``open(path).readlines()``. A piece is about ``size`` bytes (more for a
    longer line).
    """
    rest = b""
    while True:
        data = f.read(size)
        buf = rest + data if rest else data
        if not data:
            if buf:
                yield buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in buf else buf
            return
        # After the last line break before the last byte (that byte may be the "\n" of a "\r\n").
        cut = max(buf.rfind(b"\n", 0, len(buf) - 1), buf.rfind(b"\r", 0, len(buf) - 1)) + 1
        if cut == 0:
            rest = buf
            continue
        if buf[cut - 1] == ord("\r") and buf[cut] == ord("\n"):
            cut += 1
        piece, rest = buf[:cut], buf[cut:]
        yield piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in piece else piece


def _scan(piece: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits a piece into lines and counts their fields, with no Python loop over lines (for ASCII text).

    Args:
      piece: whole UTF-8 lines ended by LF (the last one may lack it), as ``_pieces`` yields them.

    Returns:
      Per line, each of shape (L,): start and end byte offsets (int64, the end excludes the LF),
      the number of whitespace-separated fields (int64, as ``str.split()`` counts them) and whether the
      first field starts with ``#`` (bool).

    Raises:
      UnicodeDecodeError: the piece is not UTF-8.
    """
    a = np.frombuffer(piece, np.uint8)
    ends = np.flatnonzero(a == ord("\n"))
    if not piece.endswith(b"\n"):
        ends = np.append(ends, len(a))
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    comment = np.zeros(len(ends), bool)
    if piece.isascii():
        space = _ASCII_SPACE[a]
        first = ~space  # first byte of a field: not a space, after a space or at the start
        first[1:] &= space[:-1]
        field_starts = np.flatnonzero(first)
        counts = np.bincount(np.searchsorted(ends, field_starts), minlength=len(ends))
        used = np.flatnonzero(counts)
        comment[used] = a[field_starts[np.cumsum(counts)[used] - counts[used]]] == ord("#")
    else:  # rare: let str.split() decide (it also splits at non-ASCII spaces)
        counts = np.zeros(len(ends), np.int64)
        for k, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            fields = piece[start:end].decode("utf-8").split()
            counts[k] = len(fields)
            comment[k] = bool(fields) and fields[0].startswith("#")
    return starts, ends, counts, comment


def _compress(piece: bytes, starts: np.ndarray, blocks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Appends a piece to ``blocks`` as zlib blocks of whole lines; returns each line's block and offset.

    Args:
      piece: whole lines.
      starts: int64 (L,) byte offset of each line in ``piece`` (ascending, the first 0).
      blocks: the compressed blocks so far; the new ones are appended.

    Returns:
      Per line, each int64 (L,): the index of its block in ``blocks`` and its byte offset in that block.
    """
    key = starts // _BLOCK_BYTES  # a block starts at the first line starting in each span of the piece
    new_block = np.ones(len(starts), bool)
    new_block[1:] = key[1:] != key[:-1]
    local = np.cumsum(new_block) - 1
    bounds = [*starts[new_block].tolist(), len(piece)]
    view = memoryview(piece)
    first = len(blocks)
    for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
        blocks.append(zlib.compress(view[b0:b1], _ZLIB_LEVEL))
    return first + local, starts - np.asarray(bounds[:-1])[local]


def read_lists(
    list_files: Sequence[str | os.PathLike] | str | os.PathLike,
    root: str | os.PathLike | None = None,
    flow_type: str = "jpg",
    skip_bad_examples: bool = False,
    on_skip: Callable[[Hashable, str], None] | None = None,
) -> tuple[ListTable, int]:
    """Reads and concatenates list files into a ``ListTable``.

    Only the number of columns is checked here; files are checked by ``load_example``. The files are
    scanned with NumPy in pieces of a few megabytes (no Python object per line), so a million-line list
    takes about a second and the table tens of megabytes (see ``ListTable``).

    Args:
      list_files: list file paths (str or path-like), read in this order; a single path is accepted too.
        A relative one is looked up under ``root`` first (where ``scripts/extract_flow.py`` writes its
        lists), then as given (relative to the working directory).
      root: folder prepended to relative paths in the lists; None uses them as given (relative to the
        working directory, as the original does). Absolute paths are kept either way.
      flow_type: ``"jpg"`` (4 columns) or ``"flo"`` (3 columns).
      skip_bad_examples: skip and count lines with a wrong column count (the first few are logged)
        instead of raising.
      on_skip: with ``skip_bad_examples``, called as ``on_skip(key, message)`` for each skipped line
        instead of logging it; ``key`` is (real path of the list file, line number), the same for every
        reader of that line (e.g. ``input_pipeline.pipeline.BadExampleCounter.add``).

    Returns:
      (entries, number of skipped lines): the entries in file and line order, a ``ListTable`` (a
      sequence of ``ListEntry``: ``len``, indexing, iteration; slicing gives a table).

    Raises:
      ValueError: unknown ``flow_type``.
      FileNotFoundError: a list file does not exist (always, whatever ``skip_bad_examples``).
      BadExampleError: a line has the wrong number of columns (unless ``skip_bad_examples``); the message
        names the list file and the line number.
      UnicodeDecodeError: a list file is not UTF-8.
    """
    if flow_type not in FLOW_COLUMNS:
        raise ValueError(f"flow_type must be one of {sorted(FLOW_COLUMNS)}, got {flow_type!r}")
    if isinstance(list_files, str | os.PathLike):
        list_files = [list_files]
    list_files = [os.fspath(f) for f in list_files]
    columns = 2 + FLOW_COLUMNS[flow_type]
    prefix = None if root is None else os.path.join(root, "")  # with a trailing separator
    sources: list[str] = []
    blocks: list[bytes] = []
    rows = [np.zeros((0, _ROW_FIELDS), np.int32)]
    skipped = 0
    for list_file in list_files:
        list_file = locate_list_file(list_file, root)
        sources.append(list_file)
        lines_before = 0
        with open(list_file, "rb") as f:
            for piece in _pieces(f, _READ_BYTES):
                starts, ends, counts, comment = _scan(piece)
                example = ~comment & (counts > 0)
                for k in np.flatnonzero(example & (counts != columns)).tolist():
                    number = lines_before + k + 1
                    text = piece[starts[k] : ends[k]].decode("utf-8")
                    message = (
                        f"{list_file} line {number}: expected {columns} paths for flow type {flow_type!r}, "
                        f"got {counts[k]}: {text.strip()!r}"
                    )
                    if not skip_bad_examples:
                        raise BadExampleError(message)
                    skipped += 1
                    if on_skip is not None:
                        on_skip((os.path.realpath(list_file), number), message)
                    elif skipped <= _MAX_LOGGED_SKIPS:
                        logging.warning("skipping %s", message)
                keep = np.flatnonzero(example & (counts == columns))
                block, offset = _compress(piece, starts, blocks)
                columns_of_rows = (
                    block[keep],
                    offset[keep],
                    ends[keep] - starts[keep],
                    np.full(len(keep), len(sources) - 1),
                    lines_before + 1 + keep,
                )
                rows.append(np.stack(columns_of_rows, axis=1).astype(np.int32))
                lines_before += len(starts)
    if skipped and on_skip is None:
        logging.warning("skipped %d malformed line(s) in %s", skipped, ", ".join(list_files))
    return ListTable(np.concatenate(rows), blocks, tuple(sources), prefix), skipped


def missing_files(
    list_files: Sequence[str | os.PathLike], root: str | os.PathLike | None = None, max_lines: int = 5
) -> list[str]:
    """The missing list files and missing files named on their first lines, loading nothing.

    A quick check before a long start-up: it opens each list file, reads only its first ``max_lines``
    examples (blank and ``#`` lines skipped, column counts not checked) and asks the file system whether
    each path they name (``root`` applied as ``read_lists`` does) is a file.

    Args:
      list_files: list files as configured.
      root: the data root, as for ``read_lists``.
      max_lines: examples checked per list file.

    Returns:
      One line per problem, in order, each path once: ``"list file X does not exist (nor does Y)"`` or
      ``"X (named on LIST line N)"``; empty when nothing is missing.
    """
    problems: list[str] = []
    seen: set[str] = set()
    prefix = None if root is None else os.path.join(root, "")
    for list_file in dict.fromkeys(os.fspath(f) for f in list_files):
        try:
            path = locate_list_file(list_file, root)
        except FileNotFoundError as e:
            problems.append(str(e))
            continue
        checked = 0
        with open(path, encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                fields = text.split()
                if not fields or fields[0].startswith("#"):
                    continue
                for named in _with_root(fields, prefix):
                    if named not in seen and not os.path.isfile(named):
                        problems.append(f"{named} (named on {path} line {number})")
                    seen.add(named)
                checked += 1
                if checked == max_lines:
                    break
    return problems


def _call(entry: ListEntry, reader, *args) -> np.ndarray:
    """Returns ``reader(*args)``, turning I/O and format errors into BadExampleError about ``entry``."""
    try:
        return reader(*args)
    except FileNotFoundError as e:
        raise BadExampleError(f"{entry.where}: missing file {e.filename}") from e
    except OSError as e:
        raise BadExampleError(f"{entry.where}: cannot read {e.filename}: {e.strerror or e}") from e
    except ValueError as e:  # flow_io's messages name the path
        raise BadExampleError(f"{entry.where}: {e}") from e


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]} (width x height)"


def load_example(
    entry: ListEntry, frame2: bool = True, max_flow_magnitude: float = math.inf
) -> dict[str, np.ndarray]:
    """Loads the frames and flow of one list entry and checks them.

    Args:
      entry: from ``read_lists``.
      frame2: decode frame 2 as well. The training pipeline passes False: the
        CMP loss never uses frame 2, so it is only checked to exist (its size
        is then not checked), which saves a JPEG decode per example.
      max_flow_magnitude: largest accepted ``|dx|``, ``|dy|`` in pixels (the
        pipeline passes ``config.data.max_flow_magnitude``); ``inf`` accepts
        any finite flow.

    Returns:
      ``{"frame1": uint8 (H, W, 3) RGB, "frame2": uint8 (H, W, 3) RGB, "flow": float32 (H, W, 2)}``, the
      flow as (dx, dy) in pixels from frame1 to frame2 (no ``frame2`` key when ``frame2`` is False).
      EXIF orientation is ignored, as in the original.

    Raises:
      BadExampleError: a file is missing, unreadable or undecodable (including a malformed ``.flo`` or
        differently sized flow x/y images), frame2 or the flow differs in size from frame1, or the flow
        holds NaN, infinity or a value beyond ``max_flow_magnitude``. The message names the list file,
        the line number, the path(s) and, for a flow value, the value and where it is.
    """
    frame1 = _call(entry, flow_io.decode_image_file, entry.frame1, _IMREAD_RGB)
    if frame2:
        image2 = _call(entry, flow_io.decode_image_file, entry.frame2, _IMREAD_RGB)
    elif not os.path.isfile(entry.frame2):
        raise BadExampleError(f"{entry.where}: missing file {entry.frame2}")
    reader = flow_io.read_flo if len(entry.flow) == 1 else flow_io.read_flow_jpg
    flow = _call(entry, reader, *entry.flow)
    if frame2 and image2.shape[:2] != frame1.shape[:2]:
        raise BadExampleError(
            f"{entry.where}: frame2 {entry.frame2} is {_size(image2)} but frame1 {entry.frame1} is "
            f"{_size(frame1)}"
        )
    flow_paths = " ".join(entry.flow)
    if flow.shape[:2] != frame1.shape[:2]:
        raise BadExampleError(
            f"{entry.where}: flow {flow_paths} is {_size(flow)} but frame1 {entry.frame1} is {_size(frame1)}"
        )
    # Flow images decode to values within +-FLOW_IMAGE_RANGE by construction; a .flo may hold anything.
    if len(entry.flow) == 1 or max_flow_magnitude < flow_io.FLOW_IMAGE_RANGE:
        try:
            flow_io.check_flow_values(flow, max_flow_magnitude)
        except ValueError as e:
            raise BadExampleError(f"{entry.where}: flow {flow_paths} {e}") from e
    out = {"frame1": frame1, "flow": flow}
    if frame2:
        out["frame2"] = image2
    return out

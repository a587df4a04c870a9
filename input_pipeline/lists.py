"""List files of the original CMP and loading of the examples they name.

A list file has one example per line, whitespace-separated paths (so paths cannot contain spaces):

* flow type ``"jpg"``: ``frame1 frame2 flow_x flow_y`` -- the flow as two 8-bit images
  (``flow_io.read_flow_jpg``; the name is the original's, PNG files work too);
* flow type ``"flo"``: ``frame1 frame2 flow.flo`` -- Middlebury flow (``flow_io.read_flo``).

The flow is the forward flow from frame1 to frame2. Several list files are concatenated in the given
order. Blank lines and lines starting with ``#`` are ignored (line numbers still count them). The original
uses the paths as given; here an optional root folder is prepended to relative paths (absolute paths are
kept), which reads the lists written by ``scripts/extract_flow.py`` with ``root=<its --out>``.

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
from collections.abc import Callable, Hashable, Sequence

import cv2
import numpy as np

from input_pipeline import flow_io

FLOW_COLUMNS = {"jpg": 2, "flo": 1}
"""Number of flow paths per line for each flow type (after the two frame paths)."""

# Decoded straight to RGB order (libjpeg writes RGB; no BGR -> RGB pass afterwards).
_IMREAD_RGB = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
_MAX_LOGGED_SKIPS = 10


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


def read_lists(
    list_files: Sequence[str | os.PathLike] | str | os.PathLike,
    root: str | os.PathLike | None = None,
    flow_type: str = "jpg",
    skip_bad_examples: bool = False,
    on_skip: Callable[[Hashable, str], None] | None = None,
) -> tuple[list[ListEntry], int]:
    """Reads and concatenates list files.

    Only the number of columns is checked here; files are checked by ``load_example``.

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
      (entries, number of skipped lines).

    Raises:
      ValueError: unknown ``flow_type``.
      FileNotFoundError: a list file does not exist (always, whatever ``skip_bad_examples``).
      BadExampleError: a line has the wrong number of columns (unless ``skip_bad_examples``); the message
        names the list file and the line number.
    """
    if flow_type not in FLOW_COLUMNS:
        raise ValueError(f"flow_type must be one of {sorted(FLOW_COLUMNS)}, got {flow_type!r}")
    if isinstance(list_files, str | os.PathLike):
        list_files = [list_files]
    list_files = [os.fspath(f) for f in list_files]
    columns = 2 + FLOW_COLUMNS[flow_type]
    prefix = None if root is None else os.path.join(root, "")  # with a trailing separator
    entries: list[ListEntry] = []
    skipped = 0
    for list_file in list_files:
        list_file = locate_list_file(list_file, root)
        with open(list_file, encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                fields = text.split()
                if not fields or fields[0].startswith("#"):
                    continue
                if len(fields) != columns:
                    message = (
                        f"{list_file} line {number}: expected {columns} paths for flow type {flow_type!r}, "
                        f"got {len(fields)}: {text.strip()!r}"
                    )
                    if not skip_bad_examples:
                        raise BadExampleError(message)
                    skipped += 1
                    if on_skip is not None:
                        on_skip((os.path.realpath(list_file), number), message)
                    elif skipped <= _MAX_LOGGED_SKIPS:
                        logging.warning("skipping %s", message)
                    continue
                fields = _with_root(fields, prefix)
                entries.append(ListEntry(fields[0], fields[1], tuple(fields[2:]), list_file, number))
    if skipped and on_skip is None:
        logging.warning("skipped %d malformed line(s) in %s", skipped, ", ".join(list_files))
    return entries, skipped


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

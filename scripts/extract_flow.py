"""Turns own videos into CMP training data: frames, forward optical flow and a list file.

Usage::

    python scripts/extract_flow.py --videos DIR --out DIR [--gap 5] [--resize 416] [--format jpg]
    python scripts/extract_flow.py --frames DIR --out DIR ...
    python scripts/extract_flow.py --videos DIR --out DIR --val-fraction 0.2   # train.txt + val.txt

It runs from a clone as is (it puts the repository root on ``sys.path``); no ``pip install`` is needed.
``scripts/prepare_beam.py`` does the same work as an Apache Beam pipeline (same options and outputs).

Inputs: ``--videos`` is a video file or a folder searched recursively for video files (extensions in
``VIDEO_EXTENSIONS``; anything OpenCV/FFmpeg decodes). ``--frames`` is a folder whose immediate subfolders
are sequences of frame images, ordered by file name with numbers compared numerically (``f2`` < ``f10``).

For every pair of frames (t, t + gap), t = 0, step, 2 * step, ..., the forward flow from frame t to
frame t + gap is computed on grayscale frames (after the optional resize) with OpenCV's DIS optical flow
(preset MEDIUM) or Farneback. Outputs under ``--out``::

    frames/<input>/<t:06d>.jpg                frames used by some pair, JPEG
    flow/<input>/<t:06d>_<t+gap:06d>.flo      --format flo (Middlebury, lossless), or
    flow/<input>/<t:06d>_<t+gap:06d>_x.jpg    --format jpg: the original's 8-bit pair, values clipped to
    flow/<input>/<t:06d>_<t+gap:06d>_y.jpg    +-50 px (--flow-ext png stores the 8 bits losslessly)
    <--list>                                   one line per pair in the original list format
    <--val-list>                               with --val-fraction > 0: the validation pairs
    extract_flow.json                          the settings that fix the files above, and per list
                                               the options that chose its pairs

``<input>`` is the video's path relative to ``--videos`` (extension included) or the sequence folder
name; ``t`` counts the input's frames from 0. List paths are relative to ``--out`` (``--absolute-paths``
writes absolute ones). Read the result with
``input_pipeline.lists.read_lists([OUT/LIST], root=OUT, flow_type=FORMAT)``.

Time split (``--val-fraction F`` > 0): of each input's pairs, in time order, the last
``max(1, round(F * n))`` go to ``--val-list`` (default ``val.txt``) and the training list (``--list``,
default ``train.txt`` when splitting, ``list.txt`` otherwise) keeps only the pairs whose second frame lies
more than ``--val-gap`` frames (default: GAP) before the first validation frame; the pairs in between are
computed but listed nowhere. No training pair shares a frame with a validation pair, so validation
frames are never trained on. ``--max-frames N`` uses only the first N frames of each input and
``--max-pairs N`` its first N pairs (both before the split; use ``--step`` to spread pairs out).

Warnings (printed above the progress bar, naming the input): a video whose header promises more frames
than could be decoded (both counts given), and an input with fewer than GAP + 1 frames, which yields no
pair. A run that lists no pair at all, or no training pair when splitting, exits with status 1 and says
why, without rewriting the list files.

Every file is written to a temporary name and renamed, so a killed run leaves no partial file. Running
again with the same ``--out`` skips pairs whose files exist (a ``.flo`` must also have the right size)
and only computes the rest; the list file is rewritten at the end. Runs with other ``--gap``/``--step``
values can share ``--out`` (give each its own ``--list``); other ``--resize``/``--method``/``--format``/
``--flow-ext`` values are refused, and so is ``--resize`` on outputs whose ``extract_flow.json`` lacks
``"resize_rounding": "truncate"`` (frames resized with another rounding of the long side). The list
files are always rewritten from the current options (gap, step, caps, split), which ``extract_flow.json``
records per list; a run that would rewrite one list of an earlier train/validation pair without the
other (e.g. ``--list train.txt`` with no split, leaving a ``val.txt`` whose frames the new ``train.txt``
would contain) is refused. An input that cannot be decoded is reported, skipped and counted; the run
exits with status 1 if no input succeeded (or, as above, no pair was listed). The last line printed (on
stdout) is the summary::

    videos ok: 12, failed: 1, pairs written: 3400, skipped existing: 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import pathlib
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

# ``python scripts/extract_flow.py`` puts scripts/ on the path, not the repository root: add it, so the
# script runs from a clone without installing the project.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from input_pipeline import flow_io, image_ops  # noqa: E402

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .wmv .flv .3gp .ts .mts .m2ts .ogv .gif".split()
)
IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .png .bmp .tif .tiff .webp .ppm .pgm".split())
SETTINGS_FILE = "extract_flow.json"

DEFAULT_GAP = 5

_FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 5,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}


class InputError(Exception):
    """An input video or frame sequence cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One input to process.

    Attributes:
      path: video file or frame folder.
      name: output sub-path (``<input>`` in the module docstring).
      is_video: True for a video file, False for a frame folder.
    """

    path: str
    name: str
    is_video: bool


@dataclasses.dataclass(frozen=True)
class Settings:
    """Options shared by all tasks (see ``parse_args`` for their meaning)."""

    out: str
    gap: int
    step: int
    resize: int | None
    method: str
    format: str
    flow_ext: str
    jpeg_quality: int
    absolute_paths: bool
    max_frames: int | None = None
    max_pairs: int | None = None
    val_fraction: float = 0.0
    val_gap: int = 0

    @property
    def frame_limit(self) -> int | None:
        """Frames of each input used (from frame 0): ``--max-frames`` and ``--max-pairs`` combined."""
        limits = [] if self.max_frames is None else [self.max_frames]
        if self.max_pairs is not None:
            limits.append((self.max_pairs - 1) * self.step + self.gap + 1)
        return min(limits) if limits else None


@dataclasses.dataclass
class Result:
    """Outcome of one task.

    Attributes:
      task: the input.
      error: why the input failed, None if it succeeded.
      lines: list-file lines of its (training, when splitting) pairs, in frame order (empty on failure).
      val_lines: list-file lines of its validation pairs (``--val-fraction``), in frame order.
      dropped: pairs computed but listed nowhere (between training and validation pairs).
      warnings: messages about the input that did not stop it (each names it).
      written: pairs computed and written.
      skipped: pairs whose files already existed.
      clipped: flow values beyond +-50 px among those written (clipped in the jpg format).
      values: flow values written (2 per pixel).
    """

    task: Task
    error: str | None = None
    lines: list[str] = dataclasses.field(default_factory=list)
    val_lines: list[str] = dataclasses.field(default_factory=list)
    dropped: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    written: int = 0
    skipped: int = 0
    clipped: int = 0
    values: int = 0


def natural_key(name: str) -> tuple:
    """Sort key comparing the digit runs of ``name`` as numbers (``f2`` before ``f10``)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def find_tasks(videos: str | None, frames: str | None) -> list[Task]:
    """Lists the inputs in output order.

    Output names replace whitespace by ``_`` (list files separate paths by whitespace) and get a
    ``_2``, ``_3``, ... suffix if that makes two names equal.

    Args:
      videos: video file or folder searched recursively for ``VIDEO_EXTENSIONS`` files, or None.
      frames: folder whose immediate subfolders holding images are frame sequences, or None.

    Returns:
      Tasks sorted by output name.
    """
    found = []  # (path, name, is_video)
    if videos is not None and os.path.isfile(videos):
        found.append((videos, os.path.basename(videos), True))
    elif videos is not None:
        for folder, _, files in os.walk(videos):
            for file in files:
                if os.path.splitext(file)[1].lower() in VIDEO_EXTENSIONS:
                    path = os.path.join(folder, file)
                    found.append((path, os.path.relpath(path, videos).replace(os.sep, "/"), True))
    else:
        for entry in os.scandir(frames):
            if entry.is_dir() and any(_is_image(f) for f in os.listdir(entry.path)):
                found.append((entry.path, entry.name, False))
    tasks, used = [], set()
    for path, name, is_video in sorted(found, key=lambda f: natural_key(f[1])):
        name = unique = re.sub(r"\s", "_", name)
        suffix = 1
        while unique in used:
            suffix += 1
            unique = f"{name}_{suffix}"
        used.add(unique)
        tasks.append(Task(path, unique, is_video))
    return tasks


def _is_image(file: str) -> bool:
    """Whether the file name has one of IMAGE_EXTENSIONS."""
    return os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS


def iter_frames(
    task: Task, limit: int | None = None, warn: Callable[[str], None] | None = None
) -> Iterator[tuple[int, Callable[[], np.ndarray]]]:
    """Yields (frame index, loader) for every frame; the loader decodes it as uint8 (H, W, 3) BGR.

    A loader must be called before the iterator advances (videos are decoded sequentially); frames whose
    loader is never called are only demuxed, not converted.

    Args:
      task: the input.
      limit: yield at most this many frames (None: all).
      warn: receives a message when a video's header (``CAP_PROP_FRAME_COUNT``) promises more frames
        than could be decoded (not checked when ``limit`` stopped the decoding).

    Raises:
      InputError: the video cannot be opened or yields no frame, the folder holds no image, or a frame
        cannot be decoded.
    """
    if not task.is_video:
        files = sorted((f for f in os.listdir(task.path) if _is_image(f)), key=natural_key)
        if not files:
            raise InputError("no image files")
        files = files[:limit]
        for index, file in enumerate(files):
            path = os.path.join(task.path, file)

            def load(path: str = path) -> np.ndarray:
                try:
                    return flow_io.decode_image_file(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
                except (OSError, ValueError) as e:
                    raise InputError(str(e)) from e

            yield index, load
        return
    capture = cv2.VideoCapture(task.path)
    try:
        if not capture.isOpened():
            raise InputError("OpenCV cannot open it as a video")
        promised = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # <= 0: unknown
        index = 0
        while (limit is None or index < limit) and capture.grab():

            def load(index: int = index) -> np.ndarray:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    raise InputError(f"cannot decode frame {index}")
                return frame

            yield index, load
            index += 1
        if index == 0:
            raise InputError("no frame could be decoded")
        if warn is not None and (limit is None or index < limit) and promised > index:
            warn(
                f"{task.path}: the video header promises {promised} frames but only {index} could be "
                "decoded (truncated or damaged file?); the pairs of the decoded frames are used"
            )
    finally:
        capture.release()


def resize_frame(frame: np.ndarray, short: int | None) -> np.ndarray:
    """``image_ops.resize_short_side`` to ``--resize`` (None: unchanged), its sizes the original's.

    Shrinking averages areas (``cv2.INTER_AREA``: like the PIL bicubic resize of the original's
    data, it does not alias, which would disturb the flow); enlarging is bicubic.
    """
    if short is None:
        return frame
    shrink = min(frame.shape[:2]) > short
    return image_ops.resize_short_side(frame, short, cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# One DIS instance per thread (an instance is not safe to share between threads; Beam runs DoFns in threads).
_DIS = threading.local()


def compute_flow(gray1: np.ndarray, gray2: np.ndarray, method: str) -> np.ndarray:
    """Forward optical flow from ``gray1`` to ``gray2``.

    Args:
      gray1: uint8 (H, W) first frame.
      gray2: uint8 (H, W) second frame.
      method: ``"dis"`` (DIS, preset MEDIUM; one instance per thread, reused) or ``"farneback"``.

    Returns:
      float32 (H, W, 2): (dx, dy) in pixels such that gray1[y, x] ~ gray2[y + dy, x + dx].
    """
    gray1, gray2 = np.ascontiguousarray(gray1), np.ascontiguousarray(gray2)  # DIS requires it
    if method == "dis":
        if not hasattr(_DIS, "instance"):
            _DIS.instance = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM)
        flow = _DIS.instance.calc(gray1, gray2, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(gray1, gray2, None, **_FARNEBACK)
    return flow.astype(np.float32, copy=False)


class Layout:
    """File names of one input's outputs, relative to ``--out``."""

    def __init__(self, settings: Settings, name: str):
        self.settings = settings
        self.name = name

    def frame(self, t: int) -> str:
        """Frame t."""
        return f"frames/{self.name}/{t:06d}.jpg"

    def flow(self, t: int) -> tuple[str, ...]:
        """Flow file(s) of the pair (t, t + gap)."""
        stem = f"flow/{self.name}/{t:06d}_{t + self.settings.gap:06d}"
        if self.settings.format == "flo":
            return (stem + ".flo",)
        return (f"{stem}_x.{self.settings.flow_ext}", f"{stem}_y.{self.settings.flow_ext}")

    def abs(self, rel: str) -> str:
        """Path of ``rel`` on disk."""
        return os.path.join(self.settings.out, rel)

    def line(self, t: int) -> str:
        """List-file line of the pair (t, t + gap)."""
        paths = [self.frame(t), self.frame(t + self.settings.gap), *self.flow(t)]
        if self.settings.absolute_paths:
            paths = [os.path.abspath(self.abs(p)) for p in paths]
        return " ".join(paths)

    def pair_complete(self, t: int) -> bool:
        """Whether the frames and flow of (t, t + gap) exist (and a ``.flo`` has a consistent size)."""
        files = [self.frame(t), self.frame(t + self.settings.gap), *self.flow(t)]
        if not all(os.path.isfile(self.abs(f)) for f in files):
            return False
        if self.settings.format != "flo":
            return True
        try:
            flow_io.read_flo_header(self.abs(files[2]))
        except ValueError:
            return False
        return True


def process(task: Task, settings: Settings, on_pair: Callable[[], None]) -> Result:
    """Extracts the frames and flows of one input, skipping complete pairs.

    Args:
      task: the input.
      settings: the options.
      on_pair: called after each pair (written or skipped), for progress reporting.

    Returns:
      The outcome; failures are reported in ``Result.error``, not raised.
    """
    result = Result(task)
    layout = Layout(settings, task.name)
    gap, step, limit = settings.gap, settings.step, settings.frame_limit
    pending: dict[int, np.ndarray] = {}  # start t of incomplete pairs -> frame t (resized BGR)
    complete: set[int] = set()  # start t of pairs found complete
    starts: list[int] = []  # start t of the pairs done, in order
    frames = 0
    try:
        for t, load in iter_frames(task, limit, result.warnings.append):
            frames = t + 1
            frame = None
            first = t - gap
            if first >= 0 and first % step == 0:
                if first in complete:
                    complete.remove(first)
                    result.skipped += 1
                    starts.append(first)
                    on_pair()
                elif first in pending:
                    frame = resize_frame(load(), settings.resize)
                    _write_pair(layout, first, pending.pop(first), frame, result)
                    starts.append(first)
                    on_pair()
            if t % step == 0 and (limit is None or t + gap < limit):
                if layout.pair_complete(t):
                    complete.add(t)
                else:
                    pending[t] = frame if frame is not None else resize_frame(load(), settings.resize)
    except (InputError, cv2.error) as e:
        result.error = str(e).strip()
        return result
    if not starts:
        capped = settings.max_frames is not None and frames >= settings.max_frames
        used = f" used (--max-frames {settings.max_frames})" if capped else ""
        result.warnings.append(
            f"{task.path}: {frames} frame(s){used}, fewer than --gap + 1 = {gap + 1}: no pairs (lower --gap"
            f"{' or raise --max-frames' if capped else ''})"
        )
    train, val = split_pairs(starts, gap, settings.val_fraction, settings.val_gap)
    if val and not train:
        result.warnings.append(
            f"{task.path}: only {len(starts)} pair(s): none is left for training after the "
            f"{len(val)} validation pair(s) and the --val-gap of {settings.val_gap} frames"
        )
    result.lines = [layout.line(t) for t in train]
    result.val_lines = [layout.line(t) for t in val]
    result.dropped = len(starts) - len(train) - len(val)
    return result


def split_pairs(
    starts: list[int], gap: int, val_fraction: float, val_gap: int
) -> tuple[list[int], list[int]]:
    """Splits one input's pairs by time into training and validation pairs.

    Args:
      starts: first frames of the pairs (t, t + gap), increasing.
      gap: frames between the two frames of a pair.
      val_fraction: share of the pairs, the last ones, that go to validation (0: none).
      val_gap: frames that must separate the last frame of a training pair from the first frame of a
        validation pair (0: they must merely differ).

    Returns:
      (training starts, validation starts): the last ``max(1, round(val_fraction * n))`` pairs are the
      validation pairs; the training pairs are the earlier ones with ``t + gap + val_gap < v``, ``v``
      the first validation frame, so no frame of a training pair is within ``val_gap`` frames of a
      validation frame. Pairs in between are in neither.
    """
    if val_fraction <= 0 or not starts:
        return list(starts), []
    count = len(starts)
    num_val = min(count, max(1, math.floor(val_fraction * count + 0.5)))
    val = list(starts[count - num_val :])
    train = [t for t in starts[: count - num_val] if t + gap + val_gap < val[0]]
    return train, val


def _write_pair(layout: Layout, t: int, frame1: np.ndarray, frame2: np.ndarray, result: Result) -> None:
    """Computes the flow of (t, t + gap) and writes both frames (if missing) and the flow."""
    settings = layout.settings
    if frame1.shape != frame2.shape:
        raise InputError(
            f"frame {t + settings.gap} is {frame2.shape[1]}x{frame2.shape[0]} but frame {t} is "
            f"{frame1.shape[1]}x{frame1.shape[0]} (width x height)"
        )
    gray1 = cv2.cvtColor(frame1, cv2.COLOR_BGR2GRAY)
    gray2 = cv2.cvtColor(frame2, cv2.COLOR_BGR2GRAY)
    flow = compute_flow(gray1, gray2, settings.method)
    for index, frame in ((t, frame1), (t + settings.gap, frame2)):
        path = layout.abs(layout.frame(index))
        if not os.path.isfile(path):
            flow_io.write_bytes_atomic(path, flow_io.encode_image(path, frame, settings.jpeg_quality))
    flow_paths = [layout.abs(p) for p in layout.flow(t)]
    if settings.format == "flo":
        flow_io.write_flo(flow_paths[0], flow)
    else:
        flow_io.write_flow_jpg(*flow_paths, flow, jpeg_quality=settings.jpeg_quality)
    result.written += 1
    result.clipped += int(np.count_nonzero(np.abs(flow) > flow_io.FLOW_IMAGE_RANGE))
    result.values += flow.size


# Worker-process state (multiprocessing with --workers > 1).
_WORKER: dict = {}


def _init_worker(settings: Settings, counter) -> None:
    """Stores the settings and the shared pair counter in a new worker process."""
    cv2.setNumThreads(1)  # one process per core already
    _WORKER.update(settings=settings, counter=counter)


def _bump_counter() -> None:
    """Counts one pair in the counter shared with the main process."""
    with _WORKER["counter"].get_lock():
        _WORKER["counter"].value += 1


def _work(task: Task) -> Result:
    """Processes one task in a worker process."""
    return process(task, _WORKER["settings"], _bump_counter)


def result_messages(result: Result) -> list[str]:
    """The lines reported on stderr for one input: its warnings, then its failure if it failed."""
    messages = [f"WARNING {warning}" for warning in result.warnings]
    if result.error is not None:
        messages.append(f"FAILED {result.task.path}: {result.error}")
    return messages


def run_all(tasks: list[Task], settings: Settings, workers: int, unit: str) -> list[Result]:
    """Processes every task (in ``workers`` processes when > 1) with a progress bar over pairs.

    Returns:
      The results in task order.
    """
    bar = tqdm(unit="pair", desc="flow", dynamic_ncols=True, file=sys.stderr)
    results: dict[Task, Result] = {}

    def finish(result: Result) -> None:
        results[result.task] = result
        for message in result_messages(result):
            tqdm.write(message, file=sys.stderr)
        bar.set_postfix_str(f"{unit} {len(results)}/{len(tasks)}")

    with bar:
        bar.set_postfix_str(f"{unit} 0/{len(tasks)}")
        if workers == 1:
            for task in tasks:
                finish(process(task, settings, lambda: bar.update(1)))
        else:
            context = multiprocessing.get_context("spawn")
            counter = context.Value("q", 0)
            with context.Pool(workers, initializer=_init_worker, initargs=(settings, counter)) as pool:
                pending = [pool.apply_async(_work, (task,)) for task in tasks]
                while pending:
                    for job in [j for j in pending if j.ready()]:
                        pending.remove(job)
                        finish(job.get())
                    bar.update(counter.value - bar.n)
                    time.sleep(0.2)
            bar.update(counter.value - bar.n)
    return [results[task] for task in tasks]


def list_records(settings: Settings, train_list: str, val_list: str | None) -> dict[str, dict]:
    """The ``lists`` entries of ``extract_flow.json`` for the list files a run writes.

    Args:
      settings: the options.
      train_list: the (training) list, relative to ``--out``.
      val_list: the validation list when splitting, else None.

    Returns:
      {list name: the options that chose its pairs, its role and its partner}.
    """
    common = {
        "gap": settings.gap,
        "step": settings.step,
        "max_frames": settings.max_frames,
        "max_pairs": settings.max_pairs,
        "val_fraction": settings.val_fraction,
        "val_gap": settings.val_gap if val_list is not None else None,
        "train_list": train_list,
        "val_list": val_list,
    }
    if val_list is None:
        return {train_list: {"role": "all", **common}}
    return {train_list: {"role": "train", **common}, val_list: {"role": "val", **common}}


def _settings_path(settings: Settings) -> str:
    return os.path.join(settings.out, SETTINGS_FILE)


def check_settings(settings: Settings, lists: dict[str, dict]) -> None:
    """Records the settings that fix the output files in ``--out``, or checks them against a previous run.

    Also refuses to rewrite one list of a train/validation pair that an earlier run wrote without the
    other in the same roles (the other would be left holding frames of the new list).

    Args:
      settings: the options.
      lists: the list files this run will write (``list_records``).

    Raises:
      SystemExit: ``--out`` holds outputs of other settings, or the lists conflict.
    """
    fixed = {"resize": settings.resize, "method": settings.method, "format": settings.format}
    if settings.resize is not None:
        # Frames resized with another rounding of the long side would not match this run's flow.
        fixed["resize_rounding"] = "truncate"
    if settings.format == "jpg":
        fixed["flow_ext"] = settings.flow_ext
    path = _settings_path(settings)
    if not os.path.isfile(path):
        flow_io.write_bytes_atomic(path, (json.dumps(fixed, indent=1) + "\n").encode())
        return
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    previous_lists = previous.pop("lists", {})
    if previous != fixed:
        raise SystemExit(
            f"{settings.out} holds outputs made with {previous}, not {fixed}: use another --out or the "
            "same options"
        )
    roles = {name: record["role"] for name, record in lists.items()}
    for name, record in previous_lists.items():
        if record.get("val_list") is None or name not in roles:
            continue
        pair = {record["train_list"]: "train", record["val_list"]: "val"}
        if roles != pair:
            raise SystemExit(
                f"{os.path.join(settings.out, name)} is the {record['role']} list of an earlier split "
                f"(--list {record['train_list']} --val-list {record['val_list']} --val-fraction "
                f"{record['val_fraction']}); rewriting it without its partner in the same role would leave "
                "the other list holding frames of this one: split again with the same --list and "
                "--val-list, choose other list names, or delete both lists and their entry in "
                f"{path}"
            )


def record_lists(settings: Settings, lists: dict[str, dict]) -> None:
    """Adds (or replaces) the entries of the lists just written to ``extract_flow.json`` (if changed)."""
    path = _settings_path(settings)
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f)
    entries = recorded.setdefault("lists", {})
    if any(entries.get(name) != record for name, record in lists.items()):
        entries.update(lists)
        flow_io.write_bytes_atomic(path, (json.dumps(recorded, indent=1) + "\n").encode())


def build_parser(
    description: str | None = __doc__, workers: bool = True, allow_abbrev: bool = True
) -> argparse.ArgumentParser:
    """The parser of the data options (see the module docstring); long because it declares each option.

    Args:
      description: the help text above the options.
      workers: declare ``--workers`` (local processes); ``scripts/prepare_beam.py`` leaves it to Beam.
      allow_abbrev: accept unambiguous prefixes of the long options.

    Returns:
      The parser; check what it parses with ``check_args``.
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=allow_abbrev,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", help="video file, or folder searched recursively for video files")
    source.add_argument("--frames", help="folder whose subfolders are frame sequences (sorted by name)")
    parser.add_argument("--out", required=True, help="output folder (frames/, flow/, the list file)")
    parser.add_argument(
        "--gap",
        type=int,
        default=DEFAULT_GAP,
        help="flow from frame t to frame t+GAP (default %(default)s). The original's list names suggest "
        "gaps of 5-10 frames; at 25-30 fps a gap of 5 gives motions of a few to tens of pixels, which uses "
        "the +-50 px range of the flow bins (about 1 px wide), while gap 1 gives motions of a pixel or two "
        "that the bins and the 0.39 px step of the jpg format resolve poorly",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="frames between the first frames of consecutive pairs (default: GAP, i.e. pairs "
        "(0, GAP), (GAP, 2 GAP), ... sharing their frames)",
    )
    parser.add_argument(
        "--resize",
        type=int,
        default=None,
        help="resize frames so the shorter side has this many pixels before computing flow, the longer "
        "side truncated to whole pixels as the original's (the original trains at 416; default: keep the "
        "input size)",
    )
    parser.add_argument(
        "--method",
        choices=("dis", "farneback"),
        default="dis",
        help="OpenCV optical flow: DIS with preset MEDIUM (default), or Farneback (5 levels, window 15)",
    )
    parser.add_argument(
        "--format",
        choices=("jpg", "flo"),
        default="jpg",
        help="jpg (default): the original's pair of 8-bit images (clipped to +-50 px, 0.39 px step); "
        "flo: Middlebury float32",
    )
    parser.add_argument(
        "--flow-ext",
        choices=("jpg", "png"),
        default="jpg",
        help="file type of the jpg format's flow images (default jpg, as the original; png keeps the "
        "8-bit values exactly)",
    )
    parser.add_argument(
        "--jpeg-quality",
        type=int,
        default=95,
        help="JPEG quality of frames and flow images (default %(default)s)",
    )
    if workers:
        parser.add_argument(
            "--workers", type=int, default=1, help="processes, one input at a time each (default %(default)s)"
        )
    parser.add_argument(
        "--list",
        default=None,
        help="(training) list file path, relative to --out (default: train.txt with --val-fraction > 0, "
        "else list.txt)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="time split: the last fraction of each input's pairs goes to --val-list, after a gap of "
        "--val-gap frames, so validation frames are never trained on (default %(default)s: no split)",
    )
    parser.add_argument(
        "--val-list",
        default="val.txt",
        help="validation list file path, relative to --out, with --val-fraction > 0 (default %(default)s)",
    )
    parser.add_argument(
        "--val-gap",
        type=int,
        default=None,
        help="frames between the last frame of a training pair and the first frame of a validation pair "
        "must be more than this (default: GAP)",
    )
    parser.add_argument(
        "--max-frames", type=int, default=None, help="use only the first N frames of each input (default all)"
    )
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        help="use only the first N pairs of each input, before the split (default: all; --step spreads "
        "them out)",
    )
    parser.add_argument("--absolute-paths", action="store_true", help="write absolute paths in the list")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks the parsed data options and fills in the list defaults (``parser.error`` on a bad value)."""
    for name in ("gap", "step", "resize", "workers", "max_frames", "max_pairs"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.val_gap is not None and args.val_gap < 0:
        parser.error(f"--val-gap must be at least 0, got {args.val_gap}")
    if args.list is None:
        args.list = "train.txt" if args.val_fraction > 0 else "list.txt"
    args.list = os.path.normpath(args.list)
    args.val_list = os.path.normpath(args.val_list)
    if args.val_fraction > 0 and args.list == args.val_list:
        parser.error(f"--list and --val-list are both {args.list}")
    if not 0 <= args.jpeg_quality <= 100:
        parser.error(f"--jpeg-quality must be in [0, 100], got {args.jpeg_quality}")
    source = args.videos if args.videos is not None else args.frames
    if args.absolute_paths and re.search(r"\s", os.path.abspath(args.out)):
        parser.error("--absolute-paths needs an --out path without whitespace (list files split on it)")
    if not os.path.exists(source):
        parser.error(f"{source} does not exist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the command line (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run does, fixed before any input is processed.

    Attributes:
      settings: the options shared by all tasks.
      tasks: the inputs, in output order.
      unit: ``"videos"`` or ``"sequences"`` (for messages).
      train_list: the (training) list file, relative to ``--out``.
      val_list: the validation list file when splitting, else None.
      records: the ``lists`` entries of ``extract_flow.json`` for these lists (``list_records``).
    """

    settings: Settings
    tasks: list[Task]
    unit: str
    train_list: str
    val_list: str | None
    records: dict[str, dict]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The ``Settings`` of checked command line options."""
    return Settings(
        out=args.out,
        gap=args.gap,
        step=args.step or args.gap,
        resize=args.resize,
        method=args.method,
        format=args.format,
        flow_ext=args.flow_ext,
        jpeg_quality=args.jpeg_quality,
        absolute_paths=args.absolute_paths,
        max_frames=args.max_frames,
        max_pairs=args.max_pairs,
        val_fraction=args.val_fraction,
        val_gap=args.gap if args.val_gap is None else args.val_gap,
    )


def make_plan(args: argparse.Namespace) -> Plan | None:
    """Finds the inputs, creates ``--out`` and records or checks its settings (``check_settings``).

    Args:
      args: the checked command line (``parse_args``, or ``build_parser`` and ``check_args``).

    Returns:
      The plan, or None (after saying so on stderr) when no input was found.

    Raises:
      SystemExit: from ``check_settings``.
    """
    settings = settings_from_args(args)
    unit = "videos" if args.videos is not None else "sequences"
    tasks = find_tasks(args.videos, args.frames)
    if not tasks:
        print(f"no {unit} found in {args.videos or args.frames}", file=sys.stderr)
        return None
    os.makedirs(settings.out, exist_ok=True)
    val_list = args.val_list if settings.val_fraction > 0 else None
    records = list_records(settings, args.list, val_list)
    check_settings(settings, records)
    return Plan(settings, tasks, unit, args.list, val_list, records)


def finish(plan: Plan, results: list[Result]) -> int:
    """Writes the list files and their ``extract_flow.json`` entries, prints the report and the summary.

    Args:
      plan: the run's plan.
      results: one per task, in task order.

    Returns:
      The exit status: 1 if no input succeeded or no pair (no training pair when splitting) was listed,
      in which case the list files are left as they were; else 0.
    """
    settings, unit = plan.settings, plan.unit
    split = plan.val_list is not None
    lines = [line for r in results for line in r.lines]
    val_lines = [line for r in results for line in r.val_lines]
    ok = sum(r.error is None for r in results)
    written = sum(r.written for r in results)
    skipped = sum(r.skipped for r in results)
    values = sum(r.values for r in results)
    error = None
    if ok and not lines and not val_lines:
        capped = settings.max_frames is not None
        error = (
            f"no pairs: every {unit[:-1]} that could be read has fewer than --gap + 1 = {settings.gap + 1} "
            f"frames{' within --max-frames' if capped else ''} (see the warnings above); lower --gap"
            f"{' or raise --max-frames' if capped else ''}. The list files were not rewritten."
        )
    elif ok and split and not lines:
        error = (
            f"no training pairs: the {len(val_lines)} pairs all went to validation or into the "
            f"--val-gap of {settings.val_gap} frames; use longer {unit}, a lower --val-fraction or "
            "--val-gap, or a smaller --step. The list files were not rewritten."
        )
    if ok and error is None:
        outputs = [(plan.train_list, lines)] + ([(plan.val_list, val_lines)] if split else [])
        for name, entries in outputs:
            path = os.path.join(settings.out, name)
            flow_io.write_bytes_atomic(path, "".join(line + "\n" for line in entries).encode())
            role = "validation list" if name == plan.val_list else "list"
            print(f"{role}: {path} ({len(entries)} pairs, flow type {settings.format!r})")
        record_lists(settings, plan.records)
        dropped = sum(r.dropped for r in results)
        if split:
            print(f"pairs between training and validation pairs, in no list: {dropped}")
    if values:
        clipped = 100 * sum(r.clipped for r in results) / values
        print(
            f"flow values beyond +-{flow_io.FLOW_IMAGE_RANGE:g} px (the range of the jpg format and of the "
            f"flow bins) in the written pairs: {clipped:.3f}%"
        )
    print(
        f"{unit} ok: {ok}, failed: {len(results) - ok}, pairs written: {written}, skipped existing: {skipped}"
    )
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Runs the extraction; returns the exit status (1 if no input succeeded or no pair was listed)."""
    args = parse_args(argv)
    plan = make_plan(args)
    if plan is None:
        return 1
    results = run_all(plan.tasks, plan.settings, min(args.workers, len(plan.tasks)), plan.unit)
    return finish(plan, results)


if __name__ == "__main__":
    sys.exit(main())

"""Turns own videos into CMP training data: frames, forward optical flow and a list file.

Usage::

    python scripts/extract_flow.py --videos DIR --out DIR [--gap 5] [--resize 416] [--format jpg]
    python scripts/extract_flow.py --frames DIR --out DIR ...

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
    extract_flow.json                          the settings that fix the files above

``<input>`` is the video's path relative to ``--videos`` (extension included) or the sequence folder
name; ``t`` counts the input's frames from 0. List paths are relative to ``--out`` (``--absolute-paths``
writes absolute ones). Read the result with
``input_pipeline.lists.read_lists([OUT/LIST], root=OUT, flow_type=FORMAT)``.

Every file is written to a temporary name and renamed, so a killed run leaves no partial file. Running
again with the same ``--out`` skips pairs whose files exist (a ``.flo`` must also have the right size)
and only computes the rest; the list file is rewritten at the end. Runs with other ``--gap``/``--step``
values can share ``--out`` (give each its own ``--list``); other ``--resize``/``--method``/``--format``/
``--flow-ext`` values are refused. An input that cannot be decoded is reported, skipped and counted; the
run exits with status 1 only if no input succeeded. The last line printed is the summary::

    videos ok: 12, failed: 1, pairs written: 3400, skipped existing: 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from input_pipeline import flow_io

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


@dataclasses.dataclass
class Result:
    """Outcome of one task.

    Attributes:
      task: the input.
      error: why the input failed, None if it succeeded.
      lines: list-file lines of its pairs, in frame order (empty on failure).
      written: pairs computed and written.
      skipped: pairs whose files already existed.
      clipped: flow values beyond +-50 px among those written (clipped in the jpg format).
      values: flow values written (2 per pixel).
    """

    task: Task
    error: str | None = None
    lines: list[str] = dataclasses.field(default_factory=list)
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


def iter_frames(task: Task) -> Iterator[tuple[int, Callable[[], np.ndarray]]]:
    """Yields (frame index, loader) for every frame; the loader decodes it as uint8 (H, W, 3) BGR.

    A loader must be called before the iterator advances (videos are decoded sequentially); frames whose
    loader is never called are only demuxed, not converted.

    Raises:
      InputError: the video cannot be opened or yields no frame, the folder holds no image, or a frame
        cannot be decoded.
    """
    if not task.is_video:
        files = sorted((f for f in os.listdir(task.path) if _is_image(f)), key=natural_key)
        if not files:
            raise InputError("no image files")
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
        index = 0
        while capture.grab():

            def load(index: int = index) -> np.ndarray:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    raise InputError(f"cannot decode frame {index}")
                return frame

            yield index, load
            index += 1
        if index == 0:
            raise InputError("no frame could be decoded")
    finally:
        capture.release()


def resize_short_side(frame: np.ndarray, short: int | None) -> np.ndarray:
    """Resizes (H, W, C) so that min(H, W) == short, keeping the aspect ratio (None: unchanged)."""
    h, w = frame.shape[:2]
    if short is None or min(h, w) == short:
        return frame
    scale = short / min(h, w)
    size = (short, max(1, round(h * scale))) if w <= h else (max(1, round(w * scale)), short)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(frame, size, interpolation=interpolation)


_DIS_CACHE: dict[str, cv2.DISOpticalFlow] = {}


def compute_flow(gray1: np.ndarray, gray2: np.ndarray, method: str) -> np.ndarray:
    """Forward optical flow from ``gray1`` to ``gray2``.

    Args:
      gray1: uint8 (H, W) first frame.
      gray2: uint8 (H, W) second frame.
      method: ``"dis"`` (DIS, preset MEDIUM; one instance per process, reused) or ``"farneback"``.

    Returns:
      float32 (H, W, 2): (dx, dy) in pixels such that gray1[y, x] ~ gray2[y + dy, x + dx].
    """
    gray1, gray2 = np.ascontiguousarray(gray1), np.ascontiguousarray(gray2)  # DIS requires it
    if method == "dis":
        if "dis" not in _DIS_CACHE:
            _DIS_CACHE["dis"] = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM)
        flow = _DIS_CACHE["dis"].calc(gray1, gray2, None)
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
    gap, step = settings.gap, settings.step
    pending: dict[int, np.ndarray] = {}  # start t of incomplete pairs -> frame t (resized BGR)
    complete: set[int] = set()  # start t of pairs found complete
    try:
        for t, load in iter_frames(task):
            frame = None
            first = t - gap
            if first >= 0 and first % step == 0:
                if first in complete:
                    complete.remove(first)
                    result.skipped += 1
                    result.lines.append(layout.line(first))
                    on_pair()
                elif first in pending:
                    frame = resize_short_side(load(), settings.resize)
                    _write_pair(layout, first, pending.pop(first), frame, result)
                    result.lines.append(layout.line(first))
                    on_pair()
            if t % step == 0:
                if layout.pair_complete(t):
                    complete.add(t)
                else:
                    pending[t] = frame if frame is not None else resize_short_side(load(), settings.resize)
    except (InputError, cv2.error) as e:
        result.error = str(e).strip()
        result.lines = []
    return result


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


def run_all(tasks: list[Task], settings: Settings, workers: int, unit: str) -> list[Result]:
    """Processes every task (in ``workers`` processes when > 1) with a progress bar over pairs.

    Returns:
      The results in task order.
    """
    bar = tqdm(unit="pair", desc="flow", dynamic_ncols=True, file=sys.stderr)
    results: dict[Task, Result] = {}

    def finish(result: Result) -> None:
        results[result.task] = result
        if result.error is not None:
            tqdm.write(f"FAILED {result.task.path}: {result.error}", file=sys.stderr)
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


def check_settings(settings: Settings) -> None:
    """Records the settings that fix the output files in ``--out``, or checks them against a previous run.

    Raises:
      SystemExit: ``--out`` holds outputs of other settings.
    """
    fixed = {"resize": settings.resize, "method": settings.method, "format": settings.format}
    if settings.format == "jpg":
        fixed["flow_ext"] = settings.flow_ext
    path = os.path.join(settings.out, SETTINGS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous != fixed:
            raise SystemExit(
                f"{settings.out} holds outputs made with {previous}, not {fixed}: use another --out or the "
                "same options"
            )
    else:
        flow_io.write_bytes_atomic(path, (json.dumps(fixed, indent=1) + "\n").encode())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
        help="resize frames so the shorter side has this many pixels before computing flow "
        "(the original trains at 416; default: keep the input size)",
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
    parser.add_argument(
        "--workers", type=int, default=1, help="processes, one input at a time each (default %(default)s)"
    )
    parser.add_argument(
        "--list", default="list.txt", help="list file path, relative to --out (default %(default)s)"
    )
    parser.add_argument("--absolute-paths", action="store_true", help="write absolute paths in the list")
    args = parser.parse_args(argv)
    for name in ("gap", "step", "resize", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    if not 0 <= args.jpeg_quality <= 100:
        parser.error(f"--jpeg-quality must be in [0, 100], got {args.jpeg_quality}")
    source = args.videos if args.videos is not None else args.frames
    if args.absolute_paths and re.search(r"\s", os.path.abspath(args.out)):
        parser.error("--absolute-paths needs an --out path without whitespace (list files split on it)")
    if not os.path.exists(source):
        parser.error(f"{source} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the extraction; returns the exit status (1 if no input succeeded)."""
    args = parse_args(argv)
    settings = Settings(
        out=args.out,
        gap=args.gap,
        step=args.step or args.gap,
        resize=args.resize,
        method=args.method,
        format=args.format,
        flow_ext=args.flow_ext,
        jpeg_quality=args.jpeg_quality,
        absolute_paths=args.absolute_paths,
    )
    unit = "videos" if args.videos is not None else "sequences"
    tasks = find_tasks(args.videos, args.frames)
    if not tasks:
        print(f"no {unit} found in {args.videos or args.frames}", file=sys.stderr)
        return 1
    os.makedirs(settings.out, exist_ok=True)
    check_settings(settings)
    results = run_all(tasks, settings, min(args.workers, len(tasks)), unit)

    lines = [line for r in results for line in r.lines]
    list_path = os.path.join(settings.out, args.list)
    flow_io.write_bytes_atomic(list_path, "".join(line + "\n" for line in lines).encode())
    ok = sum(r.error is None for r in results)
    written = sum(r.written for r in results)
    skipped = sum(r.skipped for r in results)
    values = sum(r.values for r in results)
    print(f"list: {list_path} ({len(lines)} pairs, flow type {settings.format!r})")
    if values:
        clipped = 100 * sum(r.clipped for r in results) / values
        print(
            f"flow values beyond +-{flow_io.FLOW_IMAGE_RANGE:g} px (the range of the jpg format and of the "
            f"flow bins) in the written pairs: {clipped:.3f}%"
        )
    print(
        f"{unit} ok: {ok}, failed: {len(results) - ok}, pairs written: {written}, skipped existing: {skipped}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

r"""Turns own videos into CMP training data with an Apache Beam pipeline: the outputs of extract_flow.py.

Usage::

    python scripts/prepare_beam.py --videos DIR --out DIR [data options] [Beam pipeline options]
    python scripts/prepare_beam.py --videos DIR --out DIR --val-fraction 0.2 \
        --direct_num_workers=0 --direct_running_mode=multi_processing      # every local core
    python scripts/prepare_beam.py --videos /shared/videos --out /shared/out --val-fraction 0.2 \
        --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=EXTERNAL \
        --environment_config=localhost:50000                               # not tried (see below)

It runs from a clone as is (it loads ``scripts/extract_flow.py``, which puts the repository root on
``sys.path``).

Data options: those of ``scripts/extract_flow.py`` (``--videos``/``--frames``, ``--gap``, ``--step``,
``--resize``, ``--method``, ``--format``, ``--flow-ext``, ``--jpeg-quality``, ``--list``,
``--val-fraction``, ``--val-list``, ``--val-gap``, ``--max-frames``, ``--max-pairs``,
``--absolute-paths``), with their meaning and checks, except ``--workers``: Beam decides the parallelism.
The outputs are those of ``extract_flow.py`` with the same options, file for file and byte for byte
(frames, flow files, list files, ``extract_flow.json``), and so are resuming (pairs whose files exist
are skipped), the refusal of other settings on the same ``--out``, the report of warnings and failed
inputs (on stderr, naming each input by its absolute path), the summary line (the last on stdout)::

    videos ok: 12, failed: 1, pairs written: 3400, skipped existing: 0

and the exit status (1 if no input succeeded, or no pair, or no training pair when splitting, was
listed). See the docstring of ``extract_flow.py`` for all of these.

Pipeline: ``Create`` (one element per input) -> ``Reshuffle`` (spreads the inputs over the workers)
-> ``ParDo(ProcessInput)`` (one input per call: ``extract_flow.process`` decodes, resizes, computes the
flow and writes each file under a temporary name, then renames it) -> ``WriteToText`` (each input's
result as a JSON line, into a temporary folder ``.prepare_beam-*`` under ``--out``). Before the pipeline
the launcher finds the inputs and records or checks ``extract_flow.json``; after it, it reads the
results back, deletes the temporary folder (a killed run leaves it behind: delete it) and writes the
list files and their ``extract_flow.json`` entries exactly as ``extract_flow.py`` does. Counters (namespace
``prepare_beam``): ``videos_ok``, ``videos_failed`` (inputs that cannot be decoded: counted and
reported, not raised; frame sequences count as videos here), ``pairs_written``, ``pairs_skipped``
and ``pairs_done`` (updated after every pair, for runners that show counters live). Any other error
(a full disk, say) fails the pipeline, as it stops ``extract_flow.py``.

Runner: every argument that is not a data option goes to Beam as a pipeline option
(``PipelineOptions``); one that neither knows is refused. Without ``--runner`` Beam's local
``FnApiRunner`` runs the pipeline (in this process; ``--direct_num_workers`` and
``--direct_running_mode`` apply). ``--runner=DirectRunner`` works too, but Beam 2.77's DirectRunner first
tries to download its Prism runner from GitHub and falls back to the ``FnApiRunner`` when it cannot.

On a cluster (``--runner=DataflowRunner --project=... --region=... --temp_location=gs://...``,
``FlinkRunner``, ``SparkRunner``, ...): ``--videos``/``--frames`` and ``--out`` must be paths that the
launcher and every worker see at the same place (a shared file system); the launcher makes them
absolute before handing them to the workers. ``gs://`` and other object-store URLs are NOT supported:
files are read and written through the local file system (on Dataflow that means a worker container
that mounts the shared storage at the same path). Workers need numpy, opencv-python-headless, numba,
apache-beam and this repository, either at the launcher's path or importable (``extract_flow``,
``input_pipeline``) from their ``PYTHONPATH``, e.g. in a custom SDK container
(``--sdk_container_image``). Only the local runners were run (``FnApiRunner`` in process and with
``--direct_running_mode=multi_processing``, and ``DirectRunner`` falling back to it, on one machine);
Dataflow, Flink and Spark were not.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import importlib.util
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
from types import ModuleType

import apache_beam as beam
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMESPACE = "prepare_beam"
COUNTERS = ("videos_ok", "videos_failed", "pairs_written", "pairs_skipped", "pairs_done")
DEFAULT_RUNNER = "FnApiRunner"


def import_extract_flow(code_root: str) -> ModuleType:
    """Imports ``scripts/extract_flow.py`` as module ``extract_flow``, from ``code_root`` if it is there.

    The file is loaded by its path, so ``scripts/`` does not go on ``sys.path`` (its other scripts would
    shadow modules of the same names); ``extract_flow`` puts the repository root there itself.

    Args:
      code_root: the repository root (``REPO`` on the launcher); where the file is not there (a worker
        without the clone at that path), ``extract_flow`` must be importable from ``sys.path``.

    Returns:
      The module.
    """
    if "extract_flow" in sys.modules:
        return sys.modules["extract_flow"]
    path = os.path.join(code_root, "scripts", "extract_flow.py")
    if not os.path.isfile(path):
        return importlib.import_module("extract_flow")
    spec = importlib.util.spec_from_file_location("extract_flow", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["extract_flow"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["extract_flow"]
        raise
    return module


extract_flow = import_extract_flow(str(REPO))


class ProcessInput(beam.DoFn):
    """Extracts the frames and flows of one input on a worker and emits its result as a JSON line.

    It holds only plain values (the settings as a dict, the repository path), so that a worker
    unpickles it without this script's modules; ``setup`` imports them there.
    """

    def __init__(self, settings: dict, code_root: str):
        """Keeps the options.

        Args:
          settings: ``dataclasses.asdict`` of ``extract_flow.Settings``, ``out`` absolute.
          code_root: the repository root on the launcher.
        """
        self._settings_fields = settings
        self._code_root = code_root
        self._counters = {name: Metrics.counter(NAMESPACE, name) for name in COUNTERS}

    def setup(self):
        """Imports ``extract_flow`` on the worker and builds the settings."""
        self._module = import_extract_flow(self._code_root)
        self._settings = self._module.Settings(**self._settings_fields)

    def process(self, task: dict):
        """Processes one input.

        Args:
          task: the fields of an ``extract_flow.Task`` (``path`` absolute).

        Yields:
          ``dataclasses.asdict`` of its ``extract_flow.Result``, as JSON.
        """
        module = self._module
        result = module.process(module.Task(**task), self._settings, self._counters["pairs_done"].inc)
        self._counters["videos_failed" if result.error is not None else "videos_ok"].inc()
        self._counters["pairs_written"].inc(result.written)
        self._counters["pairs_skipped"].inc(result.skipped)
        yield json.dumps(dataclasses.asdict(result))


def _unknown_to_beam(beam_args: list[str]) -> list[str]:
    """The options among ``beam_args`` that no Beam ``PipelineOptions`` class declares."""
    logger = logging.getLogger("apache_beam.options.pipeline_options")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its "Discarding unparseable args" would precede our error
    try:
        known = PipelineOptions(beam_args).get_all_options()
        every = PipelineOptions(beam_args).get_all_options(retain_unknown_options=True)
    finally:
        logger.setLevel(level)
    return sorted(f"--{name}" for name in every.keys() - known.keys())


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Splits the command line into the data options (checked) and the Beam pipeline options.

    Returns:
      (data options, the remaining arguments for ``PipelineOptions``).
    """
    parser = extract_flow.build_parser(__doc__, workers=False, allow_abbrev=False)
    args, beam_args = parser.parse_known_args(argv)
    extract_flow.check_args(parser, args)
    unknown = _unknown_to_beam(beam_args)
    if unknown:
        hint = "; Beam sets the parallelism, e.g. --direct_num_workers=N" if "--workers" in unknown else ""
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (neither a data option nor a Beam pipeline "
            f"option{hint})"
        )
    return args, beam_args


def _read_counters(outcome: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The counters of NAMESPACE, committed where the runner reports them, else attempted."""
    values = dict.fromkeys(COUNTERS, 0)
    for counter in outcome.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        try:
            value = counter.committed
        except Exception:  # some runners support only attempted metrics
            value = None
        value = counter.attempted if value is None else value
        values[counter.key.metric.name] = values.get(counter.key.metric.name, 0) + int(value or 0)
    return values


def run_pipeline(
    tasks: list[extract_flow.Task], settings: extract_flow.Settings, beam_args: list[str]
) -> tuple[list[extract_flow.Result], dict[str, int]]:
    """Processes every input on the Beam runner that ``beam_args`` choose and collects the results.

    Args:
      tasks: the ``extract_flow.Task`` inputs, in output order.
      settings: the ``extract_flow.Settings``.
      beam_args: pipeline options (``--runner=...`` etc.); without ``--runner``, ``DEFAULT_RUNNER``.

    Returns:
      (one ``extract_flow.Result`` per task, in task order, its ``task.path`` absolute; the counters).

    Raises:
      RuntimeError: the pipeline finished without a result for some input.
    """
    out = os.path.abspath(settings.out)
    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    worker_settings = dataclasses.asdict(dataclasses.replace(settings, out=out))
    elements = [
        {"path": os.path.abspath(task.path), "name": task.name, "is_video": task.is_video} for task in tasks
    ]
    results_dir = tempfile.mkdtemp(prefix=".prepare_beam-", dir=out)
    try:
        pipeline = beam.Pipeline(options=options)
        _ = (
            pipeline
            | "Inputs" >> beam.Create(elements)
            | "Spread" >> beam.Reshuffle()
            | "Process" >> beam.ParDo(ProcessInput(worker_settings, str(REPO)))
            | "Collect"
            >> beam.io.WriteToText(os.path.join(results_dir, "results"), file_name_suffix=".jsonl")
        )
        outcome = pipeline.run()
        outcome.wait_until_finish()
        counters = _read_counters(outcome)
        by_name = {}
        for path in sorted(glob.glob(os.path.join(results_dir, "results*.jsonl"))):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    fields = json.loads(line)
                    task = extract_flow.Task(**fields.pop("task"))
                    by_name[task.name] = extract_flow.Result(task=task, **fields)
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)
    missing = [task.path for task in tasks if task.name not in by_name]
    if missing:
        raise RuntimeError(f"the pipeline returned no result for {len(missing)} input(s): {missing[:5]}")
    return [by_name[task.name] for task in tasks], counters


def main(argv: list[str] | None = None) -> int:
    """Runs the pipeline; returns the exit status (1 if no input succeeded or no pair was listed)."""
    args, beam_args = parse_args(argv)
    plan = extract_flow.make_plan(args)
    if plan is None:
        return 1
    results, counters = run_pipeline(plan.tasks, plan.settings, beam_args)
    for result in results:
        for message in extract_flow.result_messages(result):
            print(message, file=sys.stderr)
    print("beam counters: " + ", ".join(f"{name} {counters[name]}" for name in COUNTERS))
    return extract_flow.finish(plan, results)


if __name__ == "__main__":
    sys.exit(main())

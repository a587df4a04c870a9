"""``--config FILE`` and ``--config.<field>=<value>`` in argparse scripts, as ``main.py`` reads them.

Every script that names an architecture (rather than a trained workdir) takes
an experiment config file plus overrides, e.g.::

    python scripts/import_torch.py --checkpoint F --workdir W
        --config configs/semiauto_resnet.py --config.flow.num_bins=49

The config arguments are taken out of the command line first and parsed by a
fresh absl ``FlagValues`` with ``ml_collections.config_flags`` (the parser of
``main.py``: the same override syntax, types and errors); argparse parses
the rest. No JAX is imported here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags


def split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates the config arguments from the others.

    Args:
      argv: command-line arguments without the program name.

    Returns:
      (config arguments: ``--config FILE``, ``--config=FILE``,
      ``--config.a.b=V`` or ``--config.a.b V``; the other arguments, in order).
    """
    config, rest = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config" or (arg.startswith("--config.") and "=" not in arg):
            config += args[i : i + 2]
            i += 2
            continue
        (config if arg.startswith(("--config=", "--config.")) else rest).append(arg)
        i += 1
    return config, rest


def parse(config_argv: Sequence[str], default: str | None = None) -> ml_collections.ConfigDict:
    """The config that ``config_argv`` (from :func:`split`) names, with its overrides applied.

    Args:
      config_argv: the config arguments.
      default: config file used when ``config_argv`` names none.

    Returns:
      The experiment config.

    Raises:
      ValueError: no config file, or a bad file or override (absl's message).
    """
    argv = ["script", *config_argv]
    if not any(a == "--config" or a.startswith("--config=") for a in config_argv):
        if default is None:
            raise ValueError("--config=FILE is required (an experiment config file, e.g. configs/base.py)")
        argv.insert(1, f"--config={default}")
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "experiment config file", flag_values=values, sys_argv=argv
    )
    try:
        values(argv)
    except flags.Error as e:
        raise ValueError(str(e)) from None
    except (AttributeError, KeyError) as e:  # an override of a field the config does not have
        overrides = " ".join(a for a in config_argv if a.startswith("--config."))
        raise ValueError(
            f"{overrides}: the config has no field {str(e).strip(chr(34) + chr(39))!r}"
        ) from None
    return values.config


def add_argument(parser: argparse.ArgumentParser, default: str | None) -> None:
    """Declares ``--config`` for the parser's usage and help (:func:`split` takes it out before parsing)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="experiment config file, then --config.field=value overrides as main.py takes them"
        + (f" (default: {default})" if default else ""),
    )


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, default: str | None = None
) -> argparse.Namespace:
    """``parser.parse_args`` plus ``namespace.config``, the parsed experiment config.

    Errors in the config arguments go through ``parser.error`` (usage, exit 2).
    """
    import sys

    add_argument(parser, default)
    config_argv, rest = split(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    try:
        args.config = parse(config_argv, default)
    except ValueError as e:
        parser.error(str(e))
    return args

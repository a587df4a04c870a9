"""``cmp_jax.config_args``: scripts read ``--config FILE --config.x=v`` exactly as main.py does."""

import argparse
import pathlib

import pytest

from cmp_jax import config_args

ROOT = pathlib.Path(__file__).resolve().parents[1]
SYNTHETIC = str(ROOT / "configs" / "synthetic.py")


def test_split_takes_every_form_of_config_argument():
    argv = [
        "--workdir",
        "w",
        "--config",
        SYNTHETIC,
        "--config.batch_size=4",
        "--config.seed",
        "3",
        "--step=2",
    ]
    config, rest = config_args.split(argv)
    assert config == ["--config", SYNTHETIC, "--config.batch_size=4", "--config.seed", "3"]
    assert rest == ["--workdir", "w", "--step=2"]


def test_parse_applies_overrides_with_the_fields_types():
    config = config_args.parse(
        [f"--config={SYNTHETIC}", "--config.batch_size=4", "--config.data.crop_size=(32, 48)"]
    )
    assert config.batch_size == 4 and tuple(config.data.crop_size) == (32, 48)
    assert config.model.backbone == "resnet18"  # the file's own values otherwise
    default = config_args.parse(["--config.seed=7"], default=SYNTHETIC)
    assert default.seed == 7 and default.data.source == "synthetic"


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "--config=FILE is required"),
        ([f"--config={SYNTHETIC}", "--config.nope=1"], "--config.nope=1: the config has no field 'nope'"),
        ([f"--config={SYNTHETIC}", "--config.batch_size=abc"], "invalid literal for int()"),
    ],
)
def test_bad_config_arguments_are_named(argv, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_args.parse(argv)


def test_parse_args_reports_through_the_parser(capsys):
    parser = argparse.ArgumentParser(prog="tool.py")
    parser.add_argument("--workdir", required=True)
    args = config_args.parse_args(parser, ["--workdir", "w", f"--config={SYNTHETIC}", "--config.seed=5"])
    assert args.workdir == "w" and args.config.seed == 5
    with pytest.raises(SystemExit) as info:
        config_args.parse_args(argparse.ArgumentParser(prog="tool.py"), ["--config.seed=5"])
    assert info.value.code == 2 and "tool.py: error: --config=FILE is required" in capsys.readouterr().err

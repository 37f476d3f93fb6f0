"""One vocabulary across commands (issue 15 item 5): `--model`/`--weights` and `--img`/`--imgsz` in every
command that takes a model, read from the sub-parsers so a new command is covered; `--version`; one
`--device` default; one default member; run folders for val/export; unknown options answered by the
sub-command with a hint."""

from __future__ import annotations

import argparse
import inspect
import re
import shlex
from pathlib import Path

import pytest

from scaledyolo import __version__
from scaledyolo.cli import build_parser, main
from scaledyolo.models.spec import DEFAULT_MEMBER, MEMBERS
from scaledyolo.train.trainer import train

NO_MODEL = {"demo": "trains its own tiny model", "weights": "lists released files of a member",
            "convert": "its SOURCE is the file converted"}
SUBPARSERS = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse keeps them there)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}  # noqa: SLF001


@pytest.mark.parametrize("command", sorted(SUBPARSERS))
def test_model_and_weights_are_one_option_everywhere(command):
    opts = _options(SUBPARSERS[command])
    if command in NO_MODEL:
        assert "--model" not in opts and "--weights" not in opts, f"{command} takes a model now: drop it from NO_MODEL"
        return
    assert "--model" in opts and "--weights" in opts, command
    if command != "train":  # train: --model the architecture, --weights the start (both take any of the three)
        assert opts["--model"] is opts["--weights"], f"{command}: --model and --weights must be one option"


@pytest.mark.parametrize("command", sorted(SUBPARSERS))
def test_imgsz_is_an_alias_of_img(command):
    opts = _options(SUBPARSERS[command])
    if "--img" in opts:
        assert opts.get("--imgsz") is opts["--img"], command
    else:
        assert "--imgsz" not in opts


@pytest.mark.parametrize("command", sorted(SUBPARSERS))
def test_device_default_is_the_same_everywhere(command):
    opts = _options(SUBPARSERS[command])
    if "--device" in opts:
        assert opts["--device"].default is None, f"{command}: --device must default to None (the GPU if any)"


@pytest.mark.parametrize("spelling", ["--model", "--weights"])
def test_both_spellings_parse_to_the_same_value(spelling):
    parser = build_parser()
    for argv in (["val", spelling, "w.pt", "--imgsz", "320"], ["export", spelling, "w.pt", "--imgsz", "320"],
                 ["predict", spelling, "w.pt", "--source", "x", "--imgsz", "320"],
                 ["bench", spelling, "w.pt", "--imgsz", "320"]):
        args = parser.parse_args(argv)
        assert (args.weights, args.img) == ("w.pt", 320), argv


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"scaledyolo {__version__}"


def test_unknown_option_gets_the_subcommands_usage_and_a_hint(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--weights", "w.pt", "--source", "x", "--cnf", "0.3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "usage: scaledyolo predict" in err and "did you mean --conf?" in err and "--cnf" in err
    with pytest.raises(SystemExit):
        main(["val", "--weights", "w.pt", "--zzzzzz"])
    err = capsys.readouterr().err
    assert "usage: scaledyolo val" in err and "did you mean" not in err


def test_one_default_member_for_cli_and_python_train():
    assert DEFAULT_MEMBER in MEMBERS
    assert inspect.signature(train).parameters["model"].default is None  # None: DEFAULT_MEMBER unless --weights
    assert build_parser().parse_args(["data", "d.yaml"]).model is None  # commands.data falls back to DEFAULT_MEMBER


def test_export_writes_into_a_numbered_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for run in ("exp", "exp2"):
        assert main(["export", "--model", "yolov4-tiny", "--format", "torchscript", "--imgsz", "64"]) == 0
        assert (tmp_path / "runs" / "export" / run / "yolov4-tiny.torchscript").is_file()
        assert f"results in {(tmp_path / 'runs' / 'export' / run).relative_to(tmp_path)}" in capsys.readouterr().err


def test_readme_ultralytics_table_commands_parse():
    """Every `scaledyolo ...` command and every `--option` the "Coming from ultralytics" section names exists."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Coming from ultralytics", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"`scaledyolo ([a-z][^`]*)`", section)
    assert {c.split()[0] for c in commands} >= {"predict", "val", "train", "export", "bench", "info"}
    for command in commands:
        argv = [w if w != "MODEL" else "yolov4-tiny" for w in shlex.split(command)]
        build_parser().parse_args(argv)  # SystemExit (exit 2) on an unknown option or a missing value
    known = {s for p in SUBPARSERS.values() for s in _options(p)} | {"--version"}
    named = set(re.findall(r"`(--[a-z-]+)", section)) | set(re.findall(r"`(--[a-z-]+)[ `]", section))
    assert named and named <= known, sorted(named - known)

"""Weights files that would run code when unpickled are refused everywhere, and the code never runs.

Each malicious file's payload would create a marker file: `os.system("touch MARKER")` or
`open(MARKER, "w")`. They come as a `torch.save` zip, a legacy (pre-1.6) `torch.save` stream and a
bare pickle; every command that reads weights must refuse them with one clear line and exit 2.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scaledyolo
from scaledyolo.cli import build_parser
from scaledyolo.errors import UserError


class SystemCall:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class OpenFile:
    """Unpickling this creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


KINDS = ["torch-zip", "torch-legacy", "bare-pickle"]


def malicious(tmp_path: Path, kind: str) -> tuple[Path, Path, str]:
    """(weights file, marker it would create, the import the refusal must name)."""
    marker = tmp_path / f"pwned-{kind}"
    path = tmp_path / f"evil-{kind}.pt"
    if kind == "bare-pickle":
        path.write_bytes(pickle.dumps({"model": OpenFile(marker)}, protocol=2))
        return path, marker, "io.open"  # how pickle names the builtin open
    payload = {"epoch": 0, "model": SystemCall(marker), "weights": torch.zeros(3)}
    torch.save(payload, path, _use_new_zipfile_serialization=kind == "torch-zip")
    return path, marker, "os.system"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A one-image dataset so `val` gets as far as reading the weights."""
    import cv2

    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.jpg"), np.full((64, 64, 3), 127, np.uint8))
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images\nval: images\nnames: [thing]\n")
    return data


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaledyolo", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def commands(path: Path, tmp_path: Path, data: Path) -> dict[str, list[str]]:
    image = data.parent / "images" / "a.jpg"
    return {
        "convert": ["convert", str(path), "-o", str(tmp_path / "out.pt")],
        "info": ["info", str(path)],
        "val": ["val", "--weights", str(path), "--data", str(data), "--img", "64"],
        "predict": ["predict", "--weights", str(path), "--source", str(image)],
        "export": ["export", "--weights", str(path), "--output", str(tmp_path / "out.onnx")],
        "bench": ["bench", "--weights", str(path), "--img", "64", "--runs", "1", "--warmup", "0"],
        "data": ["data", str(data), "--model", str(path)],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_scaledyolo_load_refuses_and_runs_nothing(tmp_path, kind):
    path, marker, name = malicious(tmp_path, kind)
    with pytest.raises(UserError, match=f"refusing to load: it would import {name}"):
        scaledyolo.load(path)
    assert not marker.exists()


WEIGHT_COMMANDS = ["convert", "info", "val", "predict", "export", "bench", "data"]


def test_every_command_that_reads_weights_is_tested():
    """A new command taking weights (a `--weights` option, or a model file as its positional like `info MODEL`
    and `convert SOURCE`) joins WEIGHT_COMMANDS, or this fails: it cannot be left out of the refusal tests."""
    choices = build_parser()._subparsers._group_actions[0].choices
    reading = {name for name, sub in choices.items()
               if any(action.dest in ("model", "source") and not action.option_strings
                      or "--weights" in action.option_strings for action in sub._actions)}
    assert reading - {"train"} == set(WEIGHT_COMMANDS), sorted(reading)  # train: test_train_weights_refuses_...


@pytest.mark.parametrize("command", WEIGHT_COMMANDS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_command_refuses_and_runs_nothing(tmp_path, tiny_data, kind, command):
    assert command in build_parser()._subparsers._group_actions[0].choices, f"scaledyolo {command} is missing"
    path, marker, name = malicious(tmp_path, kind)
    done = cli(*commands(path, tmp_path, tiny_data)[command], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"error: {path}: refusing to load: it would import {name}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists()


def test_train_weights_refuses_and_runs_nothing(tmp_path, tiny_data):
    path, marker, name = malicious(tmp_path, "torch-zip")
    done = cli("train", "--model", "yolov4-tiny", "--data", str(tiny_data), "--weights", str(path), "--epochs", "1",
               "--img", "64", "--batch", "1", "--workers", "0", "--project", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"refusing to load: it would import {name}" in done.stderr and not marker.exists()


def test_disguised_payloads_inside_allowed_types_are_refused(tmp_path):
    """A pickle may hide its call anywhere (a tensor's rebuild arguments, a nested dict): still refused."""
    marker = tmp_path / "pwned"
    path = tmp_path / "nested.pt"
    torch.save({"optimizer": {"state": {0: {"momentum_buffer": [SystemCall(marker)]}}}}, path)
    with pytest.raises(UserError, match="refusing to load: it would import os.system"):
        scaledyolo.load(path)
    assert not marker.exists()

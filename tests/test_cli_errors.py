"""User mistakes give one clear `error:` line (exit 2) and no traceback, in every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # behave as on a machine without a GPU


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaledyolo", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def data_yaml(tmp_path: Path) -> Path:
    from scaledyolo.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path / "shapes", n_train=4, n_val=2, img_size=96, seed=1)


def test_missing_data_yaml(tmp_path):
    proc = run("train", "--model", "yolov4-tiny", "--data", "nowhere.yaml", "--epochs", "1", cwd=tmp_path)
    assert_one_line_error(proc, "nowhere.yaml")


def test_unparsable_data_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\nnames: {0: a\n")
    proc = run("val", "--weights", "yolov4-tiny", "--data", str(bad), "--img", "64", cwd=tmp_path)
    assert_one_line_error(proc, "bad.yaml")


def test_source_that_does_not_exist(tmp_path):
    proc = run("predict", "--weights", "yolov4-tiny", "--source", str(tmp_path / "no-such-dir"), cwd=tmp_path)
    assert_one_line_error(proc, "no-such-dir")


def test_unknown_model_name_lists_the_valid_ones(tmp_path, data_yaml):
    proc = run("train", "--model", "yolov4-huge", "--data", str(data_yaml), "--epochs", "1", cwd=tmp_path)
    assert_one_line_error(proc, "yolov4-huge", "yolov4-tiny", "yolov4-p7")


def test_random_bytes_as_weights(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    for command in (["info", str(junk)], ["predict", "--weights", str(junk), "--source", str(tmp_path)]):
        assert_one_line_error(run(*command, cwd=tmp_path), "junk.pt")


def test_cuda_requested_without_a_gpu(tmp_path, data_yaml):
    proc = run("train", "--model", "yolov4-tiny", "--data", str(data_yaml), "--epochs", "1", "--img", "64",
               "--device", "0", cwd=tmp_path)
    assert_one_line_error(proc, "CUDA")


def test_image_size_rounded_up_with_a_warning(tmp_path):
    proc = run("info", "yolov4-tiny", "--img", "100", "--json", cwd=tmp_path)
    assert proc.returncode == 0
    assert "using 128" in proc.stderr and '"img_size": 128' in proc.stdout


def test_verbose_shows_the_traceback(tmp_path):
    proc = run("info", "nothing-here.pt", "--verbose", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_weights_for_another_class_count_say_how_to_finetune(tmp_path, data_yaml):
    from scaledyolo import build_model
    from scaledyolo.train.checkpoint import save_checkpoint

    weights = tmp_path / "seven.pt"
    save_checkpoint(weights, build_model("yolov4-tiny", num_classes=7))
    proc = run("val", "--weights", str(weights), "--data", str(data_yaml), "--img", "64", cwd=tmp_path)
    assert_one_line_error(proc, "7", "--weights")
    assert torch.load(weights, weights_only=True)["format"] == "scaledyolo-v1"


def test_unreadable_file_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "a-folder.cfg"
    folder.mkdir()
    proc = run("convert", str(folder), "-o", str(tmp_path / "out.pt"), cwd=tmp_path)
    assert_one_line_error(proc, "a-folder.cfg")

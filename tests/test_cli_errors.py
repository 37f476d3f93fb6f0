"""User mistakes give one clear `error:` line (exit 2) and no traceback, in every command; what the
user must know (a file skipped, a size changed) reaches stderr even with Python warnings ignored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

# Behave as on a machine without a GPU, with Python warnings silenced as containers and CI often do:
# nothing the user must see may depend on `warnings`.
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
RACCOON = Path(__file__).parent / "fixtures" / "raccoon"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "ignore", "-m", "scaledyolo", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300)


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
    assert "warning: image size 100 is not a multiple of the max stride 32; using 128" in proc.stderr.splitlines()
    assert '"img_size": 128' in proc.stdout


def test_library_warnings_reach_stderr_without_any_logging_setup(tmp_path):
    """A Python user who configured nothing still sees the package's warnings (logging.lastResort)."""
    code = "from scaledyolo.models.spec import round_img_size; print(round_img_size(100, 32))"
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=ENV, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "128"
    assert "using 128" in proc.stderr


def _voc_with_two_damaged_jpegs(root: Path) -> tuple[Path, Path, Path]:
    """The raccoon fixture as VOC, one JPEG lacking only its end marker, one cut in its scan data."""
    shutil.copytree(RACCOON / "images", root / "images")
    shutil.copytree(RACCOON / "annotations", root / "annotations")
    no_end, cut = root / "images" / "raccoon-61.jpg", root / "images" / "raccoon-150.jpg"
    no_end.write_bytes(no_end.read_bytes()[:-2])
    data = cut.read_bytes()
    cut.write_bytes(data[: (data.index(b"\xff\xda") + len(data)) // 2])
    split = {"images": "images", "annotations": "annotations"}
    yml = root / "voc.yaml"
    yml.write_text(yaml.safe_dump({"path": str(root), "train": split, "val": split, "names": ["raccoon"]}))
    return yml, no_end, cut


def test_data_names_skipped_and_repaired_files_with_warnings_ignored(tmp_path):
    yml, no_end, cut = _voc_with_two_damaged_jpegs(tmp_path / "voc")
    proc = run("data", str(yml), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["train"]["images"] == 5  # 6 files, the cut one skipped, the other used
    summary = [line for line in proc.stderr.splitlines() if line.startswith("warning: data: ")]
    assert len(summary) == 1, proc.stderr
    assert f"file(s) skipped ({cut}" in summary[0] and f"used with a warning ({no_end}" in summary[0]
    assert f"{cut}: truncated JPEG" in proc.stderr  # the per-file reason, before the summary


def test_predict_train_val_end_with_the_skipped_files(tmp_path, data_yaml):
    """Each command's last stderr warning counts the skipped files and names them."""
    images = sorted((data_yaml.parent / "images" / "train").iterdir())
    broken = images[0].with_name("broken.jpg")
    broken.write_bytes(images[0].read_bytes()[:300])
    shutil.copy(data_yaml.parent / "labels" / "train" / f"{images[0].stem}.txt",
                data_yaml.parent / "labels" / "train" / "broken.txt")
    runs = {"predict": run("predict", "--weights", "yolov4-tiny", "--source", str(broken.parent), "--img", "64",
                           "--nosave", cwd=tmp_path),
            "train": run("train", "--model", "yolov4-tiny", "--data", str(data_yaml), "--epochs", "1", "--img", "64",
                         "--batch", "2", "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"),
                         "--noautoanchor", cwd=tmp_path)}
    runs["val"] = run("val", "--weights", str(tmp_path / "runs" / "exp" / "weights" / "last.pt"), "--data",
                      str(data_yaml), "--img", "64", "--split", "train", "--device", "cpu", cwd=tmp_path)
    for command, proc in runs.items():
        assert proc.returncode == 0, proc.stderr[-3000:]
        last = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")][-1]
        assert last.startswith(f"warning: {command}: 1 file(s) skipped ({broken})"), (command, proc.stderr[-2000:])


def test_verbose_shows_the_traceback(tmp_path):
    proc = run("info", "nothing-here.pt", "--verbose", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_weights_for_another_class_count_say_how_to_finetune(tmp_path, data_yaml):
    from scaledyolo import build_model
    from scaledyolo.interop.checkpoint import save_checkpoint

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

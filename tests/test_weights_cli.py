"""A name is not a model: the random-weights notice, `scaledyolo weights` and `--verify`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaledyolo.cli import main as cli_main
from scaledyolo.interop.released import RELEASED, identify, sha256_of
from scaledyolo.models.spec import MEMBERS

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY_WEIGHTS = SHARED / "weights" / "yolov4-tiny.weights"


def test_every_member_has_a_published_source_and_only_real_digests() -> None:
    assert {r.member for r in RELEASED} == set(MEMBERS)
    for r in RELEASED:
        assert r.url.startswith("https://") and r.source
        assert (r.size is None) == (r.sha256 is None)  # published together or not at all
        assert r.sha256 is None or (len(r.sha256) == 64 and int(r.sha256, 16) >= 0)
    assert [r.file for r in RELEASED if r.sha256] == ["yolov4-tiny.weights"]


def test_list_and_json(capsys) -> None:
    assert cli_main(["weights"]) == 0
    text = capsys.readouterr().out
    assert all(r.file in text and r.url in text for r in RELEASED) and "not published" in text
    assert cli_main(["weights", "yolov4-p6", "--json"]) == 0
    assert {r["file"] for r in json.loads(capsys.readouterr().out)} == {"yolov4-p6.pt", "yolov4-p6_.pt"}


def test_verify_streams_the_hash_and_names_the_file(tmp_path: Path, capsys) -> None:
    blob = bytes(range(256)) * 9000  # larger than one read chunk
    unknown = tmp_path / "mine.weights"
    unknown.write_bytes(blob)
    assert sha256_of(unknown, chunk=4096) == (len(blob), hashlib.sha256(blob).hexdigest())
    assert cli_main(["weights", "--verify", str(unknown)]) == 1
    assert "none of the known" in capsys.readouterr().out
    fake_tiny = tmp_path / "yolov4-tiny.weights"
    fake_tiny.write_bytes(blob)
    assert "NOT the released" in identify(fake_tiny)["verdict"]
    fake_csp = tmp_path / "yolov4-csp.weights"
    fake_csp.write_bytes(blob)
    assert "cannot be verified" in identify(fake_csp)["verdict"]
    assert cli_main(["weights", "--verify", str(tmp_path / "missing.weights")]) == 2


@pytest.mark.skipif(not TINY_WEIGHTS.is_file(), reason=f"the released weights are not in {SHARED}")
def test_verify_recognises_the_released_tiny(capsys) -> None:
    assert cli_main(["weights", "--verify", str(TINY_WEIGHTS), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["match"]["file"] == "yolov4-tiny.weights" and found["size"] == found["match"]["size"]


def test_member_name_as_weights_says_random_on_stderr(tmp_path: Path) -> None:
    """Each command whose output depends on the weights says it once, on stderr, in one line, whichever of
    --weights and --model names the member (one option); bench times the architecture and says nothing."""
    out = tmp_path / "m.torchscript"
    for args in (["export", spelling, "yolov4-tiny", "--format", "torchscript", "--img", "64", "--output", str(out)]
                 for spelling in ("--weights", "--model")):
        done = subprocess.run([sys.executable, "-m", "scaledyolo", *args], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        notices = [line for line in done.stderr.splitlines() if "RANDOM" in line]
        assert len(notices) == 1 and "scaledyolo weights" in notices[0] and "convert" in notices[0], done.stderr
        assert "RANDOM" not in done.stdout
    for spelling in ("--weights", "--model"):
        done = subprocess.run([sys.executable, "-m", "scaledyolo", "bench", spelling, "yolov4-tiny", "--img", "64",
                               "--runs", "1", "--warmup", "0"], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert done.returncode == 0 and "RANDOM" not in done.stderr, done.stderr

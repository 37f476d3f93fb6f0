"""The one atomic writer every output goes through: final content, permissions, nothing left on failure."""

import json
import os

import pytest

from scaledyolo.files import atomic_path, atomic_write_bytes, atomic_write_text, write_json


def test_writes_replace_the_target_readably_and_leave_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    assert atomic_write_bytes(target, b"one") == target
    assert atomic_write_bytes(str(target), b"two") == target
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o644
    assert atomic_write_text(tmp_path / "t.txt", "é\r\n").read_bytes() == "é\r\n".encode()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out.bin", "sub", "t.txt"]


def test_write_json_compact_by_default_and_indented_on_request(tmp_path):
    obj = {"a": [1, 2], "b": "x"}
    assert write_json(tmp_path / "c.json", obj).read_text() == '{"a":[1,2],"b":"x"}'
    assert write_json(tmp_path / "i.json", obj, indent=1).read_text() == json.dumps(obj, indent=1)


def test_failure_keeps_the_old_file_removes_the_temp_and_propagates(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_temp_is_hidden_beside_the_target_and_carries_the_suffix(tmp_path):
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.exists() and tmp.parent == tmp_path
        assert tmp.name.startswith(".plot.png.") and tmp.name.endswith(".tmp.png")
        assert not (tmp_path / "plot.png").exists()
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png" and not tmp.exists()


def test_umask_does_not_make_outputs_private(tmp_path):
    old = os.umask(0o077)
    try:
        path = atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644

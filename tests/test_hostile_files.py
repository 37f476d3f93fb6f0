"""Hostile files, one case per attack of issue 13: each is refused with one line (or skipped), never a crash.

Every case runs the real CLI in a child process, so a segfault shows as a signal and memory can be capped:
the child sets RLIMIT_AS (address space) before importing torch and reports its peak RSS, so the memory
bounds below are measured, not assumed.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import scaledyolo
from scaledyolo.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
import official_standins  # noqa: E402

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
ADDRESS_SPACE_LIMIT = 3 << 29  # 1.5 GiB: python + torch take ~0.65 GiB of it before any file is read
PEAK_RSS_LIMIT_MB = 1024  # "never more than 1 GiB of memory from a file under a few MB"

CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from scaledyolo.cli import main
try:
    code = main(sys.argv[1:])
finally:
    sys.stderr.write("peak_rss_kb=%d\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def capped_cli(*args: str, cwd: Path, limit: int = ADDRESS_SPACE_LIMIT) -> tuple[subprocess.CompletedProcess, int]:
    """Run `scaledyolo ARGS` with an address-space cap; returns the process and its peak RSS in MB."""
    proc = subprocess.run([sys.executable, "-c", CHILD.format(limit=limit), *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300)
    found = re.search(r"peak_rss_kb=(\d+)", proc.stderr)
    return proc, int(found.group(1)) // 1024 if found else -1


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, no escape sequence, exactly one `error: ` line holding each needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# -- loading ---------------------------------------------------------------------------------------------------
# Items 1, 2, 4 and 7 of issue 13: memory forgery through numpy, poisoning between loads, bounded memory from
# small files, clean errors for malformed model files.

PROTO2 = pickle.PROTO + b"\x02"


def g(module: str, name: str) -> bytes:
    """The GLOBAL opcode for module.name."""
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def s(text: str) -> bytes:
    """A short unicode string."""
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None,
              compression: int = zipfile.ZIP_STORED) -> Path:
    """A file in torch's zip layout (`archive/data.pkl`, `archive/data/KEY`) with a hand-written pickle."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def tensor_pickle(storage_class: str, key: str, numel: int, size: tuple, stride: tuple) -> bytes:
    """Pickle opcodes rebuilding one tensor (as torch writes it) over storage `key`; leaves it on the stack."""
    def tup(values: tuple) -> bytes:
        return pickle.MARK + b"".join(pickle.BININT + struct.pack("<i", v) for v in values) + pickle.TUPLE
    pid = pickle.MARK + s("storage") + g("torch", storage_class) + s(key) + s("cpu") + pickle.BININT + struct.pack(
        "<i", numel) + pickle.TUPLE + pickle.BINPERSID
    return (g("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + pid + pickle.BININT + struct.pack("<i", 0)
            + tup(size) + tup(stride) + pickle.NEWFALSE + g("collections", "OrderedDict") + pickle.EMPTY_TUPLE
            + pickle.REDUCE + pickle.TUPLE + pickle.REDUCE)


@pytest.fixture
def official(tmp_path):
    """The stand-in official code, importable as `models.yolo` while the test runs."""
    module = official_standins.install(tmp_path / "official_code")
    yield module
    official_standins.uninstall(tmp_path / "official_code")


def save_official(module, path: Path, half: bool = True, **yaml_changes) -> Path:
    """A small official-layout P5 checkpoint (depth 0.34, width 0.25) as train.py / strip_optimizer write it."""
    torch.manual_seed(0)
    model = module.Model(official_standins.official_yaml("p5", nc=3, depth=0.34, width=0.25))
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.1, 0.1)
    model.yaml.update(yaml_changes)
    if half:
        model.half()
    torch.save({"epoch": -1, "best_fitness": np.array([0.41]), "training_results": None, "model": model,
                "optimizer": None}, path)
    return path


# 1. no memory forgery through numpy

NUMPY_FORGERIES = {
    # np.ndarray((1,), 'O', b'AAAAAAAA'): an object array whose 8 raw bytes are read as a PyObject pointer
    "ndarray-object": g("numpy", "ndarray") + pickle.MARK + pickle.BININT1 + b"\x01" + pickle.TUPLE1 + s("O")
    + pickle.SHORT_BINBYTES + b"\x08" + b"A" * 8 + pickle.TUPLE + pickle.REDUCE,
    # the same through numpy's own pickle path: _reconstruct, then BUILD with an object dtype made by copy
    "reconstruct-object": g("numpy.core.multiarray", "_reconstruct") + pickle.MARK + g("numpy", "ndarray")
    + pickle.BININT1 + b"\x00" + pickle.TUPLE1 + pickle.SHORT_BINBYTES + b"\x01b" + pickle.TUPLE + pickle.REDUCE
    + pickle.MARK + pickle.BININT1 + b"\x01" + pickle.BININT1 + b"\x01" + pickle.TUPLE1
    + g("numpy", "dtype") + s("O8") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE
    + pickle.NEWFALSE + pickle.SHORT_BINBYTES + b"\x08" + b"A" * 8 + pickle.TUPLE + pickle.BUILD,
    # a float array whose raw bytes are fewer than its shape needs (numpy would read past the buffer)
    "reconstruct-short": g("numpy.core.multiarray", "_reconstruct") + pickle.MARK + g("numpy", "ndarray")
    + pickle.BININT1 + b"\x00" + pickle.TUPLE1 + pickle.SHORT_BINBYTES + b"\x01b" + pickle.TUPLE + pickle.REDUCE
    + pickle.MARK + pickle.BININT1 + b"\x01" + pickle.BININT + struct.pack("<i", 10 ** 6) + pickle.TUPLE1
    + g("numpy", "dtype") + s("f8") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE
    + pickle.NEWFALSE + pickle.SHORT_BINBYTES + b"\x08" + b"A" * 8 + pickle.TUPLE + pickle.BUILD,
}


CHILD_LOAD = r"""
import sys
from scaledyolo.errors import UserError
from scaledyolo.interop.unpickler import restricted_load
try:
    value = restricted_load(sys.argv[1])
    print(repr(value))  # reads the forged object (the pointer is dereferenced here, or when it is freed)
except UserError as exc:
    print(exc)
"""


@pytest.mark.parametrize("kind,needle", [("ndarray-object", "refusing to load: it would import numpy.ndarray"),
                                         ("reconstruct-object", "refusing to load: it would import numpy.dtype"),
                                         ("reconstruct-short", "numpy array bytes do not match its shape")])
def test_numpy_arrays_cannot_forge_objects(tmp_path, kind, needle):
    pkl = PROTO2 + pickle.EMPTY_DICT + s("best_fitness") + NUMPY_FORGERIES[kind] + pickle.SETITEM + pickle.STOP
    path = torch_zip(tmp_path / f"{kind}.pt", pkl)
    child = subprocess.run([sys.executable, "-c", CHILD_LOAD, str(path)], capture_output=True, text=True, env=ENV,
                           timeout=120)
    assert child.returncode == 0, f"the child died with {child.returncode}: the file forged a Python object"
    assert needle in child.stdout, child.stdout


def test_numeric_numpy_arrays_still_load_as_arrays(tmp_path):
    from scaledyolo.interop.unpickler import restricted_load

    value = {"best_fitness": np.array([0.41]), "grid": np.arange(12, dtype=np.int16).reshape(3, 4).T,
             "scalar": np.float32(2.5), "empty": np.zeros((0, 3))}
    path = tmp_path / "numbers.pt"
    torch.save(value, path)
    loaded = restricted_load(path)
    for key, array in value.items():
        assert type(loaded[key]) is type(array) and loaded[key].dtype == array.dtype, key
        np.testing.assert_array_equal(loaded[key], array)
    assert loaded["grid"].flags.writeable  # a copy of ours, not a view of the file's bytes


# 2. no poisoning between loads: a refused file changes nothing a later load sees

def _refused_after(prefix: bytes) -> bytes:
    """Opcodes `prefix`, then a global the allow-list refuses (so the file as a whole is refused)."""
    return PROTO2 + prefix + pickle.POP + g("os", "system") + pickle.STOP


POISONS = {
    "storage-dtype": _refused_after(g("torch", "HalfStorage") + pickle.EMPTY_DICT + s("dtype")
                                    + g("torch", "bfloat16") + pickle.SETITEM + pickle.BUILD),
    "storage-slots": _refused_after(g("torch", "HalfStorage") + pickle.NONE + pickle.EMPTY_DICT + s("dtype")
                                    + g("torch", "bfloat16") + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD),
    "function-defaults": _refused_after(g("torch._utils", "_rebuild_parameter") + pickle.NONE + pickle.EMPTY_DICT
                                        + s("__kwdefaults__") + pickle.EMPTY_DICT + pickle.SETITEM + pickle.TUPLE2
                                        + pickle.BUILD),
    "standin-class": _refused_after(g("models.common", "Conv") + pickle.NONE + pickle.EMPTY_DICT + s("qualname")
                                    + s("models.yolo.Detect") + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD),
}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_refused_file_does_not_change_the_next_load(official, tmp_path):
    good = save_official(official, tmp_path / "good.pt", half=True)
    before = _weights(scaledyolo.load(good))
    for name, pkl in POISONS.items():
        with pytest.raises(UserError) as refused:
            scaledyolo.load(torch_zip(tmp_path / f"{name}.pt", pkl))
        assert "refusing to load" in str(refused.value), (name, str(refused.value))
    after = _weights(scaledyolo.load(good))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), f"{key} changed after loading refused files"


def test_build_only_on_objects_of_this_load(tmp_path):
    """BUILD on a global (not an object the file made) is refused even when the file goes on to be valid."""
    for name, pkl in POISONS.items():
        valid_end = pkl.replace(pickle.POP + g("os", "system"), b"")
        with pytest.raises(UserError, match="refusing to load"):
            scaledyolo.load(torch_zip(tmp_path / f"{name}-quiet.pt", valid_end))

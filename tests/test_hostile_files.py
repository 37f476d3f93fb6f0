"""Hostile files, one case per attack of issue 13: each is refused with one line (or skipped), never a crash.

Every case runs the real CLI in a child process, so a segfault shows as a signal and memory can be capped:
the child sets RLIMIT_AS (address space) before importing torch and reports its peak RSS, so the memory
bounds below are measured, not assumed. Cases of outputs, images and data call the library where a
refusal is all there is to see, and a child process wherever OpenCV could crash the interpreter.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scaledyolo
from scaledyolo.data import formats
from scaledyolo.data.checks import scan_split
from scaledyolo.data.image_decode import ImageError, decode_image
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.image_header import ENV_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS, image_size
from scaledyolo.errors import UserError
from scaledyolo.files import atomic_write_bytes, check_outputs, display_path, plain_name
from scaledyolo.export import convert, export
from scaledyolo.interop.darknet import cfg_text, export_darknet, save_weights
from scaledyolo.models.yolo import build_model
from scaledyolo.predict import run_predict
from scaledyolo.runs import new_run_dir
from scaledyolo.interop.checkpoint import save_checkpoint
from scaledyolo.train.trainer import train

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
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a large pytest process would
    # report the parent's size; VmHWM belongs to this process's own address space.
    with open("/proc/self/status") as status:
        hwm = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write("peak_rss_kb=%s\n" % hwm)
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
    errors = {}
    for name, pkl in POISONS.items():
        with pytest.raises(UserError) as refused:
            scaledyolo.load(torch_zip(tmp_path / f"{name}.pt", pkl))
        errors[name] = str(refused.value)
    after = _weights(scaledyolo.load(good))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), f"{key} changed after loading refused files"
    for name, error in errors.items():
        assert "refusing to load: it would set the state of" in error or "os.system" in error, (name, error)


def test_build_only_on_objects_of_this_load(tmp_path):
    """BUILD on a global (not an object the file made) is refused even when the file goes on to be valid."""
    for name, pkl in POISONS.items():
        valid_end = pkl.replace(pickle.POP + g("os", "system"), b"")
        with pytest.raises(UserError, match="refusing to load"):
            scaledyolo.load(torch_zip(tmp_path / f"{name}-quiet.pt", valid_end))


# 4. bounded memory from small files: each is refused by a size check, and the child's peak RSS proves it

def _detect_only_official(module, path: Path, grid: torch.Tensor) -> Path:
    """A few-KB official-format file: a Model whose layer list is one Detect with the given anchor_grid."""
    model = module.Model(official_standins.official_yaml("p5", nc=1, depth=0.34, width=0.25))
    detect = model.model[-1]
    detect.anchor_grid = grid
    model.model = torch.nn.Sequential(detect)
    torch.save({"model": model}, path)
    return path


def _our_checkpoint(path: Path, **spec_changes) -> Path:
    """A scaledyolo checkpoint of yolov4-tiny at 1 class whose spec entry is changed (weights left as they are)."""
    from scaledyolo.interop.checkpoint import make_checkpoint

    ckpt = make_checkpoint(scaledyolo.build_model("yolov4-tiny", num_classes=1))
    ckpt["state_dict"] = {"layers.0.conv.weight": torch.zeros(1)}  # a few bytes: the file stays small
    ckpt["spec"].update(spec_changes)
    for key in [k for k, v in spec_changes.items() if v is None]:
        del ckpt["spec"][key]
    torch.save(ckpt, path)
    return path


def _lie_about_sizes(path: Path) -> Path:
    """Rewrite each central-directory record of a zip so it declares its compressed size as its size."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        data[pos + 24:pos + 28] = data[pos + 20:pos + 24]  # uncompressed size := compressed size
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))
    return path


BOMB = 64 << 20  # bytes of zeros: deflate makes 64 KB of them, a ratio of 1000


def memory_cases(tmp_path: Path, module) -> dict[str, tuple[Path, str]]:
    """name -> (hostile file, what its one-line error must say)."""
    zero = torch.zeros(1)
    bomb_pkl = PROTO2 + pickle.BINBYTES8 + struct.pack("<Q", BOMB) + bytes(BOMB) + pickle.STOP
    storage_pkl = PROTO2 + tensor_pickle("FloatStorage", "0", BOMB // 4, (BOMB // 4,), (1,)) + pickle.STOP
    return {
        "stride-0-anchor-grid": (_detect_only_official(module, tmp_path / "grid.pt",
                                                       zero.expand(3, 1, 4, 3000, 3000, 2)),
                                 "more elements (216000000) than its storage (1)"),
        "deflated-storage": (torch_zip(tmp_path / "storage-bomb.pt", storage_pkl, {"0": bytes(BOMB)},
                                       zipfile.ZIP_DEFLATED), "compression ratio limit 10"),
        "deflated-data-pkl": (torch_zip(tmp_path / "pkl-bomb.pt", bomb_pkl, compression=zipfile.ZIP_DEFLATED),
                              "compression ratio limit 10"),
        "lying-zip-sizes": (_lie_about_sizes(torch_zip(tmp_path / "liar.pt", bomb_pkl,
                                                       compression=zipfile.ZIP_DEFLATED)), "damaged"),
        "legacy-storage-count": (tmp_path / "legacy.pt", "the file ends inside a storage"),
        "spec-width-8": (_our_checkpoint(tmp_path / "width8.pt", width=8.0), "width=8.0 must be a number"),
        "spec-width-3.9": (_our_checkpoint(tmp_path / "width39.pt", width=3.9), "weights do not fit the model spec"),
        "spec-img-20000": (_our_checkpoint(tmp_path / "img.pt", img_size=20000), "img_size=20000 must be"),
        "official-width-8": (save_official(module, tmp_path / "wm8.pt", width_multiple=8.0), "width_multiple"),
        "official-width-3.9": (save_official(module, tmp_path / "wm39.pt", width_multiple=3.9), "has shape"),
    }


def _legacy_with_huge_storage(path: Path) -> Path:
    """A legacy torch.save stream whose storage header declares 2**40 elements (the file holds 12 bytes)."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    count = struct.pack("<q", 3)
    pos = data.rfind(count)
    path.write_bytes(data[:pos] + struct.pack("<q", 1 << 40) + data[pos + 8:])
    return path


def test_small_files_cannot_take_much_memory(official, tmp_path):
    cases = memory_cases(tmp_path, official)
    _legacy_with_huge_storage(cases["legacy-storage-count"][0])
    for name, (path, needle) in cases.items():
        assert path.stat().st_size < 8 << 20, (name, path.stat().st_size)
        proc, peak_mb = capped_cli("info", str(path), cwd=tmp_path)
        line = assert_one_line_error(proc, str(path))
        assert needle in line, (name, line)
        assert 0 < peak_mb < PEAK_RSS_LIMIT_MB, (name, peak_mb)


def huge_cfg(filters: int) -> str:
    """About 300 bytes of darknet cfg: three 3x3 convolutions of `filters` channels, a maxpool, one [yolo]."""
    conv = f"[convolutional]\nfilters={filters}\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
    return ("[net]\nwidth=416\nheight=416\nchannels=3\n" + conv + "[maxpool]\nsize=2\nstride=2\n" + conv + conv
            + "[convolutional]\nfilters=18\nsize=1\nactivation=linear\n"
            + "[yolo]\nmask=0,1,2\nanchors=10,13,16,30,33,23\nclasses=1\n")


def laughs(levels: int, tail: str) -> str:
    """Nested aliases: level k is a list of nine references to level k-1, so the last one names 9**levels values."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]" for k in range(1, levels)]
    return "\n".join(lines) + "\n" + tail.replace("LAST", f"*l{levels - 1}") + "\n"


BILLION_LAUGHS = laughs(9, "train: LAST\nval: LAST\nnames: LAST")  # 9**9 = 387M values in 0.5 KB


def test_darknet_cfg_and_yaml_bombs_are_refused_before_they_grow(tmp_path):
    cfg, wide = tmp_path / "huge.cfg", tmp_path / "wide.cfg"
    cfg.write_text(huge_cfg(4096))  # 302M parameters
    wide.write_text(huge_cfg(6600))
    data = tmp_path / "laughs.yaml"
    data.write_text(BILLION_LAUGHS)
    assert cfg.stat().st_size < 400 and data.stat().st_size < 1000
    for args, path, needle in ((("info", str(cfg)), cfg, "parameters, more than the limit of 300,000,000"),
                               (("info", str(wide)), wide, "filters=6600 is out of range (1 to 4096)"),
                               (("data", str(data)), data, "nested aliases")):
        proc, peak_mb = capped_cli(*args, cwd=tmp_path)
        line = assert_one_line_error(proc, str(path))
        assert needle in line, line
        assert 0 < peak_mb < PEAK_RSS_LIMIT_MB, (args, peak_mb)


def test_darknet_weights_length_is_checked_before_the_model_is_built(tmp_path):
    """A wrong-length .weights beside a large cfg: the error comes from the cfg's arithmetic, not a built model."""
    cfg = tmp_path / "big.cfg"
    cfg.write_text(huge_cfg(3800))  # 260M parameters: within the limit, 1.04 GB if built
    (tmp_path / "big.weights").write_bytes(struct.pack("<3iq", 0, 2, 5, 0) + bytes(4000))
    needs = 20 + 4 * ((3 * 9 + 1) * 3800 + 2 * (3800 * 9 + 1) * 3800 + (3800 + 1) * 18)
    proc, peak_mb = capped_cli("info", str(cfg), cwd=tmp_path)
    assert_one_line_error(proc, "big.weights", f"the cfg needs {needs} bytes, found 4020")
    assert 0 < peak_mb < PEAK_RSS_LIMIT_MB, peak_mb


@pytest.mark.parametrize("reader", ["hyp", "spec"])
def test_every_yaml_reader_refuses_alias_bombs(tmp_path, reader):
    from scaledyolo.hyp import load_hyp
    from scaledyolo.models.spec import load_spec

    path = tmp_path / f"{reader}.yaml"
    path.write_text(laughs(7, "lr0: LAST"))  # 9**7 = 4.8M values: harmless for safe_load, but past the limit
    with pytest.raises(UserError, match="nested aliases"):
        load_hyp(path) if reader == "hyp" else load_spec(path)


# 7. clean errors: one `error: FILE: what` line, exit 2, no traceback, no escape sequence

def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """`scaledyolo ARGS` in this process (fast), as a CompletedProcess for assert_one_line_error."""
    from scaledyolo.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


TINY_CFG = (Path(__file__).resolve().parents[2] / "shared" / "weights" / "yolov4-tiny.cfg")


def _cfg_with(tmp_path: Path, name: str, old: str, new: str) -> Path:
    if not TINY_CFG.is_file():
        pytest.skip(f"{TINY_CFG} is not here (the shared folder holds the released yolov4-tiny.cfg)")
    text = TINY_CFG.read_text()
    assert old in text
    path = tmp_path / f"{name}.cfg"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("change,needle", [
    ({"spec": None}, "it has no 'spec' entry"),
    ({"stages": 0}, "stages=0 must be an integer from 1 to 7"),
    ({"stages": 64}, "stages=64 must be an integer from 1 to 7"),
    ({"arch": "resnet"}, "arch='resnet' is not an architecture"),
    ({"num_classes": 0}, "num_classes=0"),
    ({"anchors": [[1.0, 2.0, 3.0]]}, "anchors="),
    ({"name": "\x1b[31mred\x1b[0m", "width": -1.0}, "width=-1.0"),
])
def test_bad_checkpoint_specs_are_one_line(tmp_path, capsys, change, needle):
    path = tmp_path / "bad.pt"
    if change == {"spec": None}:
        from scaledyolo.interop.checkpoint import make_checkpoint

        ckpt = make_checkpoint(scaledyolo.build_model("yolov4-tiny", num_classes=1))
        del ckpt["spec"]
        torch.save(ckpt, path)
    else:
        _our_checkpoint(path, **change)
    assert_one_line_error(run_main(capsys, "info", str(path)), str(path), needle)


def test_official_files_with_odd_layer_keys_are_one_line(official, tmp_path, capsys):
    torch.manual_seed(0)
    model = official.Model(official_standins.official_yaml("p5", nc=1, depth=0.34, width=0.25))
    model.model._modules = type(model.model._modules)(
        ("x" if key == "3" else key, value) for key, value in model.model._modules.items())
    torch.save({"model": model}, tmp_path / "key.pt")
    model = official.Model(official_standins.official_yaml("p5", nc=1, depth=0.34, width=0.25))
    model.model[4].f = "abc"
    torch.save({"model": model}, tmp_path / "f.pt")
    for name, needle in (("key.pt", "keys that are not layer numbers"), ("f.pt", "layer 4 reads 'abc'")):
        assert_one_line_error(run_main(capsys, "info", str(tmp_path / name)), name, needle)


@pytest.mark.parametrize("name,old,new,needle", [
    ("upsample-0", "[upsample]\nstride=2", "[upsample]\nstride=0", "[upsample] stride=0 is out of range (1 to 8)"),
    ("groups-0", "groups=2", "groups=0", "[route] groups=0 is out of range (1 to 4096)"),
    ("size-negative", "size=3", "size=-3", "[convolutional] size=-3 is out of range (1 to 15)"),
    ("escape", "[maxpool]", "[max\x1b[2Jpool]", "unknown or unsupported layer type [max\\x1b[2jpool]"),
])
def test_bad_cfg_values_are_one_line(tmp_path, capsys, name, old, new, needle):
    path = _cfg_with(tmp_path, name, old, new)
    assert_one_line_error(run_main(capsys, "info", str(path)), str(path), needle)


def test_a_full_disk_while_saving_is_one_line(tmp_path, capsys, monkeypatch):
    """Every write to the checkpoint's temp file fails with ENOSPC: one line, and nothing is left behind."""
    import errno

    from scaledyolo.interop import checkpoint

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "open", lambda path, mode: FullDisk(path, mode), raising=False)
    out = tmp_path / "out" / "tiny.pt"
    proc = run_main(capsys, "convert", "yolov4-tiny", "-o", str(out))
    assert_one_line_error(proc, str(out), "cannot write it (No space left on device)")
    assert list(out.parent.iterdir()) == []  # no temp file, no half-written checkpoint


# -- outputs, images and data ----------------------------------------------------------------------------------

SHARED = Path(__file__).resolve().parents[2] / "shared"
BAD_NAME = b"bad\xff\xfe name.jpg"  # not UTF-8: Python hands it over with lone surrogates


def io_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaledyolo", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or ENV, timeout=300, errors="backslashreplace")


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, exactly one `error: ` line holding each needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes of valid PNG structure whose header declares width x height RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4000))
            + chunk(b"IEND", b""))


def picture(path: Path | bytes, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def yolo_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, stem in enumerate(["a", "b"]):
        picture(root / "images" / f"{stem}.jpg", i)
        (root / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images\nval: images\nnames: [thing]\n")
    return data


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model("yolov4-tiny", num_classes=1))
    return path


# 3. A name read from a file never chooses where we write.

@pytest.mark.parametrize("hostile", ["../../escaped", "/tmp/scaledyolo-escaped", "..", "a/b"])
def test_a_spec_name_from_a_checkpoint_never_leaves_the_output_folder(tmp_path, hostile):
    model = build_model("yolov4-tiny", num_classes=1)
    model.spec = model.spec.replace(name=hostile)
    weights = tmp_path / "in" / "hostile.pt"
    weights.parent.mkdir()
    save_checkpoint(weights, model)
    out = tmp_path / "in" / "deep" / "out"
    before = set(Path("/tmp").glob("scaledyolo-escaped*"))
    files = export(weights, format="darknet", output=out)
    assert [f.parent for f in files] == [out, out] and [f.name for f in files] == ["hostile.cfg", "hostile.weights"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "in/deep/out/hostile.cfg", "in/deep/out/hostile.weights", "in/hostile.pt"]
    assert set(Path("/tmp").glob("scaledyolo-escaped*")) == before
    with pytest.raises(UserError, match="plain file name"):  # the library call without a stem checks the name
        export_darknet(model, tmp_path / "lib")
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "/abs", "x\0y", "x\ny", "n" * 256])
def test_run_names_are_plain_names(tmp_path, name):
    with pytest.raises(UserError, match="plain file name"):
        new_run_dir(tmp_path / "runs", name)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert plain_name("exp-1.b") == "exp-1.b"


def test_train_refuses_a_run_name_before_reading_any_data(tmp_path):
    with pytest.raises(UserError, match="'..' is a folder reference"):
        train(data=str(tmp_path / "nowhere.yaml"), project=tmp_path / "runs", name="..", epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_coco_file_names_cannot_reach_outside_the_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    picture(tmp_path / "images" / "ok.jpg")
    picture(tmp_path / "secret.jpg")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "ok.jpg"}, {"id": 2, "file_name": "../secret.jpg"},
                                          {"id": 3, "file_name": str(tmp_path / "secret.jpg")}],
                               "categories": [{"id": 1, "name": "thing"}], "annotations": []}))
    split = formats.read_coco(tmp_path / "images", ann)
    assert [s.image.name for s in split.samples] == ["ok.jpg"]
    assert len(split.problems) == 2 and all("outside the images folder" in p for p in split.problems)


# 5. Hostile images are samples to skip, not crashes.

def test_header_sizes_match_what_opencv_decodes_in_every_accepted_format():
    rgb = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    cases = [(".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".png", []), (".bmp", []), (".tiff", []),
             (".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 1]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 50]),
             (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".ppm", []), (".ppm", [cv2.IMWRITE_PXM_BINARY, 0]),
             (".pgm", []), (".pam", []), (".pfm", []), (".ras", []), (".gif", [])]
    for suffix, params in cases:
        ok, buf = cv2.imencode(suffix, rgb[..., 0] if suffix == ".pgm" else rgb, params)
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        assert image_size(buf.tobytes()) == (decoded.shape[1], decoded.shape[0]), suffix
    for path in sorted((SHARED / "images").glob("*.jpg")):  # real photos with EXIF segments before the frame
        data = path.read_bytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert image_size(data) == (decoded.shape[1], decoded.shape[0])


@pytest.mark.parametrize("side", [40000, 20000])  # past OpenCV's own 2^30 limit (it raised), and below it (decoded)
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, side):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(side, side))
    assert bomb.stat().st_size < 600
    with pytest.raises(ImageError, match=f"{side} x {side}.*more than the limit of {MAX_IMAGE_PIXELS:,}"):
        decode_image(bomb, check=True)


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.jpg"
    picture(path)
    monkeypatch.setenv(ENV_MAX_IMAGE_PIXELS, "1000")
    with pytest.raises(ImageError, match="64 x 48 = 3,072 pixels, more than the limit of 1,000"):
        decode_image(path)
    monkeypatch.setenv(ENV_MAX_IMAGE_PIXELS, "0")
    assert decode_image(path).shape == (48, 64, 3)
    monkeypatch.setenv(ENV_MAX_IMAGE_PIXELS, "lots")
    with pytest.raises(UserError, match=ENV_MAX_IMAGE_PIXELS):
        decode_image(path)


def test_formats_whose_size_we_cannot_read_first_are_not_decoded(tmp_path):
    ok, jp2 = cv2.imencode(".jp2", np.zeros((64, 64, 3), np.uint8))  # OpenCV decodes it, we cannot measure it
    assert cv2.imdecode(jp2, cv2.IMREAD_COLOR) is not None
    for name, data in [("x.jp2", jp2.tobytes()), ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 8),
                       ("x.jpg", b"\xff\xd8\xff\xe0\0\x10JFIF"), ("x.bmp", b"BM" + b"\0" * 10)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match="supported format" if name == "x.jp2" else "damaged"):
            decode_image(tmp_path / name)


def test_data_checks_skip_a_bomb_and_take_a_non_utf8_name(tmp_path):
    data = yolo_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "images" / "bomb.png").write_bytes(png_declaring(40000, 40000))
    (tmp_path / "ds" / "labels" / "bomb.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    picture(os.fsencode(tmp_path / "ds" / "images") + b"/" + BAD_NAME)
    with open(os.fsencode(tmp_path / "ds" / "labels") + b"/" + BAD_NAME[:-4] + b".txt", "w") as f:
        f.write("0 0.5 0.5 0.2 0.2\n")
    split = scan_split(load_data_config(data), "train", use_cache=True)
    assert len(split.image_files) == 3 and any(os.fsencode(p).endswith(BAD_NAME) for p in split.image_files)
    (problem,) = split.problems
    assert problem["file"].endswith("bomb.png") and "too large" in problem["problem"]
    assert scan_split(load_data_config(data), "train").image_files == split.image_files  # from the cache
    proc = io_cli("data", str(data), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bomb.png: image too large" in proc.stdout


def test_predict_over_a_hostile_folder_skips_and_never_crashes(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    picture(folder / "good.jpg")
    picture(os.fsencode(folder) + b"/" + BAD_NAME)
    (folder / "bomb.png").write_bytes(png_declaring(40000, 40000))
    (folder / "junk.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(200))
    (folder / "clip.mp4").write_bytes(b"not a video")
    proc = io_cli("predict", "--weights", "yolov4-tiny", "--source", str(folder), "--img", "64", "--save-dir",
                  str(tmp_path / "out"), "--save-txt", "--json", cwd=tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert json.loads(proc.stdout)["images"] == 2
    for skipped in ("bomb.png", "junk.jpg", "clip.mp4"):
        assert skipped in proc.stderr
    written = sorted(os.listdir(os.fsencode(tmp_path / "out")))
    assert written == sorted([BAD_NAME, b"good.jpg", b"labels"])


def test_drawing_text_opencv_cannot_encode_does_not_crash():
    code = ("import numpy as np; from scaledyolo.drawing import draw_boxes, tile_batch\n"
            "out = draw_boxes(np.zeros((64, 64, 3), np.uint8), [[4, 4, 40, 40]], [0], [0.9], ['bad\\udcff name'])\n"
            "tile_batch(np.zeros((1, 3, 32, 32), np.uint8), np.zeros((0, 6)), paths=['x/bad\\udcff.jpg'])\n"
            "print(int(out.sum() > 0))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "1", (proc.returncode, proc.stderr[-2000:])
    assert display_path(os.fsdecode(BAD_NAME)) == "bad\\xff\\xfe name.jpg"


# 6. Outputs never destroy inputs.

@pytest.fixture
def darknet_pair(tmp_path) -> Path:
    model = build_model("yolov4-tiny", num_classes=1)
    cfg = tmp_path / "a.cfg"
    cfg.write_text(cfg_text(model))
    save_weights(model, tmp_path / "a.weights")
    return cfg


def test_convert_refuses_to_write_over_its_inputs(darknet_pair):
    folder = darknet_pair.parent
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for output in ("a.weights", "a.cfg", "./sub/../a.weights"):
        with pytest.raises(UserError, match="would overwrite the input"):
            convert(darknet_pair, folder / "a.weights", output=folder / output)
    os.link(folder / "a.weights", folder / "hardlink.pt")
    (folder / "symlink.pt").symlink_to(folder / "a.weights")
    for output in ("hardlink.pt", "symlink.pt"):
        with pytest.raises(UserError, match="would overwrite the input"):
            convert(darknet_pair, output=folder / output)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before


def test_export_refuses_to_write_over_its_inputs(tmp_path, tiny_checkpoint, darknet_pair):
    weights = tmp_path / "best.pt"
    shutil.copy(tiny_checkpoint, weights)
    data = weights.read_bytes()
    with pytest.raises(UserError, match="would overwrite the input"):
        export(weights, format="onnx", output=weights)
    with pytest.raises(UserError, match="would overwrite the input"):
        export(weights, format="torchscript", output=tmp_path / "x" / ".." / "best.pt")
    assert weights.read_bytes() == data
    cfg_before = darknet_pair.read_text()
    with pytest.raises(UserError, match="would overwrite the input"):  # darknet export into the source folder
        export(darknet_pair, format="darknet", output=darknet_pair.parent)
    assert darknet_pair.read_text() == cfg_before


def test_other_existing_outputs_are_replaced_and_said_so(tmp_path, caplog):
    old = atomic_write_bytes(tmp_path / "old.onnx", b"old")
    with caplog.at_level("WARNING", logger="scaledyolo.files"):
        check_outputs([old, tmp_path / "new.onnx"], [tmp_path / "in.pt"])
    assert [r.getMessage() for r in caplog.records] == [f"replacing {old}"]
    with pytest.raises(UserError, match="existing folder"):
        check_outputs([tmp_path], [])


def test_predict_save_dir_holding_the_source_pictures_is_refused(tmp_path):
    picture(tmp_path / "a.jpg")
    before = (tmp_path / "a.jpg").read_bytes()
    with pytest.raises(UserError, match="--save-dir holds the source pictures"):
        run_predict("yolov4-tiny", str(tmp_path), save_dir=str(tmp_path), img=64, progress=False)
    with pytest.raises(UserError, match="would overwrite the input"):
        run_predict("yolov4-tiny", str(tmp_path / "a.jpg"), save_json=str(tmp_path / "a.jpg"), nosave=True,
                    save_dir=str(tmp_path / "out"), img=64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"] and (tmp_path / "a.jpg").read_bytes() == before


# 8. Leftovers and slow paths.

WRITER = """
import sys, time
from scaledyolo.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_an_atomic_write_leaves_no_temp_file(tmp_path, signum):
    target = tmp_path / "model.onnx"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                             stderr=subprocess.DEVNULL, env=ENV)
    assert child.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.iterdir())) == 1  # the hidden temp file
    child.send_signal(signum)
    code = child.wait(timeout=60)
    assert code != 0
    if signum == signal.SIGTERM:
        assert code == -signal.SIGTERM  # still dies of the signal, as without our handler
    assert list(tmp_path.iterdir()) == []


def test_the_cleanup_handler_is_installed_only_while_writing(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    from scaledyolo.files import atomic_path

    with atomic_path(tmp_path / "x") as tmp:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        tmp.write_bytes(b"x")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_boxes_per_image_are_capped_and_reported(tmp_path):
    with pytest.raises(formats.LabelError, match=f"more than {formats.MAX_BOXES_PER_IMAGE} boxes"):
        formats.parse_yolo_labels("0 0.5 0.5 0.1 0.1\n" * 10**6)
    assert len(formats.parse_yolo_labels("0 0.5 0.5 0.1 0.1\n" * formats.MAX_BOXES_PER_IMAGE)) == \
        formats.MAX_BOXES_PER_IMAGE
    data = yolo_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n" * 10**5)
    split = scan_split(load_data_config(data), "train", use_cache=False)
    assert [Path(p).name for p in split.image_files] == ["b.jpg"]
    assert "more than 3000 boxes" in split.problems[0]["problem"]


def test_a_huge_class_is_reported_as_written():
    with pytest.raises(formats.LabelError, match=r"line 2: class 1e20 out of range") as info:
        formats.parse_yolo_labels("0 0.5 0.5 0.1 0.1\n1e20 0.5 0.5 0.1 0.1\n")
    assert "-9223372036854775808" not in str(info.value)


def test_coco_crowd_flags_and_orphan_annotations_are_reported(tmp_path):
    (tmp_path / "images").mkdir()
    for stem in ("a", "b"):
        picture(tmp_path / "images" / f"{stem}.jpg")
    box = [4, 4, 10, 10]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "iscrowd": "no"},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": box, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": box, "iscrowd": 1},
            {"id": 4, "image_id": 99, "category_id": 1, "bbox": box},
            {"id": 5, "image_id": "2", "category_id": 1, "bbox": box}]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
                               "categories": [{"id": 1, "name": "thing"}], "annotations": anns}))
    split = formats.read_coco(tmp_path / "images", ann)
    a, b = split.samples
    assert "iscrowd must be 0 or 1, got 'no'" in a.problem
    assert b.problem is None and len(b.classes) == 1  # the crowd box is left out, as in the official training
    assert split.problems == ["2 annotation(s) for image ids not in 'images' ignored (e.g. image_id 99)"]
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: {{images: images, annotations: ann.json}}\n"
                    f"val: {{images: images, annotations: ann.json}}\n")
    problems = [p["problem"] for p in scan_split(load_data_config(data), "train", use_cache=False).problems]
    assert any("image ids not in 'images'" in p for p in problems) and any("iscrowd" in p for p in problems)

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
    from scaledyolo.train.checkpoint import make_checkpoint

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
        from scaledyolo.train.checkpoint import make_checkpoint

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

    from scaledyolo.train import checkpoint

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "open", lambda path, mode: FullDisk(path, mode), raising=False)
    out = tmp_path / "out" / "tiny.pt"
    proc = run_main(capsys, "convert", "yolov4-tiny", "-o", str(out))
    assert_one_line_error(proc, str(out), "cannot write it (No space left on device)")
    assert list(out.parent.iterdir()) == []  # no temp file, no half-written checkpoint

"""The restricted unpickler across the dangerous names, and exactly which globals it resolves.

`test_security.py` covers the classic `os.system` / `open` payloads through every command. Here:
each name an attacker would reach for (code evaluation, process spawning, attribute walking,
nested unpicklers, module imports) in a `torch.save`-style zip and as a bare pickle, each with a
marker file its payload would create; and an enumeration of find_class over every builtin, every
public name of os/sys/subprocess/torch/numpy and the allow-list itself, asserting that the names
that resolve are the reviewed allow-list below and nothing else.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import functools
import importlib
import io
import operator
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import scaledyolo
from scaledyolo.errors import UserError
from scaledyolo.interop import unpickler
from scaledyolo.interop.unpickler import RestrictedUnpickler, restricted_load

# The reviewed allow-list: every global a foreign checkpoint may name. Loosening the unpickler
# (a new entry, a fallback to real lookups) makes the enumeration below differ from this set.
REVIEWED_DATA = {
    "_codecs.encode", "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
    "collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.slice", "builtins.complex",
    "builtins.bytes",  # only bytes() with no argument: how numpy pickles an empty array (an argument is refused)
    "torch.Size", "copyreg._reconstructor",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype",
}
REVIEWED_STORAGES = {f"torch.{n}Storage" for n in (
    "Float", "Half", "Double", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")}
REVIEWED_DTYPES = {f"torch.{n}" for n in (
    "float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}
REVIEWED_STANDINS = {
    "models.yolo.Model", "models.yolo.Detect", "models.common.Conv", "models.common.Bottleneck",
    "models.common.BottleneckCSP", "models.common.BottleneckCSP2", "models.common.SPPCSP", "models.common.Concat",
    "mish_cuda.MishCuda", "utils.activations.Mish", "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d", "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList", "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample", "torch.nn.modules.linear.Identity",
    "torch.nn.modules.activation.Mish", "torch.nn.modules.activation.LeakyReLU",
}
ALLOWED = REVIEWED_DATA | REVIEWED_STORAGES | REVIEWED_DTYPES | REVIEWED_STANDINS
# where the functions an allowed name may resolve to are defined (the unpickler and the modules split from it)
UNPICKLER_MODULES = {f"scaledyolo.interop.{name}" for name in (
    "unpickler", "unpickler_restricted", "unpickler_numpy", "unpickler_standins")}


# --------------------------------------------------------------------------- payloads

NAMES = ["exec", "eval", "getattr", "import", "popen", "partial", "attrgetter", "pickle_loads", "numpy_load",
         "torch_load", "import_module"]


class Call:
    """Unpickling this calls `func(*args)`: pickle records `func` as a global and calls it on load."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *more):  # pickle wants the callable of a nested Call to be callable itself
        return self.func(*self.args, *more)


def write_marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


class PickleModule:
    """Passed to torch.load as `pickle_module`, which makes torch default to weights_only=False."""

    Unpickler = pickle.Unpickler
    load = pickle.load


EVIL_MODULES = {"import": "evil_module_dunder_import", "import_module": "evil_module_import_module"}


def payloads(tmp_path: Path, monkeypatch) -> dict[str, tuple[object, Path, str]]:
    """name -> (object whose pickle would create the marker, marker, the global the refusal names)."""
    m = {name: tmp_path / f"marker-{name}" for name in NAMES}
    inner = pickle.dumps(Call(exec, write_marker_code(m["pickle_loads"])))
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([Call(exec, write_marker_code(m["numpy_load"]))], dtype=object), allow_pickle=True)
    pt = tmp_path / "evil-inner.pt"
    torch.save({"x": Call(exec, write_marker_code(m["torch_load"]))}, pt)
    for key, module in EVIL_MODULES.items():
        (tmp_path / f"{module}.py").write_text(write_marker_code(m[key]) + "\n")
        sys.modules.pop(module, None)
    monkeypatch.syspath_prepend(str(tmp_path))
    return {
        "exec": (Call(exec, write_marker_code(m["exec"])), m["exec"], "builtins.exec"),
        "eval": (Call(eval, write_marker_code(m["eval"])), m["eval"], "builtins.eval"),
        # getattr(Path(marker), "touch")() : the callable of the outer call is the result of getattr
        "getattr": (Call(Call(getattr, m["getattr"], "touch")), m["getattr"], "builtins.getattr"),
        "import": (Call(__import__, EVIL_MODULES["import"]), m["import"], "builtins.__import__"),
        "popen": (Call(subprocess.Popen, ["touch", str(m["popen"])]), m["popen"], "subprocess.Popen"),
        "partial": (Call(functools.partial(exec, write_marker_code(m["partial"]))), m["partial"], "functools.partial"),
        "attrgetter": (Call(Call(operator.attrgetter("touch"), m["attrgetter"])), m["attrgetter"],
                       "operator.attrgetter"),
        "pickle_loads": (Call(pickle.loads, inner), m["pickle_loads"], "_pickle.loads"),
        "numpy_load": (Call(np.load, str(npy), None, True), m["numpy_load"], "numpy.load"),
        "torch_load": (Call(torch.load, str(pt), None, PickleModule), m["torch_load"], "torch.serialization.load"),
        "import_module": (Call(importlib.import_module, EVIL_MODULES["import_module"]), m["import_module"],
                          "importlib.import_module"),
    }


def zip_file(obj: object, path: Path) -> Path:
    """A torch.save-style archive (`archive/data.pkl`, `archive/version`) holding `obj`'s pickle."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"model": obj, "epoch": 0}, protocol=2))
        zf.writestr("archive/version", "3\n")
    return path


def test_payloads_work_when_unrestricted(tmp_path, monkeypatch):
    """The payloads are real: a plain unpickler runs each one (every marker appears)."""
    for name, (obj, marker, _) in payloads(tmp_path, monkeypatch).items():
        result = pickle.loads(pickle.dumps(obj, protocol=2))
        if isinstance(result, subprocess.Popen):
            result.wait(timeout=30)
        assert marker.exists(), name
    for module in EVIL_MODULES.values():
        sys.modules.pop(module, None)


def test_payload_pickles_name_the_expected_global(tmp_path, monkeypatch):
    """Each payload's first global is the dangerous name (so its refusal below is about that name)."""
    for name, (obj, _, dotted) in payloads(tmp_path, monkeypatch).items():
        seen = []

        class Spy(pickle.Unpickler):
            def find_class(self, module, attr):
                module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
                seen.append(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}")
                raise pickle.UnpicklingError("stop")

        with pytest.raises(pickle.UnpicklingError):
            Spy(io.BytesIO(pickle.dumps(obj, protocol=2))).load()
        module, attr = dotted.rsplit(".", 1)
        assert seen[0] in (dotted, f"{module.lstrip('_')}.{attr}"), (name, seen)


@pytest.mark.parametrize("layout", ["zip", "bare"])
@pytest.mark.parametrize("name", NAMES)
def test_dangerous_name_refused_and_runs_nothing(tmp_path, monkeypatch, name, layout):
    obj, marker, dotted = payloads(tmp_path, monkeypatch)[name]
    path = tmp_path / f"evil-{name}.pt"
    if layout == "zip":
        zip_file(obj, path)
    else:
        path.write_bytes(pickle.dumps({"model": obj}, protocol=2))
    module, attr = dotted.rsplit(".", 1)
    with pytest.raises(UserError, match="refusing to load: it would import") as info:
        scaledyolo.load(path)
    assert f"{module}.{attr}" in str(info.value) or f"{module.lstrip('_')}.{attr}" in str(info.value)
    with pytest.raises(UserError, match="refusing to load"):
        restricted_load(path)
    assert not marker.exists()
    assert not any(module in sys.modules for module in EVIL_MODULES.values())


# --------------------------------------------------------------------------- the exact allow-list


def public_names(module) -> list[str]:
    return [n for n in dir(module) if not n.startswith("_")]


def candidate_globals() -> set[tuple[str, str]]:
    """Every builtin, every public name of the modules an attacker reaches for, and the allow-list."""
    candidates = {("builtins", n) for n in dir(builtins)} | {("__builtin__", n) for n in dir(builtins)}
    for module in (os, sys, subprocess, torch, np, pickle, functools, operator, importlib, io):
        candidates |= {(module.__name__, n) for n in public_names(module)}
    candidates |= {("posix", n) for n in public_names(os)} | {("nt", "system"), ("torch.serialization", "load"),
                                                            ("torch._utils", "_rebuild_device_tensor_from_numpy"),
                                                            ("numpy.lib.npyio", "load"), ("_pickle", "loads"),
                                                            ("copyreg", "__newobj__"), ("collections", "defaultdict"),
                                                            ("torch._utils", "_rebuild_qtensor")}
    candidates |= {tuple(name.rsplit(".", 1)) for name in ALLOWED}
    candidates |= {tuple(name.rsplit(".", 1)) for name in unpickler.SAFE_GLOBALS}
    candidates |= {tuple(name.rsplit(".", 1)) for name in unpickler.STANDIN_CLASSES}
    return candidates


def resolved_names() -> set[str]:
    probe = RestrictedUnpickler(io.BytesIO(b""))
    resolved = set()
    for module, name in sorted(candidate_globals()):
        try:
            probe.find_class(module, name)
        except unpickler.Refused:
            continue
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        resolved.add(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")  # Python 2 spellings fold in
    return resolved


def test_exactly_the_allow_list_resolves():
    resolved = resolved_names()
    extra, missing = resolved - ALLOWED, ALLOWED - resolved
    assert not extra, f"globals outside the reviewed allow-list resolve: {sorted(extra)}"
    assert not missing, f"allow-listed globals no longer resolve (update the review): {sorted(missing)}"


def test_allow_list_resolves_to_inert_values():
    """What an allowed name yields is ours (rebuilders, stand-ins, storage types) or a plain data type."""
    probe = RestrictedUnpickler(io.BytesIO(b""))
    plain = {set, frozenset, slice, complex, torch.Size, np.ndarray, collections.OrderedDict}
    for dotted in ALLOWED:
        value = probe.find_class(*dotted.rsplit(".", 1))
        ours = getattr(value, "__module__", None) in UNPICKLER_MODULES
        assert value in plain or ours or isinstance(value, (unpickler.StorageType, torch.dtype)) or (
            isinstance(value, type) and issubclass(value, unpickler.StandIn)), dotted


def test_python2_names_map_only_onto_the_allow_list():
    """Protocol-2 spellings (__builtin__, copy_reg) go through the same allow-list."""
    probe = RestrictedUnpickler(io.BytesIO(b""))
    assert probe.find_class("__builtin__", "set") is set
    assert probe.find_class("copy_reg", "_reconstructor") is unpickler.SAFE_GLOBALS["copyreg._reconstructor"]
    for name in ("eval", "getattr", "open", "__import__", "exec", "compile", "apply"):
        with pytest.raises(unpickler.Refused):
            probe.find_class("__builtin__", name)

"""The one restricted unpickler for foreign PyTorch files (official Scaled-YOLOv4 `.pt`, legacy pickles).

A pickle can name any importable function and call it while loading, so a downloaded `.pt` loaded
with a plain `torch.load` can run code (`os.system`, `open`, ...). This unpickler resolves only an
explicit allow-list: the official model classes become inert stand-ins that merely collect their
state (none of their code exists or runs here), tensors are rebuilt by our own functions from the
raw storage bytes, and a few data types (OrderedDict, set, numpy arrays of numbers) are allowed.
Anything else stops the load with ``refusing to load: it would import MODULE.NAME``.

Both torch file formats are read: the zip archive (torch >= 1.6: `*/data.pkl` + `*/data/<key>`)
and the legacy stream (magic number, protocol, system info, the pickle, storage keys, raw storages).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from scaledyolo.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# The official classes a Scaled-YOLOv4 checkpoint pickles (yolov4-large branch, train.py / strip_optimizer).
STANDIN_CLASSES = frozenset({
    "models.yolo.Model", "models.yolo.Detect",
    "models.common.Conv", "models.common.Bottleneck", "models.common.BottleneckCSP",
    "models.common.BottleneckCSP2", "models.common.SPPCSP", "models.common.Concat",
    "mish_cuda.MishCuda", "utils.activations.Mish",
    "torch.nn.modules.conv.Conv2d", "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.linear.Identity", "torch.nn.modules.activation.Mish",
    "torch.nn.modules.activation.LeakyReLU",
})

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}


class StandIn:
    """An inert object in place of an official class: it records the class name and its pickled state."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"__state__": state}

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


_STANDIN_TYPES: dict[str, type] = {}


def standin_class(qualname: str) -> type:
    """The (cached) stand-in type for an allowed class name."""
    if qualname not in _STANDIN_TYPES:
        _STANDIN_TYPES[qualname] = type(qualname.rsplit(".", 1)[-1], (StandIn,), {"qualname": qualname})
    return _STANDIN_TYPES[qualname]


class StorageType:
    """What `torch.FloatStorage` etc. resolve to: only the element type, used by `persistent_load`."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class Refused(Exception):
    """A global outside the allow-list (carries the dotted name for the user-facing message)."""


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise Refused("torch._utils._rebuild_tensor_v2 (with something that is not a storage)")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if any(n < 0 or s < 0 for n, s in zip(size, stride)) or (min(size) > 0 and last >= storage.numel()):
            raise ValueError("tensor extends past its storage")
    elif offset >= storage.numel():
        raise ValueError("tensor extends past its storage")
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise Refused("torch._utils._rebuild_parameter (with something that is not a tensor)")
    return data


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    if isinstance(cls, type) and issubclass(cls, StandIn):
        return cls()
    if cls is OrderedDict:
        return OrderedDict()
    raise Refused("copyreg._reconstructor (for a type outside the allow-list)")


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise Refused("numpy.core.multiarray._reconstruct (for a type other than ndarray)")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise Refused("numpy.core.multiarray.scalar (of a non-numeric type)")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise Refused("numpy.dtype (of Python objects)")
    return dtype


def _codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """How protocol-2 pickles spell a bytes literal: `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise Refused("_codecs.encode (for something other than a bytes literal)")
    return text.encode(encoding, errors)


SAFE_GLOBALS: dict[str, Any] = {
    "_codecs.encode": _codecs_encode,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice,
    "builtins.complex": complex,
    "torch.Size": torch.Size,
    "copyreg._reconstructor": _reconstructor,
    "numpy.core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy._core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": _numpy_dtype,
    **{f"torch.{name}": StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{f"torch.{name}": dtype for name, dtype in DTYPES.items()},
}


def _display(module: str, name: str) -> str:
    """How a refused global is named to the user (os.system, not posix.system)."""
    if module in ("posix", "nt"):
        module = "os"
    return f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves globals from the allow-list only and storages from `load_storage`."""

    def __init__(self, file: io.BufferedIOBase, load_storage: Callable[[tuple], torch.Tensor] | None = None,
                 rebuild: Callable[..., torch.Tensor] = _rebuild_tensor) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self._rebuild = rebuild

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor"):
            return self._rebuild
        if key in SAFE_GLOBALS:
            return SAFE_GLOBALS[key]
        if key in STANDIN_CLASSES:
            return standin_class(key)
        raise Refused(_display(module, name))

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module" and isinstance(pid[1], type) and issubclass(
                pid[1], StandIn):  # legacy files record each module class with its source text: keep the class only
            return pid[1]
        if self._load_storage is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise Refused("a persistent object that is not a tensor storage")
        return self._load_storage(pid)


def _typed(raw: bytes | bytearray, dtype: torch.dtype) -> torch.Tensor:
    size = torch.empty((), dtype=dtype).element_size()
    if len(raw) % size:
        raise ValueError("storage bytes do not fit its element type")
    if not raw:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype)


def _storage_fields(pid: tuple) -> tuple[torch.dtype, str, int]:
    if len(pid) < 5 or not isinstance(pid[1], StorageType) or not isinstance(pid[2], str):
        raise Refused("a malformed storage reference")
    return pid[1].dtype, pid[2], int(pid[4])


def _load_zip(zf: zipfile.ZipFile) -> Any:
    pkl = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise ValueError("no data.pkl in the archive")
    root = pkl[0].split("/")[0]
    names = set(zf.namelist())
    cache: dict[str, torch.Tensor] = {}

    def load_storage(pid: tuple) -> torch.Tensor:
        dtype, key, numel = _storage_fields(pid)
        if key not in cache:
            entry = f"{root}/data/{key}"
            if entry not in names:
                raise ValueError(f"storage {key} missing from the archive")
            cache[key] = _typed(zf.read(entry), dtype)
        storage = cache[key]
        if storage.dtype != dtype or storage.numel() < numel:
            raise ValueError(f"storage {key} does not match its reference")
        return storage

    return RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def _load_legacy(f: io.BufferedIOBase) -> Any:
    """The pre-1.6 stream: magic, protocol, sys info, the pickle, storage keys, then each storage's bytes.

    A file whose first pickle is not the magic number is a bare pickle: that first object is the result.
    Storages come after the pickle, so tensors are rebuilt once the bytes have been read.
    """
    first = RestrictedUnpickler(f).load()
    if first != LEGACY_MAGIC:
        return first
    RestrictedUnpickler(f).load()  # protocol version
    RestrictedUnpickler(f).load()  # system info (byte order, type sizes)
    roots: dict[str, torch.dtype] = {}
    refs: dict[int, tuple[str, int, int | None]] = {}
    placeholders: list[torch.Tensor] = []
    pending: list[tuple[torch.Tensor, torch.Tensor, int, tuple, tuple]] = []

    def load_storage(pid: tuple) -> torch.Tensor:
        dtype, key, _ = _storage_fields(pid)
        roots.setdefault(key, dtype)
        view = pid[5] if len(pid) > 5 else None
        placeholder = torch.empty(0, dtype=dtype)
        placeholders.append(placeholder)
        refs[id(placeholder)] = (key, 0, None) if view is None else (key, int(view[1]), int(view[2]))
        return placeholder

    def deferred(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
        if not isinstance(storage, torch.Tensor) or id(storage) not in refs:
            raise Refused("torch._utils._rebuild_tensor_v2 (with something that is not a storage)")
        out = torch.empty(0, dtype=storage.dtype)
        pending.append((out, storage, int(offset), tuple(size), tuple(stride)))
        return out

    result = RestrictedUnpickler(f, load_storage, deferred).load()
    keys = RestrictedUnpickler(f).load()
    if not isinstance(keys, list) or any(k not in roots for k in keys):
        raise ValueError("damaged storage table")
    data: dict[str, torch.Tensor] = {}
    for key in keys:
        dtype = roots[key]
        (count,) = struct.unpack("<q", f.read(8))
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        raw = f.read(nbytes)
        if count < 0 or len(raw) != nbytes:
            raise ValueError("the file ends inside a storage")
        data[key] = _typed(raw, dtype)
    for out, placeholder, offset, size, stride in pending:
        key, start, length = refs[id(placeholder)]
        if key not in data:
            raise ValueError("a tensor refers to a missing storage")
        base = data[key] if length is None else data[key][start:start + length]
        out.set_(_rebuild_tensor(base, offset, size, stride))
    return result


def torch_file_kind(head: bytes) -> str | None:
    """'zip' (torch >= 1.6 archive, even a damaged one), 'pickle' (legacy stream or bare pickle) or None,
    from a file's first two bytes."""
    if head[:2] == b"PK":
        return "zip"
    return "pickle" if head[:1] == b"\x80" else None


def restricted_load(path: str | Path) -> Any:
    """Unpickle a foreign torch file without running any of its code; refuse what is not allowed."""
    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", path)
    try:
        with open(path, "rb") as f:
            kind = torch_file_kind(f.read(2))
            if kind == "zip":
                with zipfile.ZipFile(f) as zf:
                    return _load_zip(zf)
            if kind is None:
                raise UserError("not a PyTorch/pickle file (unknown format)", path)
            f.seek(0)
            return _load_legacy(f)
    except Refused as exc:
        raise UserError(f"refusing to load: it would import {exc.args[0]}", path) from None
    except UserError:
        raise
    except (pickle.UnpicklingError, ValueError, EOFError, struct.error, zipfile.BadZipFile, TypeError,
            AttributeError, IndexError, KeyError, RuntimeError, OverflowError, MemoryError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"damaged or unsupported PyTorch file ({first})", path) from None

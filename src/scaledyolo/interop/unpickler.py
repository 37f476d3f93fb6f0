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
import math
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from scaledyolo.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# Limits on what a file may make us allocate (see SECURITY.md). torch writes zip entries uncompressed and an
# official P7 checkpoint's data.pkl is about 0.4 MB, so these leave a wide margin for real files.
MAX_PICKLE_BYTES = 16 << 20  # the data.pkl of a zip archive
MAX_COMPRESSION_RATIO = 10  # decompressed / compressed bytes, per entry and for the whole archive
MAX_ZIP_ENTRIES = 100_000
ZIP_CHUNK = 1 << 20  # decompression step: a lying entry is caught within one chunk of its declared size
MAX_LINE = 1 << 16  # the longest text line a protocol-0 pickle may hold

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


class Refused(Exception):
    """A global outside the allow-list, or an opcode aimed at one: `it would ACTION NAME` for the user."""

    def __init__(self, name: str, action: str = "import") -> None:
        super().__init__(name)
        self.action = action


class StandIn:
    """An inert object in place of an official class: it records the class name and its pickled state.

    Its only attribute is `state`, a fresh dict of what the file's BUILD gave (a module's `__dict__`):
    nothing is set as an attribute, so a file cannot shadow a method or reach another object.
    """

    __slots__ = ("state",)
    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def build(self, state: Any) -> "StandIn":
        """BUILD: keep the (dict state, slot state) pair as one dict of string keys."""
        if isinstance(state, tuple) and len(state) == 2:
            parts = [part for part in state if part is not None]
            if any(not isinstance(part, dict) for part in parts):
                raise ValueError(f"malformed state for {self.qualname}")
            state = {k: v for part in parts for k, v in part.items()}
        if not isinstance(state, dict) or any(not isinstance(k, str) for k in state):
            raise ValueError(f"malformed state for {self.qualname}")
        self.state = dict(state)
        return self

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


_STANDIN_TYPES: dict[str, type] = {}


def standin_class(qualname: str) -> type:
    """The (cached, stateless) stand-in type for an allowed class name; BUILD never reaches a type."""
    if qualname not in _STANDIN_TYPES:
        _STANDIN_TYPES[qualname] = type(qualname.rsplit(".", 1)[-1], (StandIn,), {"qualname": qualname,
                                                                                   "__slots__": ()})
    return _STANDIN_TYPES[qualname]


@dataclass(frozen=True)
class StorageType:
    """What `torch.FloatStorage` etc. resolve to: only the element type, used by `persistent_load`.

    Shared by every load, so immutable (and BUILD is refused on it like on every global)."""

    dtype: torch.dtype


@dataclass(frozen=True)
class Marker:
    """A global that may only appear as an argument (numpy's `ndarray` given to `_reconstruct`)."""

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise Refused(f"{self.name} (called directly; only numpy's own pickle form of numeric arrays is read)")


NDARRAY = Marker("numpy.ndarray")


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
    """A view of a storage, checked to stay inside it and to hold no more elements than the storage has:
    a stride-0 view over a few bytes could otherwise ask for gigabytes once it is converted or copied."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise Refused("torch._utils._rebuild_tensor_v2 (with something that is not a storage)")
    offset = int(offset)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or len(size) > 8 or offset < 0 or any(n < 0 or s < 0 for n, s in zip(size, stride)):
        raise ValueError("malformed tensor shape")
    numel = math.prod(size)
    if numel > storage.numel():
        raise ValueError(f"a tensor of shape {size} has more elements ({numel}) than its storage ({storage.numel()})")
    if numel and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel():
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


# numpy: official train.py pickles `best_fitness` as a float64 array of shape (1,). numpy's own classes are
# never handed to the file: arrays and dtypes are rebuilt here from their pickled state, numbers only.
NUMERIC_KINDS = frozenset("biufc")  # bool, signed and unsigned integers, floats, complex


def _numeric_dtype(spec: Any) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 4:
        raise Refused(f"numpy.dtype (of {spec!r})")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise Refused(f"numpy.dtype (of {spec!r})") from None
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise Refused(f"numpy.dtype (of {spec!r}: only numbers are read)")
    return dtype


class PendingDType:
    """`numpy.dtype(spec, align, copy)` before its BUILD (which gives the byte order)."""

    __slots__ = ("dtype",)

    def __init__(self, spec: Any) -> None:
        self.dtype = _numeric_dtype(spec)

    def build(self, state: Any) -> np.dtype:
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[1] not in ("<", ">", "=", "|") or any(
                part is not None for part in state[2:5]) or (len(state) == 9 and state[8] is not None):
            raise Refused("numpy.dtype (with a state that is not a plain number type)")
        return self.dtype if state[1] == "|" else self.dtype.newbyteorder(state[1])


class PendingArray:
    """`numpy.core.multiarray._reconstruct(ndarray, ...)` before its BUILD (which gives shape, dtype and bytes)."""

    __slots__ = ()

    def build(self, state: Any) -> np.ndarray:
        if isinstance(state, tuple) and len(state) == 5 and isinstance(state[0], int):
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise ValueError("malformed numpy array state")
        shape, dtype, fortran, raw = state
        return numeric_array(shape, dtype, bool(fortran), raw)


def numeric_array(shape: Any, dtype: Any, fortran: bool, raw: Any) -> np.ndarray:
    """A writable numpy array of numbers from pickled raw bytes whose length must match shape x item size."""
    if isinstance(dtype, PendingDType):
        dtype = dtype.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields:
        raise Refused("numpy.ndarray (of a type other than numbers)")
    if not isinstance(shape, tuple) or len(shape) > 32 or any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError("malformed numpy array shape")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"numpy array bytes do not match its shape {shape}")
    flat = np.frombuffer(bytes(raw), dtype=dtype) if raw else np.empty(0, dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="F" if fortran else "C")


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> PendingArray:
    if subtype is not NDARRAY:
        raise Refused("numpy.core.multiarray._reconstruct (for a type other than ndarray)")
    return PendingArray()


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if isinstance(dtype, PendingDType):
        dtype = dtype.dtype
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise Refused("numpy.core.multiarray.scalar (of a non-numeric type)")
    return numeric_array((), dtype, False, data)[()]


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> PendingDType:
    return PendingDType(spec)


def _empty_bytes(*args: Any) -> bytes:
    """How numpy pickles the raw data of an empty array: `bytes()`; any argument would allocate."""
    if args:
        raise Refused("builtins.bytes (with an argument)")
    return b""


def _codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """How protocol-2 pickles spell a bytes literal: `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8") or errors != "strict":
        raise Refused("_codecs.encode (for something other than a bytes literal)")
    return text.encode(encoding, errors)


SAFE_GLOBALS: dict[str, Any] = {
    "_codecs.encode": _codecs_encode,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice,
    "builtins.complex": complex, "builtins.bytes": _empty_bytes,
    "torch.Size": torch.Size,
    "copyreg._reconstructor": _reconstructor,
    "numpy.core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy._core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.ndarray": NDARRAY,
    "numpy.dtype": _numpy_dtype,
    **{f"torch.{name}": StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{f"torch.{name}": dtype for name, dtype in DTYPES.items()},
}

BUILDABLE = (StandIn, PendingDType, PendingArray)  # made by this load only: find_class never returns an instance


def _display(module: str, name: str) -> str:
    """How a refused global is named to the user (os.system, not posix.system)."""
    if module in ("posix", "nt"):
        module = "os"
    return f"{module}.{name}"


class RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, resolving globals from the allow-list only and storages from `load_storage`.

    Its BUILD opcode is our own: it only completes objects this load created (stand-ins, numpy arrays and
    dtypes under construction), never a global, a shared object or something outside the allow-list.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, load_storage: Callable[[tuple], torch.Tensor] | None = None,
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

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, BUILDABLE):
            what = getattr(target, "qualname", None) or getattr(target, "__qualname__", None) or type(target).__name__
            raise Refused(f"the state of {what}, which this file did not create", action="set")
        built = target.build(state)
        if built is not target:  # a numpy array or dtype replaces its placeholder, in the memo too
            self.stack[-1] = built
            for key, value in self.memo.items():
                if value is target:
                    self.memo[key] = built

    dispatch[pickle.BUILD[0]] = load_build

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
    return torch.frombuffer(raw if isinstance(raw, bytearray) else bytearray(raw), dtype=dtype)


def _storage_fields(pid: tuple) -> tuple[torch.dtype, str, int]:
    if len(pid) < 5 or not isinstance(pid[1], StorageType) or not isinstance(pid[2], str):
        raise Refused("a malformed storage reference")
    return pid[1].dtype, pid[2], int(pid[4])


class TooLarge(Exception):
    """A size read from the file is past a limit (checked before the memory is allocated)."""


def check_zip_sizes(zf: zipfile.ZipFile, archive_bytes: int) -> None:
    """Refuse a zip whose entries would expand far past the archive itself (a zip bomb), before reading any.

    torch writes its entries uncompressed (ratio 1); a compressed one may expand MAX_COMPRESSION_RATIO times.
    """
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise TooLarge(f"the archive has {len(infos)} entries (limit {MAX_ZIP_ENTRIES})")
    for info in infos:
        if info.file_size > max(info.compress_size, 1) * MAX_COMPRESSION_RATIO:
            raise TooLarge(f"entry {info.filename} would expand {info.file_size} bytes from {info.compress_size} "
                           f"(compression ratio limit {MAX_COMPRESSION_RATIO})")
    total = sum(info.file_size for info in infos)
    if total > archive_bytes * MAX_COMPRESSION_RATIO:
        raise TooLarge(f"its entries would expand to {total} bytes from a {archive_bytes}-byte archive "
                       f"(compression ratio limit {MAX_COMPRESSION_RATIO})")


def read_zip_entry(zf: zipfile.ZipFile, name: str, limit: int) -> bytearray:
    """An entry's bytes, decompressed in chunks and stopped at `limit` or at its declared size (which can lie)."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise TooLarge(f"entry {name} is {info.file_size} bytes (limit {limit})")
    out = bytearray()
    with zf.open(info) as entry:
        while chunk := entry.read(ZIP_CHUNK):
            out += chunk
            if len(out) > min(limit, info.file_size):
                raise TooLarge(f"entry {name} expands past its declared {info.file_size} bytes")
    return out


def _load_zip(zf: zipfile.ZipFile, archive_bytes: int) -> Any:
    check_zip_sizes(zf, archive_bytes)
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
            cache[key] = _typed(read_zip_entry(zf, entry, archive_bytes * MAX_COMPRESSION_RATIO), dtype)
        storage = cache[key]
        if storage.dtype != dtype or storage.numel() < numel:
            raise ValueError(f"storage {key} does not match its reference")
        return storage

    return RestrictedUnpickler(io.BytesIO(read_zip_entry(zf, pkl[0], MAX_PICKLE_BYTES)), load_storage).load()


class BoundedReader:
    """A file whose reads never ask for more than what is left in it: a pickle or storage header declaring
    a length of gigabytes cannot make `read(n)` allocate them."""

    def __init__(self, f: io.BufferedIOBase, size: int) -> None:
        self._f = f
        self._size = size

    def left(self) -> int:
        return self._size - self._f.tell()

    def read(self, n: int = -1) -> bytes:
        return self._f.read(self.left() if n is None or n < 0 else min(n, self.left()))

    def readline(self, limit: int = -1) -> bytes:
        return self._f.readline(MAX_LINE if limit is None or limit < 0 else min(limit, MAX_LINE))

    def readinto(self, buffer: Any) -> int:
        if len(buffer) > self.left():
            raise ValueError("the file ends inside a pickled buffer")
        return self._f.readinto(buffer)


def _load_legacy(f: BoundedReader) -> Any:
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
        if count < 0 or nbytes > f.left():
            raise ValueError("the file ends inside a storage")
        data[key] = _typed(f.read(nbytes), dtype)
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
            size = os.fstat(f.fileno()).st_size
            kind = torch_file_kind(f.read(2))
            if kind == "zip":
                with zipfile.ZipFile(f) as zf:
                    return _load_zip(zf, size)
            if kind is None:
                raise UserError("not a PyTorch/pickle file (unknown format)", path)
            f.seek(0)
            return _load_legacy(BoundedReader(f, size))
    except Refused as exc:
        raise UserError(f"refusing to load: it would {exc.action} {exc.args[0]}", path) from None
    except TooLarge as exc:
        raise UserError(f"refusing to load: {exc.args[0]}", path) from None
    except UserError:
        raise
    except RecursionError:
        raise UserError("damaged or unsupported PyTorch file (nested too deeply)", path) from None
    except (pickle.UnpicklingError, ValueError, EOFError, struct.error, zipfile.BadZipFile, TypeError,
            AttributeError, IndexError, KeyError, RuntimeError, OverflowError, MemoryError, NotImplementedError,
            zlib.error) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"damaged or unsupported PyTorch file ({first})", path) from None

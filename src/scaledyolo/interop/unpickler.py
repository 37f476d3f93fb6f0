"""The one restricted loader for foreign PyTorch files (official Scaled-YOLOv4 `.pt`, legacy pickles).

A downloaded `.pt` loaded with a plain `torch.load` can run code (`os.system`, `open`, ...). Here the
pickle goes through `RestrictedUnpickler` (unpickler_restricted.py: the allow-list), tensors are rebuilt
by our own functions from the raw storage bytes, and every size is checked before it is allocated
(unpickler_archive.py). Anything else stops the load with ``refusing to load: it would import MODULE.NAME``.

Both torch file formats are read: the zip archive (torch >= 1.6: `*/data.pkl` + `*/data/<key>`)
and the legacy stream (magic number, protocol, system info, the pickle, storage keys, raw storages).
The names callers use (`restricted_load`, `StandIn`, `torch_file_kind`, the zip checks) stay importable
from this module.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from scaledyolo.errors import UserError
from scaledyolo.interop.unpickler_archive import (MAX_COMPRESSION_RATIO, MAX_PICKLE_BYTES, BoundedReader, TooLarge,
                                                  check_zip_sizes, read_zip_entry, torch_file_kind)
from scaledyolo.interop.unpickler_restricted import SAFE_GLOBALS, RestrictedUnpickler, StorageType, rebuild_tensor
from scaledyolo.interop.unpickler_standins import STANDIN_CLASSES, Refused, StandIn

__all__ = ["MAX_PICKLE_BYTES", "SAFE_GLOBALS", "STANDIN_CLASSES", "Refused", "RestrictedUnpickler", "StandIn",
           "StorageType", "TooLarge", "check_zip_sizes", "read_zip_entry", "restricted_load", "torch_file_kind"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


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


def _load_legacy(f: BoundedReader) -> Any:
    """The pre-1.6 stream: magic, protocol, sys info, the pickle, storage keys, then each storage's bytes.

    A file whose first pickle is not the magic number is a bare pickle: that first object is the result.
    Storages come after the pickle, so tensors are rebuilt once the bytes have been read.
    """
    first = RestrictedUnpickler(f).load()
    if type(first) is not int or first != LEGACY_MAGIC:  # a bare pickle (its object may be an array)
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
        out.set_(rebuild_tensor(base, offset, size, stride))
    return result


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

"""The restricted unpickler itself: the allow-list of globals, and a BUILD that only completes our own objects.

A pickle can name any importable function and call it while loading. This unpickler resolves only an
explicit allow-list (stand-ins for the official classes, our own tensor rebuilders, a few data types,
numpy arrays of numbers); anything else raises `Refused`, which the loader turns into
``refusing to load: it would import MODULE.NAME``.
"""

from __future__ import annotations

import _compat_pickle
import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from scaledyolo.interop.unpickler_numpy import (NDARRAY, PendingArray, PendingDType, numpy_dtype, numpy_reconstruct,
                                                numpy_scalar)
from scaledyolo.interop.unpickler_standins import STANDIN_CLASSES, Refused, StandIn, standin_class

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}


@dataclass(frozen=True)
class StorageType:
    """What `torch.FloatStorage` etc. resolve to: only the element type, used by `persistent_load`.

    Shared by every load, so immutable (and BUILD is refused on it like on every global)."""

    dtype: torch.dtype


def rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
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


def rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, *rest: Any) -> torch.Tensor:
    """An `nn.Parameter` arrives as its plain tensor (hooks and extra state are dropped)."""
    if not isinstance(data, torch.Tensor):
        raise Refused("torch._utils._rebuild_parameter (with something that is not a tensor)")
    return data


def reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """`copyreg._reconstructor`: an empty stand-in or OrderedDict (its BUILD fills it), nothing else."""
    if isinstance(cls, type) and issubclass(cls, StandIn):
        return cls()
    if cls is OrderedDict:
        return OrderedDict()
    raise Refused("copyreg._reconstructor (for a type outside the allow-list)")


def empty_bytes(*args: Any) -> bytes:
    """How numpy pickles the raw data of an empty array: `bytes()`; any argument would allocate."""
    if args:
        raise Refused("builtins.bytes (with an argument)")
    return b""


def codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """How protocol-2 pickles spell a bytes literal: `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8") or errors != "strict":
        raise Refused("_codecs.encode (for something other than a bytes literal)")
    return text.encode(encoding, errors)


SAFE_GLOBALS: dict[str, Any] = {
    "_codecs.encode": codecs_encode,
    "torch._utils._rebuild_parameter": rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice,
    "builtins.complex": complex, "builtins.bytes": empty_bytes,
    "torch.Size": torch.Size,
    "copyreg._reconstructor": reconstructor,
    "numpy.core.multiarray._reconstruct": numpy_reconstruct,
    "numpy._core.multiarray._reconstruct": numpy_reconstruct,
    "numpy.core.multiarray.scalar": numpy_scalar,
    "numpy._core.multiarray.scalar": numpy_scalar,
    "numpy.ndarray": NDARRAY,
    "numpy.dtype": numpy_dtype,
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
                 rebuild: Callable[..., torch.Tensor] = rebuild_tensor) -> None:
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

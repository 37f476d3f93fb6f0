"""numpy arrays and dtypes rebuilt from their pickled state, numbers only.

Official train.py pickles `best_fitness` as a float64 array of shape (1,). numpy's own classes are never
handed to the file: arrays and dtypes are rebuilt here from their pickled state, and only number types
(no objects, no records, no sub-arrays) are read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scaledyolo.interop.unpickler_standins import Marker, Refused

NUMERIC_KINDS = frozenset("biufc")  # bool, signed and unsigned integers, floats, complex
NDARRAY = Marker("numpy.ndarray")


def numeric_dtype(spec: Any) -> np.dtype:
    """The numpy dtype a short type code names, refused unless it is a plain number type."""
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
        self.dtype = numeric_dtype(spec)

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


def numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> PendingArray:
    """`_reconstruct(ndarray, ...)`: a placeholder that its BUILD turns into the array."""
    if subtype is not NDARRAY:
        raise Refused("numpy.core.multiarray._reconstruct (for a type other than ndarray)")
    return PendingArray()


def numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """`multiarray.scalar(dtype, bytes)`: one number of a numeric dtype."""
    if isinstance(dtype, PendingDType):
        dtype = dtype.dtype
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise Refused("numpy.core.multiarray.scalar (of a non-numeric type)")
    return numeric_array((), dtype, False, data)[()]


def numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> PendingDType:
    """`numpy.dtype(spec, align, copy)`: a placeholder until BUILD gives the byte order."""
    return PendingDType(spec)


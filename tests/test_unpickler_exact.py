"""The restricted unpickler's exact limits and messages: what a hostile file is told, to the letter.

`test_security_names.py` checks which globals resolve; these check the allowed ones refuse their
dangerous forms with the message the user reads (bytes with an argument, a tensor over a non-storage or
past its storage, more than 8 dimensions, a persistent id that is not a storage, numpy types that are
not numbers), and that what is allowed reads back exactly (big-endian arrays, 4-character type codes).
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch._utils

from scaledyolo.errors import UserError
from scaledyolo.interop.unpickler import restricted_load
from scaledyolo.interop.unpickler_archive import (MAX_COMPRESSION_RATIO, MAX_LINE, MAX_ZIP_ENTRIES, BoundedReader,
                                                  TooLarge, check_zip_sizes)
from scaledyolo.interop.unpickler_numpy import numeric_dtype
from scaledyolo.interop.unpickler_restricted import RestrictedUnpickler, rebuild_tensor
from scaledyolo.interop.unpickler_standins import Refused


class Reduces:
    """Pickles as `func(*args)`: how a file asks the unpickler to call an allowed global."""

    def __init__(self, func, args: tuple, state: object = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def refusal(tmp_path, obj, protocol: int = 2) -> str:
    path = tmp_path / "hostile.pt"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(UserError) as err:
        restricted_load(path)
    assert err.value.path == str(path)
    return err.value.message


def test_bytes_with_an_argument_is_refused_by_name(tmp_path):
    assert refusal(tmp_path, Reduces(bytes, (10,))) == "refusing to load: it would import builtins.bytes (with an argument)"


def test_a_tensor_over_something_that_is_not_a_storage_is_refused_by_name(tmp_path):
    hostile = Reduces(torch._utils._rebuild_tensor_v2, ("not a storage", 0, (1,), (1,), False, OrderedDict()))
    assert refusal(tmp_path, hostile) == ("refusing to load: it would import torch._utils._rebuild_tensor_v2 "
                                          "(with something that is not a storage)")


def test_a_tensor_past_its_storage_is_refused():
    storage = torch.arange(4.0)
    assert rebuild_tensor(storage, 1, (3,), (1,)).tolist() == [1.0, 2.0, 3.0]  # ends on the last element
    with pytest.raises(ValueError, match=r"^tensor extends past its storage$"):
        rebuild_tensor(storage, 2, (3,), (1,))
    with pytest.raises(ValueError, match=re.escape("a tensor of shape (5,) has more elements (5) than its storage (4)")):
        rebuild_tensor(storage, 0, (5,), (0,))


def test_tensors_of_up_to_8_dimensions_are_read():
    storage = torch.arange(2.0)
    assert rebuild_tensor(storage, 0, (1,) * 7 + (2,), (1,) * 8).shape == (1,) * 7 + (2,)
    with pytest.raises(ValueError, match="^malformed tensor shape$"):
        rebuild_tensor(storage, 0, (1,) * 8 + (2,), (1,) * 9)


class PersistentPickler(pickle.Pickler):
    """Writes `persistent` as a persistent id: a legacy-format file chooses these tuples itself."""

    def __init__(self, file, persistent: tuple) -> None:
        super().__init__(file, protocol=2)
        self.persistent = persistent

    def persistent_id(self, obj):
        return self.persistent if obj == "ref" else None


@pytest.mark.parametrize("pid", [("evil", set, 0, 0), ("storage", set, 0, 0), ("module", set, "src", "text"),
                                 ("module", "models.yolo.Model", "src", "text")])
def test_persistent_ids_other_than_storages_and_module_records_are_refused(pid):
    buffer = io.BytesIO()
    PersistentPickler(buffer, pid).dump(["ref"])
    buffer.seek(0)
    with pytest.raises(Exception, match="a persistent object that is not a tensor storage"):
        RestrictedUnpickler(buffer).load()


# ----------------------------------------------------------------------------- numpy: numbers only


def test_big_endian_arrays_keep_their_byte_order_and_values(tmp_path):
    path = tmp_path / "be.pt"
    path.write_bytes(pickle.dumps(np.array([1.5, -2.25, 1e300], dtype=">f8"), protocol=2))
    loaded = restricted_load(path)
    assert loaded.dtype == np.dtype(">f8") and loaded.tolist() == [1.5, -2.25, 1e300]


@pytest.mark.parametrize("dtype,shown", [(np.dtype("O"), "'O8'"), (np.dtype("M8[s]"), "'M8'")])
def test_non_numeric_dtypes_are_refused_by_name(tmp_path, dtype, shown):
    assert refusal(tmp_path, dtype) == f"refusing to load: it would import numpy.dtype (of {shown}: only numbers are read)"


def test_dtype_codes_of_up_to_4_characters_are_read():
    assert numeric_dtype("=c16") == np.dtype("complex128")  # 4 characters: read
    with pytest.raises(Refused, match=re.escape("numpy.dtype (of '=c160')")):
        numeric_dtype("=c160")


def test_a_dtype_state_with_a_subarray_is_refused(tmp_path):
    subarray_state = (3, "<", (np.dtype("f8"), (2,)), None, None, 16, 8, 0)
    hostile = Reduces(np.dtype, ("f8", False, True), subarray_state)
    assert refusal(tmp_path, hostile) == ("refusing to load: it would import numpy.dtype "
                                          "(with a state that is not a plain number type)")


def test_a_numpy_scalar_of_something_other_than_bytes_is_refused_by_name(tmp_path):
    scalar = np.float64(0).__reduce__()[0]  # numpy's own scalar reconstructor, as numpy pickles it
    hostile = Reduces(scalar, (np.dtype("f8"), "12345678"))
    assert refusal(tmp_path, hostile) == ("refusing to load: it would import numpy.core.multiarray.scalar "
                                          "(of a non-numeric type)")


# ----------------------------------------------------------------------------- zip archives


def rewrite_pickle(path, old: bytes, new: bytes) -> None:
    """Replace bytes inside the archive's data.pkl (the rest of the archive kept as it is)."""
    with zipfile.ZipFile(path) as zf:
        entries = {info.filename: zf.read(info) for info in zf.infolist()}
    name = next(n for n in entries if n.endswith("/data.pkl"))
    assert entries[name].count(old) == 1
    entries[name] = entries[name].replace(old, new)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for entry, data in entries.items():
            zf.writestr(entry, data)


def test_an_archive_without_its_pickle_is_named_so(tmp_path):
    path = tmp_path / "nopkl.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data/0", b"\0" * 8)
    with pytest.raises(UserError) as err:
        restricted_load(path)
    assert err.value.message == "damaged or unsupported PyTorch file (no data.pkl in the archive)"


@pytest.mark.parametrize("b", [torch.zeros(2, dtype=torch.int32), torch.zeros(3)])
def test_a_storage_read_as_another_type_or_size_is_refused(tmp_path, b):
    """Tensor `b` made to point at `a`'s storage (key '0'): a different element type, or more elements
    than that storage holds, is a damaged file; the same type and size would be a shared storage."""
    path = tmp_path / "shared.pt"
    torch.save({"a": torch.zeros(2), "b": b}, path)
    rewrite_pickle(path, b"X\x01\x00\x00\x001", b"X\x01\x00\x00\x000")  # b's storage key '1' -> '0'
    with pytest.raises(UserError) as err:
        restricted_load(path)
    assert err.value.message == "damaged or unsupported PyTorch file (storage 0 does not match its reference)"


def test_a_storage_shared_by_two_tensors_loads_once(tmp_path):
    path = tmp_path / "shared.pt"
    torch.save({"a": torch.arange(2.0), "b": torch.zeros(2)}, path)
    rewrite_pickle(path, b"X\x01\x00\x00\x001", b"X\x01\x00\x00\x000")
    loaded = restricted_load(path)
    assert loaded["a"].tolist() == loaded["b"].tolist() == [0.0, 1.0]


# ----------------------------------------------------------------------------- size limits, exactly


class FakeInfo:
    def __init__(self, name: str, file_size: int, compress_size: int) -> None:
        self.filename, self.file_size, self.compress_size = name, file_size, compress_size


class FakeZip:
    """What check_zip_sizes reads of a zip file: its entry list (sizes as declared)."""

    def __init__(self, infos: list[FakeInfo]) -> None:
        self.infos = infos

    def infolist(self) -> list[FakeInfo]:
        return self.infos


def test_zip_entry_count_limit_is_exact():
    entry = FakeInfo("e", 0, 0)
    check_zip_sizes(FakeZip([entry] * MAX_ZIP_ENTRIES), 1)
    with pytest.raises(TooLarge, match=f"^the archive has {MAX_ZIP_ENTRIES + 1} entries \\(limit {MAX_ZIP_ENTRIES}\\)$"):
        check_zip_sizes(FakeZip([entry] * (MAX_ZIP_ENTRIES + 1)), 1)


def test_zip_total_expansion_limit_is_exact():
    archive_bytes = 100
    at_limit = [FakeInfo(f"e{k}", 100, 100) for k in range(MAX_COMPRESSION_RATIO)]  # 10 x 100 = 1000 bytes
    check_zip_sizes(FakeZip(at_limit), archive_bytes)
    with pytest.raises(TooLarge, match=f"^its entries would expand to 1001 bytes from a 100-byte archive"):
        check_zip_sizes(FakeZip(at_limit + [FakeInfo("one", 1, 1)]), archive_bytes)


def bounded(data: bytes, size: int | None = None) -> BoundedReader:
    return BoundedReader(io.BytesIO(data), len(data) if size is None else size)


def test_bounded_reads_stop_at_the_end_and_read_nothing_for_zero():
    reader = bounded(b"0123456789")
    assert reader.read(4) == b"0123" and reader.left() == 6
    assert reader.read(0) == b"" and reader.left() == 6
    with pytest.raises(ValueError, match="the file ends inside a pickled buffer"):
        reader.readinto(bytearray(7))
    assert reader.readinto(bytearray(6)) == 6 and reader.left() == 0


def test_bounded_lines_are_at_most_max_line_bytes():
    line = b"x" * (MAX_LINE + 10) + b"\n"
    assert len(bounded(line).readline()) == MAX_LINE
    assert len(bounded(line).readline(MAX_LINE + 5)) == MAX_LINE
    assert bounded(line).readline(3) == b"xxx"

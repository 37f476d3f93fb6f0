"""The restricted unpickler's exact limits and messages: what a hostile file is told, to the letter.

`test_security_names.py` checks which globals resolve; these check the allowed ones refuse their
dangerous forms with the message the user reads (bytes with an argument, a tensor over a non-storage or
past its storage, more than 8 dimensions, a persistent id that is not a storage).
"""

from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict

import pytest
import torch
import torch._utils

from scaledyolo.errors import UserError
from scaledyolo.interop.unpickler import restricted_load
from scaledyolo.interop.unpickler_restricted import RestrictedUnpickler, rebuild_tensor


class Reduces:
    """Pickles as `func(*args)`: how a file asks the unpickler to call an allowed global."""

    def __init__(self, func, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


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

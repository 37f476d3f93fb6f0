"""How the official `.pt` reader judges a file's structure: exact limits, absolute layer indices, errors
that name the file.

The official `parse_model` records each layer's inputs as `f` (an index relative to the layer, -1 the one
before it, or an absolute one); layer keys are decimal strings of at most 6 digits. A file that breaks
either is refused with one line naming the file; one that keeps within them loads to the same model.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import scaledyolo
from scaledyolo.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official_standins  # noqa: E402


@pytest.fixture
def official(tmp_path):
    module = official_standins.install(tmp_path / "official_code")
    yield module
    official_standins.uninstall(tmp_path / "official_code")


def small_p5(official):
    torch.manual_seed(0)
    return official.Model(official_standins.official_yaml("p5", nc=2, depth=0.34, width=0.25)).eval()


def outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def rename_key(model, old: str, new: str) -> None:
    model.model._modules = type(model.model._modules)(
        (new if key == old else key, value) for key, value in model.model._modules.items())


def test_an_absolute_input_index_reads_that_layer(official, tmp_path):
    """Layer 1 reading `f=0` (absolute) is the same network as `f=-1` (the layer before)."""
    model = small_p5(official)
    expected = outputs(model)
    model.model[1].f = 0
    torch.save({"model": model}, tmp_path / "abs.pt")
    torch.testing.assert_close(outputs(scaledyolo.load(tmp_path / "abs.pt")), expected, rtol=0, atol=1e-4)


def test_layer_keys_of_six_digits_load_and_seven_are_refused(official, tmp_path):
    """The key check's limit is exactly 6 digits; int("000000") == 0 keeps the layer order."""
    model = small_p5(official)
    expected = outputs(model)
    rename_key(model, "0", "000000")
    torch.save({"model": model}, tmp_path / "six.pt")
    torch.testing.assert_close(outputs(scaledyolo.load(tmp_path / "six.pt")), expected, rtol=0, atol=1e-4)
    rename_key(model, "000000", "0000000")
    path = tmp_path / "seven.pt"
    torch.save({"model": model}, path)
    with pytest.raises(UserError, match="keys that are not layer numbers") as err:
        scaledyolo.load(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("f", [None, 2.0, "1", True, []])
def test_an_input_index_that_is_not_an_index_is_refused(official, tmp_path, f):
    model = small_p5(official)
    model.model[4].f = f
    path = tmp_path / "f.pt"
    torch.save({"model": model}, path)
    with pytest.raises(UserError, match=re.escape(f"official file of unknown structure: layer 4 reads {f!r}")) as err:
        scaledyolo.load(path)
    assert err.value.path == str(path)


def test_a_file_without_a_model_names_itself(official, tmp_path):
    path = tmp_path / "nomodel.pt"
    torch.save({"model": None, "epoch": 3}, path)
    with pytest.raises(UserError, match="expected a dict whose 'model' entry is a models.yolo.Model") as err:
        scaledyolo.interop.official.load_official(path)
    assert err.value.path == str(path)


def test_a_last_layer_other_than_detect_is_refused_by_name(official, tmp_path):
    model = small_p5(official)
    last = str(len(model.model) - 1)
    model.model._modules[last] = model.model[0]
    path = tmp_path / "nodetect.pt"
    torch.save({"model": model}, path)
    with pytest.raises(UserError, match="official file of unknown structure: the last layer is not a models.yolo.Detect$") as err:
        scaledyolo.load(path)
    assert err.value.path == str(path)

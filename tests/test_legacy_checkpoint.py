"""Checkpoints saved by scaledyolo 0.1.0 (format scaledyolo-v1, `layers.N.*` keys from before the model
rebuild into named blocks) load through the darknet / official layer tables, with the same outputs."""

from __future__ import annotations

import logging

import pytest
import torch

from scaledyolo.interop.checkpoint import atomic_save, make_checkpoint
from scaledyolo.interop.legacy import convert_legacy_state, is_legacy_state, to_legacy_state
from scaledyolo.interop.loading import load_model
from scaledyolo.models.spec import get_spec
from scaledyolo.models.yolo import build_model

# tiny and csp: darknet_layout; p5, p6 and the yaml csp (p5 with a residual first stage): official_layout
SPECS = {"yolov4-tiny": {"width": 0.5}, "yolov4-csp": {"width": 0.25}, "yolov4-p5": {"width": 0.25},
         "yolov4-p6": {"width": 0.25}, "yaml-csp": {"width": 0.25, "first_stage": "residual"}}


def _old_checkpoint(name: str, tmp_path, ema: bool = False):
    torch.manual_seed(0)
    member = "yolov4-p5" if name == "yaml-csp" else name
    model = build_model(get_spec(member).replace(num_classes=3, **SPECS[name])).eval()
    for p in model.parameters():  # BN statistics too, so a misplaced tensor changes the output
        p.data.normal_(0, 0.1)
    for b in model.buffers():
        if b.dtype.is_floating_point and b.dim() == 1:
            b.data.uniform_(0.5, 1.5)
    ckpt = make_checkpoint(model)
    old = to_legacy_state(ckpt["state_dict"], model.spec)
    assert is_legacy_state(old) and not is_legacy_state(ckpt["state_dict"])
    assert len(old) == len(ckpt["state_dict"]) and not any(k.startswith(("backbone.", "neck.", "head.")) for k in old)
    ckpt["state_dict"] = old
    if ema:
        ckpt["ema"] = old
    path = tmp_path / f"{name}-0.1.0.pt"
    atomic_save(ckpt, path)
    return model, path


@pytest.mark.parametrize("name", sorted(SPECS))
def test_old_checkpoint_loads_with_identical_outputs(name, tmp_path, caplog):
    model, path = _old_checkpoint(name, tmp_path, ema=name == "yolov4-csp")
    with caplog.at_level(logging.INFO, logger="scaledyolo"):
        loaded = load_model(path)
    assert "saved by scaledyolo 0.1.0" in caplog.text and "converted" in caplog.text
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_the_table_is_a_bijection_and_round_trips():
    for name in ("yolov4-tiny", "yolov4-csp", "yolov4-p5"):
        model = build_model(name)
        state = model.state_dict()
        back = convert_legacy_state(to_legacy_state(state, model.spec), model.spec)
        assert list(back) == list(state)
        assert all(back[k] is state[k] for k in state)


def test_unconvertible_old_checkpoint_is_refused_with_the_reason(tmp_path):
    _model, path = _old_checkpoint("yolov4-tiny", tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["layers.999.conv.weight"] = torch.zeros(1)
    atomic_save(ckpt, path)
    with pytest.raises(Exception, match="saved by scaledyolo 0.1.0 before the model rebuild"):
        load_model(path)

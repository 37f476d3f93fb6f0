"""Validation losses: `validate(..., loss_fn=ComputeLoss)` reports the training loss on the val split."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from scaledyolo.eval.validate import LOSS_KEYS, validate
from scaledyolo.models.yolo import build_model
from scaledyolo.train.loss import ComputeLoss
from synthetic_splits import synthetic_val_split


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    return synthetic_val_split(tmp_path_factory.mktemp("val_losses"), seed=3)


def test_val_losses_equal_compute_loss_by_hand(val_split):
    loader, dataset = val_split
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=dataset.nc).eval()
    loss_fn = ComputeLoss(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = validate(model, loader, dataset, names=dataset.names, coco=False, progress=False, loss_fn=loss_fn)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no BatchNorm statistics moved

    # By hand: the train-mode forward (raw maps) with every BatchNorm kept on its running statistics,
    # ComputeLoss on each batch, the mean of its parts over the batches.
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    with torch.no_grad():
        parts = [loss_fn(model(imgs.float() / 255.0), targets)[1] for imgs, targets, _, _ in loader]
    expected = torch.stack(parts).mean(0).tolist()
    assert len(parts) == 3  # 5 images in batches of 2: the mean is over batches, as the training losses are
    assert [result[k] for k in LOSS_KEYS] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert result["val/box_loss"] > 0 and result["val/obj_loss"] > 0 and result["val/cls_loss"] > 0
    assert result["val/total_loss"] == pytest.approx(
        result["val/box_loss"] + result["val/obj_loss"] + result["val/cls_loss"], rel=1e-6)


def test_no_loss_keys_without_a_loss(val_split):
    loader, dataset = val_split
    model = build_model("yolov4-tiny", num_classes=dataset.nc).eval()
    result = validate(model, loader, dataset, names=dataset.names, coco=False, progress=False)
    assert not set(LOSS_KEYS) & set(result)

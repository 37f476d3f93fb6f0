"""`ComputeLoss` against a float64 reference of the official Scaled-YOLOv4 loss, and its decode vs the head's.

The reference is written here from the facts of the official yolov4-large `compute_loss` /
`build_targets` (utils/general.py): per level, every anchor whose w and h ratios to a target are
all below anchor_t takes it, in the centre cell and (with offsets that reach -0.5..1.5) in the
left/up neighbour when the centre's fraction is < 0.5 (and the cell is not the first) and the
right/down one when it is > 0.5 (and not the last); box loss mean(1 - CIoU); objectness BCE with
target CIoU.clamp(0) (model.gr = 1), averaged over every cell and weighted by the level balance;
class BCE against one-hot (nc > 1); gains x 3 / levels (objectness x 1.4 for 4+ levels); total x
batch size. YOLOv4-tiny (2 levels) uses darknet's decoding, balance [4, 1] and centre cells only
(our documented choice, see `train/loss.py`). Plain Python loops in float64: no vectorised
trick of the implementation is shared.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from iou_reference import iou_family
from scaledyolo.hyp import load_hyp
from scaledyolo.models.spec import get_spec
from scaledyolo.models.yolo import Detect
from scaledyolo.train.loss import ComputeLoss, FocalLoss

OFFICIAL_BALANCE = {2: [4.0, 1.0], 3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.4, 0.1], 5: [4.0, 1.0, 0.5, 0.4, 0.1]}
IMG_HW = (256, 192)  # not square: grid h != w on every level
NC = 3


class DetectOnly(nn.Module):
    """What ComputeLoss reads from a model: its `detect` head, its levels and a parameter (for the device)."""

    def __init__(self, spec) -> None:
        super().__init__()
        self.detect = Detect(spec)
        self.levels = list(range(spec.num_levels))
        self.anchor_device = nn.Parameter(torch.zeros(1))


def member(name: str, **changes):
    spec = get_spec(name, NC)
    return DetectOnly(spec.replace(**changes) if changes else spec)


def raw_maps(detect: Detect, batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, detect.na, IMG_HW[0] // s, IMG_HW[1] // s, detect.no, generator=g) * 1.5
            for s in detect.strides]


def targets_for(batch: int, seed: int, n: int = 14) -> torch.Tensor:
    """Random targets of many sizes (so several levels and anchors match), away from the image edge."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        cx, cy = (0.05 + 0.9 * torch.rand(2, generator=g)).tolist()
        scale = 2.0 ** float(torch.empty(1).uniform_(-5, -0.7, generator=g))
        w, h = scale * float(0.5 + torch.rand(1, generator=g)), scale * float(0.5 + torch.rand(1, generator=g))
        rows.append([i % batch, int(torch.randint(0, NC, (1,), generator=g)), cx, cy, w, h])
    return torch.tensor(rows)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bce(logit: float, target: float, pos_weight: float = 1.0) -> float:
    """-(w t log p + (1 - t) log(1 - p)), p = sigmoid(logit), in a form that cannot overflow."""
    log_p = -(max(-logit, 0.0) + math.log1p(math.exp(-abs(logit))))
    log_not_p = -(max(logit, 0.0) + math.log1p(math.exp(-abs(logit))))
    return -(pos_weight * target * log_p + (1 - target) * log_not_p)


def reference_decode(raw: list[float], anchor: tuple[float, float], rule: str, scale_xy: float) -> list[float]:
    """(x offset in cell, y offset, w, h) in grid units from one raw prediction, the member's own rule."""
    if rule == "darknet":  # darknet: logistic * scale_x_y - (scale_x_y - 1) / 2, exp(t) * anchor
        return [sigmoid(raw[0]) * scale_xy - (scale_xy - 1) / 2, sigmoid(raw[1]) * scale_xy - (scale_xy - 1) / 2,
                math.exp(raw[2]) * anchor[0], math.exp(raw[3]) * anchor[1]]
    return [2 * sigmoid(raw[0]) - 0.5, 2 * sigmoid(raw[1]) - 0.5,  # scaled: 2 sigma - 0.5, (2 sigma)^2 anchor
            (2 * sigmoid(raw[2])) ** 2 * anchor[0], (2 * sigmoid(raw[3])) ** 2 * anchor[1]]


def reference_loss(model: DetectOnly, maps: list[torch.Tensor], targets: torch.Tensor,
                   hyp: dict | None = None) -> dict[str, float]:
    """`maps` are the model's kept levels (`model.levels`: all, or a once-for-all subnet's)."""
    detect, hyp = model.detect, load_hyp(hyp)
    levels = len(detect.strides)
    balance = OFFICIAL_BALANCE[levels]
    lbox = lobj = lcls = 0.0
    for level, pi in zip(model.levels, maps):
        p = pi.double()
        _, na, h, w, _ = p.shape
        rule, scale_xy = detect.decode_rule, detect.scale_xy[level]
        neighbours = rule != "darknet" or scale_xy >= 2
        anchors = [(float(aw) / detect.strides[level], float(ah) / detect.strides[level])
                   for aw, ah in detect.anchors[level]]
        # official order: anchor-major pairs (anchor, target); all centre cells first, then every
        # left, up, right and down neighbour; a cell written twice keeps the last target's IoU
        pairs = [(a, row) for a, (aw, ah) in enumerate(anchors) for row in targets.double().tolist()
                 if max(row[4] * w / aw, aw / (row[4] * w), row[5] * h / ah, ah / (row[5] * h)) < hyp["anchor_t"]]
        shifts = [(0, 0)]
        if neighbours:
            shifts += [(-1, 0), (0, -1), (1, 0), (0, 1)]
        assigned = []  # (image, anchor, cell y, cell x, target box in grid units relative to the cell, class)
        for dx, dy in shifts:
            for a, (img, cls, cx, cy, bw, bh) in pairs:
                gx, gy, gw, gh = cx * w, cy * h, bw * w, bh * h
                takes = {(0, 0): True, (-1, 0): gx % 1 < 0.5 and gx > 1, (0, -1): gy % 1 < 0.5 and gy > 1,
                         (1, 0): gx % 1 > 0.5 and gx < w - 1, (0, 1): gy % 1 > 0.5 and gy < h - 1}[(dx, dy)]
                if takes:
                    ci, cj = math.floor(gx) + dx, math.floor(gy) + dy
                    assigned.append((int(img), a, cj, ci, [gx - ci, gy - cj, gw, gh], int(cls)))
        tobj = torch.zeros(p.shape[:4], dtype=torch.float64)
        if assigned:
            ious = []
            for img, a, cj, ci, tbox, _ in assigned:
                pbox = reference_decode(p[img, a, cj, ci, :4].tolist(), anchors[a], rule, scale_xy)
                ious.append(float(iou_family(torch.tensor(pbox, dtype=torch.float64),
                                             torch.tensor(tbox, dtype=torch.float64), "ciou")))
            lbox += sum(1 - x for x in ious) / len(ious)
            for (img, a, cj, ci, _, _), iou in zip(assigned, ious):
                tobj[img, a, cj, ci] = max(iou, 0.0)
            if detect.nc > 1:
                terms = [bce(float(p[img, a, cj, ci, 5 + k]), 1.0 if k == cls else 0.0, hyp["cls_pw"])
                         for img, a, cj, ci, _, cls in assigned for k in range(detect.nc)]
                lcls += sum(terms) / len(terms)
        logits, tgt = p[..., 4].flatten().tolist(), tobj.flatten().tolist()
        lobj += sum(bce(x, t, hyp["obj_pw"]) for x, t in zip(logits, tgt)) / len(logits) * balance[level]
    s = 3 / levels
    lbox *= hyp["giou"] * s
    lobj *= hyp["obj"] * s * (1.4 if levels >= 4 else 1.0)
    lcls *= hyp["cls"] * s
    return {"box": lbox, "obj": lobj, "cls": lcls, "total": (lbox + lobj + lcls) * maps[0].shape[0]}


MEMBERS = [("yolov4-tiny", {}), ("yolov4-csp", {}), ("yolov4-p5", {}), ("yolov4-p6", {}), ("yolov4-p7", {}),
           ("yolov4-tiny", {"scale_xy": 2.0})]  # a darknet level reaching -0.5..1.5 takes the neighbours too


@pytest.mark.parametrize("name,changes", MEMBERS, ids=lambda x: x if isinstance(x, str) else str(x or ""))
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_parts_equal_the_official_formulas(name, changes, seed):
    model = member(name, **changes)
    batch = 2
    maps, targets = raw_maps(model.detect, batch, seed), targets_for(batch, seed)
    expected = reference_loss(model, maps, targets)
    assert expected["box"] > 0 and expected["cls"] > 0  # the fixture assigns targets
    loss, parts = ComputeLoss(model)(maps, targets)
    box, obj, cls, total = parts.tolist()
    assert box == pytest.approx(expected["box"], abs=1e-5)
    assert obj == pytest.approx(expected["obj"], abs=1e-5)
    assert cls == pytest.approx(expected["cls"], abs=1e-5)
    assert loss.item() == pytest.approx(expected["total"], abs=1e-5 * batch)
    assert total * batch == pytest.approx(loss.item(), rel=1e-6)


def test_levels_use_their_own_balance():
    """Reversing the balance changes the objectness part (the reference above would see it)."""
    model = member("yolov4-p6")
    maps, targets = raw_maps(model.detect, 1, 3), targets_for(1, 3, n=5)
    compute = ComputeLoss(model)
    assert compute.balance == OFFICIAL_BALANCE[4]
    obj = compute(maps, targets)[1][1].item()
    compute.balance = compute.balance[::-1]
    assert abs(compute(maps, targets)[1][1].item() - obj) > 1e-3


def test_no_targets_only_objectness():
    model = member("yolov4-csp")
    maps = raw_maps(model.detect, 2, 5)
    expected = reference_loss(model, maps, torch.zeros(0, 6))
    _, parts = ComputeLoss(model)(maps, torch.zeros(0, 6))
    assert parts[0].item() == 0 and parts[2].item() == 0
    assert parts[1].item() == pytest.approx(expected["obj"], abs=1e-6)


# --------------------------------------------------------------------------- decode: loss == head


@pytest.mark.parametrize("name,changes", MEMBERS, ids=lambda x: x if isinstance(x, str) else str(x or ""))
def test_loss_decode_equals_head_decode_and_the_rule(name, changes):
    """Every cell of every level: the loss's box (grid units, offset in the cell) is the head's box
    (input pixels) divided by the stride minus the cell, and both follow the member's rule in float64."""
    model = member(name, **changes)
    detect, compute = model.detect, ComputeLoss(model)
    maps = raw_maps(detect, 1, 11)
    head = detect.decode(maps, list(range(len(maps))))
    start = 0
    for level, pi in enumerate(maps):
        _, na, h, w, no = pi.shape
        stride = detect.strides[level]
        a, gj, gi = torch.meshgrid(torch.arange(na), torch.arange(h), torch.arange(w), indexing="ij")
        a, gj, gi = a.flatten(), gj.flatten(), gi.flatten()
        anchors = detect.anchors[level][a] / stride
        ours = compute._decode(pi[0, a, gj, gi], anchors, level)
        from_head = head[0, start:start + na * h * w, :4] / stride  # (anchor, y, x) order
        start += na * h * w
        assert torch.allclose(ours[:, 0] + gi, from_head[:, 0], atol=1e-4)
        assert torch.allclose(ours[:, 1] + gj, from_head[:, 1], atol=1e-4)
        assert torch.allclose(ours[:, 2:], from_head[:, 2:], rtol=1e-5, atol=1e-6)
        rule = [reference_decode(pi[0, int(x), int(y), int(z), :4].double().tolist(),
                                 tuple(anchors[k].double().tolist()), detect.decode_rule, detect.scale_xy[level])
                for k, (x, y, z) in enumerate(zip(a, gj, gi))]
        assert torch.allclose(ours.double(), torch.tensor(rule, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    assert start == head.shape[1]


def test_tiny_uses_darknet_decoding():
    """The two rules differ on the same raw values, so the rule check above distinguishes them."""
    model = member("yolov4-tiny")
    assert model.detect.decode_rule == "darknet" and model.detect.scale_xy == [1.05, 1.05]
    raw = [0.3, -0.7, 0.4, -0.2]
    darknet, scaled = reference_decode(raw, (2.0, 3.0), "darknet", 1.05), reference_decode(raw, (2.0, 3.0), "scaled", 2)
    assert max(abs(x - y) for x, y in zip(darknet, scaled)) > 0.1


def test_focal_loss_equals_the_papers_formula():
    """Lin et al. 2017: FL = -alpha_t (1 - p_t)^gamma log(p_t), p_t = p for positives, 1 - p otherwise."""
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(64, 5, generator=g) * 3, (torch.rand(64, 5, generator=g) > 0.7).float()
    target[0, 0] = 0.4  # soft targets (objectness is an IoU) follow the same blend
    focal = FocalLoss(nn.BCEWithLogitsLoss(), gamma=1.5)
    expected = []
    for x, t in zip(logits.double().flatten().tolist(), target.double().flatten().tolist()):
        p = sigmoid(x)
        p_t = t * p + (1 - t) * (1 - p)
        alpha_t = t * 0.25 + (1 - t) * 0.75
        expected.append(alpha_t * (1 - p_t) ** 1.5 * bce(x, t))
    assert focal(logits, target).item() == pytest.approx(sum(expected) / len(expected), abs=1e-7)
    hyp = dict(load_hyp(None), fl_gamma=1.5)
    compute = ComputeLoss(member("yolov4-csp"), hyp)
    assert isinstance(compute.bce_obj, FocalLoss) and isinstance(compute.bce_cls, FocalLoss)


def test_positive_weights_and_gains_from_the_hyper_parameters():
    hyp = {"cls_pw": 2.0, "obj_pw": 1.5, "giou": 0.1, "obj": 0.7, "cls": 0.3}
    model = member("yolov4-p5")
    maps, targets = raw_maps(model.detect, 2, 7), targets_for(2, 7)
    expected = reference_loss(model, maps, targets, hyp)
    box, obj, cls, _ = ComputeLoss(model, hyp)(maps, targets)[1].tolist()
    assert [box, obj, cls] == pytest.approx([expected["box"], expected["obj"], expected["cls"]], abs=1e-5)


def test_subnet_levels_use_their_own_anchors_and_balance():
    """A once-for-all subnet keeping levels 1 and 2 of P5: the maps are those levels only."""
    model = member("yolov4-p5")
    model.levels = [1, 2]
    maps = raw_maps(model.detect, 2, 8)[1:]
    targets = targets_for(2, 8)
    expected = reference_loss(model, maps, targets)
    box, obj, cls, _ = ComputeLoss(model)(maps, targets)[1].tolist()
    assert [box, obj, cls] == pytest.approx([expected["box"], expected["obj"], expected["cls"]], abs=1e-5)

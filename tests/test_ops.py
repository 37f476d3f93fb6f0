"""Box operations and NMS: hand-computed values, a naive greedy reference, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iou_reference import iou_family
from scaledyolo.ops import nms as nms_module
from scaledyolo.ops.boxes import bbox_iou, box_iou, clip_boxes, scale_boxes, xywh2xyxy, xyxy2xywh
from scaledyolo.ops.nms import batched_nms, nms, non_max_suppression


def random_boxes(n: int, seed: int, size: float = 640.0, max_wh: float = 160.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * max_wh + 1
    return torch.cat((xy, xy + wh), 1)


def naive_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, idxs: torch.Tensor | None = None) -> list[int]:
    """Textbook greedy NMS, one box at a time (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep: list[int] = []
    for i in order:
        rivals = [k for k in keep if idxs is None or int(idxs[k]) == int(idxs[i])]
        if rivals and (box_iou(boxes[i:i + 1], boxes[rivals]) > thr).any():
            continue
        keep.append(i)
    return keep


# --------------------------------------------------------------------------- conversions


def test_conversions_known_values_torch_and_numpy():
    xywh = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    assert xywh2xyxy(xywh).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert xyxy2xywh(torch.tensor([[8.0, 17.0, 12.0, 23.0]])).tolist() == [[10.0, 20.0, 4.0, 6.0]]
    out = xywh2xyxy(xywh.numpy())
    assert isinstance(out, np.ndarray) and out.tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert xywh.tolist() == [[10.0, 20.0, 4.0, 6.0]]  # input untouched


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=4, max_size=4),
       st.lists(st.floats(0, 1e3, allow_nan=False), min_size=2, max_size=2))
def test_conversion_round_trip(centre_and_junk, wh):
    box = torch.tensor([[centre_and_junk[0], centre_and_junk[1], wh[0], wh[1]]], dtype=torch.float64)
    assert torch.allclose(xyxy2xywh(xywh2xyxy(box)), box, atol=1e-9)
    xyxy = xywh2xyxy(box)
    assert torch.allclose(xywh2xyxy(xyxy2xywh(xyxy)), xyxy, atol=1e-9)


# --------------------------------------------------------------------------- IoU family


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 5.0, 10.0]])
    iou = box_iou(a, b)
    assert iou.shape == (1, 4)
    expected = [25 / 175, 1.0, 0.0, 0.5]
    assert torch.allclose(iou[0], torch.tensor(expected), atol=1e-6)


def test_bbox_iou_family_hand_computed():
    # side by side, disjoint unit squares: IoU 0, enclosing box 3 x 1, union 2
    b1, b2 = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert bbox_iou(b1, b2, xywh=False, kind="iou").item() == pytest.approx(0.0, abs=1e-6)
    assert bbox_iou(b1, b2, xywh=False, kind="giou").item() == pytest.approx(-1 / 3, abs=1e-6)
    # centre distance^2 = 4, enclosing diagonal^2 = 9 + 1
    assert bbox_iou(b1, b2, xywh=False, kind="diou").item() == pytest.approx(-0.4, abs=1e-6)
    assert bbox_iou(b1, b2, xywh=False, kind="ciou").item() == pytest.approx(-0.4, abs=1e-6)  # same aspect: v = 0

    # 2x2 square inside a 4x2 box: IoU 0.5, rho^2 = 1, c^2 = 20, aspect term from the CIoU paper
    b1, b2 = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    v = 4 / math.pi ** 2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    expected_ciou = 0.5 - 1 / 20 - v * v / (1 - 0.5 + v)
    assert bbox_iou(b1, b2, xywh=False, kind="ciou").item() == pytest.approx(expected_ciou, abs=1e-5)
    # the same boxes as centre/size give the same values
    assert bbox_iou(xyxy2xywh(b1), xyxy2xywh(b2), kind="ciou").item() == pytest.approx(expected_ciou, abs=1e-5)
    assert bbox_iou(b1, b2, xywh=False, kind="giou").item() == pytest.approx(0.5, abs=1e-6)


def test_bbox_iou_matches_box_iou_diagonal():
    a, b = random_boxes(50, 0), random_boxes(50, 1)
    assert torch.allclose(bbox_iou(a, b, xywh=False, kind="iou"), box_iou(a, b).diagonal(), atol=1e-6)
    with pytest.raises(ValueError):
        bbox_iou(a, b, kind="nope")


def test_ciou_gradient_flows_and_improves_overlap():
    target = torch.tensor([[50.0, 50.0, 20.0, 40.0]])
    pred = torch.tensor([[40.0, 58.0, 30.0, 15.0]], requires_grad=True)
    before = bbox_iou(pred, target, kind="ciou").item()
    opt = torch.optim.Adam([pred], lr=1.0)
    for _ in range(40):
        opt.zero_grad()
        loss = (1 - bbox_iou(pred, target, kind="ciou")).sum()
        loss.backward()
        assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
        opt.step()
    assert bbox_iou(pred, target, kind="ciou").item() > max(before + 0.4, 0.8)


def random_xywh(n: int, seed: int) -> torch.Tensor:
    """Float64 centre/size boxes with widths and heights drawn independently (aspect 1/30..30)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
    wh = torch.exp(torch.rand(n, 2, generator=g, dtype=torch.float64) * 3.4) + 0.5
    return torch.cat((xy, wh), 1)


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("seed", [0, 1])
def test_iou_family_equals_the_papers_formulas_on_non_square_boxes(kind, seed):
    a, b = random_xywh(400, seed), random_xywh(400, seed + 10)
    b[:100] = a[:100] + torch.randn(100, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2
    b[:100, 2:] = b[:100, 2:].abs() + 0.5  # a quarter overlapping heavily, the rest anywhere
    assert ((a[:, 2] / a[:, 3] - 1).abs() > 0.2).float().mean() > 0.8  # mostly far from square
    expected = iou_family(a, b, kind)
    assert torch.allclose(bbox_iou(a, b, xywh=True, kind=kind), expected, rtol=0, atol=1e-6)
    assert torch.allclose(bbox_iou(xywh2xyxy(a), xywh2xyxy(b), xywh=False, kind=kind), expected, rtol=0, atol=1e-6)
    assert torch.allclose(bbox_iou(a.float(), b.float(), kind=kind).double(), expected, rtol=0, atol=2e-5)
    if kind == "ciou":  # swapping w and h of one box changes the aspect term (unless square)
        swapped = a[:, [0, 1, 3, 2]]
        assert (bbox_iou(swapped, b, kind=kind) - expected).abs().max() > 0.01
        assert torch.allclose(bbox_iou(swapped, b, kind=kind), iou_family(swapped, b, kind), atol=1e-6)


def test_ciou_alpha_is_a_constant_in_the_gradient():
    """d CIoU / d box equals the paper's gradient with alpha held constant, not the one through alpha."""
    a, b = random_xywh(200, 5), random_xywh(200, 6)
    b[:, :2] = a[:, :2] + (b[:, :2] - 30) / 10  # overlapping pairs: alpha matters
    pred = a.clone().requires_grad_()
    (ours,) = torch.autograd.grad(bbox_iou(pred, b, kind="ciou").sum(), pred)
    ref_pred = a.clone().requires_grad_()
    (constant,) = torch.autograd.grad(iou_family(ref_pred, b, "ciou").sum(), ref_pred)
    ref_pred = a.clone().requires_grad_()
    (through,) = torch.autograd.grad(iou_family(ref_pred, b, "ciou", alpha_grad=True).sum(), ref_pred)
    assert (constant - through).abs().max() > 1e-3  # the two readings differ on these boxes
    assert torch.allclose(ours, constant, rtol=1e-5, atol=1e-7)


def test_box_iou_gradcheck():
    a = random_boxes(6, 3).double().requires_grad_()
    b = random_boxes(4, 4).double()
    assert torch.autograd.gradcheck(lambda x: box_iou(x, b), (a,))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 20), st.integers(1, 20))
def test_iou_symmetric_and_bounded(seed, n, m):
    a, b = random_boxes(n, seed, size=50, max_wh=40), random_boxes(m, seed + 1, size=50, max_wh=40)
    ab, ba = box_iou(a, b), box_iou(b, a)
    assert torch.allclose(ab, ba.T, atol=1e-6)
    assert (ab >= 0).all() and (ab <= 1).all()
    k = min(n, m)
    # lower bounds: IoU >= 0; GIoU, DIoU >= -1 (one penalty below 1); CIoU > -2 (IoU - rho^2/c^2 - alpha v,
    # both penalties below 1: disjoint boxes of very different aspect go below -1, e.g. seed 66, -1.0173,
    # which a float64 evaluation of the formula confirms)
    for kind, lowest in (("iou", 0.0), ("giou", -1.0), ("diou", -1.0), ("ciou", -2.0)):
        x, y = bbox_iou(a[:k], b[:k], xywh=False, kind=kind), bbox_iou(b[:k], a[:k], xywh=False, kind=kind)
        assert torch.allclose(x, y, atol=1e-5)
        assert (x <= 1 + 1e-6).all() and (x > lowest - 1e-6).all()


# --------------------------------------------------------------------------- clip / scale


def test_clip_boxes_in_place_torch_and_numpy():
    t = torch.tensor([[-5.0, -3.0, 120.0, 40.0, 0.5, 2.0]])
    out = clip_boxes(t, (30, 100))
    assert out is t and t.tolist() == [[0.0, 0.0, 100.0, 30.0, 0.5, 2.0]]  # extra columns untouched
    a = np.array([[-5.0, 10.0, 50.0, 99.0]])
    assert clip_boxes(a, (30, 100)).tolist() == [[0.0, 10.0, 50.0, 30.0]]


def test_scale_boxes_undoes_letterbox():
    # a 100 x 200 (h x w) picture letterboxed into 256 x 256: gain 1.28, 64 px of padding above and below
    original = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    gain, padh = 1.28, 64.0
    letterboxed = original * gain + torch.tensor([0.0, padh, 0.0, padh])
    back = scale_boxes(letterboxed.clone(), (256, 256), (100, 200))
    assert torch.allclose(back, original, atol=1e-4)
    back = scale_boxes(letterboxed.clone(), (256, 256), (100, 200), ratio_pad=((gain, gain), (0.0, padh)))
    assert torch.allclose(back, original, atol=1e-4)
    outside = scale_boxes(torch.tensor([[-20.0, 0.0, 300.0, 256.0]]), (256, 256), (100, 200))
    assert outside.tolist() == [[0.0, 0.0, 200.0, 100.0]]


# --------------------------------------------------------------------------- NMS


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_naive_reference(seed, thr):
    boxes = random_boxes(400, seed)
    scores = torch.rand(400, generator=torch.Generator().manual_seed(100 + seed))
    idxs = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(200 + seed))
    assert nms(boxes, scores, thr).tolist() == naive_nms(boxes, scores, thr)
    assert batched_nms(boxes, scores, idxs, thr).tolist() == naive_nms(boxes, scores, thr, idxs)


@pytest.mark.parametrize("seed", [0, 1])
def test_nms_matches_reference_across_blocks_and_paths(seed, monkeypatch):
    """Inputs larger than a block, the per-class path, and ties in the scores."""
    monkeypatch.setitem(nms_module.BLOCK, "cpu", 64)
    monkeypatch.setattr(nms_module, "SINGLE_PASS_MAX", 100)
    boxes = random_boxes(700, seed, size=300)
    scores = (torch.rand(700, generator=torch.Generator().manual_seed(seed)) * 20).round() / 20  # many ties
    idxs = torch.randint(0, 5, (700,), generator=torch.Generator().manual_seed(seed + 7))
    reference = naive_nms(boxes, scores, 0.45, idxs)
    assert batched_nms(boxes, scores, idxs, 0.45).tolist() == reference  # per-class path
    assert batched_nms(boxes, scores, idxs, 0.45, max_keep=50).tolist() == reference[:50]  # blocked, early stop
    assert nms(boxes, scores, 0.45).tolist() == naive_nms(boxes, scores, 0.45)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_nms_equals_greedy_loop(seed):
    """The GPU selection (Cluster-NMS) and the CPU loop agree on the same overlap matrix."""
    boxes = random_boxes(300, seed, size=200)
    over = box_iou(boxes, boxes) > 0.4
    loop = nms_module._greedy_loop(over, None)
    assert nms_module._greedy_cluster(over, None).tolist() == loop.tolist()
    assert nms_module._greedy_cluster(over, 10).tolist() == loop[:10].tolist()


def test_nms_class_awareness():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.5).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_nms_keeps_two_boxes_whose_float32_iou_equals_the_threshold():
    """Suppression needs IoU strictly above the threshold: at exactly the threshold both stay."""
    a, b = [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]  # IoU 50 / 100 = 0.5 exactly in float32
    boxes, scores = torch.tensor([a, b]), torch.tensor([0.9, 0.8])
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([3, 3]), 0.5).tolist() == [0, 1]
    below = float(np.nextafter(np.float32(0.5), np.float32(0)))
    assert nms(boxes, scores, below).tolist() == [0]
    for seed in range(5):  # random pairs: the threshold is their own float32 IoU
        pair = random_boxes(2, seed, size=40, max_wh=60)
        thr = box_iou(pair[:1], pair[1:]).item()
        assert 0 < thr < 1
        assert nms(pair, scores, thr).tolist() == [0, 1]
        assert nms(pair, scores, float(np.nextafter(np.float32(thr), np.float32(0)))).tolist() == [0]
    pred = make_pred([[5, 5, 10, 10], [5, 2.5, 10, 5]], [0.9, 0.8], [[1.0], [1.0]])
    assert len(non_max_suppression(pred, conf_thres=0.1, iou_thres=0.5)[0]) == 2
    assert len(non_max_suppression(pred, conf_thres=0.1, iou_thres=below)[0]) == 1


def test_class_aware_nms_across_blocks_without_early_stop(monkeypatch):
    """Later blocks are checked against earlier kept boxes of their own class only."""
    monkeypatch.setitem(nms_module.BLOCK, "cpu", 32)
    boxes = random_boxes(300, 9, size=150)
    scores = torch.rand(300, generator=torch.Generator().manual_seed(9))
    idxs = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(19))
    reference = naive_nms(boxes, scores, 0.3, idxs)
    assert len(reference) > 64  # several blocks contribute
    assert batched_nms(boxes, scores, idxs, 0.3, max_keep=10_000).tolist() == reference


def test_batched_nms_one_class_large_input(monkeypatch):
    monkeypatch.setattr(nms_module, "SINGLE_PASS_MAX", 50)
    boxes = random_boxes(200, 4, size=200)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(4))
    same = torch.full((200,), 7)
    for thr in (0.2, 0.6):
        assert batched_nms(boxes, scores, same, thr).tolist() == naive_nms(boxes, scores, thr)


def test_nms_max_keep_and_empty():
    boxes = torch.tensor([[float(20 * i), 0.0, float(20 * i + 10), 10.0] for i in range(500)])  # all disjoint
    scores = torch.rand(500, generator=torch.Generator().manual_seed(0))
    full = nms(boxes, scores, 0.5)
    assert len(full) == 500
    assert nms(boxes, scores, 0.5, max_keep=300).tolist() == full[:300].tolist()
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def make_pred(boxes_xywh: list[list[float]], obj: list[float], cls: list[list[float]]) -> torch.Tensor:
    return torch.cat((torch.tensor(boxes_xywh), torch.tensor(obj)[:, None], torch.tensor(cls)), 1)[None]


def test_non_max_suppression_format_scores_and_filters():
    pred = make_pred([[50, 50, 20, 20], [51, 50, 20, 20], [150, 150, 30, 30], [10, 10, 4, 4]],
                     [0.9, 0.8, 0.6, 0.1], [[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.2, 0.1, 0.95], [1.0, 0.0, 0.0]])
    (out,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45)
    assert out.shape == (2, 6)
    assert out[:, 4].tolist() == pytest.approx([0.81, 0.57])  # obj x cls, best first
    assert out[:, 5].tolist() == [0.0, 2.0]
    assert out[0, :4].tolist() == pytest.approx([40.0, 40.0, 60.0, 60.0])

    (multi,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45, multi_label=True)
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0, 2.0]  # box 2 also counts as class 1 (0.8 x 0.7)
    (only,) = non_max_suppression(pred, conf_thres=0.25, classes=[2])
    assert only[:, 5].tolist() == [2.0]
    (agn,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45, multi_label=True, agnostic=True)
    assert len(agn) == 2
    empty = non_max_suppression(torch.zeros(2, 10, 8))
    assert [e.shape for e in empty] == [(0, 6), (0, 6)]
    with pytest.raises(ValueError):
        non_max_suppression(pred, conf_thres=2.0)


def test_non_max_suppression_max_det_and_max_nms():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 3000, 85, generator=g)
    pred[..., :2] *= 2000
    pred[..., 2:4] = pred[..., 2:4] * 5 + 1  # small boxes far apart: little suppression
    (out,) = non_max_suppression(pred, conf_thres=0.01, max_det=300)
    assert out.shape == (300, 6)
    assert (out[1:, 4] <= out[:-1, 4]).all()
    (few,) = non_max_suppression(pred, conf_thres=0.01, max_det=1000, max_nms=50)
    assert len(few) <= 50


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), st.integers(1, 120), st.integers(1, 4), st.floats(0.1, 0.9))
def test_nms_properties(seed, n, n_classes, thr):
    """Output is a subset; kept boxes of one class overlap at most `thr`; every dropped box was
    overlapped by more than `thr` by a kept box of its class with a score at least as high."""
    boxes = random_boxes(n, seed, size=100, max_wh=60)
    g = torch.Generator().manual_seed(seed + 1)
    scores, idxs = torch.rand(n, generator=g), torch.randint(0, n_classes, (n,), generator=g)
    keep = batched_nms(boxes, scores, idxs, thr)
    assert len(set(keep.tolist())) == len(keep) and all(0 <= k < n for k in keep.tolist())
    assert (scores[keep][1:] <= scores[keep][:-1]).all()
    iou = box_iou(boxes, boxes)
    same = idxs[:, None] == idxs[None, :]
    kk = iou[keep][:, keep].fill_diagonal_(0) * same[keep][:, keep]
    assert (kk <= thr).all()
    dropped = sorted(set(range(n)) - set(keep.tolist()))
    for d in dropped:
        assert ((iou[d, keep] > thr) & same[d, keep] & (scores[keep] >= scores[d])).any()


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 900), st.integers(8, 900), st.sampled_from([128, 256, 416]), st.booleans(),
       st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.05, 1), st.floats(0.05, 1))
def test_scale_boxes_inverts_the_data_letterbox(h, w, size, auto, fx, fy, fw, fh):
    """A box mapped into a `letterbox` picture as the letterbox documents, then back by `scale_boxes`."""
    from scaledyolo.data.augment import letterbox

    boxed, (rw, rh), (padw, padh) = letterbox(np.zeros((h, w, 3), np.uint8), size, auto=auto)
    x1, y1 = fx * w, fy * h
    box = torch.tensor([[x1, y1, min(x1 + fw * w, w), min(y1 + fh * h, h)]], dtype=torch.float64)
    inside = box * torch.tensor([rw, rh, rw, rh], dtype=torch.float64) + torch.tensor([padw, padh, padw, padh])
    back = scale_boxes(inside.clone(), boxed.shape[:2], (h, w), ratio_pad=((rw, rh), (padw, padh)))
    assert torch.allclose(back, box, atol=1e-3)
    back = scale_boxes(inside.clone(), boxed.shape[:2], (h, w), ratio_pad=((rh, rw), (padw, padh)))  # loader order
    assert torch.allclose(back, box, atol=1e-3)


def test_bbox_iou_broadcasts_like_box_iou():
    """(N, 1, 4) against (1, M, 4) and single (4,) boxes, corners or centres: the pairwise IoU matrix."""
    a, b = random_boxes(7, 21), random_boxes(5, 22)
    full = box_iou(a, b)
    assert torch.allclose(bbox_iou(a[:, None], b[None], xywh=False, kind="iou"), full, atol=1e-6)
    assert torch.allclose(bbox_iou(xyxy2xywh(a)[:, None], xyxy2xywh(b)[None], kind="iou"), full, atol=1e-5)
    assert bbox_iou(a[0], b[0], xywh=False, kind="iou").item() == pytest.approx(full[0, 0].item(), abs=1e-6)


def test_non_max_suppression_score_exactly_at_conf_thres_is_dropped():
    """A candidate needs a score strictly above conf_thres, with one label per box or several."""
    pred = make_pred([[50, 50, 20, 20], [150, 150, 20, 20]], [1.0, 1.0], [[0.5, 0.0], [0.75, 0.5]])
    (single,) = non_max_suppression(pred, conf_thres=0.5)
    assert single[:, 4].tolist() == [0.75]
    (multi,) = non_max_suppression(pred, conf_thres=0.5, multi_label=True)
    assert multi[:, 4].tolist() == [0.75] and multi[:, 5].tolist() == [0.0]


def test_non_max_suppression_accepts_thresholds_at_the_ends():
    pred = make_pred([[50, 50, 20, 20], [51, 50, 20, 20]], [0.9, 0.8], [[1.0], [1.0]])
    assert len(non_max_suppression(pred, conf_thres=0.0, iou_thres=1.0)[0]) == 2  # IoU 1 suppresses nothing
    assert len(non_max_suppression(pred, conf_thres=0.0, iou_thres=0.0)[0]) == 1
    for conf, iou in ((-0.1, 0.5), (0.5, 1.1), (1.1, 0.5), (0.5, -0.1)):
        with pytest.raises(ValueError):
            non_max_suppression(pred, conf_thres=conf, iou_thres=iou)

"""The released COCO yolov4-tiny on two real photos: `predict` finds what darknet (OpenCV DNN) finds.

The reference is computed here, not written down: OpenCV DNN reads the darknet cfg and weights and
runs them on each photo letterboxed into the cfg's 416x416 (grey 127, darknet's 0.5), then keeps
score >= 0.25 (objectness x class probability) and runs NMS 0.45 per class, as darknet does. Every
confident box it finds (score >= 0.5) must be found by `scaledyolo predict` with its defaults (CLI
and Python API): same class, IoU >= 0.9, score within 0.03. The weights' own geometry (square for
darknet weights) is what makes this hold; `--rect` is also checked to miss some of them, so the test
would notice if the default went back to the rectangle.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scaledyolo
from scaledyolo.cli import main as cli_main
from scaledyolo.ops.boxes import box_iou

SHARED = Path(__file__).resolve().parents[2] / "shared"
CFG = SHARED / "weights" / "yolov4-tiny.cfg"
WEIGHTS = SHARED / "weights" / "yolov4-tiny.weights"
PHOTOS = [SHARED / "images" / "bus.jpg", SHARED / "images" / "zidane.jpg"]
CONFIDENT = 0.5

pytestmark = pytest.mark.skipif(not (WEIGHTS.is_file() and all(p.is_file() for p in PHOTOS)),
                                reason=f"the released weights and photos are not in {SHARED}")


def _net_size(cfg: Path) -> tuple[int, int]:
    lines = [line.split("=", 1) for line in cfg.read_text().splitlines() if "=" in line and line[0] != "#"]
    values = {key.strip(): value.strip() for key, value in lines}
    return int(values["width"]), int(values["height"])


def opencv_detections(photo: Path) -> list[tuple[int, float, np.ndarray]]:
    """(class, score, x1 y1 x2 y2 in original pixels) found by OpenCV DNN, darknet's way."""
    net = cv2.dnn.readNetFromDarknet(str(CFG), str(WEIGHTS))
    width, height = _net_size(CFG)
    bgr = cv2.imread(str(photo))
    h, w = bgr.shape[:2]
    gain = min(width / w, height / h)
    new_w, new_h = round(w * gain), round(h * gain)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), 127, np.uint8)
    canvas[top:top + new_h, left:left + new_w] = cv2.resize(bgr, (new_w, new_h))
    net.setInput(cv2.dnn.blobFromImage(canvas, 1 / 255.0, (width, height), swapRB=True))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    found = []
    for cls in range(rows.shape[1] - 5):
        keep = rows[:, 5 + cls] >= 0.25
        if not keep.any():
            continue
        cx, cy, bw, bh = (rows[keep, :4] * [width, height, width, height]).T
        xywh = np.stack([(cx - bw / 2 - left) / gain, (cy - bh / 2 - top) / gain, bw / gain, bh / gain], 1)
        scores = rows[keep, 5 + cls]
        for i in np.array(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.25, 0.45)).reshape(-1):
            x, y, bw_, bh_ = xywh[i]
            found.append((cls, float(scores[i]), np.array([x, y, x + bw_, y + bh_])))
    return found


@pytest.fixture(scope="module")
def reference() -> dict[str, list[tuple[int, float, np.ndarray]]]:
    ref = {p.name: [d for d in opencv_detections(p) if d[1] >= CONFIDENT] for p in PHOTOS}
    assert all(ref.values()), "OpenCV DNN found no confident box: the reference itself is broken"
    return ref


def _missing(expected: list[tuple[int, float, np.ndarray]], boxes: np.ndarray, scores: np.ndarray,
             classes: np.ndarray, size: tuple[int, int]) -> list[str]:
    """The reference boxes that no detection matches (same class, IoU >= 0.9, score within 0.03)."""
    h, w = size
    missing = []
    for cls, score, box in expected:
        box = np.clip(box, 0, [w, h, w, h])
        iou = box_iou(torch.tensor(box[None], dtype=torch.float32),
                      torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)))[0].numpy()
        ok = (np.asarray(classes) == cls) & (iou >= 0.9) & (np.abs(np.asarray(scores) - score) <= 0.03)
        if not ok.any():
            missing.append(f"class {cls} score {score:.2f} at {np.round(box).tolist()}")
    return missing


def test_python_api_defaults_find_every_confident_darknet_box(reference) -> None:
    model = scaledyolo.load(CFG)
    assert model.geometry == "square" and model.spec.img_size == 416
    for photo in PHOTOS:
        (res,) = model.predict(str(photo))
        assert not _missing(reference[photo.name], res.boxes.xyxy, res.boxes.conf, res.boxes.cls, res.orig_shape), photo.name


def test_cli_predict_defaults_find_every_confident_darknet_box(reference, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dets.json"
    assert cli_main(["predict", "--weights", str(CFG), "--source", str(PHOTOS[0].parent), "--save-json", str(out),
                     "--nosave", "--save-dir", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["img"] == 416 and summary["geometry"] == "square"
    records = {Path(r["path"]).name: r for r in json.loads(out.read_text())}
    for photo in PHOTOS:
        dets = records[photo.name]["detections"]
        boxes = np.array([d["box"] for d in dets], np.float32).reshape(-1, 4)
        scores, classes = np.array([d["score"] for d in dets]), np.array([d["class"] for d in dets])
        size = (records[photo.name]["height"], records[photo.name]["width"])
        assert not _missing(reference[photo.name], boxes, scores, classes, size), photo.name


def test_converted_checkpoint_keeps_the_darknet_geometry(reference, tmp_path: Path) -> None:
    from scaledyolo.export import convert

    model = scaledyolo.load(convert(CFG, output=tmp_path / "tiny.pt"))
    assert model.geometry == "square" and model.spec.img_size == 416
    (res,) = model.predict(str(PHOTOS[0]))
    assert not _missing(reference[PHOTOS[0].name], res.boxes.xyxy, res.boxes.conf, res.boxes.cls, res.orig_shape)


def test_rect_override_is_not_darknet(reference) -> None:
    """The smallest rectangle (`--rect`) is a different input: some confident darknet box is lost."""
    model = scaledyolo.load(CFG)
    lost = []
    for photo in PHOTOS:
        (res,) = model.predict(str(photo), geometry="rect")
        lost += _missing(reference[photo.name], res.boxes.xyxy, res.boxes.conf, res.boxes.cls, res.orig_shape)
    assert lost

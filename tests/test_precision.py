"""`--precision fp32|bf16|int8` in predict, val and bench (`scaledyolo.precision`, `interop.openvino_network`).

What is checked: the OpenVINO runner computes our network (not quantised, it equals our fp32 fast path
at any input shape and batch); bf16 and int8 find fp32's confident boxes again on real photos; int8
validation scores close to fp32; the CLI runs int8 end to end and refuses what it cannot run with one
line. int8 needs OpenVINO and NNCF (`scaledyolo[openvino]`); those tests skip without them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import scaledyolo
from scaledyolo.bench import benchmark
from scaledyolo.cli import main
from scaledyolo.errors import UserError
from scaledyolo.models.inference import prepare_for_inference
from scaledyolo.ops.boxes import box_iou
from scaledyolo.calibration import Calibration
from scaledyolo.precision import inference_network, int8_network
from scaledyolo.predict import predict

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY_CFG = SHARED / "weights" / "yolov4-tiny.cfg"
PHOTOS = SHARED / "images"
needs_tiny = pytest.mark.skipif(not (TINY_CFG.with_suffix(".weights").is_file() and PHOTOS.is_dir()),
                                reason="the released yolov4-tiny weights and photos are not in ../shared")
openvino = pytest.importorskip("openvino", reason="int8 runs through OpenVINO (pip install 'scaledyolo[openvino]')")
pytest.importorskip("nncf", reason="int8 quantisation needs NNCF (pip install 'scaledyolo[openvino]')")

from scaledyolo.interop import openvino_network  # noqa: E402  (only where OpenVINO is installed)
from scaledyolo.interop.openvino import to_openvino  # noqa: E402

AGREE_CONF, AGREE_IOU, AGREE_SHARE = 0.5, 0.7, 0.8


@pytest.fixture(scope="module")
def tiny():
    return scaledyolo.load(TINY_CFG)


def detections(results) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(xyxy, conf, cls) per picture of predict's `Results`."""
    return [(r.boxes.xyxy, r.boxes.conf, r.boxes.cls) for r in results]


def json_detections(records) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(xyxy, conf, cls) per picture of `predict --save-json`'s records."""
    return [(np.array([d["box"] for d in r["detections"]]).reshape(-1, 4),
             np.array([d["score"] for d in r["detections"]]), np.array([d["class"] for d in r["detections"]]))
            for r in records]


def found_again(reference, other) -> tuple[int, float]:
    """fp32's boxes with conf >= AGREE_CONF, and the share of them `other` has (same class, IoU >= AGREE_IOU)."""
    total = found = 0
    for (ref_boxes, ref_conf, ref_cls), (boxes, _, classes) in zip(reference, other):
        keep = ref_conf >= AGREE_CONF
        total += int(keep.sum())
        if keep.any() and len(classes):
            iou = box_iou(torch.from_numpy(ref_boxes[keep]).double(), torch.from_numpy(boxes).double()).numpy()
            same = ref_cls[keep][:, None] == classes[None, :]
            found += int(((iou >= AGREE_IOU) & same).any(1).sum())
    return total, found / max(total, 1)


@needs_tiny
def test_bf16_finds_fp32s_boxes_on_real_photos(tiny):
    # Measured (Intel Xeon, AMX): fp32 has 4 boxes >= 0.5 on bus.jpg + zidane.jpg at 416; bf16 finds
    # each again at IoU >= 0.99: 100 %, against the 80 % asked. (int8: the CLI test below.)
    reference = detections(predict(tiny, str(PHOTOS), conf=0.25))
    total, share = found_again(reference, detections(predict(tiny, str(PHOTOS), conf=0.25, precision="bf16")))
    assert total >= 3
    assert share >= AGREE_SHARE, share


def test_openvino_network_unquantised_equals_our_fp32_fast_path(monkeypatch):
    torch.manual_seed(0)
    model = scaledyolo.build_model("yolov4-tiny", num_classes=3).eval()
    network = openvino_network.OpenVINONetwork(to_openvino(model, 128, dynamic=True), ["a", "b", "c"], model.spec,
                                               list(model.strides))
    reference = prepare_for_inference(model, img_size=128)
    monkeypatch.setattr(openvino_network, "MAX_STATIC_SHAPES", 1)  # the second shape runs the dynamic graph
    for shape in ((2, 3, 128, 128), (2, 3, 96, 160)):
        x = torch.rand(shape)
        out, expected = network(x), reference(x)
        assert out.dtype == torch.float32 and out.shape == expected.shape
        torch.testing.assert_close(out[..., :4], expected[..., :4], atol=2e-3, rtol=1e-4)  # pixels
        torch.testing.assert_close(out[..., 4:], expected[..., 4:], atol=1e-4, rtol=1e-4)  # probabilities
    assert list(network.requests) == [(2, 3, 128, 128), None]
    assert network.eval() is network and not network.train().training


def test_int8_network_is_quantised_once_per_weights_size_and_source(monkeypatch):
    """Repeated calls reuse the network; new weights, another size or another source quantise again."""
    from scaledyolo.interop import quantize

    calls = []
    monkeypatch.setattr(quantize, "quantize_int8", lambda graph, samples: calls.append(len(samples)) or graph)
    model = scaledyolo.build_model("yolov4-tiny", num_classes=2).eval()
    pictures = [np.full((64, 80, 3), 128, np.uint8)]
    first = int8_network(model, 64, Calibration(pictures, "photos"))
    assert int8_network(model, 64, Calibration(pictures, "photos")) is first and calls == [1]
    assert int8_network(model, 96, Calibration(pictures, "photos")) is not first
    assert int8_network(model, 96, Calibration(pictures, "other photos")) is not first
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    int8_network(model, 96, Calibration(pictures, "other photos"))
    assert calls == [1, 1, 1, 1]


def test_int8_needs_the_cpu_and_calibration():
    model = scaledyolo.build_model("yolov4-tiny", num_classes=2)
    with pytest.raises(UserError, match="int8 runs through OpenVINO on the CPU"):
        inference_network(model, "int8", torch.device("cuda"), 128)
    with pytest.raises(UserError, match="calibration pictures"):
        inference_network(model, "int8", "cpu", 128)


def _pseudo_labelled_split(root: Path, results, photos: list[Path]) -> Path:
    """A YOLO-layout data YAML whose train and val splits are the photos, labelled with fp32's boxes >= 0.5."""
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for photo, res in zip(photos, results):
            shutil.copy(photo, root / split / "images" / photo.name)
            keep = res.boxes.conf >= AGREE_CONF
            rows = np.column_stack([res.boxes.cls[keep], res.boxes.xywhn[keep]])
            np.savetxt(root / split / "labels" / f"{photo.stem}.txt", rows, fmt="%g")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(results[0].names.values()))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: train/images\nval: val/images\nnames:\n{names}\n")
    return data


@needs_tiny
def test_val_int8_scores_within_tolerance_of_fp32(tiny, tmp_path):
    # The split: the two photos labelled with fp32's own confident boxes, so fp32 scores near 1 and the
    # score measures how much of fp32 int8 keeps. int8 calibrates on the train split (here the same
    # photos: the test checks the default is taken, not generalisation). Measured (Intel Xeon, AMX; 6
    # boxes at 256 px): mAP50 fp32 1.000, int8 1.000; mAP50-95 fp32 0.915, int8 0.885. One of the 6 boxes
    # lost would cost about 0.17 mAP50; the tolerance is 0.1 on both.
    photos = sorted(PHOTOS.glob("*.jpg"))
    data = _pseudo_labelled_split(tmp_path, predict(tiny, [str(p) for p in photos], conf=0.25, img=256), photos)
    fp32 = scaledyolo.Detector(tiny).val(data, img=256, batch=2, progress=False)
    int8 = scaledyolo.Detector(tiny).val(data, img=256, batch=2, progress=False, precision="int8")
    assert fp32["map50"] > 0.9 and int8["images"] == 2 and int8["inference_precision"] == "int8"
    assert abs(int8["map50"] - fp32["map50"]) <= 0.1, (fp32["map50"], int8["map50"])
    assert abs(int8["map"] - fp32["map"]) <= 0.1, (fp32["map"], int8["map"])


@needs_tiny
def test_cli_predict_int8_writes_the_run_folder_and_finds_fp32s_boxes(tiny, tmp_path, capsys):
    # int8 calibrated on the source's own two photos (the default). Measured (Intel Xeon, AMX): each of
    # fp32's 4 boxes >= 0.5 found again at IoU >= 0.98 (100 %, against the 80 % asked).
    found = tmp_path / "found.json"
    code = main(["predict", "--weights", str(TINY_CFG), "--source", str(PHOTOS), "--precision", "int8",
                 "--project", str(tmp_path), "--save-json", str(found)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["bus.jpg", "zidane.jpg"]
    assert f"int8: calibrated on 2 images of {PHOTOS}" in err
    records = sorted(json.loads(found.read_text()), key=lambda r: r["path"])
    reference = detections(predict(tiny, sorted(str(p) for p in PHOTOS.glob("*.jpg")), conf=0.25))
    total, share = found_again(reference, json_detections(records))
    assert total >= 3
    assert share >= AGREE_SHARE, share


@pytest.mark.parametrize("extra", [["--device", "cuda"], ["--source-is-video"], ["--source-is-webcam"],
                                   ["--calib-only"]])
def test_cli_refuses_int8_it_cannot_run_with_one_line(extra, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # never opened: refused before any frame is read
    source = {"--source-is-video": str(video), "--source-is-webcam": "0"}.get(extra[0], str(tmp_path))
    precision = [] if extra == ["--calib-only"] else ["--precision", "int8"]
    options = ["--calib", str(tmp_path)] if extra == ["--calib-only"] else extra if extra[0] == "--device" else []
    code = main(["predict", "--weights", "yolov4-tiny", "--source", source, *precision, *options,
                 "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_bench_int8_refuses_the_backends_that_do_not_run_it():
    with pytest.raises(UserError, match="use --backend torch"):
        benchmark("yolov4-tiny", img=64, precision="int8", backend="onnxruntime", runs=1, warmup=0)
    with pytest.raises(UserError, match="only for --precision int8"):
        benchmark("yolov4-tiny", img=64, calib_images=5, runs=1, warmup=0)

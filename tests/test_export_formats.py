"""OpenVINO IR (fp32, fp16, int8) and ONNX-with-NMS exports against our own torch output.

All on the released yolov4-tiny COCO weights at 320 px and real photos from ../shared (skipped where
that folder is absent). OpenVINO runs with INFERENCE_PRECISION_HINT=f32: its CPU default on AMX/BF16
machines is bf16, which is a different computation, not an export error.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from scaledyolo.calibration import calibration_files, calibration_samples
from scaledyolo.cli import build_parser
from scaledyolo.data.augment import letterbox
from scaledyolo.export import export
from scaledyolo.interop.loading import load_model
from scaledyolo.interop.onnx_nms import NMSOptions
from scaledyolo.media import read_image
from scaledyolo.ops.boxes import box_iou, scale_boxes
from scaledyolo.ops.nms import non_max_suppression
from scaledyolo.predict import predict, preprocess

from optional_components import require

SHARED = Path(__file__).resolve().parents[2] / "shared"
CFG = SHARED / "weights" / "yolov4-tiny.cfg"
IMAGES = [SHARED / "images" / "bus.jpg", SHARED / "images" / "zidane.jpg"]
RACCOON = SHARED / "datasets" / "raccoon"
IMG = 320

pytestmark = pytest.mark.skipif(not (CFG.is_file() and CFG.with_suffix(".weights").is_file()),
                                reason=f"released yolov4-tiny weights not found under {SHARED}")


@pytest.fixture(scope="module")
def tiny():
    return load_model(CFG)


@pytest.fixture(scope="module")
def bus_input() -> torch.Tensor:
    """bus.jpg letterboxed to the static IR's 320 x 320 input, 0-1 RGB."""
    boxed = letterbox(read_image(IMAGES[0]), IMG, auto=False)[0]
    return torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))[None].float() / 255


@pytest.fixture(scope="module")
def fp32_ir(tmp_path_factory) -> Path:
    require("openvino")
    xml, weights = export(CFG, format="openvino", img=IMG, output=tmp_path_factory.mktemp("ov") / "tiny.xml")
    assert weights == xml.with_suffix(".bin") and weights.stat().st_size > 20e6  # 6.06 M fp32 weights
    return xml


def _run_ir(path: Path, x: torch.Tensor) -> torch.Tensor:
    ov = require("openvino")

    from scaledyolo.interop.openvino import COMPILE_F32

    compiled = ov.Core().compile_model(str(path), "CPU", COMPILE_F32)
    return torch.from_numpy(compiled(x.numpy())[0].copy())


def _matched(reference: torch.Tensor, other: torch.Tensor, min_score: float, min_iou: float) -> list[bool]:
    """Per reference detection with score >= min_score: has `other` one of the same class at IoU >= min_iou?"""
    strong = reference[reference[:, 4] >= min_score]
    iou = box_iou(strong[:, :4], other[:, :4]) * (strong[:, 5:6] == other[None, :, 5])
    return (iou >= min_iou).any(1).tolist()


def test_openvino_fp32_ir_equals_torch(tiny, bus_input, fp32_ir):
    with torch.inference_mode():
        ref = tiny.eval()(bus_input)
    out = _run_ir(fp32_ir, bus_input)
    assert out.shape == ref.shape == (1, 3 * (10 * 10 + 20 * 20), 85)
    # measured (Xeon, 2 cores): boxes <= ~1e-3 px, probabilities <= ~1e-5 apart (float summation order)
    torch.testing.assert_close(out[..., :4], ref[..., :4], rtol=1e-4, atol=5e-3)
    torch.testing.assert_close(out[..., 4:], ref[..., 4:], rtol=0, atol=1e-4)


def test_openvino_fp16_ir_is_close_to_torch(tiny, bus_input, fp32_ir, tmp_path):
    ov = require("openvino")

    from scaledyolo.interop.openvino import save_openvino

    xml, weights = save_openvino(ov.Core().read_model(str(fp32_ir)), tmp_path / "tiny-fp16.xml", half=True)
    assert weights.stat().st_size < 0.6 * fp32_ir.with_suffix(".bin").stat().st_size  # half-size weights
    with torch.inference_mode():
        ref = tiny.eval()(bus_input)
    out = _run_ir(xml, bus_input)
    # fp16 weights (fp32 compute) moved boxes by ~0.3 px and probabilities by ~0.005 at 416 px;
    # the bounds leave ~3x room, and the detections themselves must agree
    assert (out[..., 4:] - ref[..., 4:]).abs().max() < 0.02
    confident = ref[0, :, 4] > 0.1
    assert (out[0, confident, :4] - ref[0, confident, :4]).abs().max() < 1.5
    a, b = non_max_suppression(ref)[0], non_max_suppression(out)[0]
    assert len(a) >= 3 and all(_matched(a, b, 0.3, 0.95))


@pytest.mark.skipif(not (RACCOON / "images").is_dir(), reason=f"raccoon dataset not found under {SHARED}")
def test_openvino_int8_ir_keeps_the_fp32_detections(tmp_path, bus_input, fp32_ir):
    require("nncf")
    ov = require("openvino")

    data = tmp_path / "raccoon.yaml"
    data.write_text(f"path: {RACCOON}\ntrain: images\nval: {{images: images, annotations: annotations}}\n"
                    "names: [raccoon]\n")
    xml, _ = export(CFG, format="openvino", img=IMG, int8=True, data=data, calib_images=16,
                    output=tmp_path / "tiny-int8.xml")
    graph = ov.Core().read_model(str(xml))
    quantized = sum(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())
    assert quantized >= 21  # one per convolution input at least (tiny has 21 convolutions)
    fp32 = non_max_suppression(_run_ir(fp32_ir, bus_input))[0]
    int8 = non_max_suppression(_run_ir(xml, bus_input))[0]
    assert len(fp32[fp32[:, 4] >= 0.5]) >= 3
    assert all(_matched(fp32, int8, 0.5, 0.7))


@pytest.fixture(scope="module")
def nms_onnx(tmp_path_factory) -> tuple[Path, NMSOptions]:
    require("onnx")
    options = NMSOptions(conf=0.01, iou=0.5, max_det=28)
    (path,) = export(CFG, format="onnx", img=IMG, dynamic=True, nms=True, conf=options.conf, iou=options.iou,
                     max_det=options.max_det, output=tmp_path_factory.mktemp("onnx") / "tiny-nms.onnx")
    return path, options


def _assert_same_detections(rows: np.ndarray, count: np.ndarray, reference: list[torch.Tensor]) -> None:
    for image, ref in enumerate(reference):
        assert int(count[image]) == len(ref)
        got = torch.from_numpy(rows[image, :len(ref)].copy())
        torch.testing.assert_close(got[:, :4], ref[:, :4], rtol=1e-5, atol=2e-3)
        torch.testing.assert_close(got[:, 4], ref[:, 4], rtol=0, atol=1e-5)
        assert torch.equal(got[:, 5], ref[:, 5])
        assert not rows[image, len(ref):].any()  # padding rows are zeros


def test_onnx_nms_in_onnx_runtime_equals_predict(tiny, nms_onnx):
    ort = require("onnxruntime")
    path, opt = nms_onnx
    pictures = [read_image(p) for p in IMAGES]
    x, ratio_pads = preprocess(pictures, IMG, 32)  # two shapes: one 320 x 320 batch, as predict makes it
    x = x.float() / 255
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["detections", "num_detections"]
    rows, count = session.run(None, {"images": x.numpy()})
    assert rows.shape == (2, opt.max_det, 6) and count.dtype == np.int64
    with torch.inference_mode():
        reference = non_max_suppression(tiny.eval()(x), opt.conf, opt.iou, max_det=opt.max_det)
    assert len(reference[0]) == opt.max_det > len(reference[1])  # one image capped (32 found), one padded (26)
    assert len({int(c) for ref in reference for c in ref[:, 5]}) >= 3  # several classes: class-aware NMS
    _assert_same_detections(rows, count, reference)

    results = predict(tiny, pictures, conf=opt.conf, iou=opt.iou, max_det=opt.max_det, img=IMG, fast=False)
    for image, res in enumerate(results):
        n = int(count[image])
        boxes = scale_boxes(torch.from_numpy(rows[image, :n, :4].copy()), x.shape[2:], res.orig_shape,
                            ratio_pads[image])
        np.testing.assert_allclose(boxes.numpy(), res.boxes.xyxy, rtol=1e-5, atol=1e-2)
        np.testing.assert_allclose(rows[image, :n, 4], res.boxes.conf, atol=1e-5)
        np.testing.assert_array_equal(rows[image, :n, 5].astype(np.int64), res.boxes.cls)


def test_onnx_nms_in_openvino_equals_torch(tiny, nms_onnx):
    """OpenVINO consumes the same graph (its own NonMaxSuppression), at another batch and size."""
    ov = require("openvino")
    from scaledyolo.interop.openvino import COMPILE_F32

    path, opt = nms_onnx
    x, _ = preprocess([read_image(IMAGES[1])], IMG, 32)  # 192 x 320: the dynamic axes at work
    x = x.float() / 255
    rows, count = ov.Core().compile_model(str(path), "CPU", COMPILE_F32)(x.numpy()).values()
    with torch.inference_mode():
        reference = non_max_suppression(tiny.eval()(x), opt.conf, opt.iou, max_det=opt.max_det)
    assert len(reference[0]) >= 3
    _assert_same_detections(rows, count, reference)


def test_nms_defaults_are_predicts():
    options = NMSOptions()
    signature = inspect.signature(predict).parameters
    assert (options.conf, options.iou, options.max_det) == (signature["conf"].default, signature["iou"].default,
                                                            signature["max_det"].default)
    args = build_parser().parse_args(["export", "--weights", "w.pt", "--nms"])
    assert (args.conf, args.iou, args.max_det) == (options.conf, options.iou, options.max_det)


def test_calibration_images_from_a_data_yaml_and_a_folder(tmp_path, caplog):
    if not (RACCOON / "images").is_dir():
        pytest.skip(f"raccoon dataset not found under {SHARED}")
    data = tmp_path / "raccoon.yaml"
    data.write_text(f"path: {RACCOON}\ntrain: images\nval: {{images: images, annotations: annotations}}\n"
                    "names: [raccoon]\n")
    assert len(calibration_files(data=data)) == 200
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a picture")
    for image in IMAGES:
        (folder / image.name).write_bytes(image.read_bytes())
    files = calibration_files(calib=folder)
    assert [f.name for f in files] == ["broken.jpg", "bus.jpg", "zidane.jpg"]
    with caplog.at_level(logging.WARNING, logger="scaledyolo.export"):
        samples = calibration_samples(files, IMG, 32)
    assert "broken.jpg" in caplog.text and len(samples) == 2
    boxed = letterbox(read_image(IMAGES[0]), IMG, auto=False)[0]
    np.testing.assert_array_equal(samples[0][0], boxed.transpose(2, 0, 1) / np.float32(255))
    assert samples[1].shape == (1, 3, IMG, IMG) and samples[1].dtype == np.float32

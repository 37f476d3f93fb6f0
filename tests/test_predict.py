"""predict: the Python API on paths/arrays/PIL, boxes mapped back to original pixels, TTA, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

import scaledyolo
from optional_components import require
from scaledyolo.errors import UserError
from scaledyolo.eval.tta import tta_forward
from scaledyolo.predict import Results, predict
from stand_in_detectors import SquareFinder

RACCOON = Path(__file__).parent / "fixtures" / "raccoon" / "images"
IMAGES = sorted(RACCOON.glob("*.jpg"))[:3]
LOW_CONF = 1e-5  # a random-init model scores ~1e-4 (its bias priors): low enough to get boxes


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return scaledyolo.build_model("yolov4-tiny").eval()


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def square_image(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.full((h, w, 3), 90, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


def test_boxes_map_back_to_original_pixels():
    """Wide, tall and mixed-shape batches: the detected square lands on the square in the original."""
    cases = [((120, 300), (30, 20, 90, 60)), ((300, 100), (10, 200, 60, 280)), ((200, 200), (150, 5, 199, 40))]
    images = [square_image(h, w, box) for (h, w), box in cases]
    for geometry in ("rect", "square"):
        for batch in (1, 3):  # one at a time (stride rectangles unless square) and together (a shared square)
            results = predict(SquareFinder(), images, img=256, batch=batch, geometry=geometry)
            for img, (_, box), res in zip(images, cases, results):
                assert res.boxes.xyxy.shape == (1, 4)
                assert np.abs(res.boxes.xyxy[0] - np.array(box)).max() <= 2.0, (geometry, batch, res.boxes, box)
                assert res.orig_shape == img.shape[:2]


def test_geometry_sets_the_input_shape():
    """A wide picture: the smallest stride rectangle for `rect`, the full square for `square`."""
    shapes = {}

    class ShapeSpy(SquareFinder):
        def forward(self, x):  # noqa: ANN001
            shapes[geometry] = tuple(x.shape[2:])
            return super().forward(x)

    for geometry in ("rect", "square"):
        predict(ShapeSpy(), square_image(120, 300, (30, 20, 90, 60)), img=256, geometry=geometry)
    assert shapes == {"rect": (128, 256), "square": (256, 256)}
    with pytest.raises(UserError):
        predict(SquareFinder(), square_image(64, 64, (1, 1, 9, 9)), img=64, geometry="round")


def test_tta_boxes_map_back_too():
    """Each TTA run (scaled, flipped) must map its box back onto the same square: one box after NMS."""
    img = square_image(160, 320, (40, 30, 120, 90))
    (res,) = predict(SquareFinder(), img, img=256, tta=True)
    assert res.boxes.xyxy.shape == (1, 4)
    assert np.abs(res.boxes.xyxy[0] - np.array([40, 30, 120, 90])).max() <= 3.0
    with torch.inference_mode():
        x = torch.zeros(1, 3, 128, 256)
        x[..., 20:60, 30:90] = 1.0
        out = tta_forward(SquareFinder(), x)
    assert out.shape == (1, 3, 6)
    assert torch.allclose(out[0, :, :4], out[0, :1, :4].expand(3, 4), atol=2.0)  # three runs agree


def test_predict_on_raccoon_paths_arrays_and_pil(tiny):
    from PIL import Image

    paths = [str(p) for p in IMAGES]
    by_path = predict(tiny, paths, conf=LOW_CONF, img=256)
    by_array = predict(tiny, [rgb(p) for p in IMAGES], conf=LOW_CONF, img=256)
    by_pil = predict(tiny, [Image.open(p) for p in IMAGES], conf=LOW_CONF, img=256)
    assert len(by_path) == len(by_array) == len(by_pil) == len(IMAGES)
    for path, a, b, c in zip(paths, by_path, by_array, by_pil):
        h, w = rgb(Path(path)).shape[:2]
        assert isinstance(a, Results) and a.path == path and b.path is None and a.orig_shape == (h, w)
        assert a.boxes.xyxy.shape[1] == 4 and a.boxes.xyxy.dtype == np.float32 and len(a) > 0
        assert a.boxes.conf.shape == (len(a),) and a.boxes.cls.shape == (len(a),) and a.boxes.cls.dtype == np.int64
        assert (a.boxes.xyxy[:, [0, 2]] >= 0).all() and (a.boxes.xyxy[:, [0, 2]] <= w).all()
        assert (a.boxes.xyxy[:, [1, 3]] >= 0).all() and (a.boxes.xyxy[:, [1, 3]] <= h).all()
        assert (a.boxes.xyxy[:, 2] >= a.boxes.xyxy[:, 0]).all() and (a.boxes.xyxy[:, 3] >= a.boxes.xyxy[:, 1]).all()
        assert (np.diff(a.boxes.conf) <= 0).all()
        np.testing.assert_allclose(a.boxes.xyxy, b.boxes.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.boxes.xyxy, c.boxes.xyxy, atol=1e-3)
        picture = a.plot()
        assert picture.shape == (h, w, 3) and picture.dtype == np.uint8 and (picture != rgb(Path(path))).any()
    single = predict(tiny, paths[0], conf=LOW_CONF, img=256)
    assert len(single) == 1 and single[0].path == paths[0]
    # the CLI's fused copy (its outputs equal the model's to float rounding: tests/test_bench.py); a
    # random-init model's near-equal scores let rounding change NMS's picks, so only the best are compared
    (fast,) = predict(tiny, paths[0], conf=LOW_CONF, img=256, fast=True)
    assert len(fast) == len(single[0])
    np.testing.assert_allclose(fast.boxes.conf[:20], single[0].boxes.conf[:20], rtol=1e-4)
    assert len(tiny.predict(rgb(IMAGES[0]), conf=LOW_CONF, img=256)) == 1


def test_results_json_txt_and_filters(tiny, tmp_path):
    (res,) = predict(tiny, str(IMAGES[0]), conf=LOW_CONF, img=256, max_det=7)
    assert len(res) == 7
    items = res.summary()
    assert json.loads(res.to_json()) == items
    assert [set(d) for d in items] == [{"name", "class", "score", "box"}] * 7
    assert items[0]["name"] == tiny.names[items[0]["class"]] and len(items[0]["box"]) == 4
    label = np.loadtxt(res.save_txt(tmp_path / "labels" / "a.txt"), ndmin=2)
    assert label.shape == (7, 5) and (label[:, 1:] >= 0).all() and (label[:, 1:] <= 1).all()
    h, w = res.orig_shape
    np.testing.assert_allclose(label[:, 3] * w, res.boxes.xyxy[:, 2] - res.boxes.xyxy[:, 0], atol=0.01)
    wanted = int(res.boxes.cls[0])
    (only,) = predict(tiny, str(IMAGES[0]), conf=LOW_CONF, img=256, classes=[tiny.names[wanted]])
    assert len(only) > 0 and set(only.boxes.cls.tolist()) == {wanted}


def test_bad_inputs_are_user_errors(tiny, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(IMAGES[0].read_bytes()[:300])
    with pytest.raises(UserError, match="broken.jpg"):
        predict(tiny, str(broken), img=64)
    with pytest.raises(UserError, match="uint8"):
        predict(tiny, np.zeros((10, 10, 3), np.float32), img=64)
    with pytest.raises(UserError, match="not found"):
        predict(tiny, str(tmp_path / "missing.jpg"), img=64)


def test_tta_output_shape(tiny):
    x = torch.rand(2, 3, 256, 256)
    with torch.inference_mode():
        out = tta_forward(tiny, x)
    def count(h: int, w: int) -> int:
        return sum(3 * math.ceil(h / s) * math.ceil(w / s) for s in tiny.strides)
    scaled = [math.ceil(256 * r / 32) * 32 for r in (0.83, 0.67)]
    assert out.shape == (2, count(256, 256) + sum(count(s, s) for s in scaled), 85)


# --------------------------------------------------------------------------- CLI


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaledyolo", "predict", "--weights", "yolov4-tiny", "--img", "128",
                           "--conf", str(LOW_CONF), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_folder_with_bad_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in IMAGES[:2]:
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(IMAGES[0].read_bytes()[:400])
    (src / "notes.txt").write_text("not a picture\n")
    out = tmp_path / "out"
    done = cli("--source", str(src), "--save-dir", str(out), "--save-json", str(tmp_path / "p.json"), "--save-txt",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(p.name for p in IMAGES[:2])
    assert "broken.jpg" in done.stderr and "notes.txt" in done.stderr
    notices = [line for line in done.stderr.splitlines() if "RANDOM" in line]
    assert len(notices) == 1 and "'yolov4-tiny'" in notices[0] and "scaledyolo weights" in notices[0]
    assert "Traceback" not in done.stderr
    assert "predict: 2 pictures" in done.stdout and "nms" in done.stdout and "drawing" in done.stdout
    records = json.loads((tmp_path / "p.json").read_text())
    assert isinstance(records, list) and len(records) == 2
    assert {Path(r["path"]).name for r in records} == {p.name for p in IMAGES[:2]}
    assert all(len(r["detections"]) > 0 and set(r["detections"][0]) == {"name", "class", "score", "box"}
               for r in records)
    assert len(list((out / "labels").glob("*.txt"))) == 2
    picture = cv2.imread(str(out / IMAGES[0].name))
    assert picture.shape == cv2.imread(str(IMAGES[0])).shape


def test_cli_single_bad_file_is_an_error(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(IMAGES[0].read_bytes()[:400])
    done = cli("--source", str(broken), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {broken}:")


def test_cli_video_json_and_run_folders(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 96))
    for i in range(5):
        frame = np.full((96, 160, 3), 40 * i, np.uint8)
        cv2.rectangle(frame, (20 + 10 * i, 20), (80 + 10 * i, 70), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()
    done = cli("--source", str(video), "--save-json", "frames.json", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["images"] == 5 and set(summary["ms_per_image"]) == {"preprocess", "model", "nms", "drawing"}
    out = tmp_path / "runs" / "predict" / "exp" / "clip.mp4"
    assert summary["videos"] == [str(Path("runs/predict/exp/clip.mp4"))] or Path(summary["videos"][0]) == out
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 5
    records = json.loads((tmp_path / "frames.json").read_text())
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]
    again = cli("--source", str(tmp_path / "*.mp4"), "--nosave", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["save_dir"].endswith("exp2")


def test_grey_rgba_16bit_and_exif_files(tmp_path):
    """Files of every common kind arrive as 8-bit RGB in their upright orientation."""
    from PIL import Image

    box = (40, 30, 100, 70)
    base = square_image(120, 160, box)[..., 0]
    cv2.imwrite(str(tmp_path / "grey.png"), base)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(np.dstack([base] * 3), cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(tmp_path / "deep.png"), base.astype(np.uint16) * 257)
    for name in ("grey.png", "rgba.png", "deep.png"):
        (res,) = predict(SquareFinder(), str(tmp_path / name), img=256)
        assert res.orig_shape == (120, 160)
        assert np.abs(res.boxes.xyxy[0] - np.array(box)).max() <= 2.0, name
    # stored landscape with EXIF orientation 6 ("rotate 90 clockwise to view"): upright it is portrait
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.dstack([base] * 3)).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    (by_path,) = predict(SquareFinder(), str(tmp_path / "rotated.jpg"), img=256)
    (by_pil,) = predict(SquareFinder(), Image.open(tmp_path / "rotated.jpg"), img=256)
    assert by_path.orig_shape == by_pil.orig_shape == (160, 120)
    upright = (120 - box[3], box[0], 120 - box[1], box[2])  # the square after a 90-degree clockwise turn
    for res in (by_path, by_pil):
        assert np.abs(res.boxes.xyxy[0] - np.array(upright)).max() <= 3.0


def test_checkpoint_remembers_size_data_names_and_geometry(tmp_path, capsys):
    """Trained at 256, a checkpoint predicts, validates, benchmarks and exports at 256 with no flags,
    and `val` finds the data YAML it was trained on."""
    from scaledyolo.bench import benchmark
    from scaledyolo.cli import main as cli_main
    from scaledyolo.data.synthetic import make_synthetic_dataset
    from scaledyolo.eval.validate import run_val
    from scaledyolo.export import export
    from scaledyolo.predict import Predictor
    from scaledyolo.interop.checkpoint import read_checkpoint
    from scaledyolo.train.trainer import train

    data = make_synthetic_dataset(tmp_path / "syn", n_train=8, n_val=4, img_size=96, seed=1)
    run = train("yolov4-tiny", str(data), img=256, epochs=1, batch=8, device="cpu", project=tmp_path, name="t",
                workers=0, val=False, noautoanchor=True, plots=False)
    best = run / "weights" / "best.pt"
    ckpt = read_checkpoint(best)
    assert (ckpt["img_size"], ckpt["data"], ckpt["geometry"]) == (256, str(data.resolve()), "square")
    model = scaledyolo.load(best)
    assert model.spec.img_size == 256 and model.names == ["circle", "square", "triangle", "star"]
    assert Predictor(model).size == 256
    assert len(model.predict(str(sorted((tmp_path / "syn").rglob("*.jpg"))[0]), conf=LOW_CONF)) == 1

    capsys.readouterr()  # the training log
    assert cli_main(["predict", "--weights", str(best), "--source", str(IMAGES[0]), "--nosave", "--json",
                     "--save-dir", str(tmp_path / "p")]) == 0
    assert json.loads(capsys.readouterr().out)["img"] == 256
    result = run_val(str(best), progress=False)
    assert (result["img"], result["data"], result["images"]) == (256, str(data.resolve()), 4)
    assert result["geometry"] == "square"
    assert cli_main(["val", "--weights", str(best), "--rect", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["geometry"] == "rect"
    assert benchmark(model, runs=1, warmup=0)["img"] == 256
    onnx = require("onnx")
    (path,) = export(str(best), output=tmp_path / "m.onnx")
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 256, 256]

    data.rename(data.with_name("moved.yaml"))  # the stored YAML is gone: val says so, naming the weights
    with pytest.raises(UserError, match="not there any more"):
        run_val(str(best), progress=False)


def test_results_views_colour_order_and_crops(tiny, tmp_path):
    """Boxes' views agree with each other, plot() is BGR and is what save() writes, crops cut the boxes."""
    (res,) = predict(tiny, str(IMAGES[0]), conf=LOW_CONF, img=256, max_det=5)
    b, (h, w) = res.boxes, res.orig_shape
    np.testing.assert_allclose(b.xywh[:, :2], (b.xyxy[:, :2] + b.xyxy[:, 2:]) / 2, atol=1e-4)
    np.testing.assert_allclose(b.xywh[:, 2:], b.xyxy[:, 2:] - b.xyxy[:, :2], atol=1e-4)
    np.testing.assert_allclose(b.xyxyn * [w, h, w, h], b.xyxy, rtol=1e-5)
    np.testing.assert_allclose(b.xywhn * [w, h, w, h], b.xywh, rtol=1e-5)
    assert b.data.shape == (5, 6) and len(b[1:3]) == 2 and b[0].cls[0] == b.cls[0]
    assert res.names == dict(enumerate(tiny.names)) and res.names[0] == tiny.names[0]
    bgr = res.plot()
    np.testing.assert_array_equal(bgr[..., ::-1], draw_rgb(res))
    saved = res.save(tmp_path / "a.png")
    np.testing.assert_array_equal(cv2.imread(str(saved)), bgr)  # png: lossless, and cv2 reads BGR
    crops = res.save_crop(tmp_path / "crops", file_name="a.jpg")
    assert len(crops) == len({tuple(map(int, box)) for box in b.xyxy}) and all(p.is_file() for p in crops)
    assert {p.parent.name for p in crops} == {res.names[int(c)] for c in b.cls}
    x1, y1, x2, y2 = b.xyxy[0]
    assert cv2.imread(str(crops[0])).shape[:2] == (math.ceil(y2) - int(y1), math.ceil(x2) - int(x1))


def draw_rgb(res) -> np.ndarray:
    from scaledyolo.drawing import draw_boxes

    return draw_boxes(res.orig_img, res.boxes.xyxy, res.boxes.cls, res.boxes.conf, list(res.names.values()))


def test_loaded_model_called_on_a_path_predicts_and_tensors_still_run_forward():
    """Issue 15's check: `scaledyolo.load(w)("bus.jpg")[0]`; a model without a predictor refuses pictures."""
    model = scaledyolo.build_model("yolov4-tiny").eval()
    (res,) = model(str(IMAGES[0]), conf=LOW_CONF, img=256, max_det=3)
    assert res.boxes.xyxy.shape == (3, 4) and res.boxes.conf.shape == (3,) and res.names[0] == model.names[0]
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape[-1] == 85
    from scaledyolo.models.yolo import build_model as build_network

    with pytest.raises(TypeError, match="image tensors"):
        build_network("yolov4-tiny")(str(IMAGES[0]))


def test_detector_methods_are_the_commands_functions(tmp_path):
    """Detector's methods give what the library functions behind the CLI commands give."""
    from scaledyolo.models.analysis import model_report

    det = scaledyolo.Detector("yolov4-tiny", device="cpu")
    assert not isinstance(det, nn.Module) and isinstance(det.model, nn.Module) and not det.model.training
    assert det.info(img=256) == model_report(det.model, img_size=256)
    a = det(str(IMAGES[0]), conf=LOW_CONF, img=256)
    b = predict(det.model, str(IMAGES[0]), conf=LOW_CONF, img=256)
    np.testing.assert_array_equal(a[0].boxes.data, b[0].boxes.data)
    summary = det.predict(str(IMAGES[0]), save=True, save_dir=str(tmp_path / "run"), img=256, progress=False)
    assert summary["images"] == 1 and (tmp_path / "run" / IMAGES[0].name).is_file()

"""Darknet cfg/weights, official Scaled-YOLOv4 .pt files, ONNX/TorchScript export, load_model and its errors."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from optional_components import require
import scaledyolo
from scaledyolo import build_model
from scaledyolo.errors import UserError
from scaledyolo.export import convert, export
from scaledyolo.interop.darknet import cfg_text, save_weights, spec_from_cfg, weights_bytes, yolo_layer_indices
from scaledyolo.interop.official import official_layout, to_our_keys
from scaledyolo.interop.unpickler import restricted_load
from scaledyolo.models.spec import ModelSpec

sys.path.insert(0, str(Path(__file__).parent))
import official_standins  # noqa: E402

REFERENCE_CFGS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "darknet"


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Small random weights and BN statistics: outputs stay in exp()'s sane range, every value matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def write_darknet(model, folder: Path, size: int) -> Path:
    """cfg (input size `size`) + weights of `model` in `folder`; returns the cfg path."""
    folder.mkdir(parents=True, exist_ok=True)
    text = cfg_text(model)
    text = text.replace(f"width={model.spec.img_size}", f"width={size}").replace(
        f"height={model.spec.img_size}", f"height={size}")
    cfg = folder / f"{model.spec.name}.cfg"
    cfg.write_text(text)
    save_weights(model, cfg.with_suffix(".weights"))
    return cfg


# --------------------------------------------------------------------------- darknet


@pytest.mark.parametrize("name,nc", [("yolov4-tiny", 80), ("yolov4-csp", 80), ("yolov4-tiny", 3)])
def test_parsed_cfg_is_the_generator_layer_for_layer(name, nc):
    reference = build_model(name, num_classes=nc)
    spec = spec_from_cfg(cfg_text(reference))
    assert (spec.name, spec.arch, spec.num_classes) == (name, reference.spec.arch, nc)
    parsed = build_model(spec, num_classes=spec.num_classes)
    assert {k: v.shape for k, v in parsed.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}
    assert cfg_text(parsed) == cfg_text(reference)


@pytest.mark.skipif(not REFERENCE_CFGS.is_dir(), reason="reference darknet cfgs not on this machine")
@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4-csp"])
def test_reference_cfg_is_the_named_member(name):
    spec = spec_from_cfg((REFERENCE_CFGS / f"{name}.cfg").read_text())
    assert spec.name == name and spec.arch != "darknet"
    assert {k: v.shape for k, v in build_model(spec).state_dict().items()} == {
        k: v.shape for k, v in build_model(name).state_dict().items()}


def opencv_rows(model, cfg: Path, x: torch.Tensor) -> list[np.ndarray]:
    """OpenCV DNN's per-yolo-layer rows, ordered like our levels."""
    import cv2

    net = cv2.dnn.readNetFromDarknet(str(cfg), str(cfg.with_suffix(".weights")))
    net.setInput(x.numpy())
    names = net.getUnconnectedOutLayersNames()
    outs = net.forward(names)
    by_layer = {int(n.rsplit("_", 1)[1]): o for n, o in zip(names, outs)}
    return [by_layer[i] for i in yolo_layer_indices(model)]


def our_rows(model, out: np.ndarray, size: int) -> list[np.ndarray]:
    """Our eval output in OpenCV's layout: per level, rows in (y, x, anchor) order, boxes / input size,
    objectness, objectness x class probability (OpenCV zeroes those <= its 0.2 threshold)."""
    rows, offset, na = [], 0, model.detect.na
    for stride in model.spec.strides:
        h = w = size // stride
        level = out[offset:offset + na * h * w].reshape(na, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * na, -1)
        offset += na * h * w
        rows.append(np.concatenate([level[:, :4] / size, level[:, 4:5], level[:, 4:5] * level[:, 5:]], 1))
    return rows


def assert_rows_match_opencv(ours: list[np.ndarray], theirs: list[np.ndarray], atol: float = 1e-3) -> None:
    """Boxes and objectness equal, class scores equal where OpenCV keeps them (above its 0.2 threshold,
    zero below; scores within 1e-3 of the threshold are left out), level by level."""
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=0, atol=atol)
        near_threshold = np.abs(a[:, 5:] - 0.2) < 1e-3
        expected = np.where(a[:, 5:] > 0.2, a[:, 5:], 0)
        class_diff = np.abs(np.where(near_threshold, 0, expected - b[:, 5:])).max()
        assert class_diff < atol
        assert (expected > 0).any() and (expected == 0).any()  # both sides of OpenCV's threshold were compared


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4-csp"])
def test_darknet_weights_match_opencv_dnn(name, tmp_path):
    size = 256
    cfg = write_darknet(randomize(build_model(name, num_classes=3)), tmp_path, size)
    model = scaledyolo.load(cfg)
    assert model.spec.name == name
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = our_rows(model, model(x)[0].numpy(), size)
    assert_rows_match_opencv(ours, opencv_rows(model, cfg, x))


def custom_cfg(tmp_path: Path) -> Path:
    """A cfg that is no named member: tiny with an extra 3x3 conv, 2 classes and scale_x_y 1.2 at stride 16."""
    text = cfg_text(build_model("yolov4-tiny", num_classes=2))
    marker = "[maxpool]\nsize=2\nstride=2"
    text = text.replace(marker, marker + "\n\n[convolutional]\nbatch_normalize=1\nfilters=128\nsize=3\nstride=1\n"
                        "pad=1\nactivation=mish", 1)
    head = text.split("[yolo]")
    text = head[0] + "[yolo]" + head[1] + "[yolo]" + head[2].replace("scale_x_y = 1.05", "scale_x_y = 1.2")
    text = text.replace("width=416", "width=256").replace("height=416", "height=256")
    cfg = tmp_path / "custom.cfg"
    cfg.write_text(text)  # our cfg writer uses relative routes only: they stay valid after the insertion
    return cfg


def test_custom_cfg_rebuilds_from_its_checkpoint_and_matches_opencv(tmp_path):
    cfg = custom_cfg(tmp_path)
    model = scaledyolo.load(cfg)
    assert model.spec.arch == "darknet" and model.spec.scale_xy == [1.2, 1.05] and model.num_classes == 2
    randomize(model, seed=3)
    save_weights(model, cfg.with_suffix(".weights"))
    out = convert(cfg, output=tmp_path / "custom.pt")
    again = scaledyolo.load(out)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(again(x), ours)
    theirs = opencv_rows(model, cfg, x)
    for a, b in zip(our_rows(model, ours[0].numpy(), 256), theirs):
        np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-3)


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4-csp"])
def test_darknet_round_trip_is_bit_exact(name, tmp_path):
    cfg = write_darknet(randomize(build_model(name, num_classes=5), seed=2), tmp_path / "in", 320)
    ckpt = convert(cfg, output=tmp_path / "model.pt")
    files = export(ckpt, format="darknet", output=tmp_path / "out")
    assert files[1].read_bytes() == cfg.with_suffix(".weights").read_bytes()
    assert spec_from_cfg(files[0].read_text()).name == name


def test_old_weights_header_with_32bit_seen_count(tmp_path):
    model = randomize(build_model("yolov4-tiny", num_classes=1))
    cfg = write_darknet(model, tmp_path, 416)
    cfg.with_suffix(".weights").write_bytes(weights_bytes(model, header=(0, 1, 0, 77)))
    assert len(cfg.with_suffix(".weights").read_bytes()) == len(weights_bytes(model)) - 4
    loaded = scaledyolo.load(cfg)
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_names_file_beside_the_cfg(tmp_path):
    cfg = write_darknet(build_model("yolov4-tiny", num_classes=2), tmp_path, 416)
    assert scaledyolo.load(cfg).names == ["0", "1"]
    cfg.with_suffix(".names").write_text("raccoon\ncat\n")
    assert scaledyolo.load(cfg).names == ["raccoon", "cat"]
    coco = write_darknet(build_model("yolov4-tiny"), tmp_path / "coco", 416)
    assert scaledyolo.load(coco).names[:2] == ["person", "bicycle"]


# --------------------------------------------------------------------------- official .pt


@pytest.fixture
def official(tmp_path):
    """The stand-in official code, importable as `models.yolo` while the test runs."""
    module = official_standins.install(tmp_path / "official_code")
    yield module
    official_standins.uninstall(tmp_path / "official_code")


def save_official(module, path: Path, member: str, nc: int, half: bool, zip_format: bool = True, **scale):
    """An official-layout checkpoint as train.py/strip_optimizer write it; returns the source model (eval)."""
    torch.manual_seed(0)
    model = module.Model(official_standins.official_yaml(member, nc=nc, **scale))
    randomize(model, seed=4)
    if half:
        model.half()
    ckpt = {"epoch": -1, "best_fitness": np.array([0.41]), "training_results": None, "model": model,
            "optimizer": None}
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    return model.float().eval()


# Our model and the official code compute the same function from the same weights; they differ by float32
# rounding only. Measured (Intel Xeon, torch 2.13 CPU, random weights, boxes up to 1540 px): boxes 3.1e-4 px,
# objectness and class probabilities 1.8e-7. Each output gets its own absolute bound.
BOX_TOLERANCE_PX = 1e-3
SCORE_TOLERANCE = 1e-5


def assert_same_detections(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Eval outputs (B, N, 5 + nc) equal: cx, cy, w, h within BOX_TOLERANCE_PX pixels, scores within SCORE_TOLERANCE."""
    assert got.shape == expected.shape
    torch.testing.assert_close(got[..., :4], expected[..., :4], rtol=0, atol=BOX_TOLERANCE_PX)
    torch.testing.assert_close(got[..., 4:], expected[..., 4:], rtol=0, atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("member,nc,half,zip_format,scale", [
    ("p5", 80, False, True, {}),
    ("p6", 7, True, True, {"depth": 0.34, "width": 0.25}),
    ("p7", 7, True, False, {"depth": 0.34, "width": 0.25}),
    ("csp", 3, False, False, {"depth": 0.34, "width": 0.25}),
])
def test_official_checkpoint_gives_the_official_outputs(official, tmp_path, member, nc, half, zip_format, scale):
    path = tmp_path / f"yolov4-{member}.pt"
    source = save_official(official, path, member, nc, half, zip_format, **scale)
    model = scaledyolo.load(path)
    if not scale:
        assert model.spec.name == f"yolov4-{member}"
    assert model.num_classes == nc and not model.training
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = source(x)[0]
        got = model(x)
    assert_same_detections(got, expected)


def _train_step_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Train-mode raw maps (batch statistics) and the BN running statistics that forward leaves behind, by name."""
    model.train()
    with torch.no_grad():
        maps = model(x)
    stats = {f"{name}.{stat}": getattr(m, stat).clone() for name, m in model.named_modules()
             if isinstance(m, torch.nn.BatchNorm2d) for stat in ("running_mean", "running_var")}
    return maps, stats


@pytest.mark.parametrize("member,scale", [
    ("p5", {}),
    ("p6", {"depth": 0.34, "width": 0.25}),
    ("csp", {"depth": 0.34, "width": 0.25}),
])
def test_official_checkpoint_trains_like_the_official_model(official, tmp_path, member, scale):
    """Finetuning starts where the official model is: the same batch-statistics outputs and running
    statistics after the step (the official eps 1e-3, momentum 0.03, read from the file), the same loss.

    Raw maps are compared in float64, where both compute the same function up to 1e-11; in float32
    they differ by float rounding only (up to about 1e-3 through P5's ~150 batch-normalised layers),
    and the loss, computed at float32 as in training, agrees to 1e-4.
    """
    from scaledyolo.train.loss import ComputeLoss

    path = tmp_path / f"yolov4-{member}.pt"
    source = save_official(official, path, member, 4, half=False, **scale)
    model = scaledyolo.load(path)
    assert (model.spec.bn_eps, model.spec.bn_momentum) == (1e-3, 0.03)
    assert ModelSpec.from_dict(model.spec.to_dict()) == model.spec
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(6))
    targets = torch.tensor([[0, 1, 0.30, 0.40, 0.20, 0.30], [0, 3, 0.70, 0.60, 0.50, 0.40],
                            [1, 0, 0.50, 0.50, 0.10, 0.08], [1, 2, 0.20, 0.75, 0.35, 0.45]])
    pytorch_default_bn = copy.deepcopy(model)
    for m in pytorch_default_bn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps, m.momentum = 1e-5, 0.1
    compute_loss = ComputeLoss(model)
    expected_maps, _ = _train_step_outputs(copy.deepcopy(source), x)
    _, expected_parts = compute_loss(expected_maps, targets)
    _, got_parts = compute_loss(_train_step_outputs(copy.deepcopy(model), x)[0], targets)
    torch.testing.assert_close(got_parts, expected_parts, rtol=0, atol=1e-4)  # box, obj, cls, total
    # the test can tell: PyTorch's default BN on the same weights gives another loss
    _, default_parts = compute_loss(_train_step_outputs(pytorch_default_bn, x)[0], targets)
    assert (default_parts - expected_parts).abs().max() > 1e-3
    expected_maps, expected_stats = _train_step_outputs(source.double(), x.double())
    got_maps, got_stats = _train_step_outputs(model.double(), x.double())
    table, _ = official_layout(model.spec)  # official layer numbers -> our module paths
    expected_stats = to_our_keys({k.removeprefix("model."): v for k, v in expected_stats.items()}, table, path)
    assert expected_stats.keys() == got_stats.keys()
    for got, expected in zip(got_maps + list(got_stats.values()),
                             expected_maps + [expected_stats[k] for k in got_stats], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_official_file_converts_to_our_checkpoint(official, tmp_path):
    path = tmp_path / "p6.pt"
    source = save_official(official, path, "p6", 2, True, depth=0.34, width=0.25)
    out = tmp_path / "ours.pt"
    done = subprocess.run([sys.executable, "-m", "scaledyolo", "convert", str(path), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    model = scaledyolo.load(out)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert_same_detections(model(x), source(x)[0])


def test_official_file_of_unknown_structure(official, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))}, path)
    with pytest.raises(UserError, match="official file of unknown structure"):
        scaledyolo.load(path)
    model = official.Model(official_standins.official_yaml("p5", depth=0.34, width=0.25))
    model.model[3].bn.eps = 1e-5  # one BatchNorm unlike the others: not what the official code writes
    torch.save({"model": model}, path)
    with pytest.raises(UserError, match="BatchNorm layers hold 2 different"):
        scaledyolo.load(path)
    model.model[3].bn.eps = 1e-3
    del model.model[12]  # a layer missing: indices and inputs no longer line up
    torch.save({"model": model}, path)
    with pytest.raises(UserError, match="official file of unknown structure: 30 layers before Detect"):
        scaledyolo.load(path)


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_official_files_give_one_clear_error(official, tmp_path, zip_format):
    path = tmp_path / "p6.pt"
    save_official(official, path, "p6", 2, True, zip_format, depth=0.34, width=0.25)
    data = path.read_bytes()
    for cut in np.linspace(2, len(data) - 1, 7).astype(int):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match="damaged or unsupported PyTorch file"):
            scaledyolo.load(path)


def test_restricted_unpickler_keeps_plain_data(tmp_path):
    path = tmp_path / "data.pt"
    value = {"a": torch.arange(6.0).view(2, 3)[:, 1:], "b": np.float64(0.5), "c": {1, 2}, "d": [np.arange(3)]}
    for zip_format in (True, False):
        torch.save(value, path, _use_new_zipfile_serialization=zip_format)
        loaded = restricted_load(path)
        assert torch.equal(loaded["a"], value["a"]) and loaded["b"] == 0.5 and loaded["c"] == {1, 2}
        np.testing.assert_array_equal(loaded["d"][0], np.arange(3))


# --------------------------------------------------------------------------- export


def test_onnx_export_matches_torch_in_onnx_runtime(tmp_path):
    ort = require("onnxruntime")
    model = randomize(build_model("yolov4-tiny", num_classes=3))
    ckpt = tmp_path / "tiny.pt"
    from scaledyolo.interop.checkpoint import save_checkpoint

    save_checkpoint(ckpt, model)
    (path,) = export(ckpt, format="onnx", output=tmp_path / "tiny.onnx", img=256, dynamic=True)
    import onnx

    assert onnx.load(str(path)).opset_import[0].version >= 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 256, 256), (2, 3, 192, 320)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_matches_torch(tmp_path):
    model = randomize(build_model("yolov4-tiny", num_classes=2))
    from scaledyolo.interop.onnx import export_torchscript

    path = export_torchscript(model, tmp_path / "tiny.torchscript", img=128)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), model(x), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- errors


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaledyolo", *args], capture_output=True, text=True, timeout=120)


def test_unknown_cfg_layer_type(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(cfg_text(build_model("yolov4-tiny")).replace("[maxpool]", "[reorg3d]", 1))
    done = run_cli("convert", str(cfg), "-o", str(tmp_path / "x.pt"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith(f"error: {cfg}: line ") and "[reorg3d]" in done.stderr


def test_weights_of_the_wrong_length_say_expected_and_found_bytes(tmp_path):
    cfg = write_darknet(build_model("yolov4-tiny"), tmp_path, 416)
    data = cfg.with_suffix(".weights").read_bytes()
    cfg.with_suffix(".weights").write_bytes(data[:-400])
    with pytest.raises(UserError, match=f"needs {len(data)} bytes, found {len(data) - 400}"):
        scaledyolo.load(cfg)


def test_weights_for_another_class_count_say_how_to_finetune(tmp_path):
    cfg = write_darknet(build_model("yolov4-tiny"), tmp_path, 416)
    save_weights(build_model("yolov4-tiny", num_classes=3), cfg.with_suffix(".weights"))
    with pytest.raises(UserError, match="made for 3 classes while the cfg has 80.*train --weights"):
        scaledyolo.load(cfg)


def test_random_bytes_as_weights(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("random.pt", "random.weights"):
        (tmp_path / name).write_bytes(rng.bytes(5000))
    done = run_cli("convert", str(tmp_path / "random.pt"), "-o", str(tmp_path / "x.pt"))
    assert done.returncode == 2 and "not a model file" in done.stderr and "Traceback" not in done.stderr
    cfg = write_darknet(build_model("yolov4-tiny"), tmp_path, 416)
    cfg.with_suffix(".weights").write_bytes(b"\0" * 12 + rng.bytes(5000))
    with pytest.raises(UserError, match="wrong length"):
        scaledyolo.load(cfg)


def test_class_count_mismatch_for_our_checkpoint(tmp_path):
    from scaledyolo.interop.loading import load_model
    from scaledyolo.interop.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", build_model("yolov4-tiny", num_classes=4))
    with pytest.raises(UserError, match="for 4 classes, not 2.*train --weights"):
        load_model(tmp_path / "m.pt", num_classes=2)

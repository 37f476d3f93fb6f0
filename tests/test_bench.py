"""The fast inference path computes the same function as the eval model; `scaledyolo bench` reports.

No timing is asserted here (the machine is shared); speed targets live in benchmarks/.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from optional_components import require
import scaledyolo
from scaledyolo.bench import benchmark
from scaledyolo.cli import main
from scaledyolo.models.analysis import count_flops
from scaledyolo.models.fast_blocks import MISH_CHUNK, FastConv, max_pool_2x2, negated_mish
from scaledyolo.models.inference import prepare_for_inference


def _randomized(name: str, seed: int = 0) -> scaledyolo.models.YOLO:
    """A member with non-trivial BN statistics, so that folding them is actually exercised."""
    model = scaledyolo.build_model(name).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest error relative to the value's size (boxes are hundreds of pixels, scores 0-1)."""
    return ((a - b).abs() / (b.abs() + 1)).max().item()


def _assert_mish(got: torch.Tensor, x: torch.Tensor) -> None:
    """Within two float32 ulps of the input and the exact (float64) Mish: the rounding of `x` itself."""
    exact = F.mish(x.double())
    ulps = (got.double() - exact).abs() / ((exact.abs() + x.double().abs()) * torch.finfo(torch.float32).eps + 1e-30)
    assert torch.isfinite(got).all() and ulps.max() <= 2.0


def test_negated_mish_is_mish_of_the_negation() -> None:
    x = torch.cat([torch.linspace(-100, 100, 200001), torch.tensor([0.0, -1e-6, 1e-6, -30.0, 30.0])])
    _assert_mish(negated_mish(-x), x)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_negated_mish_covers_every_chunk_in_place(layout: torch.memory_format) -> None:
    """A map larger than one chunk (and not a multiple of it), in both layouts, and a strided view."""
    x = (torch.randn(1, 19, 97, 101) * 4).contiguous(memory_format=layout)
    assert x.numel() > 2 * MISH_CHUNK and x.numel() % MISH_CHUNK
    z = -x
    got = negated_mish(z)
    assert got.data_ptr() == z.data_ptr()
    _assert_mish(got, x)
    _assert_mish(negated_mish(-x[:, :, ::2]), x[:, :, ::2])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (2, 5, 8, 8), (1, 64, 13, 26)])
def test_max_pool_2x2_is_max_pool2d_bit_for_bit(shape: tuple[int, ...], layout: torch.memory_format) -> None:
    x = torch.randn(shape).contiguous(memory_format=layout)
    assert torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2, 2))


@pytest.mark.parametrize("name,size", [("yolov4-tiny", 96), ("yolov4-csp", 96), ("yolov4-p5", 64)])
def test_fast_path_equals_eval_model(name: str, size: int) -> None:
    model = _randomized(name)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model, "cpu", precision="fp32", img_size=size)
    out = fast(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _rel_err(out, ref) < 1e-4
    # the original model is left as it was (still trainable, BN not folded)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, FastConv) for m in model.modules())


def test_fast_path_other_sizes_and_layouts() -> None:
    """Weights packed for one size still give the right answer at another; NCHW works too."""
    model = _randomized("yolov4-tiny", seed=1)
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        ref = model(x)
    for fast in (prepare_for_inference(model, img_size=96), prepare_for_inference(model, channels_last=False)):
        assert _rel_err(fast(x), ref) < 1e-4


def test_falls_back_to_plain_convs_when_onednn_cannot_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise RuntimeError("not supported on this CPU")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_convolution_weight", refuse)
    model = _randomized("yolov4-tiny", seed=3)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    fast = prepare_for_inference(model, img_size=64)
    convs = [m for m in fast.modules() if isinstance(m, FastConv)]
    assert convs and not any(c.packed for c in convs)
    assert _rel_err(fast(x), ref) < 1e-4


def test_bf16_path_is_close() -> None:
    model = _randomized("yolov4-tiny", seed=2)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
    out = prepare_for_inference(model, precision="bf16", img_size=96)(x)
    assert out.dtype == torch.float32
    assert _rel_err(out, ref) < 5e-2
    assert _rel_err(out, ref) > 0  # it really ran in reduced precision


def test_fp16_on_cpu_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", "yolov4-tiny", "--img", "64", "--precision", "fp16"]) == 2
    assert "fp16" in capsys.readouterr().err


def test_bench_json_has_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", "yolov4-tiny", "--img", "64", "--runs", "2", "--warmup", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("latency_ms", "fps", "gflops", "achieved_gflops_s", "peak_gflops_s", "peak_fraction"):
        assert result[key] > 0, key
    assert result["img"] == 64 and result["batch"] == 1 and result["backend"] == "torch"
    assert result["fps"] == pytest.approx(1000 / result["latency_ms"])
    assert result["gflops"] == pytest.approx(count_flops(scaledyolo.build_model("yolov4-tiny"), 64))


def test_bench_subnet_costs_less() -> None:
    full = benchmark("yolov4-p5", img=64, runs=1, warmup=0)
    sub = benchmark("yolov4-p5", img=64, runs=1, warmup=0, subnet="p5-p5-p4")
    assert sub["subnet"] == "p5-p5-p4"
    assert sub["gflops"] < full["gflops"]


def test_bench_onnxruntime_backend() -> None:
    require("onnxruntime")
    result = benchmark("yolov4-tiny", img=64, runs=1, warmup=0, backend="onnxruntime")
    assert result["backend"] == "onnxruntime" and result["latency_ms"] > 0


def test_bench_needs_one_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--img", "64"]) == 2
    assert "--model" in capsys.readouterr().err


def test_predict_reuses_the_fast_copy_until_the_weights_change():
    from scaledyolo import build_model
    from scaledyolo.models.inference import cached_inference_model

    model = build_model("yolov4-tiny", num_classes=2).eval()
    first = cached_inference_model(model, img_size=64)
    assert cached_inference_model(model, img_size=64) is first
    with torch.no_grad():
        model.backbone.stem[0].conv.weight.mul_(0.5)
    second = cached_inference_model(model, img_size=64)
    assert second is not first
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(second(x), model(x), rtol=1e-4, atol=1e-3)


def test_peak_fraction_never_exceeds_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A convolution faster than the measured matmul is reported as 100 % and flagged, not as 400 %."""
    from scaledyolo import bench
    from scaledyolo.commands.bench import format_result

    monkeypatch.setattr(bench, "measure_peak", lambda dtype, device: {"peak_gflops_s": 1e-6, "mm_gflops_s": 1e-6,
                                                                      "onednn_matmul_gflops_s": None})
    result = benchmark("yolov4-tiny", img=64, runs=1, warmup=0)
    assert result["peak_fraction"] == 1.0 and result["above_peak"]
    assert "100% of peak (faster than the matmul" in format_result(result)


def test_peak_matmul_uses_the_convolutions_math_mode() -> None:
    """On CUDA, fp32 convolutions run in TF32 by default (cuDNN) while matmuls do not: the peak's
    matmul must follow the convolutions' setting, or fp32 fractions come out several times too high."""
    from scaledyolo.bench import conv_math_mode

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        for conv_tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = conv_tf32
            with conv_math_mode(torch.device("cuda")):
                assert torch.backends.cuda.matmul.allow_tf32 is conv_tf32
            assert torch.backends.cuda.matmul.allow_tf32 is False  # restored afterwards
            with conv_math_mode(torch.device("cpu")):
                assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

"""The five members: parameter-exact, output contracts, compound scaling, fusion and subnets."""

import copy

import pytest
import torch

from scaledyolo import ModelSpec, build_model
from scaledyolo.models.spec import MEMBERS

PARAMS = {
    "yolov4-tiny": 6_056_606,
    "yolov4-csp": 52_921_437,
    "yolov4-p5": 70_834_012,
    "yolov4-p6": 127_590_576,
    "yolov4-p7": 287_575_580,
}
STRIDES = {
    "yolov4-tiny": [16, 32],
    "yolov4-csp": [8, 16, 32],
    "yolov4-p5": [8, 16, 32],
    "yolov4-p6": [8, 16, 32, 64],
    "yolov4-p7": [8, 16, 32, 64, 128],
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_matches_official(name):
    assert count(build_model(name)) == PARAMS[name]


@pytest.mark.parametrize("name", list(PARAMS))
def test_output_shapes_and_order(name):
    model = build_model(name, num_classes=3)
    na = model.spec.num_anchors
    x = torch.rand(1, 3, 256, 256)
    model.train()
    maps = model(x)
    assert [m.shape for m in maps] == [(1, na, 256 // s, 256 // s, 8) for s in STRIDES[name]]
    model.eval()
    with torch.no_grad():
        out = model(x)
    n = sum(na * (256 // s) ** 2 for s in STRIDES[name])
    assert out.shape == (1, n, 8)
    # probabilities in [0, 1]; centres inside a generous frame around the input
    assert out[..., 4:].min() >= 0 and out[..., 4:].max() <= 1
    assert out[..., :2].min() > -256 and out[..., :2].max() < 512


def test_eval_output_is_decoded_raw_maps_in_level_anchor_y_x_order():
    model = build_model("yolov4-csp", num_classes=2).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        out = model(x)
        maps = model.detect.raw(model.features(x), model.levels)  # same BN statistics as eval
    # level 1 (stride 16), anchor 2, cell y=3, x=5
    offset = 3 * 16 * 16 + 2 * 8 * 8 + 3 * 8 + 5
    raw = maps[1][0, 2, 3, 5]
    sig = raw.sigmoid()
    cx = (sig[0] * 2 - 0.5 + 5) * 16
    w = (sig[2] * 2) ** 2 * model.detect.anchors[1, 2, 0]
    torch.testing.assert_close(out[0, offset, 0], cx)
    torch.testing.assert_close(out[0, offset, 2], w)
    torch.testing.assert_close(out[0, offset, 4:], sig[4:])


def test_tiny_uses_darknet_decoding():
    model = build_model("yolov4-tiny", num_classes=1).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        maps = model.detect.raw(model.features(x), model.levels)
    raw = maps[0][0, 0, 1, 2]  # stride 16, anchor 0 = (23, 27)
    sig = raw.sigmoid()
    torch.testing.assert_close(out[0, 1 * 4 + 2, 0], (sig[0] * 1.05 - 0.025 + 2) * 16)
    torch.testing.assert_close(out[0, 1 * 4 + 2, 3], torch.exp(raw[3]) * 27)


def test_p6_and_p7_come_from_p5_by_compound_scaling():
    p5 = MEMBERS["yolov4-p5"]
    p6 = p5.scale(img_size=1280, stages=6)
    p7 = p6.scale(img_size=1536, stages=7, width=1.25)
    assert p6.depths == [1, 3, 15, 15, 7, 7] and p7.depths == [1, 3, 15, 15, 7, 7, 7]
    assert count(build_model(p6)) == PARAMS["yolov4-p6"]
    assert count(build_model(p7)) == PARAMS["yolov4-p7"]


def test_spec_round_trips_as_plain_data():
    spec = MEMBERS["yolov4-p6"]
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    assert count(build_model(again)) == PARAMS["yolov4-p6"]


def test_depth_and_width_scaling_change_size_monotonically():
    p5 = MEMBERS["yolov4-p5"]
    small = build_model(p5.scale(depth=0.33, width=0.5))
    assert count(small) < PARAMS["yolov4-p5"] / 3


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4-csp", "yolov4-p5"])
def test_fuse_keeps_outputs(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4)
    # non-trivial BN statistics
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 3, 128, 128))
    model.eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse()(x)
    torch.testing.assert_close(fused, ref, rtol=1e-3, atol=1e-3)


def test_subnet_output_equals_full_output_restricted():
    spec = MEMBERS["yolov4-p7"].scale(depth=0.1, width=0.25)
    model = build_model(spec, num_classes=2).eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        full = model(x)
        sub = model.subnet("p7-p7-p6")
        part = sub(x)
    sizes = [model.spec.num_anchors * (256 // s) ** 2 for s in model.spec.strides]
    start = sum(sizes[:3])
    torch.testing.assert_close(part, full[:, start:])
    assert count(sub) < count(model)
    only_top = model.subnet("p7-p7")
    with torch.no_grad():
        torch.testing.assert_close(only_top(x), full[:, sum(sizes[:4]):])


@pytest.mark.parametrize("name,eps,momentum", [
    ("yolov4-tiny", 1e-5, 0.1), ("yolov4-csp", 1e-5, 0.1),  # darknet-born: darknet's sqrt(var + 1e-5)
    ("yolov4-p5", 1e-3, 0.03), ("yolov4-p7", 1e-3, 0.03),  # the official PyTorch code's initialize_weights
])
def test_every_batchnorm_carries_the_members_settings(name, eps, momentum):
    spec = MEMBERS[name]
    assert (spec.bn_eps, spec.bn_momentum) == (eps, momentum)
    model = build_model(spec.scale(depth=0.1, width=0.25) if spec.arch == "large" else spec, num_classes=2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all((m.eps, m.momentum) == (eps, momentum) for m in norms)
    # a spec saved before the fields existed loads with the values its architecture implies
    old = {k: v for k, v in spec.to_dict().items() if k not in ("bn_eps", "bn_momentum")}
    assert ModelSpec.from_dict(old) == spec
    custom = ModelSpec.from_dict({**spec.to_dict(), "bn_eps": 1e-4, "bn_momentum": 0.2})
    assert all((m.eps, m.momentum) == (1e-4, 0.2) for m in build_model(custom).modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_fusion_and_the_fast_path_use_each_batchnorms_own_eps():
    """Both inference paths equal the eval model where eps matters (running variances near P5's eps
    1e-3, gammas that keep the activations near unit size), so they use each BN's own eps."""
    from scaledyolo.models.inference import prepare_for_inference

    model = build_model(MEMBERS["yolov4-p5"].scale(depth=0.1, width=0.25), num_classes=2).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2e-3 + 5e-4)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.weight.copy_((m.running_var + m.eps).sqrt() * (torch.rand(m.num_features, generator=g) + 0.5))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    x = torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = model(x)
        other_eps = copy.deepcopy(model)
        for m in other_eps.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-5
        assert not torch.allclose(other_eps(x), ref, rtol=1e-2, atol=1e-2)  # eps matters here
        fast = prepare_for_inference(model, "cpu", precision="fp32", img_size=64)(x)
        fused = copy.deepcopy(model).fuse()(x)
    for out in (fast, fused):
        assert ((out - ref).abs() / (ref.abs() + 1)).max() < 1e-4


def test_members_are_built_from_the_papers_blocks():
    from scaledyolo.models.blocks import (
        SPPCSP, BottleneckCSP2, CSPDarkStage, CSPOSAStage, CSPPANBlock, CSPStage, DarknetSPPCSP, ResidualStage,
    )

    with torch.device("meta"):
        tiny, csp, p5 = (build_model(n) for n in ("yolov4-tiny", "yolov4-csp", "yolov4-p5"))
    assert [type(getattr(tiny.backbone, f"stage{i}")) for i in (1, 2, 3)] == [CSPOSAStage] * 3
    assert type(csp.backbone.stage1) is ResidualStage and type(csp.backbone.stage5) is CSPDarkStage
    assert type(csp.neck.spp) is DarknetSPPCSP and {type(m) for m in csp.neck.bottom_up} == {CSPPANBlock}
    assert type(p5.backbone.stage3) is CSPStage and type(p5.neck.spp) is SPPCSP
    assert {type(m) for m in (*p5.neck.top_down, *p5.neck.bottom_up)} == {BottleneckCSP2}


def test_yaml_csp_first_stage_is_a_validated_spec_field():
    from scaledyolo.errors import UserError

    yaml_csp = MEMBERS["yolov4-p5"].replace(name="yolov4-csp-yaml", depths=[1, 2, 8, 8, 4], neck_depth=2,
                                            first_stage="residual", img_size=640)
    with torch.device("meta"):
        model = build_model(yaml_csp)
    assert type(model.backbone.stage1).__name__ == "ResidualStage" and len(model.backbone.stage1.blocks) == 1
    with pytest.raises(UserError, match="first_stage"):
        MEMBERS["yolov4-csp"].replace(first_stage="residual")
    # a spec saved while the option was the hidden extra key reads as the field
    old = {**yaml_csp.to_dict(), "first_stage": None, "extra": {"first_stage": "bottleneck"}}
    assert ModelSpec.from_dict(old) == yaml_csp


def test_tiny_subnet_keeps_only_what_its_level_needs():
    model = build_model("yolov4-tiny", num_classes=2).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        full = model(x)
        top = model.subnet([1])
        torch.testing.assert_close(top(x), full[:, 3 * 8 * 8:])
    assert isinstance(top.neck.lateral, torch.nn.Identity) and isinstance(top.head.convs[0], torch.nn.Identity)

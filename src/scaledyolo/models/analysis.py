"""Model analysis: parameters, FLOPs, per-stage table and the paper's CIO, counted on the layers we build.

FLOPs are 2 x multiply-accumulates of the convolutions (bias adds included, BN counted as folded into
the convolution, as at inference). CIO (convolutional input/output, from CSPNet/HarDNet) is the sum,
over convolutions, of the input and output activation sizes: a proxy for DRAM traffic.
`paper_report` counts the paper's Section 3 analysis on the block classes the members are built
from (`Bottleneck`, `BottleneckCSP`, `CSPOSAStage`); only the layer kinds no member uses (ResNet's
Res and ResX layers) and the un-CSP-ized baselines are defined here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from scaledyolo.errors import UserError
from scaledyolo.models.blocks import BottleneckCSP, CSPOSAStage
from scaledyolo.models.layers import Bottleneck, Conv
from scaledyolo.models.spec import MEMBERS, resolve_spec, round_img_size
from scaledyolo.models.yolo import YOLO, build_model


def _conv_macs(module: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    per_output = module.in_channels // module.groups * kh * kw + (module.bias is not None)
    return out.numel() * per_output


def profile_convs(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Run `model(x)` once and record, per convolution: its name, MACs, CIO (input + output sizes), output size."""
    records: list[dict[str, Any]] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            def hook(mod: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name) -> None:
                records.append({"name": name, "macs": _conv_macs(mod, out),
                                "cio": inputs[0].numel() + out.numel(), "out": out.numel()})
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return records


def count_flops(model: nn.Module, img_size: int | tuple[int, int], batch: int = 1) -> float:
    """GFLOPs (2 x MACs) of one forward pass at `img_size` (square int or (h, w))."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.zeros(batch, 3, h, w, device=next(model.parameters()).device)
    return 2 * sum(r["macs"] for r in profile_convs(model, x)) / 1e9


def _stage_of(conv_name: str) -> str:
    """'backbone.stage3.….conv' -> 'stage3' ('stem' likewise; 'darknet' for a cfg's graph), else 'neck' or 'head'."""
    parts = conv_name.split(".")
    if parts[0] == "backbone":
        return "darknet" if parts[1] == "layers" else parts[1]
    return parts[0]


def _stages(model: YOLO) -> list[tuple[str, nn.Module]]:
    """(stage name, module) in forward order: the backbone's stages, then the neck and the head."""
    children = list(model.backbone.named_children())
    backbone = [("darknet", model.backbone)] if [n for n, _ in children] == ["layers"] else children
    return backbone + [("neck", model.neck), ("head", model.head)]


def _last_tensor(out: Any) -> torch.Tensor:
    """A stage's output map: the tensor, the pooled output of a (pooled, partial) pair, a pyramid's last level."""
    if isinstance(out, tuple):
        return out[0]
    return out[-1] if isinstance(out, list) else out


def stage_table(model: YOLO, img_size: int) -> list[dict[str, Any]]:
    """Per stage (stem, stage1.., neck, head): params, GFLOPs, output shape, activation memory, CIO.

    Activation memory is what the stage's convolutions write (float32), the bulk of its activations.
    """
    stages = _stages(model)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [module.register_forward_hook(
        lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(_last_tensor(out).shape)))
        for name, module in stages]
    try:  # one forward pass records the convolutions and the stage outputs
        convs = profile_convs(model, torch.zeros(1, 3, img_size, img_size))
    finally:
        for h in hooks:
            h.remove()
    rows: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
    for name, module in stages:
        rows[name] = {"stage": name, "params": sum(p.numel() for p in module.parameters()), "gflops": 0.0,
                      "output": list(shapes[name]) if name in shapes else None, "activation_mb": 0.0, "cio_m": 0.0}
    for record in convs:
        row = rows[_stage_of(record["name"])]
        row["gflops"] += 2 * record["macs"] / 1e9
        row["cio_m"] += record["cio"] / 1e6
        row["activation_mb"] += record["out"] * 4 / 2**20
    return list(rows.values())


def model_report(source: str | YOLO, img_size: int | None = None) -> dict[str, Any]:
    """Parameters, GFLOPs, per-stage table and CIO of a model at `img_size` (default: its native size)."""
    if isinstance(source, YOLO):
        model = source
    else:  # weights files are read a floor up (scaledyolo.interop.loading.resolve_model)
        spec = resolve_spec(source)
        if spec is None:
            raise UserError(f"not a model name ({', '.join(MEMBERS)}) nor a spec YAML", source)
        model = build_model(spec)
    size = round_img_size(img_size or model.spec.img_size, model.spec.max_stride)
    stages = stage_table(model, size)
    return {
        "name": model.spec.name,
        "img_size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": round(sum(s["gflops"] for s in stages), 4),
        "cio_m": round(sum(s["cio_m"] for s in stages), 3),
        "strides": model.spec.strides,
        "anchors_per_level": model.spec.num_anchors,
        "num_classes": model.spec.num_classes,
        "stages": stages,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['name']} @ {report['img_size']}: {report['params']:,} parameters, "
             f"{report['gflops']:.2f} GFLOPs, CIO {report['cio_m']:.1f} M activations, "
             f"strides {report['strides']}, {report['num_classes']} classes",
             "", f"{'stage':<8} {'params':>12} {'GFLOPs':>9} {'output':>22} {'act MB':>9} {'CIO (M)':>9}"]
    for s in report["stages"]:
        out = "x".join(str(d) for d in s["output"]) if s["output"] else "-"
        lines.append(f"{s['stage']:<8} {s['params']:>12,} {s['gflops']:>9.3f} {out:>22} "
                     f"{s['activation_mb']:>9.2f} {s['cio_m']:>9.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the paper's analysis


class _ResLayer(nn.Module):
    """ResNet bottleneck with base width b: 1x1 b->b/4, 3x3 b/4->b/4, 1x1 b/4->b, residual."""

    def __init__(self, c: int, hidden: int, groups: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(Conv(c, hidden, 1), Conv(hidden, hidden, 3, groups=groups), Conv(hidden, c, 1, act="linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _layer(kind: str, c: int, b: int) -> nn.Module:
    """One computational layer of the given kind on c channels; inner widths follow the base width b.

    Dark is our `Bottleneck`, as the members use it: 1x1 to b/2 and 3x3 back on the full width, 1x1
    and 3x3 at the same width inside a CSP half.
    """
    if kind == "Res":
        return _ResLayer(c, b // 4)
    if kind == "ResX":
        return _ResLayer(c, b // 2 if c == b else c, groups=32)
    return Bottleneck(c, c, True, "mish", e=0.5 if c == b else 1.0)


class _Plain(nn.Module):
    def __init__(self, kind: str, b: int, k: int) -> None:
        super().__init__()
        self.m = nn.Sequential(*(_layer(kind, b, b) for _ in range(k)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class _CSPized(nn.Module):
    """CSP-ization: split b channels in halves; k layers on one half; 1x1 transition; concat; 1x1 fusion to b/2.

    The transitions cost whb^2 (1/4 + 1/2) = 3/4 whb^2, the paper's constant term.
    """

    def __init__(self, kind: str, b: int, k: int) -> None:
        super().__init__()
        self.m = nn.Sequential(*(_layer(kind, b // 2, b) for _ in range(k)))
        self.transition = nn.Conv2d(b // 2, b // 2, 1, bias=False)
        self.fuse = nn.Conv2d(b, b // 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part1, part2 = x.chunk(2, 1)
        return self.fuse(torch.cat((self.transition(self.m(part2)), part1), 1))


class _OSAStage(nn.Module):
    """`CSPOSAStage` without its cross-stage split (the OSA baseline it improves on): the two chained
    3x3 convolutions take the full width, the 1x1 transition aggregates both, the stage input is concatenated."""

    def __init__(self, b: int) -> None:
        super().__init__()
        self.first = Conv(b, b, 3, act="leaky")
        self.conv1 = Conv(b, b, 3, act="leaky")
        self.conv2 = Conv(b, b, 3, act="leaky")
        self.transition = Conv(2 * b, b, 1, act="leaky")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        y1 = self.conv1(x)
        y2 = self.conv2(y1)
        return torch.cat((x, self.transition(torch.cat((y2, y1), 1))), 1)


def _count(module: nn.Module, c: int, size: int) -> tuple[int, int]:
    records = profile_convs(module, torch.zeros(1, c, size, size))
    return sum(r["macs"] for r in records), sum(r["cio"] for r in records)


def paper_report(b: int = 256, size: int = 32, k: int = 16) -> dict[str, Any]:
    """Reproduce the paper's FLOPs analysis by counting layers we build.

    For each layer kind, FLOPs of k layers with and without CSP-ization, and the per-layer (marginal)
    reduction, which is what the paper's -23.5 % / -46.7 % / -50.0 % are (13/17, 73/137, 1/2 of the
    original per-layer cost); Dark is counted on `BottleneckCSP`, the members' block. Then the CIO of
    yolov4-tiny's `CSPOSAStage` (two 3x3 convs of growth g = b/2 on the split half) against the same
    stage without the split.
    """
    paper = {"Res": 23.5, "ResX": 46.7, "Dark": 50.0}
    rows = []
    for kind in ("Res", "ResX", "Dark"):
        plain_k = _count(_Plain(kind, b, k), b, size)[0]
        plain_k1 = _count(_Plain(kind, b, k + 1), b, size)[0]
        csp = (lambda n: BottleneckCSP(b, b, n)) if kind == "Dark" else (lambda n: _CSPized(kind, b, n))  # noqa: E731
        csp_k = _count(csp(k), b, size)[0]
        csp_k1 = _count(csp(k + 1), b, size)[0]
        per_layer = 100 * (1 - (csp_k1 - csp_k) / (plain_k1 - plain_k))
        rows.append({"layer": kind, "k": k, "gflops_original": 2 * plain_k / 1e9, "gflops_csp": 2 * csp_k / 1e9,
                     "reduction_total_pct": round(100 * (1 - csp_k / plain_k), 1),
                     "reduction_per_layer_pct": round(per_layer, 1), "paper_pct": paper[kind]})
    g, k_osa = b // 2, 2
    osa_macs, osa_cio = _count(_OSAStage(b), b, size)
    csp_macs, csp_cio = _count(CSPOSAStage(b, b), b, size)
    return {
        "settings": {"b": b, "w": size, "h": size, "k": k},
        "csp_flops": rows,
        "osa_cio": {"g": g, "k": k_osa,
                    "osa": {"gflops": 2 * osa_macs / 1e9, "cio_m": osa_cio / 1e6},
                    "csposa_pcb": {"gflops": 2 * csp_macs / 1e9, "cio_m": csp_cio / 1e6},
                    "cio_reduction_pct": round(100 * (1 - csp_cio / osa_cio), 1)},
    }


def format_paper_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [f"CSP-ization FLOPs (counted on built layers, b={s['b']}, {s['w']}x{s['h']}, k={s['k']})",
             f"{'layer':<6} {'GFLOPs orig':>12} {'GFLOPs CSP':>11} {'total':>8} {'per layer':>10} {'paper':>7}"]
    for r in report["csp_flops"]:
        lines.append(f"{r['layer']:<6} {r['gflops_original']:>12.3f} {r['gflops_csp']:>11.3f} "
                     f"{-r['reduction_total_pct']:>7.1f}% {-r['reduction_per_layer_pct']:>9.1f}% {-r['paper_pct']:>6.1f}%")
    o = report["osa_cio"]
    lines += ["", f"OSA vs CSPOSANet+PCB (g = b/2 = {o['g']}, k = {o['k']})",
              f"  OSA         {o['osa']['gflops']:.3f} GFLOPs, CIO {o['osa']['cio_m']:.2f} M",
              f"  CSPOSA+PCB  {o['csposa_pcb']['gflops']:.3f} GFLOPs, CIO {o['csposa_pcb']['cio_m']:.2f} M "
              f"({-o['cio_reduction_pct']:.1f}%)"]
    return "\n".join(lines)

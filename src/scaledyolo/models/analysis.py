"""Model analysis: parameters, FLOPs, per-stage table and the paper's CIO, counted on the layers we build.

FLOPs are 2 x multiply-accumulates of the convolutions (bias adds included, BN counted as folded into
the convolution, as at inference). CIO (convolutional input/output, from CSPNet/HarDNet) is the sum,
over convolutions, of the input and output activation sizes: a proxy for DRAM traffic.
`paper_report` rebuilds the layers of the paper's Section 3 analysis and counts them the same way.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from scaledyolo.errors import UserError
from scaledyolo.models.layers import Conv
from scaledyolo.models.spec import MEMBERS, load_spec, round_img_size
from scaledyolo.models.yolo import YOLO, build_model


def _conv_macs(module: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    per_output = module.in_channels // module.groups * kh * kw + (module.bias is not None)
    return out.numel() * per_output


def profile_convs(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Run `model(x)` once and record, per convolution: its name, MACs, input and output sizes."""
    records: list[dict[str, Any]] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            def hook(mod: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name) -> None:
                records.append({"name": name, "macs": _conv_macs(mod, out),
                                "cio": inputs[0].numel() + out.numel()})
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


def _stage_of(model: YOLO, conv_name: str) -> str:
    parts = conv_name.split(".")
    if parts[0] == "layers":
        return model.stages[int(parts[1])]
    return "head"


def stage_table(model: YOLO, img_size: int) -> list[dict[str, Any]]:
    """Per stage (stem, stage1.., neck, head): params, GFLOPs, output shape, activation memory, CIO."""
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [layer.register_forward_hook(
        lambda mod, inp, out, i=i: shapes.__setitem__(i, tuple(out.shape))) for i, layer in enumerate(model.layers)]
    try:  # one forward pass records the convolutions and the layer outputs
        convs = profile_convs(model, torch.zeros(1, 3, img_size, img_size))
    finally:
        for h in hooks:
            h.remove()
    stages: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
    for i, stage in enumerate(model.stages):
        row = stages.setdefault(stage, {"stage": stage, "params": 0, "gflops": 0.0, "output": None,
                                        "activation_mb": 0.0, "cio_m": 0.0})
        row["params"] += sum(p.numel() for p in model.layers[i].parameters())
        if i in shapes:
            row["output"] = list(shapes[i])
            row["activation_mb"] += torch.Size(shapes[i]).numel() * 4 / 2**20
    head = stages.setdefault("head", {"stage": "head", "params": 0, "gflops": 0.0, "output": None,
                                      "activation_mb": 0.0, "cio_m": 0.0})
    head["params"] += sum(p.numel() for p in model.detect.parameters())
    for record in convs:
        row = stages[_stage_of(model, record["name"])]
        row["gflops"] += 2 * record["macs"] / 1e9
        row["cio_m"] += record["cio"] / 1e6
    return list(stages.values())


def resolve_model(source: str) -> YOLO:
    """A member name, a spec YAML or any weights file `scaledyolo.load` reads -> model."""
    if source.lower() in MEMBERS:
        return build_model(source)
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return build_model(load_spec(path))
    if not path.exists():
        raise UserError(f"not a model name ({', '.join(MEMBERS)}) nor an existing file", path)
    import scaledyolo

    return scaledyolo.load(path)


def model_report(source: str | YOLO, img_size: int | None = None) -> dict[str, Any]:
    """Parameters, GFLOPs, per-stage table and CIO of a model at `img_size` (default: its native size)."""
    model = source if isinstance(source, YOLO) else resolve_model(source)
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


class _DarkLayer(nn.Module):
    """Darknet residual unit with width c and hidden width `hidden`: 1x1 c->hidden, 3x3 hidden->c."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(Conv(c, hidden, 1), Conv(hidden, c, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _layer(kind: str, c: int, b: int) -> nn.Module:
    """One computational layer of the given kind on c channels; inner widths follow the base width b."""
    if kind == "Res":
        return _ResLayer(c, b // 4)
    if kind == "ResX":
        return _ResLayer(c, b // 2 if c == b else c, groups=32)
    return _DarkLayer(c, b // 2 if c == b else c)


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


class _OSA(nn.Module):
    """OSA block (VoVNet): k 3x3 convs of growth g in a chain, all outputs + input concatenated, 1x1 to out."""

    def __init__(self, c_in: int, g: int, k: int, c_out: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(Conv(c_in if i == 0 else g, g, 3) for i in range(k))
        self.transition = Conv(c_in + k * g, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for conv in self.convs:
            outs.append(conv(outs[-1]))
        return self.transition(torch.cat(outs, 1))


class _CSPOSA(nn.Module):
    """CSPOSANet block with PCB (YOLOv4-tiny): OSA on half of the base channels, concat with the other half.

    Same input and output width (b) as the OSA block it is compared with.
    """

    def __init__(self, b: int, g: int, k: int) -> None:
        super().__init__()
        self.osa = _OSA(b // 2, g, k, b // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part1, part2 = x.chunk(2, 1)
        return torch.cat((part1, self.osa(part2)), 1)


def _count(module: nn.Module, c: int, size: int) -> tuple[int, int]:
    records = profile_convs(module, torch.zeros(1, c, size, size))
    return sum(r["macs"] for r in records), sum(r["cio"] for r in records)


def paper_report(b: int = 256, size: int = 32, k: int = 16) -> dict[str, Any]:
    """Reproduce the paper's FLOPs analysis by counting layers we build.

    For each layer kind, FLOPs of k layers with and without CSP-ization, and the per-layer (marginal)
    reduction, which is what the paper's -23.5 % / -46.7 % / -50.0 % are (13/17, 73/137, 1/2 of the
    original per-layer cost). Then the CIO of an OSA block vs a CSPOSANet (PCB) block with the paper's
    tiny design: growth g = b/2, k = 3.
    """
    paper = {"Res": 23.5, "ResX": 46.7, "Dark": 50.0}
    rows = []
    for kind in ("Res", "ResX", "Dark"):
        plain_k = _count(_Plain(kind, b, k), b, size)[0]
        plain_k1 = _count(_Plain(kind, b, k + 1), b, size)[0]
        csp_k = _count(_CSPized(kind, b, k), b, size)[0]
        csp_k1 = _count(_CSPized(kind, b, k + 1), b, size)[0]
        per_layer = 100 * (1 - (csp_k1 - csp_k) / (plain_k1 - plain_k))
        rows.append({"layer": kind, "k": k, "gflops_original": 2 * plain_k / 1e9, "gflops_csp": 2 * csp_k / 1e9,
                     "reduction_total_pct": round(100 * (1 - csp_k / plain_k), 1),
                     "reduction_per_layer_pct": round(per_layer, 1), "paper_pct": paper[kind]})
    g, k_osa = b // 2, 3
    osa_macs, osa_cio = _count(_OSA(b, g, k_osa, b), b, size)
    csp_macs, csp_cio = _count(_CSPOSA(b, g, k_osa), b, size)
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

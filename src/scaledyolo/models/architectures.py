"""One generator per architecture of the family: `ModelSpec` -> backbone, neck and head.

- `tiny`: CSPOSANet backbone with PCB, a small FPN neck, two levels (darknet yolov4-tiny.cfg).
- `csp`: CSPDarknet53 backbone (a residual first stage, then CSPDarkStage), CSP-PAN neck with
  DarknetSPPCSP and CSPPANBlock (darknet yolov4-csp.cfg).
- `large`: fully CSP-ized backbone (CSPStage) and CSP-PAN with SPPCSP and BottleneckCSP2 (official
  yolov4-p5/p6/p7.yaml); the number of stages and the per-stage depths come from the spec, so P6
  and P7 are P5 scaled. `spec.first_stage == "residual"` gives the official yolov4-csp.yaml.

Other generators register with `register_architecture` (the darknet reader adds `darknet`, which
runs any cfg layer for layer), so this floor imports nothing above it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple

import torch.nn as nn

from scaledyolo.errors import UserError
from scaledyolo.models.blocks import (
    SPPCSP, BottleneckCSP2, CSPDarkStage, CSPPANBlock, CSPStage, DarknetSPPCSP, ResidualStage,
)
from scaledyolo.models.layers import Conv
from scaledyolo.models.networks import CSPPAN, CSPBackbone, TinyBackbone, TinyFPN, YOLOHead

if TYPE_CHECKING:
    from scaledyolo.models.spec import ModelSpec


class Network(NamedTuple):
    """What a generator returns; `outputs` are the per-level output convolutions (their biases get the
    objectness and class priors)."""

    backbone: nn.Module
    neck: nn.Module
    head: nn.Module
    outputs: list[nn.Conv2d]


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled channel count up to a multiple of `divisor` (the official width rule)."""
    return int(math.ceil(channels / divisor) * divisor)


def _head_channels(spec: "ModelSpec") -> int:
    return spec.num_anchors * (spec.num_classes + 5)


def build_tiny(spec: "ModelSpec") -> Network:
    """YOLOv4-tiny: CSPOSANet + PCB backbone, FPN neck, heads at strides 16 and 32."""
    w32, w64, w128, w256, w512 = (make_divisible(c * spec.width) for c in (32, 64, 128, 256, 512))
    act = spec.activation
    backbone = TinyBackbone((w32, w64, w128, w256, w512), act)
    neck = TinyFPN(c_partial=w256, c_top=w512, c_mid=w256, c_lateral=w128, act=act)
    head = YOLOHead(neck.out_channels, [w256, w512], _head_channels(spec), act)
    return Network(backbone, neck, head, list(head.outputs))


def _neck_widths(spec: "ModelSpec") -> list[int]:
    return [make_divisible(min(128 * 2 ** i, 512) * spec.width) for i in range(spec.stages - 2)]


def _pan_network(spec: "ModelSpec", backbone: CSPBackbone, stage_widths: list[int],
                 block: type[nn.Module], spp: type[nn.Module]) -> Network:
    widths = _neck_widths(spec)
    neck = CSPPAN(stage_widths[2:], widths, spec.neck_depth, spec.activation, block, spp)
    head = YOLOHead(widths, [2 * c for c in widths], _head_channels(spec), spec.activation)
    return Network(backbone, neck, head, list(head.outputs))


def build_csp(spec: "ModelSpec") -> Network:
    """YOLOv4-CSP: CSPDarknet53 (first stage a plain residual stage), DarknetSPPCSP, CSP-PAN, three heads."""
    act = spec.activation
    stem = make_divisible(32 * spec.width)
    widths = [make_divisible(64 * 2 ** i * spec.width) for i in range(spec.stages)]
    stages: list[nn.Module] = [ResidualStage(stem, widths[0], spec.depths[0], act)]
    stages += [CSPDarkStage(widths[i - 1], widths[i], spec.depths[i], act) for i in range(1, spec.stages)]
    backbone = CSPBackbone(Conv(3, stem, 3, 1, act), stages)
    return _pan_network(spec, backbone, widths, CSPPANBlock, DarknetSPPCSP)


def build_large(spec: "ModelSpec") -> Network:
    """YOLOv4-P5/P6/P7: CSPStage backbone of `spec.stages` stages, SPPCSP, CSP-PAN of BottleneckCSP2."""
    act = spec.activation
    stem = make_divisible(32 * spec.width)
    widths = [make_divisible(c * spec.width) for c in ([64, 128, 256, 512] + [1024] * (spec.stages - 4))]
    inputs = [stem] + widths[:-1]
    stages: list[nn.Module] = [
        ResidualStage(inputs[0], widths[0], 1, act) if i == 0 and spec.first_stage == "residual"
        else CSPStage(inputs[i], widths[i], spec.depths[i], act) for i in range(spec.stages)]
    backbone = CSPBackbone(Conv(3, stem, 3, 1, act), stages)
    return _pan_network(spec, backbone, widths, BottleneckCSP2, SPPCSP)


ARCHITECTURES: dict[str, Callable[["ModelSpec"], Network]] = {
    "tiny": build_tiny, "csp": build_csp, "large": build_large}


def register_architecture(arch: str, generator: Callable[["ModelSpec"], Network]) -> None:
    """Make `YOLO` build specs of `arch` with `generator` (used by the darknet reader for any cfg)."""
    ARCHITECTURES[arch] = generator


def build_network(spec: "ModelSpec") -> Network:
    """The backbone, neck and head of `spec`."""
    generator = ARCHITECTURES.get(spec.arch)
    if generator is None:
        raise UserError(f"model spec {spec.name!r}: arch {spec.arch!r} is built by its reader, which is not "
                        "loaded (arch 'darknet': import scaledyolo.interop.darknet, as scaledyolo.load does)")
    return generator(spec)

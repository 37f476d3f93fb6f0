"""BatchNorm folding for inference: the one path ONNX export (`YOLO.fuse`) and the fast path share.

`fold_batchnorms(model)` folds, in place, every batch norm that can be folded:
- each `Conv`'s BN into its convolution;
- the BN that `BottleneckCSP` shares between its two concatenated halves, backwards into the plain
  convolution that makes each half (exact: both halves end in a convolution);
- in `BottleneckCSP2` and `SPPCSP` the bypass half's share of that BN into the bypass convolution;
  the main half ends in an activation, so its share stays as a per-channel affine (`ChannelAffine`).
Any `_BatchNorm` folds (BatchNorm2d, or the SyncBatchNorm a DDP run leaves in its EMA model); the
arithmetic is float32, the result keeps each convolution's dtype and device.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from scaledyolo.models.blocks import SPPCSP, BottleneckCSP, BottleneckCSP2
from scaledyolo.models.layers import Conv


def bn_affine(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel (scale, shift) an eval-mode batch norm applies, in float32."""
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return scale, bn.bias.detach().float() - bn.running_mean.float() * scale


def scaled_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """`conv` followed by a per-output-channel affine, as one convolution with a bias (in `conv`'s dtype and device)."""
    weight = conv.weight.detach()
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(device=weight.device, dtype=weight.dtype)
    fused.weight.data.copy_(weight.float() * scale.view(-1, 1, 1, 1))
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.data.copy_(bias * scale + shift)
    return fused


def fuse_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A convolution computing conv followed by (eval-mode) batch norm."""
    return scaled_conv(conv, *bn_affine(bn))


class ChannelAffine(nn.Module):
    """Per-channel `x * scale + shift`: what remains of a batch norm whose input cannot absorb it."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, like: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.to(like).view(1, -1, 1, 1))
        self.register_buffer("shift", shift.to(like).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def _fold_shared(block: nn.Module, bypass: str, main: str | None) -> None:
    """Fold the shared post-concat BN of a CSP block: the bypass half (the concat's second part) into
    the `bypass` conv, the main half into the `main` conv when there is one, else into an affine."""
    scale, shift = bn_affine(block.bn)
    half = getattr(block, bypass).out_channels
    first = scale.numel() - half
    setattr(block, bypass, scaled_conv(getattr(block, bypass), scale[first:], shift[first:]))
    if main is not None:
        setattr(block, main, scaled_conv(getattr(block, main), scale[:first], shift[:first]))
        block.bn = nn.Identity()
    else:
        ones, zeros = torch.ones_like(scale[first:]), torch.zeros_like(shift[first:])
        block.bn = ChannelAffine(torch.cat((scale[:first], ones)), torch.cat((shift[:first], zeros)),
                                 block.bn.weight.detach())


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """Fold every foldable batch norm of `model` in place (eval use only); returns `model`."""
    for module in list(model.modules()):
        if isinstance(module, Conv) and isinstance(module.bn, _BatchNorm):
            module.conv = fuse_conv_bn(module.conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, BottleneckCSP) and isinstance(module.bn, _BatchNorm):
            _fold_shared(module, "cv2", "cv3")
        elif isinstance(module, (BottleneckCSP2, SPPCSP)) and isinstance(module.bn, _BatchNorm):
            _fold_shared(module, "cv2", None)
    return model

"""Test-time augmentation, the official Scaled-YOLOv4 scheme (`Model.forward(augment=True)`).

The batch is run three times: as is, left-right flipped at 0.83 of its size, and at 0.67 of its
size. Each run's boxes are mapped back to the original input's pixels and the three sets are
concatenated, so one NMS merges them. The paper credits it with +1.1 / +0.7 / +0.5 AP on P5 / P6 / P7.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCALES = (1.0, 0.83, 0.67)
FLIPS = (False, True, False)  # left-right flip on the middle scale
PAD_VALUE = 0.447  # the official padding colour (ImageNet mean grey), images in 0-1


def _grid(model: torch.nn.Module) -> int:
    """Multiple the rescaled inputs are padded to: 128 for the large members as officially, else the top stride."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return 128
    return 128 if getattr(spec, "arch", "") == "large" else int(max(spec.strides))


def scale_img(img: torch.Tensor, ratio: float, grid: int) -> torch.Tensor:
    """Resize a (B, 3, H, W) batch by `ratio` (bilinear), then pad right/bottom to a multiple of `grid`."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    size = (int(h * ratio), int(w * ratio))
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    ph, pw = (math.ceil(v * ratio / grid) * grid for v in (h, w))
    return F.pad(img, [0, pw - size[1], 0, ph - size[0]], value=PAD_VALUE)


def model_output(model: torch.nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """The eval-mode detections (B, N, 5 + nc) of `model` on `x`, through `tta_forward` when `tta`.

    A model that returns a tuple (detections, raw maps), as the official ones do, gives its first item.
    """
    if tta:
        return tta_forward(model, x)
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def tta_forward(model: torch.nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """Eval-mode output (B, N1 + N2 + N3, 5 + nc) of the three augmented runs, in `imgs` pixels.

    `model` is called on float batches in 0-1 and must return the eval-mode tensor (or a tuple whose
    first item it is); run it under `torch.inference_mode()` or `no_grad` as for a plain forward.
    """
    grid = _grid(model)
    width = imgs.shape[3]
    outputs = []
    for ratio, flip in zip(SCALES, FLIPS):
        x = scale_img(imgs.flip(3) if flip else imgs, ratio, grid)
        y = model_output(model, x).clone()
        y[..., :4] /= ratio
        if flip:
            y[..., 0] = width - y[..., 0]
        outputs.append(y)
    return torch.cat(outputs, 1)

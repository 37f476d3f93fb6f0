"""Stand-ins for the official Scaled-YOLOv4 code (yolov4-large branch), written for the tests.

They reproduce what the official files pickle: `models.yolo.Model` holding `yaml` and an
`nn.Sequential` `model` whose layers carry `f`/`i`/`type`/`np` attributes, `models.common` blocks with
the official attribute names, `mish_cuda.MishCuda`, and a Detect with `anchors` (in grid units) and
`anchor_grid` (pixels) buffers; forward follows the official rules, and every BatchNorm2d gets the
official eps 1e-3 and momentum 0.03 (`initialize_weights` in the official models/yolo.py). `install(tmp_path)` writes them
as the packages `models` and `mish_cuda` so `torch.save` records the official module names.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

MISH_CUDA = '''
import torch.nn as nn
import torch.nn.functional as F


class MishCuda(nn.Module):
    def forward(self, x):
        return x * F.softplus(x).tanh()
'''

COMMON = '''
import torch
import torch.nn as nn

from mish_cuda import MishCuda as Mish


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = Mish()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    def __init__(self, c1, c2, n=1):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = Mish()
        self.m = nn.Sequential(*[Bottleneck(c_, c_, True, e=1.0) for _ in range(n)])

    def forward(self, x):
        y1 = self.cv3(self.m(self.cv1(x)))
        return self.cv4(self.act(self.bn(torch.cat((y1, self.cv2(x)), 1))))


class BottleneckCSP2(nn.Module):
    def __init__(self, c1, c2, n=1):
        super().__init__()
        c_ = c2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv3 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = Mish()
        self.m = nn.Sequential(*[Bottleneck(c_, c_, False, e=1.0) for _ in range(n)])

    def forward(self, x):
        x1 = self.cv1(x)
        return self.cv3(self.act(self.bn(torch.cat((self.m(x1), self.cv2(x1)), 1))))


class SPPCSP(nn.Module):
    def __init__(self, c1, c2, k=(5, 9, 13)):
        super().__init__()
        c_ = c2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = Conv(c_, c_, 3, 1)
        self.cv4 = Conv(c_, c_, 1, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k])
        self.cv5 = Conv(4 * c_, c_, 1, 1)
        self.cv6 = Conv(c_, c_, 3, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = Mish()
        self.cv7 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        return self.cv7(self.act(self.bn(torch.cat((y1, self.cv2(x)), 1))))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)
'''

YOLO = '''
import math

import torch
import torch.nn as nn

from models.common import Bottleneck, BottleneckCSP, BottleneckCSP2, Concat, Conv, SPPCSP


class Detect(nn.Module):
    def __init__(self, nc, anchors, ch):
        super().__init__()
        self.stride = None
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.grid = [torch.zeros(1)] * self.nl
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", a)
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.export = False

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                yv, xv = torch.meshgrid([torch.arange(ny), torch.arange(nx)], indexing="ij")
                grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
                y = x[i].sigmoid()
                y[..., 0:2] = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.stride[i]
                y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
                z.append(y.view(bs, -1, self.no))
        return x if self.training else (torch.cat(z, 1), x)


def initialize_weights(model):
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.eps = 1e-3
            m.momentum = 0.03


def make_divisible(x, divisor=8):
    return math.ceil(x / divisor) * divisor


def parse_model(d, ch):
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    layers, save, chs = [], [], [ch]
    blocks = {"Conv": Conv, "Bottleneck": Bottleneck, "BottleneckCSP": BottleneckCSP,
              "BottleneckCSP2": BottleneckCSP2, "SPPCSP": SPPCSP}
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        n = max(round(n * gd), 1) if n > 1 else n
        if m in blocks:
            c1, c2 = chs[f if f < 0 else f + 1], make_divisible(args[0] * gw)
            if m in ("BottleneckCSP", "BottleneckCSP2"):
                module = blocks[m](c1, c2, n)
            elif m == "Bottleneck":
                module = Bottleneck(c1, c2)
            else:
                module = blocks[m](c1, c2, *args[1:])
        elif m == "nn.Upsample":
            module, c2 = nn.Upsample(None, 2, "nearest"), chs[f if f < 0 else f + 1]
        elif m == "Concat":
            module, c2 = Concat(1), sum(chs[-1 if x == -1 else x + 1] for x in f)
        else:
            module = Detect(nc, anchors, [chs[x + 1] for x in f])
        module.i, module.f, module.type = i, f, "models.common." + m
        module.np = sum(p.numel() for p in module.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        chs.append(c2)
    return nn.Sequential(*layers), sorted(save)


class Model(nn.Module):
    def __init__(self, cfg, ch=3):
        super().__init__()
        self.yaml = cfg
        self.model, self.save = parse_model(cfg, ch)
        m = self.model[-1]
        s = 256
        m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, ch, s, s))])
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        initialize_weights(self)

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x
'''


def _backbone(depths: list[int], first: str = "BottleneckCSP") -> list:
    widths = [64, 128, 256, 512] + [1024] * (len(depths) - 4)
    layers: list = [[-1, 1, "Conv", [32, 3, 1]]]
    for i, (c, n) in enumerate(zip(widths, depths)):
        layers += [[-1, 1, "Conv", [c, 3, 2]], [-1, n, first if i == 0 else "BottleneckCSP", [c]]]
    return layers


P5_HEAD = [
    [-1, 1, "SPPCSP", [512]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [8, 1, "Conv", [256, 1, 1]], [[-1, -2], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [256]],
    [-1, 1, "Conv", [128, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [6, 1, "Conv", [128, 1, 1]],
    [[-1, -2], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [128]], [-1, 1, "Conv", [256, 3, 1]],
    [-2, 1, "Conv", [256, 3, 2]], [[-1, 16], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [256]],
    [-1, 1, "Conv", [512, 3, 1]], [-2, 1, "Conv", [512, 3, 2]], [[-1, 11], 1, "Concat", [1]],
    [-1, 3, "BottleneckCSP2", [512]], [-1, 1, "Conv", [1024, 3, 1]],
    [[22, 26, 30], 1, "Detect", ["nc", "anchors"]],
]

P6_HEAD = [
    [-1, 1, "SPPCSP", [512]], [-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [-6, 1, "Conv", [512, 1, 1]], [[-1, -2], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [512]],
    [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [-13, 1, "Conv", [256, 1, 1]],
    [[-1, -2], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [256]], [-1, 1, "Conv", [128, 1, 1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [-20, 1, "Conv", [128, 1, 1]], [[-1, -2], 1, "Concat", [1]],
    [-1, 3, "BottleneckCSP2", [128]], [-1, 1, "Conv", [256, 3, 1]], [-2, 1, "Conv", [256, 3, 2]],
    [[-1, 23], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [256]], [-1, 1, "Conv", [512, 3, 1]],
    [-2, 1, "Conv", [512, 3, 2]], [[-1, 18], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [512]],
    [-1, 1, "Conv", [1024, 3, 1]], [-2, 1, "Conv", [512, 3, 2]], [[-1, 13], 1, "Concat", [1]],
    [-1, 3, "BottleneckCSP2", [512]], [-1, 1, "Conv", [1024, 3, 1]],
    [[29, 33, 37, 41], 1, "Detect", ["nc", "anchors"]],
]

P7_HEAD = [
    [-1, 1, "SPPCSP", [512]], [-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [-6, 1, "Conv", [512, 1, 1]], [[-1, -2], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [512]],
    [-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [-13, 1, "Conv", [512, 1, 1]],
    [[-1, -2], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [512]], [-1, 1, "Conv", [256, 1, 1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [-20, 1, "Conv", [256, 1, 1]], [[-1, -2], 1, "Concat", [1]],
    [-1, 3, "BottleneckCSP2", [256]], [-1, 1, "Conv", [128, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [-27, 1, "Conv", [128, 1, 1]], [[-1, -2], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [128]],
    [-1, 1, "Conv", [256, 3, 1]], [-2, 1, "Conv", [256, 3, 2]], [[-1, 30], 1, "Concat", [1]],
    [-1, 3, "BottleneckCSP2", [256]], [-1, 1, "Conv", [512, 3, 1]], [-2, 1, "Conv", [512, 3, 2]],
    [[-1, 25], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [512]], [-1, 1, "Conv", [1024, 3, 1]],
    [-2, 1, "Conv", [512, 3, 2]], [[-1, 20], 1, "Concat", [1]], [-1, 3, "BottleneckCSP2", [512]],
    [-1, 1, "Conv", [1024, 3, 1]], [-2, 1, "Conv", [512, 3, 2]], [[-1, 15], 1, "Concat", [1]],
    [-1, 3, "BottleneckCSP2", [512]], [-1, 1, "Conv", [1024, 3, 1]],
    [[36, 40, 44, 48, 52], 1, "Detect", ["nc", "anchors"]],
]

# The official yolov4-csp.yaml head has the P5 layout with 2-deep CSP2 blocks.
CSP_HEAD = [[f, 2 if m == "BottleneckCSP2" else n, m, a] for f, n, m, a in P5_HEAD]

ANCHORS = {
    "p5": [[13, 17, 31, 25, 24, 51, 61, 45], [48, 102, 119, 96, 97, 189, 217, 184],
           [171, 384, 324, 451, 616, 618, 800, 800]],
    "p6": [[13, 17, 31, 25, 24, 51, 61, 45], [61, 45, 48, 102, 119, 96, 97, 189],
           [97, 189, 217, 184, 171, 384, 324, 451], [324, 451, 545, 357, 616, 618, 1024, 1024]],
    "p7": [[13, 17, 22, 25, 27, 66, 55, 41], [57, 88, 112, 69, 69, 177, 136, 138],
           [136, 138, 287, 114, 134, 275, 268, 248], [268, 248, 232, 504, 445, 416, 640, 640],
           [812, 393, 477, 808, 1070, 908, 1408, 1408]],
    "csp": [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]],
}


def official_yaml(member: str, nc: int = 80, depth: float = 1.0, width: float = 1.0) -> dict:
    """The model dict of an official yaml (p5, p6, p7, csp) with optional depth/width multipliers."""
    backbone = {"p5": _backbone([1, 3, 15, 15, 7]), "p6": _backbone([1, 3, 15, 15, 7, 7]),
                "p7": _backbone([1, 3, 15, 15, 7, 7, 7]), "csp": _backbone([1, 2, 8, 8, 4], first="Bottleneck")}[member]
    head = {"p5": P5_HEAD, "p6": P6_HEAD, "p7": P7_HEAD, "csp": CSP_HEAD}[member]
    base_width = 1.25 if member == "p7" else 1.0
    return {"nc": nc, "depth_multiple": depth, "width_multiple": base_width * width,
            "anchors": ANCHORS[member], "backbone": [list(x) for x in backbone], "head": [list(x) for x in head]}


def install(root: Path):
    """Write the stand-in packages under `root`, import them, and return the `models.yolo` module."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "common.py").write_text(COMMON)
    (root / "models" / "yolo.py").write_text(YOLO)
    (root / "mish_cuda.py").write_text(MISH_CUDA)
    sys.path.insert(0, str(root))
    for name in ("models", "models.common", "models.yolo", "mish_cuda"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module("models.yolo")


def uninstall(root: Path) -> None:
    """Forget the stand-in packages (so nothing else imports them by accident)."""
    for name in ("models", "models.common", "models.yolo", "mish_cuda"):
        sys.modules.pop(name, None)
    if str(root) in sys.path:
        sys.path.remove(str(root))

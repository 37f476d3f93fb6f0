"""Stand-in detectors for prediction tests: known boxes without a trained network."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn


class SquareFinder(nn.Module):
    """One box around the white pixels of its input, in input pixels (eval format, one class)."""

    def __init__(self, img_size: int = 256) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.names = ["square"]
        self.spec = SimpleNamespace(strides=[8, 16, 32], img_size=img_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = []
        for im in x:
            ys, xs = (im.min(0).values > 0.9).nonzero(as_tuple=True)
            x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            rows.append(torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]).float())
        boxes = torch.stack(rows)[:, None]
        return torch.cat((boxes, torch.full_like(boxes[..., :2], 0.9)), -1)

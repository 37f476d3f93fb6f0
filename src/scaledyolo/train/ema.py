"""Exponential moving average of the weights: what we validate and save.

The decay ramps up as `decay * (1 - exp(-updates / 2000))` (the official schedule), so early in
training the average follows the model closely instead of dragging its random initial weights along.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from scaledyolo.train.loss import unwrap


class ModelEMA:
    """A frozen copy of the model whose floating-point state follows the trained one's average."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, updates: int = 0) -> None:
        self.ema = copy.deepcopy(unwrap(model)).eval()
        self.decay_max = decay
        self.updates = updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self, updates: int) -> float:
        """The averaging factor after `updates` optimizer steps."""
        return self.decay_max * (1.0 - math.exp(-updates / 2000.0))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current state (parameters and buffers) into the average."""
        self.updates += 1
        d = self.decay(self.updates)
        state = unwrap(model).state_dict()
        for key, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(state[key].detach().to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(state[key])

"""Optimizer and learning-rate schedule of the official recipe, with a warmup that fits small runs.

SGD (nesterov; or Adam / AdamW, `--optimizer`) with three parameter groups: 0 = batch-norm weights (no weight decay), 1 = conv and
linear weights (weight decay scaled by batch * accumulate / nbs), 2 = all biases (no weight decay,
warmup from `warmup_bias_lr`). Adam and AdamW take the official `--adam` reading of the recipe: the
learning rate is lr0 as given and the momentum becomes beta1 (betas = (momentum, 0.999)); AdamW
applies the same group-1 weight decay, decoupled. The learning rate follows a cosine (or, with
`lr_schedule="linear"`, a straight line) from lr0 to lr0 * lrf over the epochs; during the warmup the
rates rise linearly (biases fall from warmup_bias_lr), SGD's momentum rises from warmup_momentum
(Adam's beta1 stays, as in the official code), and gradient accumulation grows from 1 to its nominal value.

The warmup lasts `warmup_epochs` but never more than a third of all iterations: the official
1,000-iteration floor would spend the whole of a 16-image run warming up. Gradients accumulate to
the nominal batch `nbs` but never over more than one epoch, so a tiny dataset still gets one
optimizer step per epoch at least; such a shortened accumulation scales the learning rate up by
the missing factor (nominal / actual accumulation, at most 4), so each step still moves the weights
about as far as a step over `nbs` images would (the loss is a sum over images, not a mean).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

WARMUP_FRACTION = 1.0 / 3.0
MAX_LR_SCALE = 4.0  # a step over a handful of images is noisy: do not push it harder than 4x
OPTIMIZERS = ("SGD", "Adam", "AdamW")
LR_SCHEDULES = ("cos", "linear")
ADAM_BETA2 = 0.999


def accumulation(nbs: float, total_batch: int, iters_per_epoch: int) -> int:
    """Batches per optimizer step: reach the nominal batch, but step at least once per epoch."""
    return int(max(1, min(round(nbs / total_batch), iters_per_epoch)))


def build_optimizer(model: nn.Module, hyp: dict, total_batch: int, accumulate: int,
                    name: str = "SGD") -> torch.optim.Optimizer:
    """`name` (one of OPTIMIZERS) with the three parameter groups (BN weights / decayed weights / biases)."""
    bn_weights, weights, biases = [], [], []
    for module in model.modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if param_name == "bias":
                biases.append(param)
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                bn_weights.append(param)
            else:
                weights.append(param)
    decay = hyp["weight_decay"] * total_batch * accumulate / hyp["nbs"]
    optimizer: torch.optim.Optimizer
    if name == "SGD":
        optimizer = torch.optim.SGD(bn_weights, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    elif name in ("Adam", "AdamW"):
        adam = torch.optim.Adam if name == "Adam" else torch.optim.AdamW
        optimizer = adam(bn_weights, lr=hyp["lr0"], betas=(hyp["momentum"], ADAM_BETA2), weight_decay=0.0)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    optimizer.add_param_group({"params": weights, "weight_decay": decay})
    optimizer.add_param_group({"params": biases})
    for group in optimizer.param_groups:
        group["initial_lr"] = hyp["lr0"]
    return optimizer


class Schedule:
    """Learning rate, momentum and accumulation as a pure function of (iteration, epoch): resumable."""

    def __init__(self, hyp: dict, epochs: int, iters_per_epoch: int, total_batch: int,
                 lr_schedule: str = "cos") -> None:
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {lr_schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
        self.hyp = hyp
        self.lr_schedule = lr_schedule
        self.epochs = epochs
        self.iters_per_epoch = iters_per_epoch
        self.accumulate = accumulation(hyp["nbs"], total_batch, iters_per_epoch)
        self.lr_scale = min(max(round(hyp["nbs"] / total_batch), 1) / self.accumulate, MAX_LR_SCALE)
        total = epochs * iters_per_epoch
        self.warmup_iters = int(min(round(hyp["warmup_epochs"] * iters_per_epoch), total * WARMUP_FRACTION))

    def lr_factor(self, epoch: float) -> float:
        """From 1 at epoch 0 to lrf at the last epoch: a cosine, or a straight line."""
        lrf = self.hyp["lrf"]
        if self.lr_schedule == "linear":
            return (1.0 - epoch / self.epochs) * (1.0 - lrf) + lrf
        return ((1.0 + math.cos(epoch * math.pi / self.epochs)) / 2.0) * (1.0 - lrf) + lrf

    def apply(self, optimizer: torch.optim.Optimizer, ni: int, epoch: int) -> int:
        """Set every group's lr/momentum for global iteration `ni`; returns the accumulation to use."""
        factor = self.lr_factor(epoch) * self.lr_scale
        if ni < self.warmup_iters:
            xp = [0, self.warmup_iters]
            accumulate = max(1, int(np.interp(ni, xp, [1, self.accumulate]).round()))
            for j, group in enumerate(optimizer.param_groups):
                start = self.hyp["warmup_bias_lr"] if j == 2 else 0.0
                group["lr"] = float(np.interp(ni, xp, [start, group["initial_lr"] * factor]))
                if "momentum" in group:  # SGD; Adam's beta1 is not warmed up (the official --adam)
                    group["momentum"] = float(np.interp(ni, xp, [self.hyp["warmup_momentum"], self.hyp["momentum"]]))
            return accumulate
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
            if "momentum" in group:
                group["momentum"] = self.hyp["momentum"]
        return self.accumulate

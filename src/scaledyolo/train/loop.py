"""One training epoch: batches through the model and the loss, accumulated optimizer steps (AMP
scaled when fp16), the EMA update after each step, multi-scale resizing, and the guard that skips
non-finite steps and stops a diverging run after MAX_BAD_STEPS in a row (on every rank together).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from scaledyolo.devices import TRAIN_PRECISIONS, check_precision
from scaledyolo.errors import RunError
from scaledyolo.eval.plots import plot_batch
from scaledyolo.logs import LOGGER

MAX_BAD_STEPS = 10  # consecutive non-finite losses/gradients before training stops
PLOTTED_BATCHES = 3  # train_batch0..2.jpg of the first epoch


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `--precision` on `device` (None: plain fp32); fp16 needs a GPU."""
    cuda = device.type == "cuda"
    check_precision(precision, device, TRAIN_PRECISIONS)
    if precision == "fp16" or (precision == "auto" and cuda):
        return torch.float16
    return torch.bfloat16 if precision == "bf16" else None


class EpochLoop:
    """The per-batch mechanics of a run; `run_epoch` trains one epoch and returns the mean losses.

    While an epoch runs, `batch` (its index), `loss_parts` (this batch's [box, obj, cls, total]) and
    `mloss` (their running mean) are what `on_train_batch_*` callbacks read, through `notify(event)`.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 ema: Any, schedule: Any, compute_loss: Any, device: torch.device, world: int, main: bool,
                 dtype: torch.dtype | None, multi_scale: bool, stride: int, img: int,
                 notify: Callable[[str], None]) -> None:
        self.model, self.optimizer, self.scaler, self.ema = model, optimizer, scaler, ema
        self.schedule, self.compute_loss, self.device = schedule, compute_loss, device
        self.world, self.main, self.dtype = world, main, dtype
        self.multi_scale, self.stride, self.img, self.notify = multi_scale, stride, img, notify
        self.batch, self.loss_parts, self.mloss = 0, torch.zeros(4), torch.zeros(4)

    def run_epoch(self, loader: Any, epoch: int, epochs: int, plot_dir: Path | None, names: list[str]) -> torch.Tensor:
        """Train one epoch over `loader`; batch pictures of the first epoch go to `plot_dir` (None: none)."""
        model, optimizer = self.model, self.optimizer
        model.train()
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        nb = len(loader)
        self.mloss = torch.zeros(4)
        counted = bad = pending = 0
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(enumerate(loader), total=nb, disable=not self.main, dynamic_ncols=True,
                   desc=f"epoch {epoch + 1}/{epochs}", bar_format="{l_bar}{bar:10}{r_bar}")
        for i, (imgs, targets, _paths, _shapes) in bar:
            self.batch = i
            self.notify("on_train_batch_start")
            accumulate = self.schedule.apply(optimizer, i + nb * epoch, epoch)
            imgs = imgs.to(self.device, non_blocking=True).float() / 255.0
            if self.multi_scale:
                imgs = self._rescale(imgs)
            if plot_dir is not None and epoch == 0 and i < PLOTTED_BATCHES:
                # no file names on the tiles: a mosaic-augmented sample comes from four files
                plot_batch(imgs, targets, None, names, plot_dir / f"train_batch{i}.jpg")
            with self._autocast():
                preds = model(imgs)
                loss, parts = self.compute_loss(preds, targets.to(self.device))
            if self.world > 1:
                loss = loss * self.world  # DDP averages gradients over processes
            if not self._all_finite(loss):
                bad = self._bad_step(bad, f"non-finite loss at epoch {epoch + 1}, batch {i + 1}")
                pending = 0
                continue
            self.scaler.scale(loss).backward()
            pending += 1
            if pending >= accumulate or i == nb - 1:
                if self._step():
                    bad = 0
                    self.ema.update(model)
                else:
                    bad = self._bad_step(bad, f"non-finite gradients at epoch {epoch + 1}, batch {i + 1}")
                pending = 0
            self.loss_parts = parts.detach().cpu()
            self.mloss = (self.mloss * counted + self.loss_parts) / (counted + 1)
            counted += 1
            if self.main:
                mem = torch.cuda.memory_reserved(self.device) / 1e9 if self.device.type == "cuda" else 0.0
                bar.set_postfix_str(f"box {self.mloss[0]:.4f} obj {self.mloss[1]:.4f} cls {self.mloss[2]:.4f} "
                                    f"lr {optimizer.param_groups[1]['lr']:.2e} mem {mem:.2f}G "
                                    f"n {targets.shape[0]} img {imgs.shape[-1]}")
            self.notify("on_train_batch_end")
        bar.close()
        return self.mloss

    def _autocast(self) -> Any:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _rescale(self, imgs: torch.Tensor) -> torch.Tensor:
        """Multi-scale: a random size in 50-150 % of --img, a multiple of the max stride (same on all ranks)."""
        gs, img = self.stride, self.img
        size = max(random.randrange(int(img * 0.5), int(img * 1.5) + gs) // gs * gs, gs)
        if self.world > 1:
            shared = torch.tensor([size], device=self.device)
            dist.broadcast(shared, 0)
            size = int(shared.item())
        factor = size / max(imgs.shape[2:])
        if factor == 1:
            return imgs
        new = [math.ceil(x * factor / gs) * gs for x in imgs.shape[2:]]
        return F.interpolate(imgs, size=new, mode="bilinear", align_corners=False)

    def _all_finite(self, value: torch.Tensor) -> bool:
        """Whether `value` is finite on every process (all must skip together, or DDP would hang)."""
        ok = torch.isfinite(value.detach()).all().float().reshape(1)
        if self.world > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item() > 0)

    def _step(self) -> bool:
        """One optimizer step; False (and no step) when the accumulated gradients are not finite."""
        if self.scaler.is_enabled():  # AMP skips overflowing steps itself and lowers its scale: not a failure
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return True
        grads = [p.grad.detach() for p in self.model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads \
            else torch.zeros(())
        finite = bool(torch.isfinite(norm))
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return finite

    def _bad_step(self, bad: int, what: str) -> int:
        self.optimizer.zero_grad(set_to_none=True)
        bad += 1
        if self.main:
            LOGGER.warning("%s: step skipped (%d in a row)", what, bad)
        if bad >= MAX_BAD_STEPS:
            raise RunError(f"training diverged: {what}, {bad} steps in a row; lower lr0 (--hyp), "
                           "check the labels, or use --precision fp32")
        return bad

"""Resuming a run exactly where it stopped: every RNG state, the optimizer, the AMP scaler, the EMA.

A checkpoint carries these as tensors and plain data (loadable with `weights_only=True`), with the
run's arguments and its results.csv rows, so `resume=` needs nothing but the run folder; `resume=True`
(CLI `--resume` without a path) takes the most recently written `weights/last.pt` under the project.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaledyolo.errors import UserError
from scaledyolo.interop.checkpoint import read_checkpoint

RESUMABLE = ("device", "workers")  # what a resumed run may change: where it runs, not what it computes


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; `deterministic` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS is deterministic only with it
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """Every RNG state as plain data/tensors (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only onto the same number of GPUs)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_last_pt(project: str | Path) -> Path:
    """The most recently written `*/weights/last.pt` under `project` (what `--resume` alone continues)."""
    found = [p for p in Path(project).glob("*/weights/last.pt") if p.is_file()]
    if not found:
        raise UserError("nothing to resume: no run folder with weights/last.pt here", project)
    return max(found, key=lambda p: p.stat().st_mtime)


def find_resume_checkpoint(resume: str | Path) -> Path:
    """RUN_DIR or RUN_DIR/weights/last.pt -> the last.pt path."""
    path = Path(resume)
    if path.is_dir():
        path = path / "weights" / "last.pt"
    if not path.is_file():
        raise UserError("nothing to resume: no weights/last.pt here", resume)
    return path


def resume_state(resume: str | Path | bool, project: str | Path,
                 overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(checkpoint, the run's arguments with `overrides` applied, run folder) of the run to continue.

    `resume=True` takes the latest run under `project`. Half-written checkpoints of the interrupted
    run are removed; a run that finished all its epochs is refused (finetune from it instead).
    """
    ckpt_path = latest_last_pt(project) if resume is True else find_resume_checkpoint(resume)
    ckpt = read_checkpoint(ckpt_path)
    extra = ckpt.get("extra") or {}
    if "args" not in extra or "optimizer" not in ckpt:
        raise UserError("this checkpoint holds no training state to resume (finetune from it with --weights)",
                        ckpt_path)
    args = dict(extra["args"])
    args.update({k: v for k, v in overrides.items() if k in RESUMABLE and v is not None})
    if ckpt["epoch"] + 1 >= args["epochs"] or extra.get("stopped_early"):
        raise UserError(f"this run already finished ({ckpt['epoch'] + 1} of {args['epochs']} epochs"
                        f"{', stopped early' if extra.get('stopped_early') else ''}); "
                        "train further with --weights on a new run", ckpt_path)
    for stale in ckpt_path.parent.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    return ckpt, args, ckpt_path.parent.parent


def training_state(trainer: Any) -> dict[str, Any]:
    """What last.pt's `extra` holds besides the weights, for `restore_training_state`."""
    return {"args": trainer.args, "best_fitness": trainer.best_fitness, "best_epoch": trainer.stopper.best_epoch,
            "results": trainer.rows, "ema_updates": trainer.ema.updates, "rng": rng_state(),
            "stopped_early": trainer.stop}


def restore_training_state(trainer: Any, ckpt: dict[str, Any]) -> None:
    """Load the optimizer, EMA, AMP scaler, epoch counter, results rows and RNG states into `trainer`."""
    extra = ckpt["extra"]
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.ema.ema.load_state_dict(ckpt["ema"])
    trainer.ema.updates = int(extra.get("ema_updates", 0))
    if ckpt.get("scaler") and trainer.scaler.is_enabled():  # its scale, so AMP does not relearn it by skipping
        trainer.scaler.load_state_dict(ckpt["scaler"])
    trainer.start_epoch = int(ckpt["epoch"]) + 1
    trainer.best_fitness = float(extra.get("best_fitness", -1.0))
    trainer.stopper.best_fitness = trainer.best_fitness
    trainer.stopper.best_epoch = int(extra.get("best_epoch", ckpt["epoch"]))
    trainer.rows = list(extra.get("results", []))
    if extra.get("rng") and trainer.world == 1:
        set_rng_state(extra["rng"])

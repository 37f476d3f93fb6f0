"""Device selection with clear errors: 'cpu', 'cuda', '0', '0,1' -> torch.device."""

from __future__ import annotations

import os

import torch

from scaledyolo.errors import UserError


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    """The torch device for a user's `--device` string; CUDA requested without a GPU is a clear error.

    None or '' picks the first GPU when there is one, else the CPU. Under torchrun each process takes
    the GPU of its LOCAL_RANK.
    """
    if isinstance(device, torch.device):
        return device
    text = "" if device is None else str(device).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda:") and text[5:].isdigit():
        text = text[5:]
    if text in ("", "cuda") or text.replace(",", "").isdigit():
        if not torch.cuda.is_available():
            if text == "":
                return torch.device("cpu")
            raise UserError(f"--device {device}: CUDA was requested but no GPU is available (use --device cpu)")
        ids = [int(i) for i in text.split(",")] if text.replace(",", "").isdigit() else [0]
        count = torch.cuda.device_count()
        if any(i >= count for i in ids):
            raise UserError(f"--device {device}: only {count} GPU(s) visible")
        local_rank = int(os.environ.get("LOCAL_RANK", -1))
        return torch.device("cuda", ids[local_rank] if 0 <= local_rank < len(ids) else ids[0])
    if text == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    raise UserError(f"--device {device}: expected cpu, cuda, a GPU index like 0, or a list like 0,1")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

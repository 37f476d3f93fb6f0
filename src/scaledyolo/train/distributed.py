"""The process group of a torchrun job: its backend follows the device, its timeout is explicit, and
work that only rank 0 does (anchors, checkpoints, plots) can fail without leaving the others waiting.

The timeout (`SCALEDYOLO_DDP_TIMEOUT` seconds, default 3 h) bounds how long a rank waits for the
others at a collective; NCCL's own default (10 min) is shorter than rank 0 may need on a large set.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from scaledyolo.devices import process_device, select_device
from scaledyolo.errors import RunError, UserError
from scaledyolo.logs import LOGGER

TIMEOUT_ENV = "SCALEDYOLO_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 3 * 3600

T = TypeVar("T")


def process_group_timeout() -> timedelta:
    """How long a collective may wait: `SCALEDYOLO_DDP_TIMEOUT` seconds, else three hours."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def backend_for(device: torch.device) -> str:
    """NCCL for processes on GPUs, gloo for processes on the CPU (whatever the machine has)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: str | None) -> tuple[int, int, int, torch.device]:
    """(rank, world_size, local_rank, this process's device) from torchrun's environment.

    A plain run returns (-1, 1, -1, device). Under torchrun each process takes its own device
    (`process_device`), makes it the current CUDA device (so collectives and the pin-memory thread
    open nothing on the GPUs the user left out) and joins the process group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if "," in str(device or ""):
            n = len(str(device).split(","))
            raise UserError(f"--device {device}: several GPUs train through torchrun, one process each: "
                            f"torchrun --nproc_per_node {n} -m scaledyolo train ... --device {device}")
        return -1, 1, -1, select_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    this_device = process_device(device, local_rank, local_world)
    if this_device.type == "cuda":
        torch.cuda.set_device(this_device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(this_device), timeout=process_group_timeout())
    return dist.get_rank(), dist.get_world_size(), local_rank, this_device


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def run_on_main(work: Callable[[], T], main: bool, world: int) -> T | None:
    """Run `work` on rank 0 while the other ranks wait for it; this also serves as a barrier.

    When `work` raises, rank 0 tells the others before re-raising, so they stop at once with a
    RunError instead of waiting for the process-group timeout. Returns `work`'s result (None elsewhere).
    """
    result, error = None, None
    if main:
        try:
            result = work()
        except BaseException as exc:  # KeyboardInterrupt too: the other ranks must not wait for it
            error = exc
    if world > 1:
        failed = torch.tensor([0.0 if error is None else 1.0], device=_collective_device())
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if error is None and failed.item() > 0:
            raise RunError("stopped because rank 0 failed (its error is reported above)")
    if error is not None:
        raise error
    return result


def broadcast_flag(flag: bool | None, world: int) -> bool:
    """Rank 0's `flag` on every rank (e.g. its early-stopping decision, so all ranks stop together)."""
    if world <= 1:
        return bool(flag)
    shared = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.broadcast(shared, 0)
    return bool(shared.item() > 0)


def abort_process_group() -> None:
    """Leave the process group on an error path without waiting for pending collectives.

    A rank that raises must exit at once: its peers then fail fast (gloo: connection closed; under
    torchrun the agent stops them) instead of sitting at their next collective until the timeout.
    `destroy_process_group` may wait on NCCL work in flight, so the abort is preferred where torch has it.
    """
    if not dist.is_initialized():
        return
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    try:
        if abort is not None:
            abort()
        else:
            dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - already failing: the original error is the one to report
        LOGGER.debug("process group abort: %s", exc)

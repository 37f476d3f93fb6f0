"""Device selection with clear errors ('cpu', 'cuda', '0', '0,1' -> torch.device), and the precision vocabulary.

`select_device` serves one process; `process_device` gives each process of a torchrun job its own
device out of the user's `--device` list (local rank i -> the i-th listed GPU), or a one-line error
when the list cannot give every process of the node a GPU of its own.
"""

from __future__ import annotations

import torch

from scaledyolo.errors import UserError

DEVICE_HELP = "expected cpu, cuda, a GPU index like 0, or a list like 0,1"

# The one precision vocabulary (inference, bench, export, train and the CLI's --precision choices).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Training adds "auto": fp16 mixed precision on CUDA, fp32 on the CPU.
TRAIN_PRECISIONS = ("auto", *PRECISIONS)
# Inference (predict, val, bench) adds "int8": our network quantised by NNCF, run by OpenVINO on the CPU.
INFERENCE_PRECISIONS = (*PRECISIONS, "int8")


def check_precision(precision: str, device: str | torch.device | None = None,
                    choices: tuple[str, ...] | dict = PRECISIONS) -> str:
    """`precision` when it is one of `choices` and `device` can run it, else a one-line UserError.

    fp16 needs a GPU (the CPU kernels are slow or missing); bf16 runs on both; int8 (where `choices`
    has it, as `INFERENCE_PRECISIONS` does) runs through OpenVINO on the CPU only."""
    if precision not in choices:
        raise UserError(f"--precision must be one of {', '.join(choices)}, got {precision!r}")
    kind = None if device is None else _device_type(device)
    if precision == "fp16" and kind == "cpu":
        raise UserError("--precision fp16 needs a GPU; on the CPU use bf16 (--half means bf16 there) or fp32")
    if precision == "int8" and kind not in (None, "cpu"):
        raise UserError(f"--precision int8 runs through OpenVINO on the CPU; use --device cpu (not {device})")
    return precision


def _device_type(device: str | torch.device) -> str:
    """"cpu", "cuda", "mps", ... of a torch device or of a `--device` text as users write it ("0,1", "cuda:0")."""
    if isinstance(device, torch.device):
        return device.type
    text = str(device).strip().lower()
    return "cuda" if text and _cuda_ids(text) is not None else text.split(":")[0]


def model_device(model: object) -> torch.device:
    """The device a model's inputs go to: its `device` attribute (a runner outside torch, such as the
    OpenVINO network), else its first parameter's, else the CPU."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    parameters = getattr(model, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def _cuda_ids(device: str | int | None) -> list[int] | None:
    """The GPU indices a `--device` text names ([] for 'cuda' or nothing), None for anything else."""
    text = "" if device is None else str(device).strip().lower()
    if text.startswith("cuda:") and text[5:].isdigit():
        text = text[5:]
    if text in ("", "cuda"):
        return []
    parts = text.split(",")
    if all(p.strip().isdigit() for p in parts):
        return [int(p) for p in parts]
    return None


def _check_visible(device: str | int | None, ids: list[int]) -> None:
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA was requested but no GPU is available (use --device cpu)")
    count = torch.cuda.device_count()
    if any(i >= count for i in ids):
        raise UserError(f"--device {device}: only {count} GPU(s) visible")


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    """The torch device for a user's `--device` string; CUDA requested without a GPU is a clear error.

    None or '' picks the first GPU when there is one, else the CPU; a list picks its first GPU.
    """
    if isinstance(device, torch.device):
        return device
    text = "" if device is None else str(device).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    ids = _cuda_ids(text)
    if ids is not None:
        if text == "" and not torch.cuda.is_available():
            return torch.device("cpu")
        _check_visible(device, ids)
        return torch.device("cuda", ids[0] if ids else 0)
    if text == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    raise UserError(f"--device {device}: {DEVICE_HELP}")


def process_device(device: str | int | None, local_rank: int, local_world: int) -> torch.device:
    """The device of process `local_rank` of the `local_world` processes torchrun started on this node.

    'cpu' puts every process on the CPU. A GPU list (`2,3`, `1,0`) gives local rank i its i-th entry,
    so the excluded GPUs are never touched; nothing or 'cuda' means GPUs 0..local_world-1. A single
    GPU for several processes, a repeated GPU or a list shorter than the process count is an error
    here (NCCL would fail later with 'Duplicate GPU detected', or ranks would share a device).
    """
    text = "" if device is None else str(device).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    ids = _cuda_ids(text)
    if ids is None:
        raise UserError(f"--device {device}: {DEVICE_HELP}")
    if text == "" and not torch.cuda.is_available():
        return torch.device("cpu")
    if not ids:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if 0 < count < local_world:
            raise UserError(f"--device {device or 'cuda'}: {local_world} processes on this node but only {count} "
                            f"GPU(s) visible; use --nproc_per_node {count} or --device cpu")
        ids = list(range(local_world))
    elif len(set(ids)) != len(ids):
        raise UserError(f"--device {device}: a GPU is listed twice; name one GPU per process")
    elif len(ids) < local_world:
        listed = "one GPU" if len(ids) == 1 else f"{len(ids)} GPUs"
        raise UserError(f"--device {device}: names {listed} for {local_world} processes on this node; "
                        f"list one GPU per process (e.g. --device {','.join(str(i) for i in range(local_world))}) "
                        "or match --nproc_per_node to the list")
    _check_visible(device, ids)
    return torch.device("cuda", ids[local_rank])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

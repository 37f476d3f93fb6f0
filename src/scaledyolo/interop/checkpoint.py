"""Our checkpoint format: tensors and plain Python data only, written atomically, read with weights_only=True.

Keys: `format` ("scaledyolo-v1"), `spec` (ModelSpec as a dict), `names`, `state_dict`, and optionally
`ema`, `optimizer`, `scaler` (the AMP GradScaler's scale and growth tracker, for resume), `epoch`, `hyp`,
`metrics`, plus any plain-data extras (`extra`).

How the model is meant to be run, so that commands and the API need no flags to use it as trained:
`img_size` (the training size; the loaded model's `spec.img_size`, which every command defaults to),
`geometry` ("square" or "rect" input, `scaledyolo.geometry`) and `data` (the absolute path of the
training data YAML, which `val` uses when given no `--data`; it is only ever read, never written).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from scaledyolo.errors import UserError
from scaledyolo.files import atomic_path
from scaledyolo.geometry import check_geometry
from scaledyolo.interop.legacy import convert_legacy_state, is_legacy_state
from scaledyolo.interop.unpickler import MAX_PICKLE_BYTES, TooLarge, check_zip_sizes, read_zip_entry
from scaledyolo.models.spec import MAX_IMG_SIZE, ModelSpec
from scaledyolo.models.yolo import YOLO, meta_model, state_mismatch

FORMAT = "scaledyolo-v1"
LOGGER = logging.getLogger("scaledyolo")


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (see `scaledyolo.files.atomic_path`).

    A failed write (a full disk, a quota, an I/O error) is one line naming the file, and the temp file goes:
    torch reports a short write from its own writer as `inline_container.cc ... unexpected pos`."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except OSError as exc:
        raise UserError(f"cannot write it ({exc.strerror or exc})", path) from None
    except RuntimeError as exc:
        if "inline_container" not in str(exc) and "write" not in str(exc).lower():
            raise
        raise UserError("cannot write it (the write failed: is the disk full?)", path) from None


def make_checkpoint(model: YOLO, *, ema: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    scaler: torch.amp.GradScaler | None = None, epoch: int | None = None, hyp: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None, img_size: int | None = None,
                    data: str | Path | None = None, geometry: str | None = None) -> dict[str, Any]:
    """The checkpoint dict for `model` (unwrapped from DDP by the caller).

    `img_size`, `data` and `geometry` default to what `model` carries (`spec.img_size`, and the
    `data_yaml` / `geometry` attributes `model_from_checkpoint` and the loaders set), so a converted or
    re-saved model keeps them.
    """
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "spec": model.spec.to_dict(),
        "names": list(model.names),
        "state_dict": _cpu_state(model),
        "img_size": int(img_size or model.spec.img_size),
    }
    data = data if data is not None else getattr(model, "data_yaml", None)
    if data is not None:
        ckpt["data"] = str(Path(data).resolve())
    geometry = geometry or getattr(model, "geometry", None)
    if geometry is not None:
        ckpt["geometry"] = check_geometry(geometry)
    if ema is not None:
        ckpt["ema"] = _cpu_state(ema)
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scaler is not None and scaler.is_enabled():
        ckpt["scaler"] = scaler.state_dict()
    for key, value in (("epoch", epoch), ("hyp", hyp), ("metrics", metrics), ("extra", extra)):
        if value is not None:
            ckpt[key] = value
    return ckpt


def save_checkpoint(path: str | Path, model: YOLO, **kwargs: Any) -> None:
    """Write `make_checkpoint(model, **kwargs)` atomically to `path`."""
    atomic_save(make_checkpoint(model, **kwargs), path)


def is_our_checkpoint(path: str | Path) -> bool:
    """True when `path` is a torch zip file whose payload is our format (checked without unpickling).

    Its data.pkl is read through the same size limits as any foreign zip (a compressed one could expand to
    gigabytes); a file past them is not ours, and the restricted reader then refuses it with the reason."""
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_sizes(zf, Path(path).stat().st_size)
            pkl = next((name for name in zf.namelist() if name.endswith("data.pkl")), None)
            return pkl is not None and FORMAT.encode() in read_zip_entry(zf, pkl, MAX_PICKLE_BYTES)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError, TooLarge, zlib.error):
        return False


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load our checkpoint with `torch.load(weights_only=True)`: it can hold no code to run.

    The archive's entry sizes are checked first (torch would decompress a zip bomb in full)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", path)
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_sizes(zf, path.stat().st_size)
            if any(info.compress_type != zipfile.ZIP_STORED for info in zf.infolist()):
                raise UserError("not a scaledyolo checkpoint (compressed entries: torch writes none)", path)
    except TooLarge as exc:
        raise UserError(f"refusing to load: {exc.args[0]}", path) from None
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError, zlib.error) as exc:
        raise UserError(f"not a scaledyolo checkpoint ({str(exc)[:200] or type(exc).__name__})", path) from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"not a scaledyolo checkpoint ({first[:200]})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError("not a scaledyolo checkpoint (no 'format: scaledyolo-v1' entry)", path)
    return ckpt


def spec_of_checkpoint(ckpt: dict[str, Any], path: str | Path | None = None) -> ModelSpec:
    """The checked `ModelSpec` of a checkpoint (its `spec` entry); every problem names the file."""
    if "spec" not in ckpt:
        raise UserError("not a complete scaledyolo checkpoint: it has no 'spec' entry", path)
    try:
        return ModelSpec.from_dict(ckpt["spec"])
    except UserError as exc:
        raise UserError(exc.message, path) from None


def model_from_checkpoint(ckpt: dict[str, Any], use_ema: bool = True, path: str | Path | None = None) -> YOLO:
    """Rebuild the model of a checkpoint (the EMA weights when present and `use_ema`), with the size,
    data YAML and geometry it records (`spec.img_size`, `.data_yaml`, `.geometry`; None where not recorded).

    The weights are checked against the spec's shapes on the meta device first: the model is only built
    (its memory allocated) once the file is known to hold every one of its tensors."""
    spec = spec_of_checkpoint(ckpt, path)
    state = ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt.get("state_dict")
    legacy = is_legacy_state(state)
    if legacy:  # saved by 0.1.0 before the model rebuild: layers.N.* keys
        state = convert_legacy_state(state, spec)
        LOGGER.info("%s: saved by scaledyolo 0.1.0 (layers.N.* keys); converted to the rebuilt model's keys",
                    path or "checkpoint")
    try:
        problem = state_mismatch(meta_model(spec), state)
        if problem:
            why = " (saved by scaledyolo 0.1.0 before the model rebuild; its layers.N.* keys did not all " \
                  "convert)" if legacy else ""
            raise UserError(f"weights do not fit the model spec ({problem}){why}", path)
        model = YOLO(spec)
    except UserError as exc:
        raise UserError(exc.message, path) from None
    model.load_state_dict(state)
    names = ckpt.get("names")
    if names is not None and (not isinstance(names, list) or len(names) != spec.num_classes):
        raise UserError(f"names must be a list of {spec.num_classes} class names", path)
    model.names = [str(n) for n in names] if names else model.names
    img_size, data, geometry = ckpt.get("img_size"), ckpt.get("data"), ckpt.get("geometry")
    if img_size is not None:
        if not isinstance(img_size, int) or isinstance(img_size, bool) or not 0 < img_size <= MAX_IMG_SIZE:
            raise UserError(f"damaged checkpoint: img_size {img_size!r} is not a size in 1-{MAX_IMG_SIZE}", path)
        try:
            model.spec = model.spec.replace(img_size=img_size)
        except UserError as exc:
            raise UserError(f"damaged checkpoint: {exc.message}", path) from None
    if data is not None and not isinstance(data, str):
        raise UserError(f"damaged checkpoint: data {data!r} is not a path", path)
    model.data_yaml = data
    model.geometry = None if geometry is None else check_geometry(geometry, path)
    return model

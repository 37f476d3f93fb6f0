"""`train(...)`: the official Scaled-YOLOv4 recipe on one CPU, one GPU or many processes (torchrun).

One epoch = warmup/cosine schedule, accumulated SGD steps to the nominal batch, EMA update; then
validation of the EMA model (under torchrun every rank validates its share, `train.distributed`),
and on rank 0 `weights/last.pt` (and `best.pt` on better fitness
0.1 mAP50 + 0.9 mAP50-95), one `results.csv` row, `results.png`, TensorBoard scalars.

Nothing is lost to a crash or `kill -9`: checkpoints are written atomically, and each one carries
the `results.csv` rows up to its epoch plus every RNG state, so `resume=` rewrites results.csv
from the checkpoint and continues with the next epoch: exactly one row per epoch in the end.
"""

from __future__ import annotations

import csv
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from scaledyolo.errors import RunError, UserError
from scaledyolo.eval.plots import plot_batch
from scaledyolo.files import atomic_path, atomic_write_text, plain_name
from scaledyolo.geometry import TRAINED_GEOMETRY
from scaledyolo.hyp import load_hyp
from scaledyolo.logs import LOGGER, summarize_files
from scaledyolo.models.spec import MEMBERS, ModelSpec, load_spec, round_img_size
from scaledyolo.models.yolo import YOLO, build_model
from scaledyolo.runs import new_run_dir
from scaledyolo.train.checkpoint import read_checkpoint, save_checkpoint
from scaledyolo.train.distributed import init_distributed, run_on_main
from scaledyolo.train.ema import ModelEMA
from scaledyolo.train.loss import ComputeLoss, unwrap
from scaledyolo.train.plots import plot_results
from scaledyolo.train.schedule import Schedule, build_optimizer

MAX_BAD_STEPS = 10  # consecutive non-finite losses/gradients before training stops
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
CSV_KEYS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "train/total_loss",
            "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95", "fitness",
            "lr/pg0", "lr/pg1", "lr/pg2", "time_s"]


# --------------------------------------------------------------------------- small helpers


def _log(message: str, rank: int = 0) -> None:
    if rank in (-1, 0):
        tqdm.write(message)


def fitness(metrics: dict[str, float]) -> float:
    """The checkpoint-selection score: 0.1 mAP50 + 0.9 mAP50-95."""
    return 0.1 * float(metrics.get("map50", 0.0)) + 0.9 * float(metrics.get("map", 0.0))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_csv_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite results.csv from all rows so far (temp file + rename: never half a file)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_KEYS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_KEYS})


# --------------------------------------------------------------------------- models and weights


def load_weights_model(path: str | Path) -> YOLO:
    """Any weights file we read (ours, darknet cfg+weights, official .pt), through the interop loader."""
    from scaledyolo.interop.loading import load_model

    return load_model(str(path))


def transfer_weights(src: nn.Module, dst: nn.Module) -> tuple[int, int]:
    """Copy every tensor whose name and shape match (finetuning to another class count); (copied, total)."""
    dst_state = dst.state_dict()
    matched = {k: v for k, v in src.state_dict().items() if k in dst_state and v.shape == dst_state[k].shape}
    dst.load_state_dict(matched, strict=False)
    return len(matched), len(dst_state)


def build_train_model(source: str | None, nc: int, weights: str | None) -> tuple[YOLO, str]:
    """The model to train for `nc` classes, from a member name, a spec YAML or a weights file.

    `source=None` takes the architecture of `weights` (`train --weights tiny.pt`, as ultralytics
    does), so finetuning never needs the member name repeated; without weights it is yolov4-tiny.
    """
    note = ""
    if source is None:
        if not weights:
            source = "yolov4-tiny"
        else:
            source, weights = weights, None
    path = Path(source)
    if source.lower() in MEMBERS:
        model = build_model(source.lower(), num_classes=nc)
    elif path.suffix in (".yaml", ".yml"):
        model = build_model(load_spec(path), num_classes=nc)
    elif path.exists():
        pretrained = load_weights_model(path)
        model = build_model(pretrained.spec, num_classes=nc)
        n, total = transfer_weights(pretrained, model)
        note = f"transferred {n}/{total} tensors from {path}"
    else:
        raise UserError(f"not a model name ({', '.join(MEMBERS)}), spec YAML nor an existing weights file", path)
    if weights:
        n, total = transfer_weights(load_weights_model(weights), model)
        if n == 0:
            raise UserError(f"no layer of these weights fits {model.spec.name} (names and shapes differ)", weights)
        note = f"transferred {n}/{total} tensors from {weights}"
    return model, note


# --------------------------------------------------------------------------- resume


def find_resume_checkpoint(resume: str | Path) -> Path:
    """RUN_DIR or RUN_DIR/weights/last.pt -> the last.pt path."""
    path = Path(resume)
    if path.is_dir():
        path = path / "weights" / "last.pt"
    if not path.is_file():
        raise UserError("nothing to resume: no weights/last.pt here", resume)
    return path


def _resume_state(resume: str | Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Path]:
    ckpt_path = find_resume_checkpoint(resume)
    ckpt = read_checkpoint(ckpt_path)
    extra = ckpt.get("extra") or {}
    if "args" not in extra or "optimizer" not in ckpt:
        raise UserError("this checkpoint holds no training state to resume (finetune from it with --weights)",
                        ckpt_path)
    args = dict(extra["args"])
    args.update({k: v for k, v in overrides.items() if v is not None})
    if ckpt["epoch"] + 1 >= args["epochs"]:
        raise UserError(f"this run already finished all {args['epochs']} epochs; "
                        "train further with --weights on a new run", ckpt_path)
    for stale in ckpt_path.parent.glob(".*.tmp"):  # half-written checkpoints of the interrupted run
        stale.unlink(missing_ok=True)
    return ckpt, args, ckpt_path.parent.parent


# --------------------------------------------------------------------------- the trainer


def train(model: str | None = "yolov4-tiny", data: str | None = None, img: int = 640, epochs: int = 300,
          batch: int = 16, device: str | None = None, project: str | Path = "runs/train", name: str = "exp",
          hyp: str | dict | None = "scratch", weights: str | None = None, resume: str | Path | None = None,
          workers: int = 2, multi_scale: bool = False, freeze: int = 0, seed: int = 0,
          noautoanchor: bool = False, precision: str = "auto", cache: bool = False, val: bool = True,
          plots: bool = True, close_mosaic: int = 10) -> Path:
    """Train `model` on `data` and return the run folder (see the module docstring for what it holds).

    `model=None` with `weights` trains the weights' own architecture, keeping its anchors.

    `close_mosaic`: the last epochs train without mosaic (at most a third of the run), so the model
    ends on pictures like those it will be judged on (a later YOLO practice; 0 keeps mosaic to the end).
    `resume` (a run folder or its weights/last.pt) continues that run with its own arguments; only
    `device` and `workers` may be changed. Works under torchrun: every process trains and
    validates its share of the split, rank 0 saves.
    """
    ckpt = None
    if resume:
        ckpt, args, run_dir = _resume_state(resume, {"device": device, "workers": workers})
    else:
        if not data:
            raise UserError("train needs --data DATA.yaml (or --resume RUN_DIR)")
        if precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if epochs < 1 or batch < 1:
            raise UserError("--epochs and --batch must be at least 1")
        plain_name(name, "run name (--name)")  # before any data is read, not when the run folder is made
        args = dict(model=str(model) if model else None, data=str(data), img=int(img), epochs=int(epochs),
                    batch=int(batch), device=device, project=str(project), name=str(name),
                    hyp=hyp if isinstance(hyp, dict) else str(hyp or "scratch"),
                    weights=str(weights) if weights else None, workers=int(workers), multi_scale=bool(multi_scale),
                    freeze=int(freeze), seed=int(seed), noautoanchor=bool(noautoanchor), precision=precision,
                    cache=bool(cache), val=bool(val), plots=bool(plots), close_mosaic=int(close_mosaic))
        run_dir = None
    rank, world, _local_rank, process_device = init_distributed(args["device"])
    try:
        return _Trainer(args, ckpt, run_dir, rank, world, process_device).run()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class _Trainer:
    """The state of one training run; `run()` is the epoch loop."""

    def __init__(self, args: dict[str, Any], ckpt: dict[str, Any] | None, run_dir: Path | None,
                 rank: int, world: int, device: torch.device) -> None:
        from scaledyolo.data.dataset import load_data_config
        from scaledyolo.data.loader import create_dataloader

        self.args, self.rank, self.world = args, rank, world
        self.main = rank in (-1, 0)
        self.device = device  # this process's own device (init_distributed maps local ranks onto --device)
        seed_everything(args["seed"] + max(rank, 0))
        self.hyp = dict(ckpt["hyp"]) if ckpt and ckpt.get("hyp") else load_hyp(args["hyp"])
        self.data_cfg = load_data_config(args["data"])
        self.names = list(self.data_cfg.names)
        nc = len(self.names)

        if ckpt is None:
            self.model, note = build_train_model(args["model"], nc, args["weights"])
            if note:
                _log(note, rank)
        else:
            self.model = YOLO(ModelSpec.from_dict(ckpt["spec"]))
            self.model.load_state_dict(ckpt["state_dict"])
        self.model.names = self.names
        self.gs = self.model.spec.max_stride
        self.img = round_img_size(args["img"], self.gs)
        self._freeze(args["freeze"])

        self.batch_per_rank = max(args["batch"] // world, 1)
        self.loader, self.dataset = self._train_loader(self.hyp)
        self._check_labels(nc)
        self.val_loader = self.val_dataset = None
        if args["val"]:  # every rank validates its own whole batches; the predictions are gathered
            self.val_loader, self.val_dataset = create_dataloader(
                self.data_cfg, "val", self.img, self.batch_per_rank * 2, hyp=self.hyp, augment=False, rect=True,
                workers=args["workers"], shuffle=False, stride=self.gs, shard=(rank, world) if world > 1 else None,
                pin_memory=self.device.type == "cuda")

        # A pretrained head learnt its outputs for its own anchors: refitting them would undo that.
        if ckpt is None and not args["noautoanchor"] and not self._pretrained():
            from scaledyolo.data.anchors import check_anchors

            # rank 0 alone; DDP then broadcasts its (possibly new) anchors to every rank
            run_on_main(lambda: check_anchors(self.dataset, self.model, thr=self.hyp["anchor_t"], img_size=self.img),
                        self.main, world)
        elif ckpt is None and self.main and not args["noautoanchor"]:
            LOGGER.info("anchors: kept those of the pretrained weights (autoanchor skipped)")
        self.model.to(self.device)

        self.nb = len(self.loader)
        self.schedule = Schedule(self.hyp, args["epochs"], self.nb, self.batch_per_rank * world)
        self.optimizer = build_optimizer(self.model, self.hyp, self.batch_per_rank * world, self.schedule.accumulate)
        loss_hyp = dict(self.hyp, cls=self.hyp["cls"] * nc / 80.0)  # the official scaling of COCO's class gain
        self.compute_loss = ComputeLoss(self.model, loss_hyp)

        # on every rank (DDP keeps the weights equal, so all ranks can validate); taken before the
        # SyncBatchNorm conversion, so the EMA that is validated and saved holds plain BatchNorms
        self.ema = ModelEMA(self.model)
        if world > 1 and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.autocast_dtype = self._precision(args["precision"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)

        self.start_epoch, self.best_fitness, self.rows = 0, -1.0, []
        if ckpt is not None:
            self._restore(ckpt)
        self.run_dir = run_dir if run_dir is not None else self._new_run_dir()
        self.wdir = self.run_dir / "weights"
        self.writer = None

    # ----------------------------------------------------------------- setup pieces

    def _train_loader(self, hyp: dict[str, float]) -> tuple[Any, Any]:
        from scaledyolo.data.loader import create_dataloader

        a = self.args
        return create_dataloader(self.data_cfg, "train", self.img, self.batch_per_rank, hyp=hyp, augment=True,
                                 workers=a["workers"], shuffle=True, seed=a["seed"], cache=a["cache"], stride=self.gs,
                                 pin_memory=self.device.type == "cuda")

    def _pretrained(self) -> bool:
        """Whether training starts from weights (`--weights`, or `--model` naming a weights file)."""
        source = self.args["model"]
        return bool(self.args["weights"]) or (source is not None and source.lower() not in MEMBERS
                                              and Path(source).suffix not in (".yaml", ".yml"))

    def _close_mosaic(self, epoch: int) -> None:
        """From `epochs - close_mosaic` on, train on plain (letterboxed, still augmented) images."""
        close = min(int(self.args.get("close_mosaic", 0)), self.args["epochs"] // 3)
        if close > 0 and epoch >= self.args["epochs"] - close and self.dataset.mosaic:
            _log(f"epoch {epoch + 1}: mosaic off for the last {self.args['epochs'] - epoch} epochs", self.rank)
            self.loader, self.dataset = self._train_loader(dict(self.hyp, mosaic=0.0))

    def _freeze(self, k: int) -> None:
        """Freeze the first k stages of the model (`YOLO.stage_paths`; transfer learning)."""
        if k <= 0:
            return
        prefixes = tuple(f"{path}." for path in self.model.stage_paths()[:k])
        frozen = 0
        for name, p in self.model.named_parameters():
            if name.startswith(prefixes):
                p.requires_grad_(False)
                frozen += 1
        _log(f"froze {frozen} tensors of the first {k} layers", self.rank)

    def _check_labels(self, nc: int) -> None:
        labels = [lb for lb in self.dataset.labels if len(lb)]
        if not labels:
            raise UserError("the training split has no labelled objects", self.args["data"])
        top = int(max(lb[:, 0].max() for lb in labels))
        if top >= nc:
            raise UserError(f"a label uses class {top} but the data YAML names only {nc} classes", self.args["data"])

    def _precision(self, precision: str) -> torch.dtype | None:
        cuda = self.device.type == "cuda"
        if precision == "fp16" and not cuda:
            raise UserError("--precision fp16 needs a GPU; use fp32 or bf16 on CPU")
        if precision == "fp16" or (precision == "auto" and cuda):
            return torch.float16
        return torch.bfloat16 if precision == "bf16" else None

    def _restore(self, ckpt: dict[str, Any]) -> None:
        extra = ckpt["extra"]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.ema.ema.load_state_dict(ckpt["ema"])
        self.ema.updates = int(extra.get("ema_updates", 0))
        if ckpt.get("scaler") and self.scaler.is_enabled():  # its scale, so AMP does not relearn it by skipping
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.best_fitness = float(extra.get("best_fitness", -1.0))
        self.rows = list(extra.get("results", []))
        if extra.get("rng") and self.world == 1:
            set_rng_state(extra["rng"])
        _log(f"resuming: {self.start_epoch} of {self.args['epochs']} epochs done", self.rank)

    def _new_run_dir(self) -> Path:
        run_dir = [new_run_dir(self.args["project"], self.args["name"]) if self.main else None]
        if self.world > 1:
            dist.broadcast_object_list(run_dir, src=0)
        return Path(run_dir[0])

    # ----------------------------------------------------------------- the loop

    def run(self) -> Path:
        args = self.args
        if self.main:
            self.wdir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "args.yaml", yaml.safe_dump(dict(args), sort_keys=False))
            atomic_write_text(self.run_dir / "hyp.yaml", yaml.safe_dump(self.hyp, sort_keys=False))
            self.writer = _tensorboard(self.run_dir)
            _log(f"training {self.model_name} on {len(self.dataset)} images ({self.nb} batches of "
                 f"{self.batch_per_rank} x {self.world} process(es)), img {self.img}, {args['epochs']} epochs, "
                 f"accumulate {self.schedule.accumulate} (lr x{self.schedule.lr_scale:g}), "
                 f"warmup {self.schedule.warmup_iters} iterations, "
                 f"device {self.device}; results to {self.run_dir}")
        t_start = time.time()
        try:
            for epoch in range(self.start_epoch, args["epochs"]):
                t0 = time.time()
                mloss = self._train_epoch(epoch)
                metrics = self._validate()
                run_on_main(lambda: self._end_epoch(epoch, mloss, metrics, time.time() - t0), self.main, self.world)
        except torch.cuda.OutOfMemoryError:
            raise RunError(f"CUDA out of memory at --batch {args['batch']} --img {self.img}: "
                           "try a smaller --batch or --img") from None
        finally:
            if self.writer is not None:
                self.writer.close()
        if self.main:
            last = self.rows[-1] if self.rows else {}
            _log(f"{args['epochs'] - self.start_epoch} epochs in {(time.time() - t_start) / 60:.1f} min; "
                 f"final mAP50 {last.get('metrics/mAP50', 0):.4f}, mAP50-95 {last.get('metrics/mAP50-95', 0):.4f}; "
                 f"results saved to {self.run_dir}")
            datasets = [d for d in (self.dataset, self.val_dataset) if d is not None]
            summarize_files("train", [p for d in datasets for p in d.problems], [w for d in datasets for w in d.warned])
        return self.run_dir

    @property
    def model_name(self) -> str:
        return unwrap(self.model).spec.name

    def _train_epoch(self, epoch: int) -> torch.Tensor:
        model, optimizer = self.model, self.optimizer
        self._close_mosaic(epoch)
        model.train()
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        mloss = torch.zeros(4)
        counted = 0
        bad = 0
        pending = 0
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(enumerate(self.loader), total=self.nb, disable=not self.main, dynamic_ncols=True,
                   desc=f"epoch {epoch + 1}/{self.args['epochs']}", bar_format="{l_bar}{bar:10}{r_bar}")
        for i, (imgs, targets, _paths, _shapes) in bar:
            ni = i + self.nb * epoch
            accumulate = self.schedule.apply(optimizer, ni, epoch)
            imgs = imgs.to(self.device, non_blocking=True).float() / 255.0
            if self.args["multi_scale"]:
                imgs = self._rescale(imgs)
            if self.main and epoch == 0 and i < 3 and self.args["plots"]:
                # no file names on the tiles: a mosaic-augmented sample comes from four files
                plot_batch(imgs, targets, None, self.names, self.run_dir / f"train_batch{i}.jpg")
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
            if pending >= accumulate or i == self.nb - 1:
                if self._step():
                    bad = 0
                    self.ema.update(model)
                else:
                    bad = self._bad_step(bad, f"non-finite gradients at epoch {epoch + 1}, batch {i + 1}")
                pending = 0
            mloss = (mloss * counted + parts.cpu()) / (counted + 1)
            counted += 1
            if self.main:
                mem = torch.cuda.memory_reserved(self.device) / 1e9 if self.device.type == "cuda" else 0.0
                bar.set_postfix_str(f"box {mloss[0]:.4f} obj {mloss[1]:.4f} cls {mloss[2]:.4f} "
                                    f"lr {optimizer.param_groups[1]['lr']:.2e} mem {mem:.2f}G "
                                    f"n {targets.shape[0]} img {imgs.shape[-1]}")
        bar.close()
        return mloss

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _rescale(self, imgs: torch.Tensor) -> torch.Tensor:
        """Multi-scale: a random size in 50-150 % of --img, a multiple of the max stride (same on all ranks)."""
        gs, img = self.gs, self.img
        size = random.randrange(int(img * 0.5), int(img * 1.5) + gs) // gs * gs
        size = max(size, gs)
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

    # ----------------------------------------------------------------- end of epoch (rank 0)

    def _validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        from scaledyolo.eval.validate import validate

        return validate(self.ema.ema, self.val_loader, self.val_dataset, conf=0.001, iou=0.65, names=self.names,
                        coco=False, progress=False, gather=self.world > 1)

    def _end_epoch(self, epoch: int, mloss: torch.Tensor, metrics: dict[str, float], seconds: float) -> None:
        fit = fitness(metrics)
        row = {"epoch": epoch, "train/box_loss": float(mloss[0]), "train/obj_loss": float(mloss[1]),
               "train/cls_loss": float(mloss[2]), "train/total_loss": float(mloss[3]),
               "metrics/precision": float(metrics.get("precision", 0.0)),
               "metrics/recall": float(metrics.get("recall", 0.0)),
               "metrics/mAP50": float(metrics.get("map50", 0.0)), "metrics/mAP50-95": float(metrics.get("map", 0.0)),
               "fitness": fit, **{f"lr/pg{j}": float(g["lr"]) for j, g in enumerate(self.optimizer.param_groups)},
               "time_s": round(seconds, 2)}
        self.rows.append(row)
        improved = fit > self.best_fitness or self.val_loader is None
        self.best_fitness = max(fit, self.best_fitness)
        model = unwrap(self.model)
        extra = {"args": self.args, "best_fitness": self.best_fitness, "results": self.rows,
                 "ema_updates": self.ema.updates, "rng": rng_state()}
        trained = {"img_size": self.img, "data": self.data_cfg.file, "geometry": TRAINED_GEOMETRY}  # the defaults
        save_checkpoint(self.wdir / "last.pt", model, ema=self.ema.ema, optimizer=self.optimizer, epoch=epoch,
                        hyp=self.hyp, metrics=row, extra=extra, scaler=self.scaler, **trained)
        if improved:
            save_checkpoint(self.wdir / "best.pt", model, ema=self.ema.ema, epoch=epoch, hyp=self.hyp, metrics=row,
                            extra={"args": self.args, "best_fitness": self.best_fitness}, **trained)
        write_csv_atomic(self.run_dir / "results.csv", self.rows)
        if self.args["plots"]:
            plot_results(self.run_dir / "results.csv")
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, epoch)
            self.writer.flush()
        _log(f"epoch {epoch + 1}/{self.args['epochs']}: mAP50 {row['metrics/mAP50']:.4f} "
             f"mAP50-95 {row['metrics/mAP50-95']:.4f} P {row['metrics/precision']:.3f} "
             f"R {row['metrics/recall']:.3f}" + (" (best)" if improved else ""))


def _tensorboard(run_dir: Path) -> Any:
    """A SummaryWriter in the run folder when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))

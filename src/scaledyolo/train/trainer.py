"""`train(...)`: the official Scaled-YOLOv4 recipe on one CPU, one GPU or many processes (torchrun).

One epoch = warmup/cosine schedule, accumulated steps to the nominal batch, EMA update (`train.loop`);
then validation of the EMA model (under torchrun every rank validates its share) in the geometry
`val` uses for our checkpoints, so best.pt is chosen on the mAP `val` reports; and on rank 0 the
epoch's record (`train.recording`: last.pt, best.pt on better fitness, results rows) and the
loggers (`train.loggers`: results.csv/png, results.jsonl, TensorBoard, MLflow), all of them
callbacks (`train.callbacks`) beside the user's own.

Nothing is lost to a crash or `kill -9`: checkpoints are written atomically, and each one carries
the results rows up to its epoch plus every RNG state, so `resume=` rewrites results.csv from the
checkpoint and continues with the next epoch (`train.resume`): exactly one row per epoch in the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from tqdm import tqdm

from scaledyolo.data.anchors import check_anchors
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import create_dataloader
from scaledyolo.devices import TRAIN_PRECISIONS, check_precision
from scaledyolo.errors import RunError, UserError
from scaledyolo.eval.plots import plot_labels
from scaledyolo.eval.validate import validate
from scaledyolo.files import atomic_write_text, plain_name
from scaledyolo.hyp import load_hyp
from scaledyolo.interop.checkpoint import model_from_checkpoint, read_checkpoint
from scaledyolo.logs import LOGGER, summarize_files
from scaledyolo.models.spec import DEFAULT_MEMBER, ModelSpec, round_img_size
from scaledyolo.models.yolo import YOLO
from scaledyolo.runs import new_run_dir
from scaledyolo.train import building
from scaledyolo.train.callbacks import Callbacks
from scaledyolo.train.distributed import abort_process_group, broadcast_flag, init_distributed, run_on_main
from scaledyolo.train.ema import ModelEMA
from scaledyolo.train.loggers import default_loggers
from scaledyolo.train.loop import EpochLoop, autocast_dtype
from scaledyolo.train.loss import ComputeLoss, unwrap
from scaledyolo.train.recording import EarlyStopping, epoch_row, save_epoch_weights
from scaledyolo.train.resume import restore_training_state, resume_state, seed_everything, training_state
from scaledyolo.train.schedule import LR_SCHEDULES, OPTIMIZERS, Schedule, build_optimizer

# Options added after the first checkpoints were written: a resumed older run takes these values.
OPTION_DEFAULTS = {"patience": 0, "optimizer": "SGD", "single_cls": False, "lr_schedule": "cos", "save_period": 0,
                   "exist_ok": False, "deterministic": False, "rect": False}


def _log(message: str, rank: int = 0) -> None:
    if rank in (-1, 0):
        tqdm.write(message)


def _peer_failed(exc: RuntimeError) -> bool:
    """Whether `exc` is a collective failing because another process died (DDP's reducer re-raises
    gloo's "connection closed" as a plain RuntimeError, not as a DistBackendError)."""
    text = str(exc)
    return isinstance(exc, dist.DistError) or "closed by peer" in text or "remote worker" in text


def _check_options(args: dict[str, Any]) -> None:
    """Every argument a user can get wrong, checked before any data is read."""
    check_precision(args["precision"], choices=TRAIN_PRECISIONS)
    if args["optimizer"] not in OPTIMIZERS:
        raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {args['optimizer']!r}")
    if args["lr_schedule"] not in LR_SCHEDULES:
        raise UserError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {args['lr_schedule']!r}")
    if args["epochs"] < 1 or args["batch"] < 1:
        raise UserError("--epochs and --batch must be at least 1")
    if args["patience"] < 0 or args["save_period"] < 0:
        raise UserError("--patience and --save-period must be 0 (off) or more")
    plain_name(args["name"], "run name (--name)")
    load_hyp(args["hyp"])  # unknown keys and bad values fail now, not after the dataset scan


def train(model: str | None = None, data: str | None = None, img: int = 640, epochs: int = 300,
          batch: int = 16, device: str | None = None, project: str | Path = "runs/train", name: str = "exp",
          hyp: str | dict | list | None = "scratch", weights: str | None = None,
          resume: str | Path | bool | None = None, workers: int = 2, multi_scale: bool = False, freeze: int = 0,
          seed: int = 0, noautoanchor: bool = False, precision: str = "auto", cache: bool = False, val: bool = True,
          plots: bool = True, close_mosaic: int = 10, patience: int = 0, optimizer: str = "SGD",
          single_cls: bool = False, lr_schedule: str = "cos", save_period: int = 0, exist_ok: bool = False,
          deterministic: bool = False, rect: bool = False,
          callbacks: Iterable[object] | None = None) -> Path:
    """Train `model` on `data` and return the run folder (see the module docstring for what it holds).

    `model=None` with `weights` trains the weights' own architecture, keeping its anchors; without
    `weights` it is `DEFAULT_MEMBER` (the CLI's default too). `hyp`: a
    recipe (scratch, finetune), a YAML file, a dict of values, or the CLI's words (`["finetune",
    "lr0=0.002"]`). `close_mosaic`: the last epochs train without mosaic (at most a third of the run).
    `patience`: stop after that many epochs without a better fitness (0: never). `optimizer`: SGD,
    Adam or AdamW (the official `--adam`: lr0 as given, momentum as beta1). `single_cls`: every
    object is one class, "item". `lr_schedule`: "cos" or "linear" from lr0 to lr0 * lrf.
    `save_period`: also keep weights/epochN.pt every N epochs. `exist_ok`: write into PROJECT/NAME even
    if it exists. `deterministic`: deterministic torch kernels (slower; with `seed`, repeatable runs).
    `rect`: validate each epoch on rectangular batches instead of `val`'s square default for our
    checkpoints. `callbacks`: see `train.callbacks`.
    `resume` (a run folder or its weights/last.pt; True: the latest run under `project`) continues
    that run with its own arguments; only `device` and `workers` may change. Under torchrun every
    process trains and validates its share of the split, rank 0 saves; an error on one process stops
    the others at once.
    """
    ckpt = run_dir = None
    if resume:
        ckpt, args, run_dir = resume_state(resume, project, {"device": device, "workers": workers})
        args = {**OPTION_DEFAULTS, **args}
    else:
        if not data:
            raise UserError("train needs --data DATA.yaml (or --resume RUN_DIR)")
        if isinstance(hyp, (list, tuple)):  # the CLI's words; a lone recipe name is kept as that name
            hyp = str(hyp[0]) if len(hyp) == 1 and "=" not in str(hyp[0]) else [str(w) for w in hyp]
        model = model or (None if weights else DEFAULT_MEMBER)
        args = dict(model=str(model) if model else None, data=str(data), img=int(img), epochs=int(epochs),
                    batch=int(batch), device=device, project=str(project), name=str(name),
                    hyp=hyp if isinstance(hyp, (dict, list)) else str(hyp or "scratch"),
                    weights=str(weights) if weights else None, workers=int(workers), multi_scale=bool(multi_scale),
                    freeze=int(freeze), seed=int(seed), noautoanchor=bool(noautoanchor), precision=precision,
                    cache=bool(cache), val=bool(val), plots=bool(plots), close_mosaic=int(close_mosaic),
                    patience=int(patience), optimizer=str(optimizer), single_cls=bool(single_cls),
                    lr_schedule=str(lr_schedule), save_period=int(save_period), exist_ok=bool(exist_ok),
                    deterministic=bool(deterministic), rect=bool(rect))
        _check_options(args)
    rank, world, _local_rank, process_device = init_distributed(args["device"])
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        trainer = Trainer(args, ckpt, run_dir, rank, world, process_device, callbacks or ())
        return trainer.run()
    except RuntimeError as exc:
        if world <= 1 or not _peer_failed(exc):
            if world > 1:
                abort_process_group()
            raise
        abort_process_group()
        raise RunError("stopped because another process of this run failed (its error is reported above): "
                       f"{str(exc).splitlines()[0][:200]}") from None
    except BaseException:
        if world > 1:
            abort_process_group()  # exit now, so the other processes fail fast instead of waiting
        raise
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class Trainer:
    """The state of one training run; `run()` is the epoch loop, `add_callback` hooks into it.

    What callbacks read: `args`, `hyp`, `names`, `model`, `ema.ema`, `optimizer`, `epoch`,
    `metrics` (the latest validation dict), `rows` (results rows so far), `best_fitness`,
    `run_dir`, `saved` (files written at the epoch's end), `loop` (batch, loss_parts, mloss);
    `stop = True` ends training after the current epoch.
    """

    def __init__(self, args: dict[str, Any], ckpt: dict[str, Any] | None, run_dir: Path | None, rank: int,
                 world: int, device: torch.device, callbacks: Iterable[object] = ()) -> None:
        self.args, self.rank, self.world = args, rank, world
        self.main = rank in (-1, 0)
        self.device = device  # this process's own device (init_distributed maps local ranks onto --device)
        self.start_epoch, self.best_fitness, self.rows = 0, -1.0, []
        self.epoch, self.metrics, self.saved, self.stop, self.run_dir = 0, {}, [], False, run_dir
        self.callbacks = Callbacks()
        for source in callbacks:
            self.callbacks.add_all(source)
        self.fire("on_pretrain_routine_start")
        seed_everything(args["seed"] + max(rank, 0), args["deterministic"])
        self.hyp = dict(ckpt["hyp"]) if ckpt and ckpt.get("hyp") else load_hyp(args["hyp"])
        self.data_cfg = load_data_config(args["data"])
        self.names = building.SINGLE_CLASS_NAMES if args["single_cls"] else list(self.data_cfg.names)
        nc = len(self.names)

        if ckpt is None:
            self.model, note = building.build_train_model(args["model"], nc, args["weights"])
            if note:
                _log(note, rank)
        else:
            self.model = YOLO(ModelSpec.from_dict(ckpt["spec"]))
            self.model.load_state_dict(ckpt["state_dict"])
        self.model.names = self.names
        self.gs = self.model.spec.max_stride
        self.img = round_img_size(args["img"], self.gs)
        frozen = building.freeze_layers(self.model, args["freeze"])
        if frozen:
            _log(f"froze {frozen} tensors of the first {args['freeze']} layers", rank)

        self.batch_per_rank = max(args["batch"] // world, 1)
        self.loader, self.dataset = self._train_loader(self.hyp)
        building.check_labels(self.dataset, nc, args["data"])
        self.val_loader = self.val_dataset = None
        if args["val"]:  # every rank validates its own whole batches; the predictions are gathered
            self.val_loader, self.val_dataset = create_dataloader(
                self.data_cfg, "val", self.img, self.batch_per_rank * 2, hyp=self.hyp, augment=False,
                rect=args["rect"], workers=args["workers"], shuffle=False, stride=self.gs,
                shard=(rank, world) if world > 1 else None, pin_memory=self.device.type == "cuda")
            if args["single_cls"]:
                building.fold_to_one_class(self.val_dataset)
                self.val_dataset.names = self.names
        self._fit_anchors(ckpt)
        self.model.to(self.device)

        self.schedule = Schedule(self.hyp, args["epochs"], len(self.loader), self.batch_per_rank * world,
                                 args["lr_schedule"])
        self.optimizer = build_optimizer(self.model, self.hyp, self.batch_per_rank * world, self.schedule.accumulate,
                                         args["optimizer"])
        loss_hyp = dict(self.hyp, cls=self.hyp["cls"] * nc / 80.0)  # the official scaling of COCO's class gain
        compute_loss = ComputeLoss(self.model, loss_hyp)

        # on every rank (DDP keeps the weights equal, so all ranks can validate); taken before the
        # SyncBatchNorm conversion, so the EMA that is validated and saved holds plain BatchNorms
        self.ema = ModelEMA(self.model)
        if world > 1 and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        dtype = autocast_dtype(args["precision"], self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)
        self.loop = EpochLoop(self.model, self.optimizer, self.scaler, self.ema, self.schedule, compute_loss,
                              self.device, world, self.main, dtype, args["multi_scale"], self.gs, self.img, self.fire)

        self.stopper = EarlyStopping(args["patience"] if args["val"] else 0)
        if ckpt is not None:
            self.restore(ckpt)
        self.run_dir = run_dir if run_dir is not None else self._new_run_dir()
        self.wdir = self.run_dir / "weights"
        self.fire("on_pretrain_routine_end")

    def add_callback(self, event: str, callback: Callable[[Any], None]) -> None:
        """Call `callback(trainer)` at `event` (see `train.callbacks` for the events)."""
        self.callbacks.add(event, callback)

    def fire(self, event: str) -> None:
        """Run the callbacks of `event` (rank 0 only)."""
        if self.main:
            self.callbacks.run(event, self)

    # ----------------------------------------------------------------- setup pieces

    def _train_loader(self, hyp: dict[str, float]) -> tuple[Any, Any]:
        a = self.args
        loader, dataset = create_dataloader(self.data_cfg, "train", self.img, self.batch_per_rank, hyp=hyp,
                                            augment=True, workers=a["workers"], shuffle=True, seed=a["seed"],
                                            cache=a["cache"], stride=self.gs, pin_memory=self.device.type == "cuda")
        if a["single_cls"]:
            building.fold_to_one_class(dataset)
            dataset.names = self.names
        return loader, dataset

    def _fit_anchors(self, ckpt: dict[str, Any] | None) -> None:
        """k-means anchors for a model trained from scratch; a pretrained head keeps those it learnt for."""
        if ckpt is not None or self.args["noautoanchor"]:
            return
        if building.starts_from_weights(self.args):
            if self.main:
                LOGGER.info("anchors: kept those of the pretrained weights (autoanchor skipped)")
            return
        # rank 0 alone; DDP then broadcasts its (possibly new) anchors to every rank
        run_on_main(lambda: check_anchors(self.dataset, self.model, thr=self.hyp["anchor_t"], img_size=self.img),
                    self.main, self.world)

    def _close_mosaic(self, epoch: int) -> None:
        """From `epochs - close_mosaic` on, train on plain (letterboxed, still augmented) images."""
        close = min(int(self.args.get("close_mosaic", 0)), self.args["epochs"] // 3)
        if close > 0 and epoch >= self.args["epochs"] - close and self.dataset.mosaic:
            _log(f"epoch {epoch + 1}: mosaic off for the last {self.args['epochs'] - epoch} epochs", self.rank)
            self.loader, self.dataset = self._train_loader(dict(self.hyp, mosaic=0.0))

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from `ckpt` (optimizer, EMA, scaler, RNG states, results rows)."""
        restore_training_state(self, ckpt)
        _log(f"resuming: {self.start_epoch} of {self.args['epochs']} epochs done", self.rank)

    def _new_run_dir(self) -> Path:
        run_dir: list[Any] = [None]
        if self.main:
            if self.args["exist_ok"]:
                run_dir[0] = Path(self.args["project"]) / self.args["name"]
                run_dir[0].mkdir(parents=True, exist_ok=True)
            else:
                run_dir[0] = new_run_dir(self.args["project"], self.args["name"])
        if self.world > 1:
            dist.broadcast_object_list(run_dir, src=0)
        return Path(run_dir[0])

    # ----------------------------------------------------------------- the run

    def run(self) -> Path:
        """Train every remaining epoch (or until early stopping); returns the run folder."""
        args = self.args
        if self.main:
            self.wdir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "args.yaml", yaml.safe_dump(dict(args), sort_keys=False))
            atomic_write_text(self.run_dir / "hyp.yaml", yaml.safe_dump(self.hyp, sort_keys=False))
            for logger in reversed(default_loggers(self.run_dir)):  # before the user's callbacks
                self.callbacks.add_all(logger, first=True)
            _log(f"training {self.model_name} on {len(self.dataset)} images ({len(self.loader)} batches of "
                 f"{self.batch_per_rank} x {self.world} process(es)), img {self.img}, {args['epochs']} epochs, "
                 f"{args['optimizer']}, accumulate {self.schedule.accumulate} (lr x{self.schedule.lr_scale:g}), "
                 f"warmup {self.schedule.warmup_iters} iterations, "
                 f"device {self.device}; results to {self.run_dir}")
            if args["plots"] and self.start_epoch == 0:
                plot_labels(self.dataset.labels, self.names, self.run_dir / "labels.jpg")
        t_start = time.time()
        try:
            self.fire("on_train_start")
            for epoch in range(self.start_epoch, args["epochs"]):
                self.epoch, t0 = epoch, time.time()
                self.fire("on_train_epoch_start")
                self._close_mosaic(epoch)
                mloss = self.loop.run_epoch(self.loader, epoch, args["epochs"],
                                            self.run_dir if self.main and args["plots"] else None, self.names)
                self.fire("on_train_epoch_end")
                self.metrics = self._validate()
                stop = run_on_main(lambda: self.end_epoch(epoch, mloss, self.metrics, time.time() - t0),
                                   self.main, self.world)
                if broadcast_flag(stop, self.world):
                    break
            self._final_plots()
            self.fire("on_train_end")
        except torch.cuda.OutOfMemoryError:
            raise RunError(f"CUDA out of memory at --batch {args['batch']} --img {self.img}: "
                           "try a smaller --batch or --img") from None
        finally:
            self.fire("teardown")
        if self.main:
            self._summary(t_start)
        return self.run_dir

    @property
    def model_name(self) -> str:
        return unwrap(self.model).spec.name

    def _validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        self.fire("on_val_start")
        metrics = validate(self.ema.ema, self.val_loader, self.val_dataset, conf=0.001, iou=0.65, names=self.names,
                           coco=False, progress=False, gather=self.world > 1, loss_fn=self.loop.compute_loss)
        self.metrics = metrics  # before on_val_end, which reads it
        self.fire("on_val_end")
        return metrics

    def _final_plots(self) -> None:
        """PR/F1/P/R curves, both confusion matrices and val_batch pictures of best.pt in the run folder
        (one process only: under torchrun the pictures are left to `val --plots`)."""
        if not (self.main and self.world == 1 and self.args["plots"] and self.val_loader is not None):
            return
        best = model_from_checkpoint(read_checkpoint(self.wdir / "best.pt")).to(self.device).eval()
        validate(best, self.val_loader, self.val_dataset, conf=0.001, iou=0.65, names=self.names, coco=False,
                 progress=False, plots_dir=self.run_dir)

    def end_epoch(self, epoch: int, mloss: torch.Tensor, metrics: dict[str, float], seconds: float) -> bool:
        """Rank 0: record the epoch, save its weights, run the loggers; True when training should stop."""
        row = epoch_row(epoch, mloss, metrics, [g["lr"] for g in self.optimizer.param_groups], seconds)
        self.rows.append(row)
        fit = row["fitness"]
        improved = fit > self.best_fitness or self.val_loader is None
        self.best_fitness = max(fit, self.best_fitness)
        patience_over = self.stopper(epoch, fit)
        self.stop = self.stop or patience_over
        trained = {"img_size": self.img, "data": self.data_cfg.file}  # what commands default to
        self.saved = save_epoch_weights(self.wdir, unwrap(self.model), self.ema.ema, self.optimizer, self.scaler,
                                        epoch, self.hyp, row, training_state(self), trained, improved,
                                        self.args["save_period"])
        self.fire("on_model_save")
        self.fire("on_fit_epoch_end")
        _log(f"epoch {epoch + 1}/{self.args['epochs']}: mAP50 {row['metrics/mAP50']:.4f} "
             f"mAP50-95 {row['metrics/mAP50-95']:.4f} P {row['metrics/precision']:.3f} "
             f"R {row['metrics/recall']:.3f}" + (" (best)" if improved else ""))
        if patience_over:
            _log(f"stopping early: no better fitness for {self.args['patience']} epochs "
                 f"(best {self.stopper.best_fitness:.4f} at epoch {self.stopper.best_epoch + 1})")
        return self.stop

    def _summary(self, t_start: float) -> None:
        last = self.rows[-1] if self.rows else {}
        _log(f"{len(self.rows) - self.start_epoch} epochs in {(time.time() - t_start) / 60:.1f} min; "
             f"final mAP50 {last.get('metrics/mAP50', 0):.4f}, mAP50-95 {last.get('metrics/mAP50-95', 0):.4f}; "
             f"results saved to {self.run_dir}")
        datasets = [d for d in (self.dataset, self.val_dataset) if d is not None]
        summarize_files("train", [p for d in datasets for p in d.problems], [w for d in datasets for w in d.warned])

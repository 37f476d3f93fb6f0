"""The loggers every run has, as callbacks (`train.callbacks`): results.csv (+ results.png),
results.jsonl, TensorBoard events when tensorboard is installed, MLflow when mlflow is installed.

The file loggers rewrite their file from all rows so far (temp file + rename), so a resumed run ends
with exactly one line per epoch. MLflow is never required: without it, or with `SCALEDYOLO_MLFLOW=0`,
nothing is logged there; its tracking URI and experiment follow mlflow's own `MLFLOW_TRACKING_URI` /
`MLFLOW_EXPERIMENT_NAME` (default experiment: the project folder's name).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scaledyolo.files import atomic_write_text
from scaledyolo.logs import LOGGER
from scaledyolo.train.plots import plot_results
from scaledyolo.train.recording import write_csv_atomic

MLFLOW_ENV = "SCALEDYOLO_MLFLOW"


class CSVLogger:
    """results.csv, one row per epoch (and results.png beside it unless plots are off)."""

    def on_fit_epoch_end(self, trainer: Any) -> None:
        path = trainer.run_dir / "results.csv"
        write_csv_atomic(path, trainer.rows)
        if trainer.args["plots"]:
            plot_results(path)


class JSONLinesLogger:
    """results.jsonl: one JSON object per epoch, the results row, for tools that read JSON."""

    def on_fit_epoch_end(self, trainer: Any) -> None:
        text = "".join(json.dumps(row) + "\n" for row in trainer.rows)
        atomic_write_text(trainer.run_dir / "results.jsonl", text)


class TensorBoardLogger:
    """Every results column as a TensorBoard scalar per epoch, in the run folder."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def on_fit_epoch_end(self, trainer: Any) -> None:
        for key, value in trainer.rows[-1].items():
            if key != "epoch":
                self.writer.add_scalar(key, value, trainer.epoch)
        self.writer.flush()

    def teardown(self, trainer: Any) -> None:
        self.writer.close()


class MLflowLogger:
    """Parameters (arguments and hyper-parameters), per-epoch metrics and the final weights in an MLflow run."""

    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow
        self.active = False

    def on_train_start(self, trainer: Any) -> None:
        mlflow = self.mlflow
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or Path(trainer.args["project"]).name)
        mlflow.start_run(run_name=trainer.run_dir.name)
        self.active = True
        params = {**{f"args/{k}": v for k, v in trainer.args.items()}, **{f"hyp/{k}": v for k, v in trainer.hyp.items()}}
        mlflow.log_params({k: str(v) for k, v in params.items()})

    def on_fit_epoch_end(self, trainer: Any) -> None:
        row = trainer.rows[-1]
        self.mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=trainer.epoch)

    def on_train_end(self, trainer: Any) -> None:
        for name in ("results.csv", "weights/best.pt"):
            if (trainer.run_dir / name).is_file():
                self.mlflow.log_artifact(str(trainer.run_dir / name))
        self.mlflow.end_run()
        self.active = False

    def teardown(self, trainer: Any) -> None:
        if self.active:  # training failed: close the MLflow run as failed rather than leave it running
            self.mlflow.end_run(status="FAILED")
            self.active = False


def _tensorboard_writer(run_dir: Path) -> Any:
    """A SummaryWriter in the run folder when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))


def _mlflow() -> Any:
    """The mlflow module when it is installed and not switched off, else None."""
    if os.environ.get(MLFLOW_ENV, "1").strip() in ("0", "false", "False", "no"):
        return None
    try:
        import mlflow
    except ImportError:
        return None
    return mlflow


def default_loggers(run_dir: Path) -> list[object]:
    """The loggers of a run in `run_dir`: CSV and JSON lines always, TensorBoard and MLflow when installed."""
    loggers: list[object] = [CSVLogger(), JSONLinesLogger()]
    writer = _tensorboard_writer(run_dir)
    if writer is not None:
        loggers.append(TensorBoardLogger(writer))
    mlflow = _mlflow()
    if mlflow is not None:
        LOGGER.info("mlflow: logging this run (%s=0 turns it off)", MLFLOW_ENV)
        loggers.append(MLflowLogger(mlflow))
    return loggers

"""The practitioner's training options (issue 15 items 4 and 6): callbacks and loggers, --patience,
--optimizer, --single-cls, --linear-lr, --save-period, --hyp KEY=VALUE, --resume without a path,
--exist-ok, --seed/--deterministic, --rect validation, --evolve; and a failing rank 0 under DDP.

Trainings are 1-6 epochs of yolov4-tiny at 64 px on 8 synthetic images (one batch per epoch);
where only the trainer's decisions matter, validation is replaced by a fixed metric sequence.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from scaledyolo.cli import main as cli_main
from scaledyolo.data.synthetic import make_synthetic_dataset
from scaledyolo.errors import UserError
from scaledyolo.hyp import load_hyp
from scaledyolo.train import evolve as evolve_mod
from scaledyolo.train import trainer as trainer_mod
from scaledyolo.train.callbacks import EVENTS, Callbacks
from scaledyolo.interop.checkpoint import model_from_checkpoint, read_checkpoint
from scaledyolo.train.loggers import TensorBoardLogger
from scaledyolo.train.schedule import Schedule, build_optimizer
from scaledyolo.train.trainer import train

SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = dict(img=64, batch=8, device="cpu", workers=0, noautoanchor=True, plots=False)


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=8, n_val=4, img_size=96, seed=1)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _fixed_validation(monkeypatch: pytest.MonkeyPatch, map50_by_epoch: list[float]) -> None:
    """Validation replaced by a given mAP50 per epoch (mAP50-95 = half of it), through the real hooks."""
    def validate(self):  # noqa: ANN001, ANN202
        self.fire("on_val_start")
        value = map50_by_epoch[min(self.epoch, len(map50_by_epoch) - 1)]
        self.metrics = {"map50": value, "map": value / 2, "precision": value, "recall": value}
        self.fire("on_val_end")
        return self.metrics

    monkeypatch.setattr(trainer_mod.Trainer, "_validate", validate)


# --------------------------------------------------------------------------- callbacks and loggers


def test_callbacks_accept_mappings_objects_and_aliases() -> None:
    calls = []

    class Mine:
        def on_train_start(self, trainer):  # noqa: ANN001, ANN201
            calls.append(("object", trainer))

    cb = Callbacks()
    cb.add_all(Mine())
    cb.add_all({"on_epoch_end": lambda t: calls.append(("alias", t)), "on_fit_end": [lambda t: calls.append(("end", t))]})
    cb.run("on_train_start", 1)
    cb.run("on_fit_epoch_end", 2)
    cb.run("on_train_end", 3)
    assert calls == [("object", 1), ("alias", 2), ("end", 3)]
    with pytest.raises(ValueError, match="on_train_start"):
        cb.add("on_trian_start", print)
    with pytest.raises(TypeError, match="no method named after"):
        cb.add_all(object())


def test_tensorboard_logger_writes_every_column_per_epoch() -> None:
    class Writer:
        def __init__(self) -> None:
            self.scalars, self.closed = [], False

        def add_scalar(self, key, value, step):  # noqa: ANN001, ANN201
            self.scalars.append((key, value, step))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    writer = Writer()
    logger = TensorBoardLogger(writer)
    trainer = types.SimpleNamespace(rows=[{"epoch": 4, "metrics/mAP50": 0.5, "train/box_loss": 0.1}], epoch=4)
    logger.on_fit_epoch_end(trainer)
    logger.teardown(trainer)
    assert writer.scalars == [("metrics/mAP50", 0.5, 4), ("train/box_loss", 0.1, 4)] and writer.closed


def test_patience_stops_on_a_plateau_with_events_and_loggers(data_yaml: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Fitness rises for two epochs then stays flat: --patience 2 ends the 8-epoch run after epoch 4.
    The callbacks see every event in order, the JSON-lines and (fake) MLflow loggers every epoch."""
    _fixed_validation(monkeypatch, [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    mlflow = types.ModuleType("mlflow")
    mlflow.calls = []
    for fn in ("set_experiment", "start_run", "log_params", "log_metrics", "log_artifact", "end_run"):
        setattr(mlflow, fn, lambda *a, _fn=fn, **k: mlflow.calls.append((_fn, a, k)))
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    events = []
    recorder = {e: (lambda t, _e=e: events.append((_e, t.epoch))) for e in EVENTS if e != "on_train_batch_start"}
    run = train("yolov4-tiny", str(data_yaml), epochs=8, project=tmp_path, name="p", patience=2,
                callbacks=[recorder], **FAST)
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]  # best at epoch 1, two flat epochs after it
    names = [e for e, _ in events]
    assert names[:3] == ["on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"]
    assert names[-2:] == ["on_train_end", "teardown"]
    per_epoch = ["on_train_epoch_start", "on_train_batch_end", "on_train_epoch_end", "on_val_start", "on_val_end",
                 "on_model_save", "on_fit_epoch_end"]
    assert names[3:-2] == per_epoch * 4
    lines = (run / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3]
    assert json.loads(lines[1])["metrics/mAP50"] == pytest.approx(0.2)
    logged = [c for c in mlflow.calls if c[0] == "log_metrics"]
    assert [c[2]["step"] for c in logged] == [0, 1, 2, 3] and logged[1][1][0]["metrics/mAP50"] == pytest.approx(0.2)
    params = next(c for c in mlflow.calls if c[0] == "log_params")[1][0]
    assert params["hyp/lr0"] == "0.01" and params["args/patience"] == "2"
    assert mlflow.calls[-1][0] == "end_run" and mlflow.calls[-1][2] == {}
    with pytest.raises(UserError, match="stopped early"):
        train(resume=run)


def test_mlflow_switched_off_and_a_failed_run_closed_as_failed(data_yaml: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = types.ModuleType("mlflow")
    mlflow.calls = []
    for fn in ("set_experiment", "start_run", "log_params", "log_metrics", "log_artifact", "end_run"):
        setattr(mlflow, fn, lambda *a, _fn=fn, **k: mlflow.calls.append((_fn, k)))
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)

    def stop(trainer):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("yolov4-tiny", str(data_yaml), epochs=2, project=tmp_path, val=False, callbacks=[{"on_train_epoch_end": stop}],
              **FAST)
    assert mlflow.calls[-1] == ("end_run", {"status": "FAILED"})
    mlflow.calls.clear()
    monkeypatch.setenv("SCALEDYOLO_MLFLOW", "0")
    train("yolov4-tiny", str(data_yaml), epochs=1, project=tmp_path, val=False, **FAST)
    assert mlflow.calls == []


# --------------------------------------------------------------------------- optimizer, schedule, hyp


def test_adam_and_adamw_follow_the_official_adam(data_yaml: Path) -> None:
    from scaledyolo import build_model

    model = build_model("yolov4-tiny", num_classes=2)
    hyp = load_hyp(["lr0=0.001", "momentum=0.9"])
    sgd = build_optimizer(model, hyp, 16, 4)
    for name, cls in (("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)):
        opt = build_optimizer(model, hyp, 16, 4, name)
        assert type(opt) is cls
        assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in sgd.param_groups]
        assert all(g["betas"] == (0.9, 0.999) and g["initial_lr"] == 0.001 for g in opt.param_groups)
        assert [g["weight_decay"] for g in opt.param_groups] == [0.0, sgd.param_groups[1]["weight_decay"], 0.0]
        Schedule(hyp, 10, 5, 16).apply(opt, 0, 0)  # warmup: SGD's momentum ramps, Adam's beta1 stays
        assert "momentum" not in opt.param_groups[0] and opt.param_groups[0]["betas"][0] == 0.9
    with pytest.raises(ValueError, match="SGD, Adam, AdamW"):
        build_optimizer(model, hyp, 16, 4, "RMSprop")


def test_linear_and_cosine_lr_schedules() -> None:
    hyp = load_hyp(["lrf=0.2"])
    cos, linear = Schedule(hyp, 10, 5, 64), Schedule(hyp, 10, 5, 64, "linear")
    assert cos.lr_factor(0) == linear.lr_factor(0) == 1.0
    assert linear.lr_factor(5) == pytest.approx(0.6) and cos.lr_factor(5) == pytest.approx(0.6)
    assert linear.lr_factor(2.5) == pytest.approx(0.8) and cos.lr_factor(2.5) == pytest.approx(0.2 + 0.8 * 0.8536, abs=1e-3)
    assert linear.lr_factor(10) == pytest.approx(0.2) and cos.lr_factor(10) == pytest.approx(0.2)


def test_hyp_overrides_are_checked_against_the_known_keys(data_yaml: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert load_hyp(["finetune", "lr0=0.02", "mosaic=0.5"]) == {**load_hyp("finetune"), "lr0": 0.02, "mosaic": 0.5}
    for words, needle in ((["lr00=0.02"], "lr00 (did you mean lr0?)"), (["lr0=fast"], "'fast' is not a number"),
                          (["scratch", "finetune"], "one recipe or file"), (["=1"], "KEY=VALUE")):
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
            load_hyp(words)
    code = cli_main(["train", "--data", str(data_yaml), "--hyp", "scratch", "mosiac=0.5", "--project", str(tmp_path)])
    assert code == 2 and "mosiac (did you mean mosaic?)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before any run folder was made


# --------------------------------------------------------------------------- CLI flags end to end


def test_cli_options_reach_the_run(data_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--optimizer AdamW --single-cls --linear-lr --save-period 1 --hyp ... --rect --seed, in one 2-epoch run."""
    from scaledyolo.data import loader

    val_rect = []
    real = loader.create_dataloader

    def spy(cfg, split, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if split == "val":
            val_rect.append(kwargs["rect"])
        return real(cfg, split, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "create_dataloader", spy)
    args = ["train", "--model", "yolov4-tiny", "--data", str(data_yaml), "--img", "64", "--epochs", "2", "--batch", "8",
            "--device", "cpu", "--workers", "0", "--noautoanchor", "--project", str(tmp_path), "--name", "o",
            "--optimizer", "AdamW", "--single-cls", "--linear-lr", "--save-period", "1", "--seed", "3",
            "--hyp", "scratch", "lr0=0.002", "mosaic=0.5", "--rect"]
    assert cli_main(args) == 0
    run = tmp_path / "o"
    saved = yaml.safe_load((run / "args.yaml").read_text())
    assert {k: saved[k] for k in ("optimizer", "single_cls", "lr_schedule", "save_period", "seed", "rect", "hyp")} == \
        {"optimizer": "AdamW", "single_cls": True, "lr_schedule": "linear", "save_period": 1, "seed": 3, "rect": True,
         "hyp": ["scratch", "lr0=0.002", "mosaic=0.5"]}
    hyp = yaml.safe_load((run / "hyp.yaml").read_text())
    assert hyp["lr0"] == 0.002 and hyp["mosaic"] == 0.5
    last = read_checkpoint(run / "weights" / "last.pt")
    assert last["names"] == ["item"] and model_from_checkpoint(last).detect.nc == 1
    assert all("betas" in g and "momentum" not in g for g in last["optimizer"]["param_groups"])
    assert (run / "weights" / "epoch1.pt").is_file() and (run / "weights" / "epoch2.pt").is_file()
    assert val_rect == [True]
    assert cli_main(args[:-1] + ["--epochs", "1", "--name", "sq", "--noval"]) == 0 and val_rect == [True]
    assert cli_main(args[:-1] + ["--epochs", "1", "--name", "sq2"]) == 0 and val_rect == [True, False]


def test_resume_without_a_path_takes_the_latest_run(data_yaml: Path, tmp_path: Path) -> None:
    def interrupt_after_first_epoch(trainer):  # noqa: ANN001, ANN202
        if trainer.epoch == 0:
            raise KeyboardInterrupt

    assert train("yolov4-tiny", str(data_yaml), epochs=1, project=tmp_path, name="old", val=False, **FAST)
    with pytest.raises(KeyboardInterrupt):
        train("yolov4-tiny", str(data_yaml), epochs=3, project=tmp_path, name="new", val=False,
              callbacks=[{"on_fit_epoch_end": interrupt_after_first_epoch}], **FAST)
    assert [r["epoch"] for r in _rows(tmp_path / "new")] == ["0"]
    assert cli_main(["train", "--resume", "--project", str(tmp_path), "--workers", "0"]) == 0
    assert [r["epoch"] for r in _rows(tmp_path / "new")] == ["0", "1", "2"]
    assert [r["epoch"] for r in _rows(tmp_path / "old")] == ["0"]
    with pytest.raises(UserError, match="nothing to resume"):
        train(resume=True, project=tmp_path / "empty")


def test_exist_ok_and_deterministic_repeat_a_run_in_place(data_yaml: Path, tmp_path: Path) -> None:
    seen = []
    spy = {"on_train_start": lambda t: seen.append(torch.are_deterministic_algorithms_enabled())}
    weights = []
    for _ in range(2):
        run = train("yolov4-tiny", str(data_yaml), epochs=1, project=tmp_path, name="d", exist_ok=True,
                    deterministic=True, seed=5, val=False, callbacks=[spy], **FAST)
        weights.append(read_checkpoint(run / "weights" / "last.pt")["state_dict"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()  # restored afterwards
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    changed = train("yolov4-tiny", str(data_yaml), epochs=1, project=tmp_path, name="d", exist_ok=True,
                    deterministic=True, seed=6, val=False, **FAST)
    other = read_checkpoint(changed / "weights" / "last.pt")["state_dict"]
    assert not all(torch.equal(weights[0][k], other[k]) for k in other)  # the seed does change the run


# --------------------------------------------------------------------------- evolve


def test_mutation_keeps_limits_and_changes_something() -> None:
    rng = np.random.default_rng(0)
    base = evolve_mod.constrain(load_hyp("scratch"))
    assert base == {**load_hyp("scratch"), **{k: round(v, 5) for k, v in base.items()}}
    for _ in range(50):
        child = evolve_mod.mutate(base, rng)
        assert any(child[k] != base[k] for k in evolve_mod.META)
        assert all(low <= child[k] <= high for k, (_, low, high) in evolve_mod.META.items())
        assert all(child[k] == base[k] for k, (gain, _, _) in evolve_mod.META.items() if gain == 0)
        assert child["nbs"] == base["nbs"]
    rows = [{"fitness": f, "id": i} for i, f in enumerate([0.1, 0.5, 0.3, 0.2, 0.4, 0.0, 0.05])]
    picks = {evolve_mod.select_parent(rows, rng)["id"] for _ in range(200)}
    assert picks <= {1, 2, 3, 4} and len(picks) >= 2  # top 5 by fitness; the weakest of them has weight 0


def test_evolve_two_generations_writes_csv_plot_and_best_hyp(data_yaml: Path, tmp_path: Path) -> None:
    code = cli_main(["train", "--model", "yolov4-tiny", "--data", str(data_yaml), "--img", "64", "--epochs", "1",
                     "--batch", "8", "--device", "cpu", "--workers", "0", "--noautoanchor", "--project", str(tmp_path),
                     "--name", "evo", "--evolve", "2"])
    assert code == 0
    out = tmp_path / "evo"
    rows = evolve_mod.read_evolve_csv(out / "evolve.csv")
    assert [r["generation"] for r in rows] == [1.0, 2.0]
    assert rows[0]["lr0"] == 0.01 and any(rows[1][k] != rows[0][k] for k in evolve_mod.META)
    for gen, row in zip(("gen1", "gen2"), rows):
        last = _rows(out / gen)[-1]
        assert row["fitness"] == pytest.approx(float(last["fitness"]), abs=1e-6)
        assert not (out / gen / "weights").exists()
    best = max(rows, key=lambda r: r["fitness"])
    evolved = load_hyp(out / "hyp_evolved.yaml")
    assert evolved == pytest.approx({k: best[k] for k in evolved}, abs=1e-5)
    assert (out / "evolve.png").stat().st_size > 1000
    with pytest.raises(UserError, match="--noval"):
        evolve_mod.evolve(1, data=str(data_yaml), val=False, project=tmp_path)


# --------------------------------------------------------------------------- a failing rank 0 under DDP


RANK0_RAISES = """
import sys
from scaledyolo.train.trainer import train

def broken(trainer):
    raise ValueError("rank 0 callback broke")

try:
    train("yolov4-tiny", sys.argv[1], img=64, epochs=3, batch=4, device="cpu", project=sys.argv[2], name="x",
          workers=0, noautoanchor=True, plots=False, callbacks=[{"on_train_batch_end": broken}])
    print("finished", flush=True)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", flush=True)
"""


def test_an_exception_on_rank0_in_training_stops_the_other_rank(data_yaml: Path, tmp_path: Path) -> None:
    """Rank 0 raises in the middle of an epoch (outside any rank-0-only section); the process-group
    timeout is 600 s, so only the abort on rank 0's error path lets rank 1 end within the test's limit."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(RANK0_RAISES))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
               OMP_NUM_THREADS="1", PYTHONPATH=SRC, CUDA_VISIBLE_DEVICES="", SCALEDYOLO_DDP_TIMEOUT="600")
    procs = [subprocess.Popen([sys.executable, str(script), str(data_yaml), str(tmp_path)],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    last = [(out.strip().splitlines() or [f"(nothing; stderr: {err[-800:]})"])[-1] for out, err in outs]
    assert last[0] == "ValueError: rank 0 callback broke", last
    assert last[1].startswith("RunError: stopped because another process of this run failed"), last

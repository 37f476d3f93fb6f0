"""Training: loss and target assignment, schedule, EMA, checkpoints, end-to-end runs, resume, DDP."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scaledyolo import build_model
from scaledyolo.cli import main as cli_main
from scaledyolo.data.synthetic import make_synthetic_dataset
from scaledyolo.errors import RunError, UserError
from scaledyolo.hyp import load_hyp
from scaledyolo.train import loop as loop_mod
from scaledyolo.train import resume as resume_mod
from scaledyolo.train import trainer as trainer_mod
from scaledyolo.interop.checkpoint import model_from_checkpoint, read_checkpoint
from scaledyolo.train.ema import ModelEMA
from scaledyolo.train.loss import ComputeLoss
from scaledyolo.train.recording import CSV_KEYS
from scaledyolo.train.schedule import Schedule, accumulation, build_optimizer
from scaledyolo.train.trainer import train


@pytest.fixture(scope="module")
def csp() -> torch.nn.Module:
    return build_model("yolov4-csp", num_classes=2).train()


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return build_model("yolov4-tiny", num_classes=2).train()


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=8, n_val=4, img_size=96, seed=1)


def _raw_maps(model: torch.nn.Module, img: int, batch: int = 2) -> list[torch.Tensor]:
    """Random raw maps of the train-mode shapes for an `img` x `img` input (no forward pass needed)."""
    det = model.detect
    return [torch.randn(batch, det.na, img // s, img // s, det.no, requires_grad=True) for s in det.strides]


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- loss


def test_assignment_scaled_rule_by_hand(csp: torch.nn.Module) -> None:
    # 64 px input: strides 8/16/32 -> grids 8/4/2. A 16x16 px box centred at (0.3, 0.55):
    # level 0 (grid units: centre 2.4, 4.4; size 2x2): anchors 12x16, 19x36, 40x28 px have
    # worst ratios 1.33, 2.25, 2.5 < 4 -> all 3 match; fractional parts 0.4 < 0.5 add the left
    # and upper neighbour cells -> 3 anchors x 3 cells = 9. Level 1 anchors (36x75 ...) give
    # ratios >= 4.69 and level 2 larger still -> no assignment.
    targets = torch.tensor([[1, 1, 0.3, 0.55, 0.25, 0.25]])
    built = ComputeLoss(csp).build_targets(_raw_maps(csp, 64), targets)
    assert [len(level[0]) for level in built] == [9, 0, 0]
    b, a, gj, gi, tbox, anchors, cls = built[0]
    assert set(zip(gi.tolist(), gj.tolist())) == {(2, 4), (1, 4), (2, 3)}
    assert sorted(a.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert b.eq(1).all() and cls.eq(1).all()
    # offsets stay inside the -0.5..1.5 reach of the 2 sigma - 0.5 decoding
    assert tbox[:, :2].min() > -0.5 and tbox[:, :2].max() < 1.5
    assert torch.allclose(tbox[:, 2:], torch.tensor([2.0, 2.0]).expand(9, 2))


def test_assignment_tiny_centre_cell_only(tiny: torch.nn.Module) -> None:
    # 128 px: strides 16/32 -> grids 8/4. A 32x32 px box at (0.3, 0.55): level 0 anchors
    # 23x27, 37x58, 81x82 (ratios 1.39, 1.81, 2.56) match, in the centre cell (2, 4) only.
    targets = torch.tensor([[0, 0, 0.3, 0.55, 0.25, 0.25]])
    built = ComputeLoss(tiny).build_targets(_raw_maps(tiny, 128), targets)
    b, a, gj, gi, tbox, _, _ = built[0]
    assert sorted(a.tolist()) == [0, 1, 2]
    assert set(zip(gi.tolist(), gj.tolist())) == {(2, 4)}
    assert tbox[:, :2].min() >= 0 and tbox[:, :2].max() < 1
    # level 1 anchors 81x82 (2.56), 135x169 (5.3), 344x319: only the first matches
    assert built[1][1].tolist() == [0]


def test_loss_finite_positive_and_gradients_flow(csp: torch.nn.Module, tiny: torch.nn.Module) -> None:
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.4], [1, 1, 0.2, 0.7, 0.1, 0.2]])
    for model, img in ((csp, 64), (tiny, 128)):
        maps = _raw_maps(model, img)
        loss, parts = ComputeLoss(model)(maps, targets)
        assert loss.shape == (1,) and torch.isfinite(loss) and loss.item() > 0
        assert parts.shape == (4,) and not parts.requires_grad
        assert torch.isclose(parts[:3].sum(), parts[3])
        assert torch.isclose(loss, parts[3] * 2)  # scaled by the batch size
        loss.backward()
        assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)


def test_loss_without_targets_is_objectness_only(tiny: torch.nn.Module) -> None:
    loss, parts = ComputeLoss(tiny)(_raw_maps(tiny, 64), torch.zeros(0, 6))
    assert parts[0] == 0 and parts[2] == 0 and parts[1] > 0 and torch.isfinite(loss)


def test_better_box_gives_lower_box_loss(tiny: torch.nn.Module) -> None:
    targets = torch.tensor([[0, 0, 0.53, 0.53, 0.25, 0.25]])
    cl = ComputeLoss(tiny)
    maps = [torch.zeros(1, 3, 128 // s, 128 // s, 7) for s in (16, 32)]
    bad = cl(maps, targets)[1][0]
    b, a, gj, gi, tbox, anchors, _ = cl.build_targets(maps, targets)[0]
    good_maps = [m.clone() for m in maps]
    for k in range(len(b)):  # write the exact darknet-decoding inverse of each target into its cell
        xy = (tbox[k, :2] + 0.025) / 1.05
        good_maps[0][b[k], a[k], gj[k], gi[k], :2] = torch.log(xy / (1 - xy))
        good_maps[0][b[k], a[k], gj[k], gi[k], 2:4] = torch.log(tbox[k, 2:] / anchors[k])
    good = cl(good_maps, targets)[1][0]
    assert good < bad


def test_loss_falls_over_steps_on_real_images(tmp_path: Path) -> None:
    from scaledyolo.data.loader import create_dataloader

    root = Path(__file__).parent / "fixtures" / "raccoon"
    imgs = sorted((root / "images").glob("*.jpg"))[:2]
    (tmp_path / "data.yaml").write_text(
        f"path: {root}\ntrain: {{images: images, annotations: annotations}}\n"
        f"val: {{images: images, annotations: annotations}}\nnames: [raccoon]\n")
    loader, _ = create_dataloader(str(tmp_path / "data.yaml"), "train", 96, 2)
    batch_imgs, targets, _, _ = next(iter(loader))
    assert len(imgs) and len(targets)
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=1).train()
    cl = ComputeLoss(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    x = batch_imgs.float() / 255
    losses = []
    for _ in range(30):
        loss, _ = cl(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


# --------------------------------------------------------------------------- schedule, optimizer, EMA


def test_optimizer_groups(tiny: torch.nn.Module) -> None:
    hyp = load_hyp("scratch")
    opt = build_optimizer(tiny, hyp, total_batch=16, accumulate=4)
    bn, weights, biases = (g["params"] for g in opt.param_groups)
    n_bn = sum(1 for m in tiny.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert len(bn) == n_bn and all(p.dim() == 1 for p in bn)
    assert all(p.dim() == 4 for p in weights)
    assert all(p.dim() == 1 for p in biases) and len(biases) == n_bn + 2  # BN biases + 2 output convs
    assert len(bn) + len(weights) + len(biases) == len(list(tiny.parameters()))
    assert opt.param_groups[0]["weight_decay"] == 0 and opt.param_groups[2]["weight_decay"] == 0
    assert opt.param_groups[1]["weight_decay"] == pytest.approx(5e-4 * 16 * 4 / 64)
    assert opt.defaults["nesterov"]


def test_schedule_warmup_and_cosine(tiny: torch.nn.Module) -> None:
    hyp = load_hyp("scratch")
    assert accumulation(64, 16, 100) == 4 and accumulation(64, 8, 2) == 2 and accumulation(64, 128, 9) == 1
    # 16 images, batch 8: warmup 3 epochs = 6 iterations, under a third of 150 epochs x 2
    s = Schedule(hyp, epochs=150, iters_per_epoch=2, total_batch=8)
    assert s.warmup_iters == 6
    # accumulation capped at one epoch (2 of the nominal 8 batches): each step's lr makes up the rest
    assert s.accumulate == 2 and s.lr_scale == 4
    assert Schedule(hyp, epochs=10, iters_per_epoch=100, total_batch=16).lr_scale == 1
    # 3 epochs of 2 iterations would be all of a 3-epoch run: capped at a third
    assert Schedule(hyp, epochs=3, iters_per_epoch=2, total_batch=8).warmup_iters == 2
    s = Schedule(hyp, epochs=10, iters_per_epoch=100, total_batch=16)
    opt = build_optimizer(tiny, hyp, 16, s.accumulate)
    seen = []
    for ni in range(0, 300, 10):
        acc = s.apply(opt, ni, ni // 100)
        seen.append((acc, opt.param_groups[1]["lr"], opt.param_groups[2]["lr"], opt.param_groups[0]["momentum"]))
    assert s.warmup_iters == 300  # 3 epochs x 100 iterations, under a third of 1000
    warm = seen  # iterations 0..290
    assert warm[0][1] == 0 and warm[0][2] == pytest.approx(0.1) and warm[0][3] == pytest.approx(0.8)
    same_epoch = [(x, y) for k, (x, y) in enumerate(zip(warm, warm[1:])) if (k + 1) % 10]
    assert all(y[1] > x[1] for x, y in same_epoch)  # weights' lr rises (the cosine target steps per epoch)
    assert all(y[2] < x[2] for x, y in same_epoch)  # bias lr falls from 0.1
    assert warm[0][0] == 1 and max(x[0] for x in warm) <= s.accumulate
    assert s.apply(opt, 500, 5) == s.accumulate
    assert opt.param_groups[0]["momentum"] == hyp["momentum"]
    assert s.lr_factor(0) == pytest.approx(1.0) and s.lr_factor(10) == pytest.approx(hyp["lrf"])
    factors = [s.lr_factor(e) for e in range(11)]
    assert all(b < a for a, b in zip(factors, factors[1:]))
    assert opt.param_groups[1]["lr"] == pytest.approx(hyp["lr0"] * s.lr_factor(5))


def test_ema_ramp_and_average() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model)
    assert ema.decay(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    assert ema.decay(100000) == pytest.approx(0.9999, rel=1e-6)
    before = ema.ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 5
    ema.update(model)
    d = ema.decay(1)
    assert torch.allclose(ema.ema[0].weight, before * d + (1 - d) * model[0].weight)
    assert ema.ema[1].num_batches_tracked == model[1].num_batches_tracked  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.ema.parameters())


# --------------------------------------------------------------------------- end to end


def test_cli_train_writes_run_folder(data_yaml: Path, tmp_path: Path) -> None:
    code = cli_main(["train", "--model", "yolov4-tiny", "--data", str(data_yaml), "--img", "128", "--epochs", "2",
                     "--batch", "4", "--device", "cpu", "--project", str(tmp_path), "--name", "run",
                     "--workers", "0"])
    assert code == 0
    run = tmp_path / "run"
    for name in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "results.jsonl", "args.yaml",
                 "train_batch0.jpg", "labels.jpg", "PR_curve.png", "confusion_matrix.png",
                 "confusion_matrix_normalized.png", "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert (run / name).is_file(), name
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["0", "1"] and list(rows[0])[0] == "epoch"
    assert all(math.isfinite(float(r["train/total_loss"])) for r in rows)
    assert all(float(r["val/total_loss"]) > 0 for r in rows)  # validation losses recorded each epoch
    ckpt = torch.load(run / "weights" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["names"] == ["circle", "square", "triangle", "star"]
    model = model_from_checkpoint(read_checkpoint(run / "weights" / "best.pt")).eval()
    x = torch.rand(1, 3, 128, 128)
    raw = model_from_checkpoint(ckpt, use_ema=False).eval()
    assert model(x).shape == raw(x).shape == (1, 3 * (8 * 8 + 4 * 4), 9)
    # a second run with the same name gets a new folder
    assert cli_main(["train", "--model", "yolov4-tiny", "--data", str(data_yaml), "--img", "64", "--epochs", "1",
                     "--batch", "8", "--device", "cpu", "--project", str(tmp_path), "--name", "run",
                     "--workers", "0", "--noval", "--noautoanchor"]) == 0
    assert (tmp_path / "run2" / "weights" / "last.pt").is_file() and len(_rows(run)) == 2


def test_resume_after_interruption_one_row_per_epoch(data_yaml: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    original = trainer_mod.Trainer.end_epoch

    def end_then_die(self, epoch, *args):  # noqa: ANN001
        original(self, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "end_epoch", end_then_die)
    with pytest.raises(KeyboardInterrupt):
        train("yolov4-tiny", str(data_yaml), img=64, epochs=4, batch=8, device="cpu", project=tmp_path, name="r",
              workers=0, noautoanchor=True)
    monkeypatch.setattr(trainer_mod.Trainer, "end_epoch", original)
    run = tmp_path / "r"
    before = _rows(run)
    assert [r["epoch"] for r in before] == ["0", "1"]
    with open(run / "results.csv", "a") as f:  # a stale row, as if killed after writing results.csv
        f.write("2" + ",0" * (len(CSV_KEYS) - 1) + "\n")
    saved = read_checkpoint(run / "weights" / "last.pt")
    assert saved["epoch"] == 1
    assert train(resume=run, workers=0) == run
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[:2] == before
    last = read_checkpoint(run / "weights" / "last.pt")
    assert last["epoch"] == 3 and last["extra"]["ema_updates"] > saved["extra"]["ema_updates"]
    with pytest.raises(UserError, match="already finished"):
        train(resume=run / "weights" / "last.pt")


def test_non_finite_loss_skips_then_stops(data_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    def nan_loss(self, preds, targets):  # noqa: ANN001
        loss = sum(p.sum() for p in preds) * float("nan")
        return loss.reshape(1), torch.zeros(4)

    monkeypatch.setattr(loop_mod, "MAX_BAD_STEPS", 3)
    monkeypatch.setattr(ComputeLoss, "__call__", nan_loss)
    with caplog.at_level("WARNING", logger="scaledyolo"), pytest.raises(RunError, match="diverged"):
        train("yolov4-tiny", str(data_yaml), img=64, epochs=1, batch=2, device="cpu", project=tmp_path,
              workers=0, noautoanchor=True)
    assert any("non-finite loss" in r.getMessage() for r in caplog.records)


def test_bad_arguments_are_user_errors(data_yaml: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a model name"):
        train("yolov9-huge", str(data_yaml), project=tmp_path)
    with pytest.raises(UserError, match="nothing to resume"):
        train(resume=tmp_path / "nope")
    with pytest.raises(UserError, match="torchrun --nproc_per_node 2"):
        train("yolov4-tiny", str(data_yaml), device="0,1", project=tmp_path)



def test_gpu_requests_are_checked_against_the_gpus_there(data_yaml: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA mocked either way, so this holds on a GPU machine as on a CPU one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no GPU"):
        train("yolov4-tiny", str(data_yaml), device="0", project=tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="only 2 GPU"):
        train("yolov4-tiny", str(data_yaml), device="cuda:2", project=tmp_path)


def test_amp_scaler_state_is_saved_and_restored(data_yaml: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 AMP forced on the CPU (GradScaler runs there): last.pt holds the scaler, resume reloads it."""
    monkeypatch.setattr(trainer_mod, "autocast_dtype", lambda precision, device: torch.float16)
    original = trainer_mod.Trainer.end_epoch

    def end_then_stop(self, epoch, *args):  # noqa: ANN001
        original(self, epoch, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "end_epoch", end_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train("yolov4-tiny", str(data_yaml), img=64, epochs=2, batch=4, device="cpu", project=tmp_path, name="amp",
              workers=0, noautoanchor=True, val=False, plots=False)
    saved = read_checkpoint(tmp_path / "amp" / "weights" / "last.pt")["scaler"]
    # two steps ran: the scale backed off (an fp16 overflow) or the growth tracker counted them
    assert saved["scale"] != 65536.0 or saved["_growth_tracker"] > 0
    restored = {}
    original_restore = trainer_mod.Trainer.restore

    def restore_and_look(self, ckpt):  # noqa: ANN001
        original_restore(self, ckpt)
        restored.update(self.scaler.state_dict())
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "restore", restore_and_look)
    with pytest.raises(KeyboardInterrupt):
        train(resume=tmp_path / "amp", workers=0)
    assert restored == saved


def test_cpu_runs_do_not_pin_memory(data_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinning opens a CUDA context on GPU 0; a --device cpu run on a GPU machine must not."""
    from scaledyolo.data import loader

    pins = []
    real = loader.create_dataloader

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003
        pins.append(kwargs.get("pin_memory"))
        made = real(*args, **kwargs)
        pins.append(made[0].pin_memory)
        return made

    monkeypatch.setattr(trainer_mod, "create_dataloader", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as far as the loader knows
    monkeypatch.setattr(resume_mod, "rng_state", lambda: {})  # no real GPU to read RNG states from
    train("yolov4-tiny", str(data_yaml), img=64, epochs=1, batch=4, device="cpu", project=tmp_path, workers=0,
          noautoanchor=True, plots=False, precision="fp32")
    assert len(pins) == 4 and not any(pins)  # train and val loaders, asked and made without pinning


def test_torchrun_two_process_gloo(data_yaml: Path, tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "scaledyolo", "train", "--model", "yolov4-tiny", "--data", str(data_yaml), "--img", "64",
           "--epochs", "1", "--batch", "4", "--device", "cpu", "--project", str(tmp_path), "--name", "ddp",
           "--workers", "0", "--noautoanchor"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert (run / "weights" / "last.pt").is_file() and not (tmp_path / "ddp2").exists()
    assert [r["epoch"] for r in _rows(run)] == ["0"]
    assert read_checkpoint(run / "weights" / "last.pt")["extra"]["args"]["batch"] == 4


def test_kill_9_then_resume_finishes_every_epoch(data_yaml: Path, tmp_path: Path) -> None:
    import signal
    import time

    cmd = [sys.executable, "-m", "scaledyolo", "train", "--model", "yolov4-tiny", "--data", str(data_yaml),
           "--img", "64", "--epochs", "6", "--batch", "4", "--device", "cpu", "--project", str(tmp_path),
           "--name", "k", "--workers", "0", "--noautoanchor"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "k" / "results.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results.is_file() and len(results.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = read_checkpoint(tmp_path / "k" / "weights" / "last.pt")["epoch"]
    assert done in (1, 2)  # the last complete epoch, whatever moment the kill hit
    assert train(resume=tmp_path / "k", workers=0) == tmp_path / "k"
    assert [r["epoch"] for r in _rows(tmp_path / "k")] == [str(e) for e in range(6)]
    assert (tmp_path / "k" / "weights" / "best.pt").is_file()
    assert not list((tmp_path / "k" / "weights").glob(".*.tmp"))


def test_weights_alone_give_their_architecture_and_keep_all_but_the_class_layers(tmp_path: Path) -> None:
    """`train --weights tiny.pt` on a 1-class dataset: tiny (not the CLI's default csp), every tensor
    but the two output convolutions carried over."""
    from scaledyolo.interop.checkpoint import save_checkpoint
    from scaledyolo.train.building import build_train_model

    pretrained = build_model("yolov4-tiny", num_classes=80).eval()
    save_checkpoint(tmp_path / "tiny.pt", pretrained)
    model, note = build_train_model(None, 1, str(tmp_path / "tiny.pt"))
    assert model.spec.name == "yolov4-tiny" and model.detect.nc == 1
    old, new = pretrained.state_dict(), model.state_dict()
    differ = sorted(k for k in new if new[k].shape != old[k].shape)
    assert len(differ) == 4 and all(new[k].shape[0] == 3 * (5 + 1) for k in differ), differ  # the output convs
    assert all(torch.equal(new[k], old[k]) for k in new if k not in differ)

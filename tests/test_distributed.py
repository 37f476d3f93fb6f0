"""Many GPUs, many nodes: the parts of torchrun training that can be checked without a GPU.

The backend and the device of each process with CUDA mocked; real two-process gloo runs for the
process-group timeout, a failing rank 0 and sharded validation; SyncBatchNorm and bf16 models
through the BatchNorm folding of the inference paths.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from scaledyolo import build_model
from scaledyolo.data.loader import BatchShardSampler, create_dataloader
from scaledyolo.data.synthetic import make_synthetic_dataset
from scaledyolo.errors import UserError
from scaledyolo.models.inference import prepare_for_inference
from scaledyolo.train import distributed

SRC = str(Path(__file__).resolve().parents[1] / "src")


# --------------------------------------------------------------------------- backend and devices (CUDA mocked)


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A machine with 4 GPUs as far as the code can tell; records set_device and init_process_group."""
    calls: dict = {"set_device": [], "init": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(torch.device(d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls["init"].append(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: int(os.environ["RANK"]))
    monkeypatch.setattr(dist, "get_world_size", lambda: int(os.environ["WORLD_SIZE"]))
    return calls


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, local_rank: int, local_world: int, nodes: int = 1) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(local_world * nodes))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)


def test_cpu_processes_use_gloo_on_a_gpu_machine(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    _torchrun_env(monkeypatch, local_rank=1, local_world=2)
    rank, world, local_rank, device = distributed.init_distributed("cpu")
    assert (rank, world, local_rank, device) == (1, 2, 1, torch.device("cpu"))
    assert fake_gpus["init"][0]["backend"] == "gloo" and fake_gpus["set_device"] == []


@pytest.mark.parametrize("device,local_rank,expected", [("2,3", 0, 2), ("2,3", 1, 3), ("1,0", 0, 1), ("1,0", 1, 0),
                                                        ("", 1, 1), ("cuda", 0, 0)])
def test_local_ranks_take_the_listed_gpus(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch, device: str,
                                          local_rank: int, expected: int) -> None:
    _torchrun_env(monkeypatch, local_rank=local_rank, local_world=2)
    *_, got = distributed.init_distributed(device)
    assert got == torch.device("cuda", expected)
    assert fake_gpus["set_device"] == [got]  # collectives and the pin-memory thread use this GPU
    assert fake_gpus["init"][0]["backend"] == "nccl"


def test_multi_node_maps_by_local_rank(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    _torchrun_env(monkeypatch, local_rank=3, local_world=4, nodes=2)
    monkeypatch.setenv("RANK", "7")  # the last process of the second node
    assert distributed.init_distributed(None)[:3] == (7, 8, 3)
    assert fake_gpus["set_device"] == [torch.device("cuda", 3)]


@pytest.mark.parametrize("device,local_world,message", [
    ("0", 2, "names one GPU for 2 processes"),
    ("cuda:1", 2, "names one GPU for 2 processes"),
    ("0,1", 4, "names 2 GPUs for 4 processes"),
    ("1,1", 2, "listed twice"),
    ("", 8, r"8 processes on this node but only 4 GPU\(s\) visible"),
    ("5,6", 2, r"only 4 GPU\(s\) visible"),
])
def test_device_lists_that_cannot_serve_every_process(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch, device: str,
                                                      local_world: int, message: str) -> None:
    _torchrun_env(monkeypatch, local_rank=0, local_world=local_world)
    with pytest.raises(UserError, match=message):
        distributed.init_distributed(device)
    assert fake_gpus["init"] == []  # before the process group: no rank is left waiting


def test_cuda_requested_on_a_cpu_machine_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _torchrun_env(monkeypatch, local_rank=0, local_world=2)
    with pytest.raises(UserError, match="no GPU"):
        distributed.init_distributed("0,1")


def test_process_group_timeout_is_explicit_and_generous(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    _torchrun_env(monkeypatch, local_rank=0, local_world=2)
    distributed.init_distributed("cpu")
    assert fake_gpus["init"][0]["timeout"] >= timedelta(hours=1)  # NCCL's own default is 10 minutes
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    distributed.init_distributed("cpu")
    assert fake_gpus["init"][1]["timeout"] == timedelta(seconds=90)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match=distributed.TIMEOUT_ENV):
        distributed.init_distributed("cpu")


# --------------------------------------------------------------------------- real gloo processes


RANK0_WORK = """
import sys, time
from scaledyolo.train.distributed import init_distributed, run_on_main
from scaledyolo.errors import RunError

def work():
    time.sleep(float(sys.argv[2]))
    if sys.argv[1] == "fail":
        raise ValueError("rank 0 broke")
    return "done"

rank, world, _, _ = init_distributed("cpu")
try:
    result = run_on_main(work, rank == 0, world)
    print(f"rank {rank}: {result}", flush=True)
except Exception as exc:
    print(f"rank {rank}: {type(exc).__name__}: {exc}", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(script: str, args: list[str], timeout_s: float, tmp_path: Path) -> list[str]:
    """Run `script` as ranks 0 and 1 of a gloo group (no torchrun agent that would kill the others);
    the last line each printed."""
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
               LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1", PYTHONPATH=SRC, CUDA_VISIBLE_DEVICES="",
               **{distributed.TIMEOUT_ENV: str(timeout_s)})
    procs = [subprocess.Popen([sys.executable, str(path), *args], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    return [(out.strip().splitlines() or [f"(nothing; stderr: {err[-500:]})"])[-1] for out, err in outs]


def test_slow_rank0_work_waits_for_the_configured_timeout(tmp_path: Path) -> None:
    # rank 0 works alone for 2 s: within a 20 s timeout the others wait for it ...
    assert _two_processes(RANK0_WORK, ["ok", "2"], 20, tmp_path) == ["rank 0: done", "rank 1: None"]
    # ... and the timeout that bounds the wait is the one set through init_distributed (here 0.5 s)
    rank0, rank1 = _two_processes(RANK0_WORK, ["ok", "4"], 0.5, tmp_path)
    assert rank1.startswith("rank 1:") and "None" not in rank1 and "imed out" in rank1, rank1


def test_an_error_on_rank0_stops_the_others_at_once(tmp_path: Path) -> None:
    # a 600 s timeout: only run_on_main's message can end rank 1 within the test's limit
    rank0, rank1 = _two_processes(RANK0_WORK, ["fail", "0"], 600, tmp_path)
    assert rank0 == "rank 0: ValueError: rank 0 broke"
    assert rank1 == "rank 1: RunError: stopped because rank 0 failed (its error is reported above)"


SHARDED_VAL = """
import json, sys
import torch
from scaledyolo import build_model
from scaledyolo.data.loader import create_dataloader
from scaledyolo.eval.validate import validate
from scaledyolo.train.distributed import init_distributed

rank, world, _, _ = init_distributed("cpu")
torch.manual_seed(0)
model = build_model("yolov4-tiny", num_classes=4).eval()
loader, dataset = create_dataloader(sys.argv[1], "val", 64, 2, rect=True, stride=32, shard=(rank, world))
r = validate(model, loader, dataset, conf=0.001, iou=0.65, coco=False, progress=False, gather=True)
print(json.dumps({"shard": len(loader.sampler), "images": r["images"], "map50": r["map50"], "map": r["map"],
                  "ids": [str(i) for i in r["image_ids"]], "boxes": sum(len(p) for p in r["predictions"]),
                  "confusion": r["confusion_matrix"]}), flush=True)
"""


def test_sharded_validation_equals_one_process(tmp_path: Path) -> None:
    import json

    from scaledyolo.eval.validate import validate

    data = make_synthetic_dataset(tmp_path / "syn", n_train=2, n_val=5, img_size=64, seed=3)
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=4).eval()
    loader, dataset = create_dataloader(str(data), "val", 64, 2, rect=True, stride=32)
    one = validate(model, loader, dataset, conf=0.001, iou=0.65, coco=False, progress=False)
    ranks = [json.loads(line) for line in _two_processes(SHARDED_VAL, [str(data)], 120, tmp_path)]
    assert [r["shard"] for r in ranks] == [3, 2]  # whole batches of 2: images 0, 1, 4 on rank 0; 2, 3 on rank 1
    for r in ranks:  # every rank scores the union, exactly as the single process did
        assert r["images"] == one["images"] == 5
        assert r["ids"] == [str(i) for i in one["image_ids"]]
        assert r["boxes"] == sum(len(p) for p in one["predictions"]) > 0
        assert r["map50"] == pytest.approx(one["map50"]) and r["map"] == pytest.approx(one["map"])
        assert r["confusion"] == one["confusion_matrix"]


def test_batch_shards_cover_the_split_once_in_whole_batches() -> None:
    for n, batch, world in ((10, 4, 2), (7, 2, 3), (3, 4, 2), (16, 4, 4)):
        shards = [list(BatchShardSampler(n, batch, r, world)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        for r, shard in enumerate(shards):
            assert len(BatchShardSampler(n, batch, r, world)) == len(shard)
            batches = {i // batch for i in shard}
            assert all(b % world == r for b in batches)  # whole batches, round robin


# --------------------------------------------------------------------------- SyncBatchNorm and bf16 in inference


def _randomized_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs() / (b.float().abs() + 1)).max().item()


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4-p5"])
def test_syncbn_model_fuses_and_prepares_like_the_plain_one(name: str) -> None:
    plain = _randomized_bn(build_model(name, num_classes=3))
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain)).eval()  # as a DDP run's model
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = plain(x)
        fused = copy.deepcopy(synced).fuse()
        assert not any(isinstance(m.bn, nn.SyncBatchNorm) for m in fused.modules() if hasattr(m, "conv"))
        assert _rel_err(fused(x), ref) < 1e-4
    assert _rel_err(prepare_for_inference(synced, img_size=64)(x), ref) < 1e-4


def test_fuse_keeps_a_bf16_model_bf16() -> None:
    model = _randomized_bn(build_model("yolov4-tiny", num_classes=3))
    x = torch.rand(1, 3, 64, 64)
    low = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        ref, unfused = model(x), low(x.bfloat16())
        fused = low.fuse()
        assert {p.dtype for p in fused.parameters()} == {torch.bfloat16}
        out = fused(x.bfloat16())
    assert out.dtype == torch.bfloat16
    # folding adds no more error than bf16 itself makes
    assert _rel_err(out, ref) < 2 * _rel_err(unfused, ref) + 1e-3

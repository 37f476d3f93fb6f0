"""FLOPs, per-stage table and the paper's analysis, checked against an independent profiler (thop)."""

import json
import subprocess
import sys

import pytest
import torch

from optional_components import require
from scaledyolo import build_model
from scaledyolo.models.analysis import count_flops, model_report, paper_report

thop = require("thop")


@pytest.mark.parametrize("name,size", [("yolov4-tiny", 416), ("yolov4-csp", 640)])
def test_gflops_agree_with_thop(name, size):
    model = build_model(name).eval()
    macs, _ = thop.profile(model, (torch.zeros(1, 3, size, size),), verbose=False)
    ours = count_flops(model, size)
    assert abs(ours - 2 * macs / 1e9) / (2 * macs / 1e9) < 0.03


def test_flops_scale_with_input_area():
    model = build_model("yolov4-tiny")
    assert count_flops(model, 640) == pytest.approx(count_flops(model, 320) * 4, rel=1e-3)


def test_stage_table_adds_up():
    report = model_report("yolov4-p5", img_size=256)
    assert sum(s["params"] for s in report["stages"]) == report["params"] == 70_834_012
    assert sum(s["gflops"] for s in report["stages"]) == pytest.approx(report["gflops"], rel=1e-6)
    names = [s["stage"] for s in report["stages"]]
    assert names[:6] == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5"]
    assert report["stages"][5]["output"] == [1, 1024, 8, 8]  # stride 32 at 256 px


def test_paper_csp_reductions_reproduced():
    report = paper_report(b=128, size=16, k=8)
    per_layer = {r["layer"]: r["reduction_per_layer_pct"] for r in report["csp_flops"]}
    assert per_layer == {"Res": 23.5, "ResX": 46.7, "Dark": 50.0}
    assert report["osa_cio"]["csposa_pcb"]["cio_m"] < report["osa_cio"]["osa"]["cio_m"]


def test_info_cli_json():
    out = subprocess.run([sys.executable, "-m", "scaledyolo", "info", "yolov4-tiny", "--img", "320", "--json"],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["params"] == 6_056_606
    assert data["gflops"] == pytest.approx(count_flops(build_model("yolov4-tiny"), 320), rel=1e-4)


def test_info_cli_unknown_model_is_one_line_error():
    out = subprocess.run([sys.executable, "-m", "scaledyolo", "info", "yolov9-giant"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "yolov4-csp" in out.stderr
    assert "Traceback" not in out.stderr

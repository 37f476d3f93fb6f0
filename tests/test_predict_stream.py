"""predict (issue 15 item 2): stream=True generator in constant memory, vid_stride, image URLs read as
images, agnostic NMS / max_det / drawing options, and the CLI flags with per-class counts and --verbose."""

from __future__ import annotations

import functools
import gc
import http.server
import inspect
import json
import os
import re
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from scaledyolo.errors import UserError
from scaledyolo.media import count_frames, is_image_url, read_image_url
from scaledyolo.predict import format_counts, picture_line, predict
from stand_in_detectors import SquareFinder

FRAMES = 30


class TwoClassOverlap(nn.Module):
    """Two near-identical boxes, one scored as class 0 and one as class 1: agnostic NMS keeps one."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.names = ["cat", "dog"]
        self.spec = SimpleNamespace(strides=[8, 16, 32], img_size=64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.tensor([[32.0, 32.0, 20.0, 20.0, 0.9, 0.9, 0.05],
                             [33.0, 32.0, 20.0, 20.0, 0.9, 0.05, 0.8]])
        return rows.expand(len(x), 2, 7).clone()


def white_square(h: int, w: int, i: int) -> np.ndarray:
    """A grey BGR/RGB frame with a white square that moves with `i`."""
    frame = np.full((h, w, 3), 60, np.uint8)
    cv2.rectangle(frame, (10 + 2 * i, 20), (50 + 2 * i, 60), (255, 255, 255), -1)
    return frame


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (160, 96))
    for i in range(FRAMES):
        writer.write(white_square(96, 160, i))
    writer.release()
    return path


def test_stream_is_a_generator_that_keeps_no_results(video):
    model = SquareFinder(128)
    batch = 4
    stream = predict(model, str(video), stream=True, batch=batch, fast=False)
    assert inspect.isgenerator(stream)
    refs: list[weakref.ref] = []
    most_alive = 0
    frames = []
    for res in stream:
        frames.append(res.frame)
        refs.append(weakref.ref(res))
        del res
        gc.collect()
        most_alive = max(most_alive, sum(r() is not None for r in refs))
    assert frames == list(range(FRAMES))
    assert most_alive <= batch  # only the batch being handed out is alive: nothing accumulates
    gc.collect()
    assert all(r() is None for r in refs)
    kept = predict(model, str(video), batch=batch, fast=False)
    assert isinstance(kept, list) and [r.frame for r in kept] == frames
    assert all(r.orig_img is not None and len(r) == 1 for r in kept)


def test_vid_stride_takes_every_nth_frame(video):
    results = predict(SquareFinder(128), str(video), vid_stride=7, fast=False)
    assert [r.frame for r in results] == [0, 7, 14, 21, 28]
    assert count_frames([video], vid_stride=7) == 5
    # the box follows the square: frame k's square starts at x = 10 + 2k (in these unscaled pixels)
    assert [round(float(r.boxes.xyxy[0, 0])) for r in results] == pytest.approx([10 + 2 * k for k in
                                                                                 (0, 7, 14, 21, 28)], abs=2)
    with pytest.raises(UserError, match="vid_stride"):
        predict(SquareFinder(128), str(video), vid_stride=0)


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over a tmp folder: (folder, base URL)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_image_urls_are_read_as_images(http_folder, monkeypatch):
    folder, base = http_folder
    picture = white_square(90, 120, 5)
    cv2.imwrite(str(folder / "sq.png"), picture)
    url = f"{base}/sq.png?size=large"
    assert is_image_url(url) and not is_image_url(f"{base}/live") and not is_image_url("rtsp://cam/a.jpg")
    (res,) = predict(SquareFinder(128), url, fast=False)
    assert res.path == url and res.frame is None and res.orig_shape == (90, 120)
    np.testing.assert_allclose(res.boxes.xyxy[0], [20, 20, 61, 61], atol=1)
    np.testing.assert_array_equal(read_image_url(url), cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
    with pytest.raises(UserError, match="larger than 100 bytes"):
        read_image_url(url, max_bytes=100)
    with pytest.raises(UserError, match="cannot download"):
        read_image_url(f"{base}/missing.jpg")
    (folder / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match="junk.jpg"):
        read_image_url(f"{base}/junk.jpg")
    monkeypatch.setenv("SCALEDYOLO_MAX_IMAGE_PIXELS", "1000")  # the decoder's pixel limit applies to URLs too
    with pytest.raises(UserError, match="too large"):
        read_image_url(url)


def test_agnostic_nms_max_det_and_drawing_options():
    blank = np.zeros((64, 64, 3), np.uint8)
    (per_class,) = predict(TwoClassOverlap(), blank, fast=False)
    (agnostic,) = predict(TwoClassOverlap(), blank, fast=False, agnostic_nms=True)
    (capped,) = predict(TwoClassOverlap(), blank, fast=False, max_det=1)
    assert sorted(per_class.boxes.cls.tolist()) == [0, 1]
    assert agnostic.boxes.cls.tolist() == [0] and capped.boxes.cls.tolist() == [0]
    assert per_class.verbose() == "1 cat, 1 dog"
    assert picture_line(agnostic, 1, 2).startswith("image 1/2 array: 64x64 1 cat, ")
    full, no_conf, no_labels = agnostic.plot(), agnostic.plot(conf=False), agnostic.plot(labels=False)
    assert not np.array_equal(full, no_conf) and not np.array_equal(no_conf, no_labels)
    assert (np.abs(agnostic.plot(line_width=4).astype(int) - blank).sum()
            > np.abs(agnostic.plot(line_width=1).astype(int) - blank).sum())
    assert format_counts({"person": 3, "bus": 1}) == "bus 1, person 3" and format_counts({}) == "none"


def test_cli_flags_counts_and_verbose_lines(tmp_path, video):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"im{i}.jpg"), white_square(96, 128, i))
    common = [sys.executable, "-m", "scaledyolo", "predict", "--weights", "yolov4-tiny", "--img", "64",
              "--conf", "1e-5", "--max-det", "3", "--json"]
    headless = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([*common, "--source", str(images), "--save-dir", str(tmp_path / "out"), "--verbose",
                           "--save-crop", "--show", "--agnostic-nms", "--hide-conf", "--line-width", "1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=headless)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["images"] == 2 and summary["objects"] == 6 and sum(summary["classes"].values()) == 6
    lines = [line for line in done.stderr.splitlines() if "image " in line and ".jpg: 64x64 " in line]
    assert len(lines) == 2 and lines[0].split("image ", 1)[1].startswith("1/2 im0.jpg: 64x64 ")
    assert sum("--show: no display" in line for line in done.stderr.splitlines()) == 1
    crops = list((tmp_path / "out" / "crops").rglob("*.jpg"))
    assert len(crops) == 6 and {c.parent.name for c in crops} == set(summary["classes"])
    strided = subprocess.run([*common, "--source", str(video), "--nosave", "--vid-stride", "10"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert strided.returncode == 0, strided.stderr
    assert json.loads(strided.stdout)["images"] == 3
    plain = subprocess.run([*common[:-1], "--source", str(images), "--nosave"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    counted = re.search(r"2 pictures, 6 objects \(([^)]*)\)", plain.stdout)
    assert counted, plain.stdout
    pairs = [part.rsplit(" ", 1) for part in counted.group(1).split(", ")]
    assert sum(int(n) for _, n in pairs) == 6 and [name for name, _ in pairs] == sorted(name for name, _ in pairs)

"""The released COCO yolov4-tiny.weights on two real photos: our raw output is OpenCV DNN's.

Random weights (tests/test_interop.py) check the layer mapping; real weights add real activations
(trained BN statistics, confident scores, large exp() sizes) and the released file's own header.
The files live in ../shared beside the repository and are never copied into it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scaledyolo
from scaledyolo.data.augment import letterbox
from scaledyolo.media import read_image

sys.path.insert(0, str(Path(__file__).parent))
from test_interop import assert_rows_match_opencv, opencv_rows, our_rows  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS_SHA256 = "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87"
SIZE = 416  # the cfg's own input size

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (released weights and photos) is absent")


@pytest.fixture(scope="module")
def released_cfg() -> Path:
    """The released cfg, with its weights checked once against the published sha256."""
    cfg = SHARED / "weights" / "yolov4-tiny.cfg"
    digest = hashlib.sha256(cfg.with_suffix(".weights").read_bytes()).hexdigest()
    assert digest == WEIGHTS_SHA256, f"{cfg.with_suffix('.weights')} is not the released file"
    return cfg


@pytest.mark.parametrize("photo", ["bus.jpg", "zidane.jpg"])
def test_released_tiny_weights_match_opencv_dnn_on_real_photos(released_cfg, photo):
    model = scaledyolo.load(released_cfg)
    assert model.spec.name == "yolov4-tiny" and model.names[0] == "person" and len(model.names) == 80
    square, _, _ = letterbox(read_image(SHARED / "images" / photo), SIZE)
    blob = torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1))[None].astype(np.float32) / 255)
    with torch.no_grad():
        out = model(blob)[0].numpy()
    assert_rows_match_opencv(our_rows(model, out, SIZE), opencv_rows(model, released_cfg, blob), atol=1e-3)
    assert out[:, 4].max() > 0.9  # a real photo: the released model is confident somewhere

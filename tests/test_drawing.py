"""scaledyolo.drawing: the one palette, box drawing, batch mosaics and the picture writer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from scaledyolo.drawing import class_color, draw_boxes, tile_batch, write_image
from scaledyolo.errors import UserError


def test_class_colors_are_stable_distinct_and_cycle():
    first = [class_color(c) for c in range(21)]
    assert len(set(first)) == 21
    assert class_color(21) == class_color(0) and class_color(np.int64(3)) == first[3]
    assert all(0 <= v <= 255 for rgb in first for v in rgb)


def test_draw_boxes_draws_in_class_colour_on_a_copy():
    canvas = np.zeros((200, 300, 3), np.uint8)
    out = draw_boxes(canvas, [[50, 80, 150, 180]], [2], scores=[0.9], names=["a", "b", "c"], line_width=3)
    assert canvas.max() == 0, "the input picture is left alone"
    assert tuple(out[130, 50]) == class_color(2), "left edge of the box"
    band = (out[60:80, 50:90] == class_color(2)).all(2)
    assert band.mean() > 0.5 and band[:, 0].all(), "label background above the box"
    assert (out[60:80, 50:90] == 255).all(2).any(), "white text on the dark green"
    assert out[130, 100].max() == 0, "inside of the box stays untouched"
    unlabelled = draw_boxes(canvas, [[50, 80, 150, 180]], [2], line_width=3, labels=False)
    assert unlabelled[60:77, 50:150].max() == 0


def test_label_of_a_box_at_the_top_edge_goes_inside_and_stays_in_the_picture():
    canvas = np.zeros((100, 100, 3), np.uint8)
    out = draw_boxes(canvas, [[80, 0, 99, 50]], [0], names=["a long class name"])
    label_rows = np.nonzero((out == class_color(0)).all(2).sum(1) > 30)[0]
    assert label_rows.size and label_rows.min() <= 1, "label drawn inside the box at the top"
    assert (out[:, :5] == class_color(0)).all(2).any(), "label shifted left to stay inside the picture"


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_tile_batch_size_limits(batch):
    imgs = np.random.default_rng(0).integers(0, 255, (batch, 3, 64, 96), dtype=np.uint8)
    small = tile_batch(imgs, np.zeros((0, 6)), min_width=512, cols=2)
    assert small.shape[1] >= 512 and small.dtype == np.uint8
    big = tile_batch(np.repeat(imgs, 1, 0).repeat(10, 2).repeat(10, 3), np.zeros((0, 6)), max_size=800)
    assert max(big.shape[:2]) <= 800


def test_tile_batch_reads_normalised_or_pixel_targets_and_skips_low_scores():
    imgs = torch.zeros((2, 3, 64, 96))
    norm = np.array([[1, 1, 0.5, 0.5, 0.5, 0.5]])
    pixels = norm * [1, 1, 96, 64, 96, 64]
    a = tile_batch(imgs, norm, names=["x", "y"])
    assert (a != tile_batch(imgs, np.zeros((0, 6)))).any(), "the box is drawn"
    assert (a == tile_batch(imgs, pixels, names=["x", "y"])).all()
    low = np.concatenate([pixels, [[0.2]]], 1)
    assert (tile_batch(imgs, low) == tile_batch(imgs, np.zeros((0, 7)))).all()
    assert (tile_batch(imgs, low * [1, 1, 1, 1, 1, 1, 4]) != tile_batch(imgs, np.zeros((0, 7)))).any()


def test_write_image_round_trips_and_names_the_file_on_a_bad_suffix(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255
    path = write_image(tmp_path / "out" / "red.png", rgb)
    assert tuple(cv2.imread(str(path))[5, 5]) == (0, 0, 255), "written as BGR on disk, so it reads back red"
    with pytest.raises(UserError) as err:
        write_image(tmp_path / "red.notapicture", rgb)
    assert "red.notapicture" in str(err.value.path) and not list(tmp_path.glob("*.notapicture"))
    assert not list(tmp_path.rglob("*.tmp*"))

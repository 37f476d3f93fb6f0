"""The warp with perspective and zoom keeps boxes on their objects; box_candidates judges the zoomed box.

Pixel tests: pure-colour rectangles on grey noise, warped, then every pixel of a colour must lie in
its box and the box must be their extent (a perspective warp maps a rectangle to a convex
quadrilateral, whose bounding box is that of its four warped corners).
"""

from __future__ import annotations

import numpy as np
import pytest

from scaledyolo.data import augment as aug

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


class Extremes:
    """A stand-in for the random generator whose every `uniform(lo, hi)` draw is `hi` (or `lo`)."""

    def __init__(self, high: bool = True) -> None:
        self.high = high

    def uniform(self, lo: float, hi: float) -> float:
        return hi if self.high else lo


def rectangles(h: int, w: int, boxes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(100, 130, (h, w, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        img[y1:y2, x1:x2] = COLOURS[k]
    return img, np.array([[k, *b] for k, b in enumerate(boxes)], dtype=np.float64)


def colour_mask(img: np.ndarray, k: int) -> np.ndarray:
    return (np.abs(img.astype(np.int16) - np.array(COLOURS[k])) < 40).all(2)


@pytest.mark.parametrize("high", [True, False])
@pytest.mark.parametrize("perspective", [0.0005, 0.001])
def test_perspective_warp_with_zoom_keeps_boxes_on_their_rectangles(high, perspective):
    img, labels = rectangles(200, 260, [[20, 30, 90, 100], [150, 40, 230, 90], [90, 120, 170, 180]])
    scale = 0.3
    m, zoom = aug.perspective_matrix(img.shape[:2], img.shape[:2], Extremes(high), 0.0, 0.05, scale, 0.0, perspective)
    assert zoom == pytest.approx(1.3 if high else 0.7) and (m[2, :2] != 0).all()
    out, new = aug.random_perspective(img, labels, Extremes(high), degrees=0.0, translate=0.05, scale=scale,
                                      shear=0.0, perspective=perspective)
    assert len(new) == 3
    affine_only = aug.transform_boxes(labels[:, 1:], np.vstack((m[:2], [0, 0, 1])), img.shape[:2])
    assert np.abs(affine_only - new[:, 1:]).max() > 3  # the perspective divide moves these boxes visibly
    for cls, x1, y1, x2, y2 in new:
        ys, xs = np.nonzero(colour_mask(out, int(cls)))
        assert len(xs) > 100
        inside = (xs >= x1 - 1) & (xs <= x2) & (ys >= y1 - 1) & (ys <= y2)
        assert inside.mean() > 0.995, "object pixels outside their box"
        extent = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose(extent, [x1, y1, x2, y2], atol=1.5, err_msg="box is not its object's extent")


def test_box_candidates_compares_with_the_zoomed_box():
    """Zoom 3 about the centre of a 100 x 100 picture: x' = 3 (x - 50) + 50. A 15 x 15 box at
    (25, 25) becomes 45 x 45 with only 20 x 20 inside the picture: 0.198 of its zoomed area, so it
    goes (area_thr 0.2), though 400 px is 1.8 times its original area."""
    img, labels = rectangles(100, 100, [[25, 25, 40, 40], [30, 30, 40, 40]])
    _, new = aug.random_perspective(img, labels, Extremes(True), scale=2.0)
    assert new[:, 0].tolist() == [1]  # the second keeps 400 / 900 of its zoomed area
    np.testing.assert_allclose(new[0, 1:], [0, 0, 20, 20], atol=1e-9)
    # zoom 0.4: a box shrinks to 0.16 of its area, but keeps all of its zoomed area: it stays
    img, labels = rectangles(100, 100, [[20, 20, 60, 70]])
    _, new = aug.random_perspective(img, labels, Extremes(False), scale=0.6)
    np.testing.assert_allclose(new[0, 1:], [0.4 * 20 + 30, 0.4 * 20 + 30, 0.4 * 60 + 30, 0.4 * 70 + 30], atol=1e-9)


def test_box_candidates_rules():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 4], [0, 0, 10, 10]], float)
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 4.4, 4.4], [0, 0, 100, 4], [0, 0, 4.5, 4.5]], float)
    # kept; a side of 2 px is not > 2; 19.4 % of the area; aspect 25 >= 20; 20.25 % of the area
    assert aug.box_candidates(before, after).tolist() == [True, False, False, False, True]


def test_warp_without_change_returns_the_same_pixels_and_boxes():
    img, labels = rectangles(64, 80, [[5, 6, 30, 40]])
    out, new = aug.random_perspective(img.copy(), labels, np.random.default_rng(0))  # all ranges zero
    assert np.array_equal(out, img) and np.array_equal(new, labels)


def test_normalised_and_pixel_labels_round_trip_exactly():
    labels = np.array([[2, 0.5, 0.25, 0.2, 0.1], [0, 0.1, 0.9, 0.05, 0.15]])
    pix = aug.normalized_to_pixels(labels, 200, 100, padw=7, padh=3)
    np.testing.assert_allclose(pix[0], [2, 87, 23, 127, 33], atol=1e-12)
    back = aug.pixels_to_normalized(pix - [0, 7, 3, 7, 3], 200, 100)
    np.testing.assert_allclose(back, labels, atol=1e-12)


def test_flips_move_pixels_and_labels_together():
    img, labels = rectangles(40, 60, [[0, 0, 10, 20]])
    norm = aug.pixels_to_normalized(labels, 60, 40)
    for flipud, fliplr in ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        out, new = aug.flip(img.copy(), norm.copy(), np.random.default_rng(0), flipud, fliplr)
        box = aug.normalized_to_pixels(new, 60, 40)[0]
        ys, xs = np.nonzero(colour_mask(out, 0))
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box[1:], atol=1e-9)


def test_mixup_blends_and_keeps_both_label_sets():
    a, b = np.full((8, 8, 3), 200, np.uint8), np.full((8, 8, 3), 100, np.uint8)
    la, lb = np.ones((1, 5)), np.zeros((2, 5))
    r = np.random.default_rng(3).beta(8.0, 8.0)
    img, labels = aug.mixup(a, la, b, lb, np.random.default_rng(3))
    assert (img == int(200 * r + 100 * (1 - r))).all() and labels.tolist() == la.tolist() + lb.tolist()


def test_hsv_with_zero_gains_changes_nothing_and_value_gain_brightens():
    img = np.random.default_rng(0).integers(30, 200, (16, 16, 3), dtype=np.uint8)
    same = img.copy()
    aug.augment_hsv(same, np.random.default_rng(0), 0.0, 0.0, 0.0)
    assert np.array_equal(same, img)

    class High:
        def uniform(self, lo, hi, size):
            return np.full(size, hi)

    brighter = img.copy()
    aug.augment_hsv(brighter, High(), 0.0, 0.0, 0.3)
    assert brighter.astype(int).sum() > img.astype(int).sum() * 1.2

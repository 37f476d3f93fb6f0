"""Each random draw of the augmentations lands where its parameter says: the defaults are the identity,
translation reaches both extremes on both axes, HSV gains multiply hue, saturation and value.

`test_augment.py` checks that warped boxes stay on their objects; these check the draws themselves,
with a generator stub that returns chosen values (so each expected result is a hand computation).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scaledyolo.data import augment as aug


class Draws:
    """A generator stub: `uniform(lo, hi)` gives `hi` or `lo`; `uniform(lo, hi, n)` gives the stored values."""

    def __init__(self, high: bool = True, values: list[float] | None = None) -> None:
        self.high, self.values = high, values

    def uniform(self, lo: float, hi: float, size: int | None = None):
        if size is not None:
            return np.array(self.values, dtype=np.float64)
        return hi if self.high else lo


def warp_point(m: np.ndarray, x: float, y: float) -> tuple[float, float]:
    px, py, pw = m @ np.array([x, y, 1.0])
    return px / pw, py / pw


def test_the_default_warp_is_the_identity():
    """Every augmentation parameter defaults to 0 (no change): same size in and out gives the identity."""
    m, zoom = aug.perspective_matrix((48, 80), (48, 80), np.random.default_rng(3))
    assert zoom == 1.0
    np.testing.assert_allclose(m, np.eye(3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("high", [True, False])
def test_translation_reaches_its_extremes_on_both_axes(high):
    """The input centre lands on (0.5 +- translate) x the output size, on x and on y independently."""
    h, w, translate = 60, 100, 0.2
    m, _ = aug.perspective_matrix((40, 30), (h, w), Draws(high), translate=translate)
    sign = 1 if high else -1
    np.testing.assert_allclose(warp_point(m, 15, 20), ((0.5 + sign * translate) * w, (0.5 + sign * translate) * h),
                               rtol=0, atol=1e-9)


def test_no_boxes_warp_to_no_boxes():
    out = aug.transform_boxes(np.zeros((0, 4)), np.eye(3), (10, 10))
    assert out.shape == (0, 4) and out.dtype == np.float64


def hsv_colour(h: int, s: int, v: int) -> np.ndarray:
    return cv2.cvtColor(np.full((4, 4, 3), (h, s, v), np.uint8), cv2.COLOR_HSV2BGR)


@pytest.mark.parametrize("draws,expected", [
    ([0.0, 1.0, 0.0], (60, 150, 200)),   # saturation x 1.5
    ([0.0, -1.0, 0.0], (60, 50, 200)),   # saturation x 0.5
    ([0.0, 0.0, -1.0], (60, 100, 100)),  # value x 0.5
    ([1.0, 0.0, 0.0], (90, 100, 200)),   # hue x 1.5 (OpenCV hue is 0-179)
])
def test_hsv_gains_multiply_each_channel(draws, expected):
    img = hsv_colour(60, 100, 200)
    aug.augment_hsv(img, Draws(values=draws), hgain=0.5, sgain=0.5, vgain=0.5)
    got = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[0, 0].astype(int)
    # one uint8 rounding each way through BGR: within 2 levels (3 on hue, which is coarser)
    assert np.abs(got - np.array(expected)).max() <= 3, (got, expected)
    assert np.abs(got[1:] - np.array(expected[1:])).max() <= 2, (got, expected)

"""`predict --show`: annotated pictures in an OpenCV window, where there is a display to open one on.

The package depends on opencv-python-headless, whose `imshow` raises: a missing GUI backend (or, on
Linux, no X11/Wayland display) is told once in a logged warning and the run goes on without a window.
"""

from __future__ import annotations

import logging
import os
import sys

import cv2
import numpy as np

LOGGER = logging.getLogger("scaledyolo.predict")
WINDOW = "scaledyolo predict"


def display_available() -> bool:
    """Whether a window could appear: on Linux and other X11/Wayland systems a DISPLAY must be set."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Viewer:
    """Shows BGR pictures one after the other in one window; does nothing once a window proved impossible."""

    def __init__(self) -> None:
        self.enabled = display_available()
        if not self.enabled:
            LOGGER.warning("--show: no display here (DISPLAY is not set); pictures are not shown")

    def show(self, picture_bgr: np.ndarray, wait_ms: int = 1) -> None:
        if not self.enabled:
            return
        try:
            cv2.imshow(WINDOW, picture_bgr)
            cv2.waitKey(wait_ms)
        except cv2.error:
            self.enabled = False
            LOGGER.warning("--show: this OpenCV build has no GUI (opencv-python-headless); pictures are not shown")

    def close(self) -> None:
        if self.enabled:
            try:
                cv2.destroyWindow(WINDOW)
            except cv2.error:
                pass

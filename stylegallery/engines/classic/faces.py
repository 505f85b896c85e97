"""Face protection of the classic engine (research/classic.md 5: "a higher W on faces").

Faces are found with OpenCV's bundled Viola-Jones Haar cascade (a boosted classifier shipped inside the OpenCV
wheel, not a neural weight download). Some OpenCV builds have neither the cascade XML nor `cv2.CascadeClassifier`
(OpenCV 5 moved it out of the main modules): then the face boost is skipped with one logged warning.

Notation: face_mask -> the face term added to the content weight map W (E-M step 0).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import cv2
import numpy as np


logger = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]  # (x, y, w, h) in px
DETECT_SIDE = 384  # px: images are searched at most this large (the cascade's cost grows with the pixel count)


def find_cascade() -> str | None:
    """Path of the frontal-face Haar cascade inside the installed OpenCV, or None."""
    candidates: list[str] = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        candidates.append(os.path.join(data.haarcascades, CASCADE_FILE))
    root = os.path.dirname(getattr(cv2, "__file__", "") or "")
    if root:
        for dirpath, _dirs, files in os.walk(root):
            if CASCADE_FILE in files:
                candidates.append(os.path.join(dirpath, CASCADE_FILE))
    return next((c for c in candidates if os.path.isfile(c)), None)


@functools.lru_cache(maxsize=1)
def default_detector() -> Callable[[np.ndarray], list[Box]] | None:
    """A face detector (image -> boxes) from the Haar cascade, or None (with one warning) when unavailable."""
    classifier_cls = getattr(cv2, "CascadeClassifier", None)
    path = find_cascade()
    if classifier_cls is None or path is None:
        what = "cv2.CascadeClassifier" if classifier_cls is None else CASCADE_FILE
        logger.warning("face boost skipped: this OpenCV %s has no %s (install opencv-python-headless<5 to enable it)",
                       cv2.__version__, what)
        return None
    classifier = classifier_cls(path)
    if classifier.empty():
        logger.warning("face boost skipped: could not load the Haar cascade %s", path)
        return None

    def detect(image: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        scale = min(1.0, DETECT_SIDE / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                              interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(16, min(gray.shape) // 20)
        boxes = classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        return [tuple(int(round(v / scale)) for v in b) for b in np.asarray(boxes).reshape(-1, 4)]

    return detect


def face_mask(shape: tuple[int, int], boxes: list[Box]) -> np.ndarray:
    """(H, W) float32 in [0, 1]: a soft ellipse over each face box (slightly taller than the box, for the chin)."""
    hh, ww = shape
    mask = np.zeros((hh, ww), np.float32)
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    for x, y, w, h in boxes:
        cy, cx = y + 0.55 * h, x + 0.5 * w
        ry, rx = 0.65 * h, 0.5 * w
        d2 = ((yy - cy) / max(ry, 1.0)) ** 2 + ((xx - cx) / max(rx, 1.0)) ** 2
        mask = np.maximum(mask, np.clip(1.5 - d2, 0.0, 1.0))  # 1 inside, fades to 0 at 1.5 x the radius
    return mask

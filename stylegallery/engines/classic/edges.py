"""Edge-aware region maps of the classic engine: the stage-1 grid labels snapped to the image's own edges.

Stage 1 clusters features on a grid of 8 px cells, so a nearest-upsampled region map has 8 px staircases that cut
across objects; stage 3 then paints a strip of sky with the roof's style. Each region's indicator is filtered with a
colour guided filter (He, Sun & Tang, ECCV 2010) that takes its edges from the image, and every pixel takes the
region with the highest filtered value.

Notation (code -> He et al.): guide -> I (RGB in [0, 1]), p -> the region indicator, radius -> r, eps -> epsilon,
q -> the filtered indicator a^T I + b.
"""

from __future__ import annotations

import cv2
import numpy as np


SPECKLE_RADIUS = 2  # px


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def snap_labels(labels: np.ndarray, guide: np.ndarray, radius: int, eps: float = 1e-3) -> np.ndarray:
    """(h, w) int labels 0..K-1 on a grid -> (H, W) int32 labels at the guide's size, boundaries on its edges.

    guide: (H, W, 3) float32 RGB in [0, 1]. The filter's linear coefficients are computed at 1/s of the size
    (s = radius // 4, the fast guided filter of He & Sun 2015) and applied at full size. A region that the filter
    would erase keeps its nearest-upsampled pixels, so the set of labels never changes (matches refer to them).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0 or labels.min() < 0:
        raise ValueError(f"labels have shape {labels.shape}: expected a non-empty (h, w) map of labels 0..K-1")
    if guide.ndim != 3 or guide.shape[2] != 3:
        raise ValueError(f"guide has shape {guide.shape}: expected an (H, W, 3) RGB image")
    hh, ww = guide.shape[:2]
    up = cv2.resize(labels.astype(np.int32), (ww, hh), interpolation=cv2.INTER_NEAREST)  # (H, W)
    k = int(labels.max()) + 1
    if k == 1 or radius < 1:
        return up
    img = np.ascontiguousarray(guide, dtype=np.float32)
    step = max(1, radius // 4)
    small = (max(1, round(hh / step)), max(1, round(ww / step)))
    rad = max(1, round(radius / step))
    img_s = cv2.resize(img, small[::-1], interpolation=cv2.INTER_AREA)  # (h', w', 3)
    mean_i = _box(img_s, rad)
    inv = _inverse_covariance(img_s, mean_i, rad, eps)  # (h', w', 3, 3)
    best = np.full((hh, ww), -np.inf, np.float32)
    out = np.zeros((hh, ww), np.int32)
    for r in range(k):
        p = cv2.resize((up == r).astype(np.float32), small[::-1], interpolation=cv2.INTER_AREA)  # (h', w')
        mean_p = _box(p, rad)
        cov_ip = _box(img_s * p[..., None], rad) - mean_i * mean_p[..., None]  # (h', w', 3)
        a = np.einsum("hwij,hwj->hwi", inv, cov_ip)  # (h', w', 3)
        b = mean_p - np.einsum("hwi,hwi->hw", a, mean_i)
        a_full = cv2.resize(_box(a, rad), (ww, hh), interpolation=cv2.INTER_LINEAR)  # (H, W, 3)
        b_full = cv2.resize(_box(b, rad), (ww, hh), interpolation=cv2.INTER_LINEAR)
        q = np.einsum("hwi,hwi->hw", a_full, img) + b_full  # (H, W) the filtered indicator
        q = _box(q, SPECKLE_RADIUS)  # a majority vote over a few px: no isolated pixels in the argmax
        better = q > best
        best[better], out[better] = q[better], r
    for r in np.setdiff1d(np.arange(k), np.unique(out)):  # a region the filter erased keeps its own pixels
        out[up == r] = r
    return out


def _inverse_covariance(img: np.ndarray, mean: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """(Sigma + eps I)^-1 of the guide's colours in each (2 radius + 1)^2 window, (h, w, 3, 3)."""
    hh, ww = img.shape[:2]
    cov = np.empty((hh, ww, 3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            c = _box(img[..., a] * img[..., b], radius) - mean[..., a] * mean[..., b]
            cov[..., a, b] = cov[..., b, a] = c
    cov += eps * np.eye(3, dtype=np.float32)
    return np.linalg.inv(cov)

"""Stage 3 of the neural engine as pure functions on arrays: blending per-region passes, bringing a painting to the
photo's size, keeping colours and faces.

Notation (code -> Ghiasi et al. 2017 / He et al. 2010):
    vectors        -> S_r, the style vector each content region is painted with
    mix_vectors    -> S = s S_style + (1 - s) S_own (Ghiasi et al. section 4, the content-style interpolation)
    masks          -> soft region weights m_k summing to 1 per pixel (feathered indicators)
    passes         -> T(c, S_k): one transformer pass per distinct vector; the result is sum_k m_k T(c, S_k)
    guided_upsample-> up(P) + a (I - up(I_small)): the painting upsampled, plus the photo's missing detail scaled by
                      the guided filter's slope a of the painting on the photo (He, Sun & Tang 2010)
    keep_colours   -> the photo's Lab a, b under the painted L (Ghiasi et al. 5.3 use YUV; Lab is more even)
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def mix_vectors(style: np.ndarray, own: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """(K, d) style vectors, (K, d) the regions' own vectors, (K,) strengths in [0, 1] -> (K, d)."""
    s = np.asarray(strength, dtype=np.float32)[:, None]
    return (s * style + (1.0 - s) * own).astype(np.float32)


def group_vectors(vectors: np.ndarray, sizes: np.ndarray) -> list[tuple[np.ndarray, list[int]]]:
    """Distinct rows of (K, d) `vectors` with the regions using each, largest total size first (one pass each)."""
    groups: dict[bytes, tuple[np.ndarray, list[int]]] = {}
    for r, v in enumerate(vectors):
        key = np.round(v, 5).tobytes()
        groups.setdefault(key, (v, []))[1].append(r)
    return sorted(groups.values(), key=lambda g: -float(sum(sizes[r] for r in g[1])))


def soft_masks(labels: np.ndarray, n_labels: int, sigma: float) -> np.ndarray:
    """(H, W) int labels -> (K, H, W) float32 weights summing to 1 per pixel, feathered by sigma px across borders."""
    masks = np.stack([(labels == k).astype(np.float32) for k in range(n_labels)])  # (K, H, W)
    if sigma > 0:
        masks = np.stack([cv2.GaussianBlur(m, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for m in masks])
    return masks / np.maximum(masks.sum(axis=0, keepdims=True), 1e-6)


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def lightness(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (H, W) Lab L / 100."""
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2Lab)[..., 0] / 100.0


def guided_upsample(painting: np.ndarray, guide_small: np.ndarray, guide: np.ndarray, radius: int = 2,
                    eps: float = 4e-3) -> np.ndarray:
    """The painting (h, w, 3) brought to the guide's size (H, W), its strokes kept and the photo's fine detail added.

    q = up(P) + a_up (I - up(I_small)) per channel: up() is a bicubic upsampling (the strokes as painted), and a is
    the guided filter's local slope of the painting on the photo's lightness I_small (h, w) (He et al. 2010,
    box-filtered, bilinearly upsampled), so the detail the small photo lacked comes back where, and as strongly as,
    the painting follows the photo; flat painted areas (a ~ 0) get none. guide: (H, W) lightness in [0, 1].
    """
    hh, ww = guide.shape
    i = guide_small.astype(np.float32)
    detail = guide - cv2.resize(i, (ww, hh), interpolation=cv2.INTER_CUBIC)  # (H, W) what the small photo lacks
    mean_i = _box(i, radius)
    var_i = _box(i * i, radius) - mean_i * mean_i
    out = cv2.resize(np.ascontiguousarray(painting, dtype=np.float32), (ww, hh), interpolation=cv2.INTER_CUBIC)
    for c in range(3):
        p = np.ascontiguousarray(painting[..., c], dtype=np.float32)
        mean_p = _box(p, radius)
        a = (_box(i * p, radius) - mean_i * mean_p) / (var_i + eps)
        out[..., c] += cv2.resize(_box(a, radius), (ww, hh), interpolation=cv2.INTER_LINEAR) * detail
    return np.clip(out, 0.0, 1.0)


def recolour(painted: np.ndarray, photo: np.ndarray, chroma: np.ndarray | float,
             lightness_share: np.ndarray | float = 0.0) -> np.ndarray:
    """Lab blend: a, b from the photo with weight `chroma`, L from the photo with weight `lightness_share`.

    painted, photo: (H, W, 3) RGB in [0, 1]; chroma, lightness_share: scalars or (H, W) maps in [0, 1].
    keep-colours is chroma=1; face protection is chroma=face mask, lightness_share=0.5 x face mask.
    """
    lab_p = cv2.cvtColor(np.ascontiguousarray(painted, dtype=np.float32), cv2.COLOR_RGB2Lab)
    lab_c = cv2.cvtColor(np.ascontiguousarray(photo, dtype=np.float32), cv2.COLOR_RGB2Lab)
    w_ab = np.asarray(chroma, dtype=np.float32)
    w_l = np.asarray(lightness_share, dtype=np.float32)
    w_ab = w_ab[..., None] if w_ab.ndim == 2 else w_ab
    out = lab_p.copy()
    out[..., 1:] = (1.0 - w_ab) * lab_p[..., 1:] + w_ab * lab_c[..., 1:]
    out[..., 0] = (1.0 - w_l) * lab_p[..., 0] + w_l * lab_c[..., 0]
    return np.clip(cv2.cvtColor(out, cv2.COLOR_Lab2RGB), 0.0, 1.0)


def composite(passes: Sequence[np.ndarray], masks: Sequence[np.ndarray], base: np.ndarray) -> np.ndarray:
    """sum_k m_k P_k + (1 - sum_k m_k) base: the passes painted so far over `base` (H, W, 3)."""
    out = np.zeros_like(base, dtype=np.float32)
    cover = np.zeros(base.shape[:2], np.float32)
    for p, m in zip(passes, masks):
        out += m[..., None] * p
        cover += m
    return np.clip(out + (1.0 - cover)[..., None] * base, 0.0, 1.0)

"""Hand-made features of the classic engine: what stages 1 and 2 see instead of diffusion and DINOv2 features.

Notation (code -> paper symbol / research/classic.md):
    cluster_features -> F_mix (paper 2.1), here Lab colour + local texture statistics + position per grid cell
    merge_features   -> F, the VAE latent z0 of the merge rule (paper 2.2), here Lab / MERGE_LAB_SCALE
    tokens           -> the DINOv2 block tokens (paper 3.2b), here colour and texture descriptors per 32 px block
    g                -> grid_cell, px per cell of the feature grid (8 = the diffusion engine's latent factor)

Every channel is centred and scaled by FIXED constants (never per image), so that features of different
images are comparable and cosine similarities in stage 2 are not all close to 1.
"""

from __future__ import annotations

import cv2
import numpy as np


# The paper merges clusters whose mean VAE latents are closer than 0.85 (L2, latents of unit-ish scale).
# Lab / 12 makes that threshold a CIE76 colour difference of 0.85 * 12 ~ 10 (clearly different colours).
MERGE_LAB_SCALE = 12.0

# px of one semantic block at a 512 px working size (MatchSettings.block_size's default, paper 3.2b).
TOKEN_BLOCK_PX = 32

_EPS = 1e-6

# regions.segment z-scores every channel, so a channel's weight in k-means is its number of copies: colour is
# given twice, so that it counts as much as texture and position together (tried on gallery-dev: with one copy
# the silhouette picked k=2 on most images; with two, 2-5 regions that follow objects).
CLUSTER_CHANNELS: tuple[str, ...] = (
    "L", "a", "b", "L'", "a'", "b'",  # Lab colour, twice
    "std",  # log local standard deviation of L (sigma 2 px at 512)
    "grad",  # log gradient energy
    "orient",  # coherence-weighted cos of the doubled gradient angle (horizontal vs vertical structure)
    "y", "x",  # position
)
TOKEN_CHANNELS: tuple[str, ...] = (
    "L", "a", "b", "std_L", "std_a", "std_b", "grad_fine", "grad_coarse",
    "orient_0", "orient_45", "orient_90", "orient_135",
)


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] -> (H, W, 3) float32 CIE Lab (L in 0..100)."""
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 Lab -> (H, W, 3) float32 RGB clipped to [0, 1]."""
    return np.clip(cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _pixel_features(image: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """Per-pixel maps shared by the cell features and the block tokens. `scale` = long side / 512."""
    lab = rgb_to_lab(image)  # (H, W, 3)
    lum = lab[..., 0] / 100.0  # (H, W)
    out: dict[str, np.ndarray] = {"lab": lab}
    mu = _blur(lum, 2.0 * scale)
    out["std_fine"] = np.sqrt(np.maximum(_blur(lum * lum, 2.0 * scale) - mu * mu, 0.0))
    for name, pre in (("fine", 0.0), ("coarse", 2.0 * scale)):
        src = _blur(lum, pre) if pre > 0 else lum
        gx = cv2.Sobel(src, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
        gy = cv2.Sobel(src, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
        jxx, jyy, jxy = _blur(gx * gx, 2.0 * scale), _blur(gy * gy, 2.0 * scale), _blur(gx * gy, 2.0 * scale)
        out[f"grad_{name}"] = jxx + jyy
        if name == "fine":
            out["jxx"], out["jyy"], out["jxy"] = jxx, jyy, jxy
    return out


def _log_centred(x: np.ndarray, typical: float) -> np.ndarray:
    """log(x / typical): 0 at a typical value, +-1 per factor e."""
    return np.log((x + typical * 0.05) / typical)


def cluster_features(image: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell features for stage 1 and the merge features (paper 2.1-2.2 analogues).

    image: (H, W, 3) float32 RGB in [0, 1]; grid: (h, w) cells.
    Returns cluster_features (h, w, 11) with CLUSTER_CHANNELS and merge_features (h, w, 3) = Lab / MERGE_LAB_SCALE.
    Texture channels are computed per pixel, then averaged over each cell.
    """
    h, w = grid
    scale = max(image.shape[:2]) / 512.0
    pix = _pixel_features(image, scale)
    jxx, jyy, jxy = pix["jxx"], pix["jyy"], pix["jxy"]
    energy = jxx + jyy + _EPS
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / energy  # (H, W) in [0, 1]
    theta2 = np.arctan2(2 * jxy, jxx - jyy)  # doubled gradient angle
    lab = pix["lab"]
    colour = [(lab[..., 0] - 50.0) / 20.0, lab[..., 1] / 20.0, lab[..., 2] / 20.0]
    stack = np.stack([
        *colour, *colour,
        _log_centred(pix["std_fine"], 0.03), 0.5 * _log_centred(pix["grad_fine"], 1e-3), coherence * np.cos(theta2),
    ], axis=-1).astype(np.float32)  # (H, W, 9)
    cells = _area_resize(stack, grid)  # (h, w, 9)
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h - 0.5, (np.arange(w) + 0.5) / w - 0.5, indexing="ij")
    feats = np.concatenate([cells, np.stack([yy, xx], axis=-1).astype(np.float32)], axis=-1)  # (h, w, 11)
    merge = _area_resize(lab, grid) / MERGE_LAB_SCALE  # (h, w, 3)
    return feats.astype(np.float32), merge.astype(np.float32)


def block_tokens(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Colour and texture descriptors per block (the classic stand-in for DINOv2 block tokens, paper 3.2b).

    Returns (gh, gw, 12) with TOKEN_CHANNELS: block means of Lab, block standard deviations of Lab, log gradient
    energies at two scales and the share of gradient energy in 4 orientations (minus 1/4, so that it is centred).
    """
    scale = max(image.shape[:2]) / 512.0
    pix = _pixel_features(image, scale)
    lab = pix["lab"]
    jxx, jyy, jxy = pix["jxx"], pix["jyy"], pix["jxy"]
    # energy of the gradient projected on directions 0, 45, 90, 135 degrees
    orient = np.stack([jxx, 0.5 * (jxx + jyy) + jxy, jyy, 0.5 * (jxx + jyy) - jxy], axis=-1)  # (H, W, 4)
    mean_lab = _area_resize(lab, grid)  # (gh, gw, 3)
    mean_sq = _area_resize(lab * lab, grid)
    std_lab = np.sqrt(np.maximum(mean_sq - mean_lab**2, 0.0))
    grads = _area_resize(np.stack([pix["grad_fine"], pix["grad_coarse"]], axis=-1), grid)  # (gh, gw, 2)
    orient_b = _area_resize(orient, grid)
    orient_b = orient_b / (orient_b.sum(axis=-1, keepdims=True) + _EPS) - 0.25
    tokens = np.concatenate([
        (mean_lab[..., :1] - 50.0) / 20.0, mean_lab[..., 1:] / 20.0,
        _log_centred(std_lab[..., :1], 8.0), _log_centred(std_lab[..., 1:], 4.0),
        0.5 * _log_centred(grads[..., :1], 1e-3), 0.5 * _log_centred(grads[..., 1:], 3e-4),
        4.0 * orient_b,
    ], axis=-1)  # (gh, gw, 12)
    return tokens.astype(np.float32)


def token_grid(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """(gh, gw) blocks of about TOKEN_BLOCK_PX px at a 512 px long side (16 on the long side), any aspect."""
    hh, ww = image_shape[:2]
    long_side = max(hh, ww)
    n_long = max(1, round(512 / TOKEN_BLOCK_PX))
    return max(1, round(n_long * hh / long_side)), max(1, round(n_long * ww / long_side))


def _area_resize(x: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Mean over the px of each cell: (H, W, C) -> (h, w, C), any ratio (cv2 INTER_AREA)."""
    h, w = grid
    chans = x.shape[-1]
    out = [cv2.resize(np.ascontiguousarray(x[..., i:i + 4]), (w, h), interpolation=cv2.INTER_AREA)
           for i in range(0, chans, 4)]  # cv2 resizes at most 4 channels at once
    out = [o[..., None] if o.ndim == 2 else o for o in out]
    return np.concatenate(out, axis=-1).astype(np.float32)

"""Hand-made features of the classic engine: what stages 1 and 2 see instead of diffusion and DINOv2 features.

Notation (code -> paper symbol / research/classic.md):
    cluster_features -> F_mix (paper 2.1), here Lab colour + local texture statistics + position per grid cell
    merge_features   -> F, the VAE latent z0 of the merge rule (paper 2.2), here Lab / MERGE_LAB_SCALE
    tokens           -> the DINOv2 block tokens (paper 3.2b), here a kernel mean embedding of each 32 px block's
                        colours (random Fourier features, Rahimi & Recht 2007)
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
# Semantic tokens (the weight-free stand-in for DINOv2, paper 3.2b). Without a recogniser, the most reliable cue
# that a photo region and a painting region depict the same kind of thing is their palette (blue sky and painted sky,
# green grass and painted grass); texture is what stage 3 transfers, so it must not decide the match (with texture
# statistics in the tokens, a smooth photo sky matched blank paper and never a painted sky). Each token is the mean
# over the block's 4 px cells of random Fourier features of a Gaussian kernel on Lab colour, so the cosine of two
# regions' mean tokens is their normalised kernel similarity E k(x, y) / sqrt(E k(x, x') E k(y, y')): ~1 for the
# same palette, ~0 for disjoint ones, with a tolerance of about TOKEN_SIGMA Lab units. Lightness counts half
# (paintings shift lightness far more than hue: a photo's light sky and a painted dark-blue sky are both "sky").
# D = 256 keeps the random-feature noise of the cosine near 1/sqrt(D) ~ 0.06 (64 gave +-0.2, enough to flip matches).
TOKEN_DIMS = 256
TOKEN_SIGMA = 20.0  # Lab units
TOKEN_LAB_WEIGHTS = (0.5, 1.0, 1.0)  # L, a, b
TOKEN_CELL_PX = 4  # px per colour sample at a 512 px working size
_RFF = np.random.default_rng(20260311)  # fixed: tokens of every image and every run share one embedding
RFF_W = (_RFF.normal(size=(3, TOKEN_DIMS)) * np.array(TOKEN_LAB_WEIGHTS)[:, None] / TOKEN_SIGMA).astype(
    np.float32)  # (3, D) frequencies
RFF_B = _RFF.uniform(0.0, 2.0 * np.pi, TOKEN_DIMS).astype(np.float32)  # (D,) phases


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
    """Colour-distribution tokens per block (the classic stand-in for DINOv2 block tokens, paper 3.2b).

    Returns (gh, gw, TOKEN_DIMS): per block, the mean random Fourier feature sqrt(2/D) cos(lab @ RFF_W + RFF_B) of
    its TOKEN_CELL_PX-px cells' mean Lab colours (see TOKEN_SIGMA).
    """
    scale = max(image.shape[:2]) / 512.0
    hh, ww = image.shape[:2]
    cell = max(1.0, TOKEN_CELL_PX * scale)
    cells = (max(1, round(hh / cell)), max(1, round(ww / cell)))
    lab = _area_resize(rgb_to_lab(image), cells)  # (ch, cw, 3)
    rff = np.cos(lab.reshape(-1, 3) @ RFF_W + RFF_B) * np.float32(np.sqrt(2.0 / TOKEN_DIMS))  # (ch*cw, D)
    return _area_resize(rff.reshape(*cells, TOKEN_DIMS).astype(np.float32), grid)


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

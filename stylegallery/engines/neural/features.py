"""Stage 1-2 features of the neural engine from the style predictor's activations (pure functions on arrays).

Notation (code -> paper symbol / Ghiasi et al. 2017):
    s8, s16        -> predictor activations at stride 8 (expanded_conv_5, 192 ch) and 16 (expanded_conv_12, 576 ch)
    cluster        -> F_mix (paper 2.1): [s8 || up(s16) || Lab x COLOUR_COPIES] per stride-8 cell
    merge          -> F of the merge rule (paper 2.2): [Lab / MERGE_LAB_SCALE || MERGE_DEEP_SCALE * unit(s16)]
    tokens         -> the DINOv2 block tokens (paper 3.2b): the mean of s16 over each 32 px block
    prepool        -> the predictor's last map before its global average pool, (h32, w32, 1280)
    region pooling -> S_r = tail(masked mean of prepool over region r): region r's style vector (3.2a here)
    g              -> CELL, px per cell of the feature grid (8, the diffusion engine's latent factor)

The predictor pads with zeros; its inputs are padded by reflection (`pad_reflect`) and every map is cropped back
to the image, so no cluster forms along the border.
"""

from __future__ import annotations

import cv2
import numpy as np


CELL = 8  # px per stage-1 cell: the predictor's stride-8 map
STRIDE = 32  # the predictor's total stride
MARGIN = 64  # px of reflected border around the image before the predictor (two stride-32 cells)
VECTOR_SIDE = 256  # px: the long side at which the predictor gives an image's own style vector (its training size)
BLOCK_PX = 32  # px of one semantic block at a 512 px working size (MatchSettings.block_size's default, 3.2b)

# regions.segment z-scores every channel, so a channel's weight in k-means is its share of the channels. The 768
# deep channels are reduced here to their top DEEP_COMPONENTS principal components (z-scored, per image), which
# segment then whitens; Lab is repeated COLOUR_COPIES times, so colour holds a third of the channels. On the dev
# photos this split people / sand / sea / sky and boat / sea / shore, where all 768 channels plus colour merged the
# people into the sea, and stage 1 ran 3x faster (the 860-channel PCA of segment dominated its time).
DEEP_COMPONENTS = 24
COLOUR_COPIES = 4
PCA_ITERATIONS = 4  # subspace iterations of the top-component search (deterministic start)
# cells the principal axes are fitted on (every cell is projected): 3x faster; the regions agreed with an all-cell
# fit (adjusted Rand > 0.95) on 8 of 12 dev images, on the others the silhouette moved k by one (stage 1 on 1 k-means
# restart is that sensitive to the axes: a 2048-cell fit did no better)
PCA_FIT_ROWS = 1024
# The merge rule of stage 1 joins clusters whose mean merge features are closer than 0.85 (paper 2.2, latents of
# unit-ish scale). Lab / 12 makes 0.85 a CIE76 difference of ~10 (as the classic engine); the deep part adds the
# distance of the unit-normalised mean s16 activations times MERGE_DEEP_SCALE, so two clusters of the same colour
# but different content (sea and sky) stay apart.
MERGE_LAB_SCALE = 12.0
MERGE_DEEP_SCALE = 4.0


def pad_reflect(image: np.ndarray, margin: int = MARGIN, multiple: int = STRIDE) -> np.ndarray:
    """(H, W, 3) -> (H', W', 3): `margin` px reflected on every side, then bottom/right up to a multiple."""
    hh, ww = image.shape[:2]
    bottom = margin + (-(hh + 2 * margin)) % multiple
    right = margin + (-(ww + 2 * margin)) % multiple
    return cv2.copyMakeBorder(np.ascontiguousarray(image, dtype=np.float32), margin, bottom, margin, right,
                              cv2.BORDER_REFLECT_101)


def vector_input(image: np.ndarray, side: int = VECTOR_SIDE) -> np.ndarray:
    """The image resized (area) to a long side of `side` px, each side a multiple of STRIDE, not padded."""
    hh, ww = image.shape[:2]
    scale = side / max(hh, ww)
    size = (max(STRIDE, round(ww * scale / STRIDE) * STRIDE), max(STRIDE, round(hh * scale / STRIDE) * STRIDE))
    return cv2.resize(np.ascontiguousarray(image, dtype=np.float32), size, interpolation=cv2.INTER_AREA)


def crop_map(x: np.ndarray, stride: int, shape: tuple[int, int], margin: int = MARGIN) -> np.ndarray:
    """The cells of a stride-`stride` map of a `pad_reflect`ed image that cover the (H, W) image, (ceil, ceil, C)."""
    off = margin // stride
    return x[off:off + -(-shape[0] // stride), off:off + -(-shape[1] // stride)]


def lab_cells(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Mean CIE Lab per cell, (h, w, 3) float32 (L in 0..100)."""
    lab = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2Lab)
    return cv2.resize(lab, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)


def _resize(x: np.ndarray, grid: tuple[int, int], interpolation: int) -> np.ndarray:
    """(h0, w0, C) -> (h, w, C) for any C (cv2's linear resize takes at most 512 channels at once)."""
    c = x.shape[-1]
    flat = np.ascontiguousarray(x, dtype=np.float32)
    chunks = [cv2.resize(np.ascontiguousarray(flat[..., i:i + 512]), (grid[1], grid[0]), interpolation=interpolation)
              for i in range(0, c, 512)]
    chunks = [ch[..., None] if ch.ndim == 2 else ch for ch in chunks]
    return np.concatenate(chunks, axis=-1)


def cluster_and_merge(image: np.ndarray, s8: np.ndarray, s16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F_mix and merge features on the stride-8 grid of `image` (paper 2.1-2.2).

    image: (H, W, 3) in [0, 1], H and W multiples of CELL; s8, s16: the predictor's maps cropped to the image
    (`crop_map`). Returns cluster (h, w, DEEP_COMPONENTS + 3 COLOUR_COPIES) and merge (h, w, 3 + 576), float32.
    """
    grid = (image.shape[0] // CELL, image.shape[1] // CELL)
    s8 = s8[:grid[0], :grid[1]]  # (h, w, 192)
    up = _resize(s16, (2 * s16.shape[0], 2 * s16.shape[1]), cv2.INTER_LINEAR)[:grid[0], :grid[1]]  # (h, w, 576)
    lab = lab_cells(image, grid)  # (h, w, 3)
    colour = np.stack([(lab[..., 0] - 50.0) / 20.0, lab[..., 1] / 20.0, lab[..., 2] / 20.0], axis=-1)
    deep = np.concatenate([s8, up], axis=-1).reshape(grid[0] * grid[1], -1)  # (n, 768)
    components = top_components(deep, DEEP_COMPONENTS).reshape(*grid, -1)  # (h, w, q)
    cluster = np.concatenate([components, np.tile(colour, (1, 1, COLOUR_COPIES))], axis=-1)
    norm = np.linalg.norm(up, axis=-1, keepdims=True)
    merge = np.concatenate([lab / MERGE_LAB_SCALE, MERGE_DEEP_SCALE * up / np.maximum(norm, 1e-6)], axis=-1)
    return cluster.astype(np.float32), merge.astype(np.float32)


def top_components(x: np.ndarray, q: int, iterations: int = PCA_ITERATIONS,
                   fit_rows: int = PCA_FIT_ROWS) -> np.ndarray:
    """(n, C) -> (n, q): the scores of the z-scored rows on their top-q principal axes (subspace iteration from a
    fixed start on at most `fit_rows` evenly spaced rows; signs fixed so the largest loading is positive).
    Deterministic."""
    x = x.astype(np.float32)
    z = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)  # (n, C)
    q = max(1, min(q, z.shape[0] - 1, z.shape[1]))
    fit = z[np.linspace(0, z.shape[0] - 1, min(fit_rows, z.shape[0])).astype(np.int64)]  # (m, C)
    basis = np.random.default_rng(0).normal(size=(z.shape[1], q + 8)).astype(np.float32)  # (C, q + 8)
    for _ in range(iterations):
        basis, _ = np.linalg.qr(fit.T @ (fit @ basis))
    small = fit @ basis  # (m, q + 8)
    evals, evecs = np.linalg.eigh(small.T @ small)
    axes = basis @ evecs[:, ::-1][:, :q]  # (C, q)
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(q)])
    return z @ (axes * np.where(signs == 0, 1.0, signs))  # (n, q)


def block_tokens(image_shape: tuple[int, ...], s16: np.ndarray, centre: bool = True) -> np.ndarray:
    """Semantic tokens (3.2b): the mean s16 activation over each block of about BLOCK_PX px at 512 px, (gh, gw, 576),
    minus the image's mean token when `centre`.

    Uncentred, every pair of regions of a photo and a painting had a cosine of 0.94-1.0 (the activations share a
    large common component), so the semantic term barely told regions apart; centred on the image's own mean, a
    region's token says what sets it apart within its image (sea, sky, people), with cosines of -0.7..0.7 across
    images. A single-block image gets a zero token (scores 0 against everything).
    """
    hh, ww = image_shape[:2]
    n_long = max(1, round(512 / BLOCK_PX))
    grid = (max(1, round(n_long * hh / max(hh, ww))), max(1, round(n_long * ww / max(hh, ww))))
    ay, ax = _area_matrix(s16.shape[0], grid[0]), _area_matrix(s16.shape[1], grid[1])  # (gh, h16), (gw, w16)
    rows = np.tensordot(ay, s16.astype(np.float32), axes=(1, 0))  # (gh, w16, 576)
    tokens = np.matmul(ax[None], rows)  # (gh, gw, 576)
    if centre:
        tokens = tokens - tokens.reshape(-1, tokens.shape[-1]).mean(axis=0)
    return tokens.astype(np.float32)


def _area_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """(n_dst, n_src) weights of an area (box) resize along one axis: row i averages the span [i, i+1) n_src/n_dst."""
    edges = np.arange(n_dst + 1) * n_src / n_dst
    src = np.arange(n_src)
    overlap = np.clip(np.minimum(edges[1:, None], src[None, :] + 1) - np.maximum(edges[:-1, None], src[None, :]), 0,
                      None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def region_weights(labels: np.ndarray, image_shape: tuple[int, ...], cells: tuple[int, int],
                   stride: int = STRIDE) -> np.ndarray:
    """(h, w) labels 0..K-1 of an (H, W) image (any grid, nearest-upsampled) -> (K, hc, wc): the share of each
    stride-px cell of the cropped pre-pool map covered by each region (cells past the image count its px only)."""
    hh, ww = image_shape[:2]
    hc, wc = cells
    up = cv2.resize(np.asarray(labels, dtype=np.int32), (ww, hh), interpolation=cv2.INTER_NEAREST)  # (H, W)
    padded = np.full((hc * stride, wc * stride), -1, np.int32)
    padded[:hh, :ww] = up[:hc * stride, :wc * stride]
    k = int(up.max()) + 1
    blocks = padded.reshape(hc, stride, wc, stride)
    return np.stack([(blocks == r).mean(axis=(1, 3)) for r in range(k)]).astype(np.float32)  # (K, hc, wc)


def masked_means(prepool: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(hc, wc, D) map and (K, hc, wc) weights -> (K, D) weighted means (a region's pre-pool average)."""
    flat = prepool.reshape(-1, prepool.shape[-1]).astype(np.float64)  # (hc*wc, D)
    w = weights.reshape(weights.shape[0], -1).astype(np.float64)  # (K, hc*wc)
    return ((w @ flat) / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)

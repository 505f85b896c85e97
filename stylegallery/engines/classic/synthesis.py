"""Stage 3 of the classic engine: Elad-Milanfar texture optimisation with the patch search restricted by region.

Energy (Elad & Milanfar, TIP 2017; research/classic.md 2.2 and 5):

    E(X) = sum_ij || R_ij X - z_ij ||^r  +  || X - C~ ||^2_W  +  || G (X - C~) ||^2_V

Notation (code -> paper symbol):
    x          -> X, the image being synthesised at the current scale, (h, w, 3) float32 RGB
    content    -> C~, the content after per-region colour transfer (E-M step 0)
    weight     -> W, the content-fusion weight map (edges, faces), scaled by ClassicSettings.content_weight
    low_weight -> V, the weight of the content's low band (G = Gaussian blur of sigma low_sigma px): an addition
                  to Elad-Milanfar that keeps the content's large-scale light and colour layout in flat areas,
                  where W is small, so that texture (strokes, dots) comes in but style OBJECTS (a flower, a
                  signature) do not get pasted into a smooth sky or sea
    protect    -> P in [0, 1]: where the content keeps its own colours (detected faces): C~ and every colour step
                  are blended back there, and the result takes the content's chroma (Lab a, b) there at the end:
                  the face keeps its skin tones while its luminance carries the style's texture
    index      -> R_ij, the patch-extraction operator, as flat pixel indices (N, n*n)
    z          -> z_ij, the nearest style patch of each grid patch (searched only in the matched style region)
    r          -> the robust exponent r (0.8), solved by IRLS with weights ||R_ij X - z_ij||^(r-2)
    n, gap     -> the patch size and the sub-sampling gap of the patch grid
    scale s    -> pyramid level, 0 = coarsest (1 / 2^(L-1) of the working size) .. L-1 = working size

Speed (research/classic.md 4): patches for the nearest-neighbour search are blurred and sub-sampled to at most
SEARCH_SIDE^2 points per channel, projected on a PCA basis fitted on style patches (one basis per scale and patch
size, shared by all regions, so queries and database are centred with the same style mean), and searched by brute
force with BLAS distances ||d||^2 - 2 q.d in float32 chunks. Each region's database is a random subset of at most
`max_db` style patches of its matched style region. Aggregation uses np.bincount on precomputed flat indices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stylegallery.engines.classic import colour
from stylegallery.engines.classic.features import lab_to_rgb, rgb_to_lab
from stylegallery.errors import Cancelled
from stylegallery.threads import one_thread


SEARCH_SIDE = 7  # search patches are sampled on at most 7 x 7 points (3 * 49 = 147 dims before PCA)
PAPER_GAPS = {33: 28, 21: 18, 13: 8, 9: 5}  # sub-sampling gaps of Elad & Milanfar's patch sizes (classic.md 2.2)
MIN_DB = 16  # a region database smaller than this borrows the patches nearest to the region
QUERY_CHUNK = 4096
_EPS = 1e-6


@dataclass(frozen=True)
class SynthesisParams:
    scales: int = 3  # pyramid levels L
    patch_sizes: tuple[int, ...] = (33, 21, 13, 9)  # coarse-to-fine patch sizes n
    iterations: int = 3  # I_alg per patch size
    irls_steps: int = 3  # IRLS steps of the robust aggregation
    robust_r: float = 0.8  # exponent r
    pca_dims: int = 24  # dims of the search space
    init_noise: float = 50 / 255  # sigma of the noise added to C~ at the coarsest scale
    denoise_sigma_s: float = 5.0  # edge-preserving filter (0 disables)
    denoise_sigma_r: float = 0.2
    max_db: int = 4096  # style patches kept per region database
    style_stride: int = 2  # px between candidate style patches (before the random cap)
    colour_strength: float = 1.0  # per-region colour transfer at the end of each coarser scale, 0..1
    final_colour: float = 1.0  # strength of the closing per-region colour transfer, 0..1
    # share of each region's mean lightness taken from its style region (1 = Elad-Milanfar's full match): the colour
    # targets' lightness is shifted towards the content region's mean by the rest (see anchor_lightness); 0..1
    colour_luminance: float = 1.0
    field_upsampling: bool = True  # start each finer scale from the upsampled NN field (sharp), not resize(X)
    low_weight: float = 0.5  # V, weight of the content's low band (0 = Elad-Milanfar's fusion only)
    low_sigma: float = 6.0  # px (at 512) of the low-band blur G


@dataclass(frozen=True)
class Pairing:
    """Which style pixels each content region draws from: (style image, style region) or None = all styles."""

    sources: tuple[tuple[int, int] | None, ...]  # indexed by content region


def gap_for(n: int) -> int:
    """Sub-sampling gap of the patch grid for patch size n (the paper's gaps, else 0.6 n)."""
    return PAPER_GAPS.get(n, max(1, round(0.6 * n)))


def patch_grid(hh: int, ww: int, n: int, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (N,), (N,) of an n-px patch grid with spacing gap whose last row/column sits on the border."""
    ys = np.arange(0, hh - n + 1, gap)
    xs = np.arange(0, ww - n + 1, gap)
    if ys[-1] != hh - n:
        ys = np.append(ys, hh - n)
    if xs[-1] != ww - n:
        xs = np.append(xs, ww - n)
    py, px = np.meshgrid(ys, xs, indexing="ij")
    return py.ravel(), px.ravel()


def patch_offsets(n: int, width: int, step: int = 1) -> np.ndarray:
    """Flat offsets (m,) of the points of an n-px patch (every `step` px, last point included) in a row-major image."""
    pts = np.arange(0, n, step)
    if pts[-1] != n - 1:
        pts = np.append(pts, n - 1)
    dy, dx = np.meshgrid(pts, pts, indexing="ij")
    return (dy * width + dx).ravel()


def search_step(n: int) -> int:
    return max(1, int(np.ceil((n - 1) / (SEARCH_SIDE - 1))))


def search_image(image: np.ndarray, n: int) -> np.ndarray:
    """The image whose sub-sampled patches are compared in the search: blurred when patches are sub-sampled."""
    step = search_step(n)
    if step == 1:
        return image
    return cv2.GaussianBlur(image, (0, 0), 0.5 * step, borderType=cv2.BORDER_REFLECT)


def pca_basis(samples: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and orthonormal basis (d, k) of the top-k principal directions of (M, d) samples."""
    mean = samples.mean(axis=0)
    centred = samples - mean
    cov = centred.T @ centred / max(1, samples.shape[0] - 1)  # (d, d)
    # one thread: a threaded eigh of this small matrix spin-waits on busy cores (0.09 s against 0.008 s, 12 calls)
    with one_thread():
        evals, evecs = np.linalg.eigh(cov.astype(np.float64))
    k = min(dims, samples.shape[1])
    return mean.astype(np.float32), np.ascontiguousarray(evecs[:, ::-1][:, :k], dtype=np.float32)


def nearest(queries: np.ndarray, db: np.ndarray, db_sq: np.ndarray | None = None) -> np.ndarray:
    """Index (m,) of the nearest row of db (N, k) for each query (m, k), by BLAS L2 distances in chunks."""
    if db_sq is None:
        db_sq = np.einsum("ij,ij->i", db, db)
    out = np.empty(queries.shape[0], np.int64)
    for start in range(0, queries.shape[0], QUERY_CHUNK):
        q = queries[start:start + QUERY_CHUNK]
        dist = db_sq[None, :] - 2.0 * (q @ db.T)  # (chunk, N); ||q||^2 is constant per row
        out[start:start + QUERY_CHUNK] = np.argmin(dist, axis=1)
    return out


def robust_aggregate(
    x: np.ndarray, index: np.ndarray, z: np.ndarray, r: float, steps: int,
    corners: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> np.ndarray:
    """IRLS for argmin_X sum_ij ||R_ij X - z_ij||^r (Kwatra 2005 M-step): overlapping patches, robust weights.

    x: (h, w, 3) current image; index: (N, m) flat pixel indices of the N patches; z: (N, m, 3) target patches.
    corners: (py, px, n) when the patches are the n x n squares at top-left corners (py, px) (as in `synthesize`):
    the per-pixel sum of patch weights is then one box filter instead of a bincount. Pixels that no patch covers
    keep their value.
    """
    hh, ww, _ = x.shape
    flat_idx = index.ravel()  # (N*m,)
    flat_idx3 = (flat_idx[:, None] * 3 + np.arange(3)).ravel()  # (N*m*3,) channel-interleaved, as z.ravel()
    n_pix = hh * ww
    xf = x.reshape(-1, 3)  # (h*w, 3)
    for _ in range(steps):
        diff = xf[index] - z  # (N, m, 3)
        dist = np.sqrt(np.einsum("nmc,nmc->n", diff, diff)) + _EPS  # (N,)
        wts = dist ** (r - 2.0)  # (N,)
        wts = (wts / wts.max()).astype(np.float32)
        wz = z * wts[:, None, None]  # (N, m, 3)
        if corners is None:
            den = np.bincount(flat_idx, weights=np.repeat(wts, index.shape[1]), minlength=n_pix)
        else:
            py, px, n = corners
            at = np.zeros((hh, ww), np.float32)
            at[py, px] = wts
            den = cv2.boxFilter(at, -1, (n, n), anchor=(n - 1, n - 1), normalize=False,
                                borderType=cv2.BORDER_CONSTANT).ravel()  # sum over the patches covering each px
        num = np.bincount(flat_idx3, weights=wz.ravel(), minlength=n_pix * 3).reshape(n_pix, 3)
        covered = den > 1e-12  # the box filter's running sums leave ~1e-16 where no patch lies
        new = xf.copy()
        new[covered] = (num[covered] / den[covered, None]).astype(np.float32)
        xf = new
    return xf.reshape(hh, ww, 3)


def fuse(x: np.ndarray, content: np.ndarray, weight: np.ndarray, low_weight: float = 0.0,
         low_sigma: float = 0.0) -> np.ndarray:
    """Content fusion X <- (W + I)^-1 (X + W C~), a per-pixel weighted mean; then, for low_weight V > 0, one step
    on || G (X - C~) ||^2_V: X <- X + V / (1 + V) G (C~ - X), the low band of X pulled towards the content's."""
    w = weight[..., None]
    x = (x + w * content) / (1.0 + w)
    if low_weight > 0 and low_sigma > 0:
        diff = cv2.GaussianBlur(np.ascontiguousarray(content - x, dtype=np.float32), (0, 0), low_sigma,
                                borderType=cv2.BORDER_REFLECT)
        x = x + (low_weight / (1.0 + low_weight)) * diff
    return x


def protect_chroma(x: np.ndarray, original: np.ndarray, protect: np.ndarray | None) -> np.ndarray:
    """X with its Lab chroma (a, b) blended to `original`'s where protect P (h, w) is high; X's luminance is kept."""
    if protect is None:
        return x
    lab, ref = rgb_to_lab(x), rgb_to_lab(original)
    lab[..., 1:] += protect[..., None] * (ref[..., 1:] - lab[..., 1:])
    return lab_to_rgb(lab)


def protect_colours(x: np.ndarray, original: np.ndarray, protect: np.ndarray | None) -> np.ndarray:
    """X blended back to `original` where protect P (h, w) in [0, 1] is high: X + P (original - X)."""
    if protect is None:
        return x
    return x + protect[..., None] * (original - x)


def denoise(x: np.ndarray, sigma_s: float, sigma_r: float) -> np.ndarray:
    """Gastal-Oliveira domain-transform edge-preserving filter (cv2.edgePreservingFilter, flags=1)."""
    if sigma_s <= 0:
        return x
    u8 = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    out = cv2.edgePreservingFilter(u8, flags=1, sigma_s=sigma_s, sigma_r=sigma_r)
    # keep the sub-quantum detail the uint8 round trip would drop
    return (out.astype(np.float32) / 255.0 + (x - u8.astype(np.float32) / 255.0)).astype(np.float32)


def resize(image: np.ndarray, shape: tuple[int, int], nearest_: bool = False) -> np.ndarray:
    hh, ww = shape
    if image.shape[:2] == (hh, ww):
        return image
    if nearest_:
        return cv2.resize(image, (ww, hh), interpolation=cv2.INTER_NEAREST)
    shrink = hh < image.shape[0]
    return cv2.resize(image, (ww, hh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def scale_shape(shape: tuple[int, int], factor: float, min_side: int = 8) -> tuple[int, int]:
    return max(min_side, round(shape[0] * factor)), max(min_side, round(shape[1] * factor))


@dataclass(frozen=True)
class NNField:
    """The nearest-neighbour field of the last search: grid patch i copies style src_style[i] at src_corner[i]."""

    py: np.ndarray  # (N,) top-left rows of the grid patches
    px: np.ndarray  # (N,) top-left columns
    n: int  # patch size
    src_style: np.ndarray  # (N,) style image index
    src_corner: np.ndarray  # (N,) flat top-left index in that style image (at the field's scale)


def pixel_sources(field: NNField, shape: tuple[int, int], style_widths: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Per-pixel source of the field: (style index, style row, style column), each (h, w), from the grid patch
    whose centre is nearest to the pixel (it always covers the pixel, since gap < n)."""
    hh, ww = shape
    ys, xs = np.unique(field.py), np.unique(field.px)
    cy, cx = ys + field.n / 2.0, xs + field.n / 2.0
    row = np.abs(cy[None, :] - (np.arange(hh)[:, None] + 0.5)).argmin(axis=1)  # (h,)
    col = np.abs(cx[None, :] - (np.arange(ww)[:, None] + 0.5)).argmin(axis=1)  # (w,)
    pid = row[:, None] * xs.size + col[None, :]  # (h, w) patch of each pixel (grid is row-major)
    style = field.src_style[pid]
    widths = np.asarray(style_widths)[style]
    corner = field.src_corner[pid]
    sy = corner // widths + (np.arange(hh)[:, None] - field.py[pid])
    sx = corner % widths + (np.arange(ww)[None, :] - field.px[pid])
    return style, sy, sx


def upsample_field_copy(
    field: NNField, coarse_shape: tuple[int, int], coarse_styles: Sequence[np.ndarray], shape: tuple[int, int],
    styles: Sequence[np.ndarray],
) -> np.ndarray:
    """X at the finer `shape` rebuilt by copying the finer style pixels the coarse field points to (NNF upsampling):
    sharp style texture arranged as the coarse solution, instead of a blurred upsampling of X."""
    hh, ww = shape
    style, sy, sx = pixel_sources(field, coarse_shape, [s.shape[1] for s in coarse_styles])
    ry, rx = coarse_shape[0] / hh, coarse_shape[1] / ww
    cyy = np.minimum((np.arange(hh) * ry).astype(np.int64), coarse_shape[0] - 1)  # (H,) coarse row of each row
    cxx = np.minimum((np.arange(ww) * rx).astype(np.int64), coarse_shape[1] - 1)
    style_f = style[cyy][:, cxx]  # (H, W)
    out = np.empty((hh, ww, 3), np.float32)
    for i, img in enumerate(styles):
        sel = style_f == i
        if not sel.any():
            continue
        sc_h, sc_w = coarse_styles[i].shape[:2]
        fy, fx = img.shape[0] / sc_h, img.shape[1] / sc_w
        yy, xx = np.nonzero(sel)
        top = sy[cyy[yy], cxx[xx]] * fy + (yy - cyy[yy] / ry)
        left = sx[cyy[yy], cxx[xx]] * fx + (xx - cxx[xx] / rx)
        top = np.clip(np.round(top).astype(np.int64), 0, img.shape[0] - 1)
        left = np.clip(np.round(left).astype(np.int64), 0, img.shape[1] - 1)
        out[yy, xx] = img[top, left]
    return out


@dataclass
class _StyleLevel:
    image: np.ndarray  # (hs, ws, 3) RGB at this scale
    labels: np.ndarray  # (hs, ws) int32


@dataclass
class _Database:
    corners: np.ndarray  # (N,) flat index of each style patch's top-left px in the style image at this scale
    style: int  # style image index
    feats: np.ndarray  # (N, k) PCA features
    sq: np.ndarray  # (N,) squared norms of feats


def _region_candidates(
    labels: np.ndarray, region: int | None, n: int, stride: int, max_db: int, rng: np.random.Generator
) -> np.ndarray:
    """Top-left corners (N, 2) of style patches of `region` (None = anywhere): fully inside the image, mostly in the
    region; a region too small for that borrows the patches that overlap it most."""
    hs, ws = labels.shape
    ys = np.arange(0, hs - n + 1, stride)
    xs = np.arange(0, ws - n + 1, stride)
    py, px = np.meshgrid(ys, xs, indexing="ij")
    py, px = py.ravel(), px.ravel()
    if region is not None:
        inside = (labels == region).astype(np.float32)
        frac = cv2.blur(inside, (n, n), borderType=cv2.BORDER_CONSTANT)  # share of each window in the region
        share = frac[py + n // 2, px + n // 2]
        keep = share >= 0.5
        if keep.sum() < MIN_DB:
            keep = np.zeros_like(keep)
            keep[np.argsort(-share, kind="stable")[:MIN_DB]] = True
        py, px = py[keep], px[keep]
    if py.size > max_db:
        sel = np.sort(rng.choice(py.size, max_db, replace=False))
        py, px = py[sel], px[sel]
    return np.stack([py, px], axis=-1)


def synthesize(
    content: np.ndarray,
    content_labels: np.ndarray,
    styles: Sequence[np.ndarray],
    style_labels: Sequence[np.ndarray],
    pairing: Pairing,
    weight: np.ndarray,
    params: SynthesisParams,
    rng: np.random.Generator,
    should_stop: Callable[[], bool] = lambda: False,
    protect: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Run the coarse-to-fine texture optimisation; yield (scale index, X at that scale) after each scale.

    content: (H, W, 3) RGB [0, 1] working-size content; content_labels: (H, W) int32 regions 0..K-1 at pixel level;
    styles / style_labels: (Hs, Ws, 3) images and (Hs, Ws) pixel labels; pairing.sources[k]: the (style image,
    style region) content region k copies from; weight: (H, W) W >= 0; protect: (H, W) P in [0, 1] or None.
    The last yield is at the working size.
    """
    hh, ww = content.shape[:2]
    n_regions = len(pairing.sources)

    # 0. Prepare: colour targets per content region, C~ = content colour-matched region by region.
    content_tilde, targets = colour_matched(content, content_labels, styles, style_labels, pairing,
                                            params.colour_luminance, rng, protect)
    soft_sigma = max(1.0, 0.01 * max(hh, ww))

    x: np.ndarray | None = None
    field: NNField | None = None
    prev_shape: tuple[int, int] = (0, 0)
    prev_styles: list[np.ndarray] = []
    for s in range(params.scales):
        factor = 0.5 ** (params.scales - 1 - s)
        shape = (hh, ww) if s == params.scales - 1 else scale_shape((hh, ww), factor)
        c_s = resize(content_tilde, shape)
        w_s = resize(weight, shape)
        p_s = None if protect is None else resize(protect, shape)
        fusion = (params.low_weight, params.low_sigma * max(shape) / 512)
        labels_s = resize(content_labels.astype(np.int32), shape, nearest_=True)
        masks_s = colour.soft_masks(labels_s, n_regions, max(1.0, soft_sigma * factor))
        levels = [
            _StyleLevel(resize(img, scale_shape(img.shape[:2], factor)),
                        resize(lab.astype(np.int32), scale_shape(img.shape[:2], factor), nearest_=True))
            for img, lab in zip(styles, style_labels)
        ]
        # 1. Initialise at the coarsest scale with strong noise; upsample X between scales.
        if x is None:
            x = (c_s + rng.normal(0.0, params.init_noise, c_s.shape)).astype(np.float32)
        elif field is not None and params.field_upsampling:
            x = fuse(upsample_field_copy(field, prev_shape, prev_styles, shape, [lv.image for lv in levels]), c_s, w_s,
                     *fusion)
        else:
            x = resize(x, shape)
        # 2. Coarse-to-fine patch sizes: search, robust aggregation, content fusion
        field = None  # a field is only reused at the next scale if this scale computed one
        smallest = min(min(shape), *(min(lv.image.shape[:2]) for lv in levels))
        for n in params.patch_sizes:
            if n > smallest:  # the patch does not fit this scale of the content or of a style
                continue
            x, field = _patch_size_pass(x, c_s, w_s, p_s, labels_s, masks_s, levels, pairing, targets, n, params,
                                        rng, should_stop)
        # 3. Edge-preserving denoise
        x = denoise(x, params.denoise_sigma_s * min(1.0, max(shape) / 512), params.denoise_sigma_r)
        if s < params.scales - 1 and params.colour_strength > 0:
            # colour transfer once per scale: quantile maps were the loop's costliest step after every patch size,
            # and the patches copied from the matched region already carry its colours (same pictures, 24% faster)
            lab = colour.regional_transfer(rgb_to_lab(x), masks_s, targets, rng, params.colour_strength)
            x = protect_colours(lab_to_rgb(lab), x, p_s)
        if s == params.scales - 1 and params.final_colour > 0:
            # 4. Final colour step (Frigo et al.'s closing colour transfer), per matched region pair
            coloured = lab_to_rgb(colour.regional_transfer(rgb_to_lab(x), masks_s, targets, rng, params.final_colour))
            x = protect_chroma(protect_colours(coloured, x, p_s), content, p_s)
        prev_shape, prev_styles = shape, [lv.image for lv in levels]
        yield s, np.clip(x, 0.0, 1.0)


def colour_matched(
    content: np.ndarray,
    content_labels: np.ndarray,
    styles: Sequence[np.ndarray],
    style_labels: Sequence[np.ndarray],
    pairing: Pairing,
    colour_luminance: float,
    rng: np.random.Generator,
    protect: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(C~, the colour targets): the content colour-matched region by region to its matched style regions' Lab
    quantiles, lightness anchored (`anchor_lightness`), faces' colours kept where `protect` is given; the start of
    the texture optimisation and its colour targets. Shapes as in `synthesize`."""
    n_regions = len(pairing.sources)
    style_labs = [rgb_to_lab(s) for s in styles]
    targets = _colour_targets(pairing, style_labs, style_labels, rng)
    soft_sigma = max(1.0, 0.01 * max(content.shape[:2]))
    masks_full = colour.soft_masks(content_labels, n_regions, soft_sigma)
    content_lab = rgb_to_lab(content)
    targets = anchor_lightness(targets, content_lab, content_labels, colour_luminance)
    content_tilde = lab_to_rgb(colour.regional_transfer(content_lab, masks_full, targets, rng))
    return protect_colours(content_tilde, content, protect), targets


def anchor_lightness(targets: Sequence[np.ndarray], content_lab: np.ndarray, labels: np.ndarray,
                     share: float) -> list[np.ndarray]:
    """Colour targets whose lightness keeps (1 - share) of each content region's own mean lightness.

    targets: K arrays (Q, 3) of Lab quantiles (region k's matched style colours); content_lab: (H, W, 3); labels:
    (H, W) regions 0..K-1. Region k's L quantiles are shifted by (1 - share) * (content mean L - target mean L),
    so the style's light-dark spread (its texture) is kept and the regions' light-dark layout follows the content.
    """
    if share >= 1.0:
        return list(targets)
    sums = np.bincount(labels.ravel(), weights=content_lab[..., 0].ravel(), minlength=len(targets))
    counts = np.bincount(labels.ravel(), minlength=len(targets))
    out = []
    for k, target in enumerate(targets):
        t = target.copy()
        if counts[k] > 0:
            t[:, 0] = np.clip(t[:, 0] + (1.0 - share) * (sums[k] / counts[k] - t[:, 0].mean()), 0.0, 100.0)
        out.append(t)
    return out


def _colour_targets(
    pairing: Pairing, style_labs: Sequence[np.ndarray], style_labels: Sequence[np.ndarray], rng: np.random.Generator
) -> list[np.ndarray]:
    cache: dict[tuple[int, int] | None, np.ndarray] = {}
    out = []
    for src in pairing.sources:
        if src not in cache:
            if src is None:
                pix = np.concatenate([lab.reshape(-1, 3) for lab in style_labs])
            else:
                i, region = src
                pix = style_labs[i][style_labels[i] == region]
                if pix.shape[0] == 0:
                    raise ValueError(f"style image {i} has no pixel in region {region}: check the style label maps")
            cache[src] = colour.quantiles(pix, rng)
        out.append(cache[src])
    return out


def _patch_size_pass(
    x: np.ndarray,
    c_s: np.ndarray,
    w_s: np.ndarray,
    p_s: np.ndarray | None,
    labels_s: np.ndarray,
    masks_s: np.ndarray,
    levels: list[_StyleLevel],
    pairing: Pairing,
    targets: list[np.ndarray],
    n: int,
    params: SynthesisParams,
    rng: np.random.Generator,
    should_stop: Callable[[], bool],
) -> tuple[np.ndarray, NNField]:
    """I_alg iterations of (search, robust aggregation, fusion) at one patch size."""
    hh, ww = x.shape[:2]
    gap = gap_for(n)
    step = search_step(n)
    py, px = patch_grid(hh, ww, n, gap)
    index = (py * ww + px)[:, None] + patch_offsets(n, ww)[None, :]  # (N, n*n)
    search_index = (py * ww + px)[:, None] + patch_offsets(n, ww, step)[None, :]  # (N, m)
    centre_region = labels_s[py + n // 2, px + n // 2]  # (N,)

    # Databases: candidate style patches per used source, one PCA basis shared by all of them.
    sources = sorted({src for src in pairing.sources if src is not None}, key=lambda t: (t[0], t[1]))
    if any(src is None for src in pairing.sources):
        sources_all: list[tuple[int, int] | None] = [*sources, None]
    else:
        sources_all = list(sources)
    cand: dict[tuple[int, int] | None, list[tuple[int, np.ndarray]]] = {}
    for src in sources_all:
        if src is None:
            per = max(MIN_DB, params.max_db // len(levels))
            cand[src] = [(i, _region_candidates(lv.labels, None, n, params.style_stride, per, rng))
                         for i, lv in enumerate(levels) if min(lv.labels.shape) >= n]
        else:
            i, region = src
            lv = levels[i]
            if min(lv.labels.shape) < n:
                cand[src] = []
                continue
            cand[src] = [(i, _region_candidates(lv.labels, region, n, params.style_stride, params.max_db, rng))]
    style_search = [search_image(lv.image, n) for lv in levels]
    style_offsets_search = [patch_offsets(n, lv.image.shape[1], step) for lv in levels]
    style_offsets_full = [patch_offsets(n, lv.image.shape[1]) for lv in levels]
    raw: dict[tuple[int, int] | None, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for src, parts in cand.items():
        raw[src] = []
        for i, corners in parts:
            flat = corners[:, 0] * levels[i].image.shape[1] + corners[:, 1]  # (N,)
            vecs = style_search[i].reshape(-1, 3)[flat[:, None] + style_offsets_search[i][None, :]]  # (N, m, 3)
            raw[src].append((i, flat, vecs.reshape(flat.size, -1)))
    pool = np.concatenate([v for parts in raw.values() for _, _, v in parts])  # (M, 3m)
    if pool.shape[0] > 4000:
        pool = pool[rng.choice(pool.shape[0], 4000, replace=False)]
    mean, basis = pca_basis(pool, params.pca_dims)
    dbs: dict[tuple[int, int] | None, list[_Database]] = {}
    for src, parts in raw.items():
        dbs[src] = []
        for i, flat, vecs in parts:
            feats = (vecs - mean) @ basis  # (N, k)
            dbs[src].append(_Database(flat, i, feats, np.einsum("ij,ij->i", feats, feats)))
    if any(not dbs.get(src) for src in sources_all):
        missing = [src for src in sources_all if not dbs.get(src)]
        raise ValueError(f"no style patch of {n} px for sources {missing}: use smaller patch sizes or larger styles")

    # Which database each grid patch searches: the source of its centre region.
    groups = [(src, np.flatnonzero(np.isin(centre_region, [k for k, s in enumerate(pairing.sources) if s == src])))
              for src in sources_all]
    for it in range(params.iterations):
        if should_stop():
            raise Cancelled("the transfer was cancelled by the caller")
        xs = search_image(x, n).reshape(-1, 3)
        queries = (xs[search_index].reshape(search_index.shape[0], -1) - mean) @ basis  # (N, k)
        z = np.empty((py.size, n * n, 3), np.float32)
        src_style = np.zeros(py.size, np.int64)
        src_corner = np.zeros(py.size, np.int64)
        for src, members in groups:
            if members.size == 0:
                continue
            _match_group(queries[members], members, dbs[src], levels, style_offsets_full, z, src_style, src_corner)
        x = robust_aggregate(x, index, z, params.robust_r, params.irls_steps, corners=(py, px, n))
        x = fuse(x, c_s, w_s, params.low_weight, params.low_sigma * max(hh, ww) / 512)
    field = NNField(py, px, n, src_style, src_corner)
    return x, field


def _match_group(
    queries: np.ndarray,
    members: np.ndarray,
    parts: list[_Database],
    levels: list[_StyleLevel],
    offsets_full: list[np.ndarray],
    z: np.ndarray,
    src_style: np.ndarray,
    src_corner: np.ndarray,
) -> None:
    """Nearest style patch of each query among the databases `parts`; writes the full patches into z[members]."""
    best_d = np.full(members.size, np.inf, np.float32)
    best_part = np.zeros(members.size, np.int64)
    best_idx = np.zeros(members.size, np.int64)
    q_sq = np.einsum("ij,ij->i", queries, queries)
    for p, db in enumerate(parts):
        idx = nearest(queries, db.feats, db.sq)
        d = q_sq + db.sq[idx] - 2.0 * np.einsum("ij,ij->i", queries, db.feats[idx])
        better = d < best_d
        best_d[better], best_part[better], best_idx[better] = d[better], p, idx[better]
    for p, db in enumerate(parts):
        sel = best_part == p
        if not sel.any():
            continue
        corners = db.corners[best_idx[sel]]
        flat_style = levels[db.style].image.reshape(-1, 3)
        z[members[sel]] = flat_style[corners[:, None] + offsets_full[db.style][None, :]]
        src_style[members[sel]] = db.style
        src_corner[members[sel]] = corners

"""Stage 2: clustered region matching (paper 3.1-3.2).

Every region of the content and of each style image gets three descriptors; each content region then
takes the best-scoring region from the pool of all style images' regions. numpy only; torch is
imported lazily, and only for the faithful random-transformer aggregation (`RandomAggregator`).

Notation (code -> paper, research/paper.md 3.1-3.2):
    features     -> F_mix, the clustered feature grid (h, w, C)                         (2.1)
    tokens       -> the DINOv2 patch tokens of x_0 on a (gh, gw) grid over the image      (3.1)
    statistical  -> s_r = [mean || var] of the aggregated features of region r, (2C,)   (3.2a)
    semantic     -> e_r, the mean token over the blocks kept by block filtering, (D,)   (3.2b)
    circle       -> (c_r, rho_r): centroid and max distance to a cell, unit frame       (3.2c)
    w_statistical, w_semantic, w_positional -> lambda_1, lambda_2, lambda_3 = 0.25, 1, 0.125 (3.1)
    score        -> S = l1 cos(s_c, s_r) + l2 cos(e_c, e_r) + l3 IoU(circle_c, circle_r) (3.2)
    pool         -> all (style image j, style region r) pairs of all style images       (3.2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stylegallery.config import MatchSettings
from stylegallery.errors import OverrideError
from stylegallery.types import Match, RegionDescriptor


Aggregate = Callable[[np.ndarray], np.ndarray]  # (n_r, C) -> (n_r, C)


# ---------------------------------------------------------------------------------------------
# Region descriptors (3.2a-c)
# ---------------------------------------------------------------------------------------------


class RandomAggregator:
    """The official "self-attention aggregation" (3.2a): a randomly initialised, never trained Transformer.

    OpenCLIP-style pre-LN blocks (width C, 8 layers, 4 heads, MLP ratio 4) built from `seed` inside
    `torch.random.fork_rng`, so torch's global RNG is left untouched. Build one per (C, seed) and reuse
    it: construction costs far more than a call. Calling it maps one region's cells (n_r, C) -> (n_r, C)
    as an unbatched sequence.
    """

    def __init__(self, width: int, seed: int, layers: int = 8, heads: int = 4, mlp_ratio: float = 4.0,
                 device: str = "cpu") -> None:
        if width < 1 or width % heads != 0:
            raise ValueError(f"width={width} is invalid for the random aggregation transformer: it must be a "
                             f"positive multiple of heads={heads}; use statistics='moments' for such features")
        import torch

        self.width, self.seed, self.device = width, seed, device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _build_transformer(width, layers, heads, mlp_ratio)  # drawn on the CPU: same on any device
        self._module = module.eval().to(device)

    def __call__(self, cells: np.ndarray) -> np.ndarray:
        import torch

        if cells.ndim != 2 or cells.shape[1] != self.width:
            raise ValueError(f"cells have shape {cells.shape}: expected (n, {self.width})")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.float32)).to(self.device)  # (n_r, C)
            return self._module(x).float().cpu().numpy()


def _build_transformer(width: int, layers: int, heads: int, mlp_ratio: float) -> Any:
    """OpenCLIP's `Transformer` (basic_module.py of the official code) without its unused options."""
    from collections import OrderedDict

    from torch import nn

    class ResidualAttentionBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            hidden = int(width * mlp_ratio)
            self.ln_1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads)
            self.ln_2 = nn.LayerNorm(width)
            self.mlp = nn.Sequential(OrderedDict(
                [("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))]
            ))

        def forward(self, x: Any) -> Any:  # (L, C)
            y = self.ln_1(x)
            x = x + self.attn(y, y, y, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    return nn.Sequential(*[ResidualAttentionBlock() for _ in range(layers)])


def describe_regions(
    labels: np.ndarray,
    features: np.ndarray,
    tokens: np.ndarray,
    settings: MatchSettings,
    aggregator: Aggregate | None = None,
    statistical: np.ndarray | None = None,
) -> list[RegionDescriptor]:
    """Descriptors s_r, e_r and the circle of every region 0..K-1 of one image (paper 3.2), in label order.

    statistical: (K, d) descriptors s_r computed by the engine (e.g. each region's style vector), used instead of
    the moments of `features` (settings.statistics and `aggregator` are then unused).

    labels: (h, w) int, contiguous 0..K-1; features: (h, w, C); tokens: (gh, gw, D) covering the whole image.
    settings.statistics must be resolved ("random_transformer" or "moments"). For "random_transformer",
    pass `aggregator` (a cached `RandomAggregator(C, settings.seed)`) to skip building it on every call.
    """
    # 1. Check inputs
    labels, features, tokens = np.asarray(labels), np.asarray(features), np.asarray(tokens)
    if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels have shape {labels.shape} and dtype {labels.dtype}: expected a non-empty (h, w) "
                         "integer map")
    h, w = labels.shape
    if features.ndim != 3 or features.shape[:2] != (h, w) or features.shape[2] < 1:
        raise ValueError(f"features have shape {features.shape}: expected ({h}, {w}, C), the grid of the labels")
    if tokens.ndim != 3 or min(tokens.shape) < 1:
        raise ValueError(f"tokens have shape {tokens.shape}: expected (gh, gw, D) covering the whole image")
    if labels.min() < 0 or np.any(np.bincount(labels.ravel()) == 0):
        raise ValueError(f"labels hold values {np.unique(labels).tolist()[:12]}: expected contiguous 0..K-1 "
                         "(renumber them with regions.relabel)")
    if settings.statistics not in ("random_transformer", "moments"):
        raise ValueError(f"statistics={settings.statistics!r} is unresolved: resolve 'auto' with the engine's "
                         "resolve_matching before describing regions")
    for name, arr in (("features", features), ("tokens", tokens)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} hold NaN or inf values: check the engine's feature extraction")

    # 2. Statistical descriptors (3.2a)
    channels = features.shape[2]
    if statistical is not None:
        statistical = _check_statistical(statistical, int(labels.max()) + 1)
    elif settings.statistics == "moments":
        statistical = _moments(labels, features)
    else:
        if aggregator is None:
            aggregator = RandomAggregator(channels, settings.seed)
        elif getattr(aggregator, "width", channels) != channels:
            raise ValueError(f"the aggregator has width {aggregator.width} but the features have C={channels} "
                             f"channels: build RandomAggregator({channels}, seed)")
        statistical = _aggregated_moments(labels, features, aggregator)

    # 3. Semantic descriptors (3.2b) and circles (3.2c)
    semantic = _block_semantic(labels, tokens, settings.block_size, settings.block_min_pixels, settings.single_block)
    circles = _circles(labels)
    sizes = np.bincount(labels.ravel())
    return [
        RegionDescriptor(region=r, cells=int(sizes[r]), statistical=statistical[r], semantic=semantic[r],
                         circle=(float(circles[r, 0]), float(circles[r, 1]), float(circles[r, 2])))
        for r in range(len(sizes))
    ]


def _check_statistical(statistical: np.ndarray, regions: int) -> np.ndarray:
    statistical = np.asarray(statistical, dtype=np.float32)
    if statistical.ndim != 2 or statistical.shape[0] != regions or not np.all(np.isfinite(statistical)):
        raise ValueError(f"statistical descriptors have shape {statistical.shape}: expected ({regions}, d) finite "
                         "values, one row per region")
    return statistical


def _moments(labels: np.ndarray, features: np.ndarray) -> np.ndarray:
    """[mean || variance] of the features over each region's cells, (K, 2C) float32 (the "moments" deviation)."""
    lab = labels.ravel()
    x = features.reshape(lab.size, -1).astype(np.float64)  # (n, C)
    k = int(lab.max()) + 1
    out = np.empty((k, 2 * x.shape[1]))
    for r in range(k):
        cells = x[lab == r]  # (n_r, C)
        out[r] = np.concatenate([cells.mean(axis=0), cells.var(axis=0)])
    return out.astype(np.float32)


def _aggregated_moments(labels: np.ndarray, features: np.ndarray, aggregate: Aggregate) -> np.ndarray:
    """The official statistical descriptor (3.2a), (K, 2C) float32.

    Each region's cells (n_r, C) go through `aggregate`; the outputs are scattered back into a zero
    (h*w, C) map; mean = sum / n_r, and var = the unbiased variance over ALL h*w positions (zeros
    included) / n_r. The odd normalisation is the official code's (torch .var() / count), kept as is.
    """
    lab = labels.ravel()
    x = features.reshape(lab.size, -1)  # (n, C)
    k = int(lab.max()) + 1
    out = np.empty((k, 2 * x.shape[1]))
    for r in range(k):
        idx = np.flatnonzero(lab == r)
        full = np.zeros(x.shape, dtype=np.float64)  # (h*w, C)
        full[idx] = aggregate(x[idx])
        out[r] = np.concatenate([full.sum(axis=0) / idx.size, full.var(axis=0, ddof=1) / idx.size])
    return out.astype(np.float32)


def _block_semantic(labels: np.ndarray, tokens: np.ndarray, block_size: int, min_pixels: int,
                    single_block: str = "mean") -> np.ndarray:
    """Block filtering (3.2b): e_r = mean token over the blocks holding more than `min_pixels` px of region r.

    The label grid is nearest-upsampled to (gh * block_size, gw * block_size) px, one block per token,
    so any aspect ratio works. A region with no block over the threshold falls back to its best-covered
    block(s), so e_r is never NaN. single_block "zero" reproduces the official quirk: a region with exactly one
    block over the threshold gets e_r = 0, so its semantic similarity is 0 with every region (the official
    `.squeeze()` turns its (1, 1, D) tokens into (D,), whose mean over dim 0 is a scalar, replaced by zeros(1)).
    Returns (K, D) float32.
    """
    h, w = labels.shape
    gh, gw, dim = tokens.shape
    k = int(labels.max()) + 1
    height, width = gh * block_size, gw * block_size
    rows = (np.arange(height) * h) // height  # nearest: source cell floor(y * h / H)
    cols = (np.arange(width) * w) // width
    up = labels[rows][:, cols]  # (H, W)
    block = (np.arange(height) // block_size)[:, None] * gw + (np.arange(width) // block_size)[None, :]  # (H, W)
    counts = np.bincount((block * k + up).ravel(), minlength=gh * gw * k).reshape(gh * gw, k)  # px per block, region
    keep = counts > min_pixels  # (gh*gw, K)
    single = keep.sum(axis=0) == 1  # (K,) regions with exactly one kept block
    for r in np.flatnonzero(~keep.any(axis=0)):
        coverage = counts[:, r]
        if coverage.max() == 0:  # the region vanished in a downsampling: count its cell centres per block
            ys, xs = np.nonzero(labels == r)
            by = ((ys + 0.5) * gh / h).astype(int)
            bx = ((xs + 0.5) * gw / w).astype(int)
            coverage = np.bincount(by * gw + bx, minlength=gh * gw)
        keep[:, r] = coverage == coverage.max()
    flat = tokens.reshape(gh * gw, dim).astype(np.float64)  # (gh*gw, D)
    weights = keep.astype(np.float64)  # (gh*gw, K)
    semantic = (weights.T @ flat) / weights.sum(axis=0)[:, None]  # (K, D)
    if single_block == "zero":
        semantic[single] = 0.0
    return semantic.astype(np.float32)


def _circles(labels: np.ndarray) -> np.ndarray:
    """(cy, cx, r) per region, (K, 3): centroid of the cell centres and the max distance to one (3.2c).

    Coordinates are in a unit frame, ((i + 0.5) / h, (j + 0.5) / w), so grids of any size compare; on the
    official 64x64 grid this is its circle divided by 64 (the half-cell shift cancels in the IoU).
    """
    h, w = labels.shape
    lab = labels.ravel()
    k = int(lab.max()) + 1
    ys, xs = np.divmod(np.arange(lab.size), w)
    y, x = (ys + 0.5) / h, (xs + 0.5) / w
    count = np.bincount(lab, minlength=k)
    cy = np.bincount(lab, weights=y, minlength=k) / count
    cx = np.bincount(lab, weights=x, minlength=k) / count
    dist = np.hypot(y - cy[lab], x - cx[lab])
    radius = np.zeros(k)
    np.maximum.at(radius, lab, dist)
    return np.stack([cy, cx, radius], axis=1)


# ---------------------------------------------------------------------------------------------
# Similarities (3.1)
# ---------------------------------------------------------------------------------------------


def circle_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact intersection over union of two circles (cy, cx, r) (3.2c): lens area / union area.

    Two zero-radius circles give 1 when they coincide and 0 otherwise.
    """
    ca, cb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, c in (("a", ca), ("b", cb)):
        if c.shape != (3,) or not np.all(np.isfinite(c)) or c[2] < 0:
            raise ValueError(f"circle {name}={tuple(c.tolist())} is invalid: expected finite (cy, cx, r) with r >= 0")
    return float(_circle_iou_matrix(ca[None], cb[None])[0, 0])


def _circle_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise circle IoU of (m, 3) and (p, 3) circles (cy, cx, r), (m, p)."""
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])  # (m, p)
    r1 = np.broadcast_to(a[:, None, 2], d.shape)
    r2 = np.broadcast_to(b[None, :, 2], d.shape)
    disjoint = d >= r1 + r2
    inside = d <= np.abs(r1 - r2)
    lens = ~disjoint & ~inside  # here d > 0 and both radii > 0
    inter = np.where(inside, np.pi * np.minimum(r1, r2) ** 2, 0.0)
    if lens.any():
        dd, ra, rb = d[lens], r1[lens], r2[lens]
        alpha = np.arccos(np.clip((dd ** 2 + ra ** 2 - rb ** 2) / (2 * dd * ra), -1.0, 1.0))
        beta = np.arccos(np.clip((dd ** 2 + rb ** 2 - ra ** 2) / (2 * dd * rb), -1.0, 1.0))
        kite = np.sqrt(np.clip((-dd + ra + rb) * (dd + ra - rb) * (dd - ra + rb) * (dd + ra + rb), 0.0, None))
        inter[lens] = ra ** 2 * alpha + rb ** 2 * beta - 0.5 * kite
    union = np.pi * (r1 ** 2 + r2 ** 2) - inter
    points = union <= 0  # two zero-radius circles
    iou = np.where(points, (d == 0).astype(np.float64), inter / np.where(points, 1.0, union))
    return np.clip(iou, 0.0, 1.0)


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of (m, d) and (p, d), (m, p); a zero vector scores 0."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1.0)) @ (b / np.where(nb > 0, nb, 1.0)).T


def _term_matrices(content: Sequence[RegionDescriptor], pool: Sequence[RegionDescriptor]) -> dict[str, np.ndarray]:
    """The three similarity terms between every content region and every pooled region, each (Kc, P)."""
    for name in ("statistical", "semantic"):
        dims = {getattr(d, name).shape for d in (*content, *pool)}
        if len(dims) > 1:
            raise ValueError(f"{name} descriptors have different shapes {sorted(dims)}: describe the content and "
                             "the styles with the same engine and settings")
    return {
        "statistical": _cosine_matrix(np.stack([d.statistical for d in content]),
                                      np.stack([d.statistical for d in pool])),
        "semantic": _cosine_matrix(np.stack([d.semantic for d in content]), np.stack([d.semantic for d in pool])),
        "positional": _circle_iou_matrix(np.array([d.circle for d in content], dtype=np.float64),
                                         np.array([d.circle for d in pool], dtype=np.float64)),
    }


def similarity_terms(content: RegionDescriptor, style: RegionDescriptor) -> dict[str, float]:
    """The unweighted similarities of one pair (3.1): statistical and semantic cosines, positional circle IoU."""
    return {name: float(m[0, 0]) for name, m in _term_matrices([content], [style]).items()}


# ---------------------------------------------------------------------------------------------
# Matching (3.2)
# ---------------------------------------------------------------------------------------------


def match(
    content: Sequence[RegionDescriptor],
    styles: Sequence[Sequence[RegionDescriptor]],
    settings: MatchSettings,
    overrides: Mapping[int, tuple[int, int] | None] | None = None,
) -> list[Match]:
    """One Match per content region, sorted by content region (paper 3.2).

    score = w_statistical * stat + w_semantic * sem + w_positional * pos against the pool of every region
    of every style image. settings.assignment picks the rule:
      "argmax" (faithful): each content region takes its best pooled region; many-to-one, ties go to the
        first in pool order (style image, then region).
      "balanced": greedy; repeatedly fix the (unassigned content region, pooled region) pair with the
        highest score - usage_penalty * (times that pooled region is already used) - image_penalty * (times
        its style image is already used), so regions spread over distinct style regions and over all the
        chosen style images unless one is better by more than the penalties. Ties go to the lower content
        region, then the first pooled region. Overridden pairs count as uses. Then, when the automatic regions
        can cover every style image not already used by an override, every chosen style paints: the styles left
        unused get a content region each, chosen to lose the least score (an optimal assignment); with fewer
        regions than styles, each region paints with a different style.
    Match.score is always the unpenalised score. `overrides` maps a content region to (style image, style
    region), replacing the automatic pair (source "user"); None leaves it automatic.
    """
    # 1. Check inputs
    if settings.assignment not in ("argmax", "balanced"):
        raise ValueError(f"assignment={settings.assignment!r} is unresolved: resolve 'auto' with the engine's "
                         "resolve_matching before matching")
    if len(styles) == 0:
        raise ValueError("no style images were given: pass the descriptors of at least one style image")
    for j, regs in enumerate(styles):
        if len(regs) == 0:
            raise ValueError(f"style image {j} has no regions: segment it before matching")
    if len(content) == 0:
        return []
    pool = [(j, d) for j, regs in enumerate(styles) for d in regs]
    fixed = _check_overrides(overrides or {}, content, styles, pool)

    # 2. Score every content region against the pool
    terms = _term_matrices(content, [d for _, d in pool])
    score = (settings.w_statistical * terms["statistical"] + settings.w_semantic * terms["semantic"]
             + settings.w_positional * terms["positional"])  # (Kc, P)

    # 3. Assign
    if settings.assignment == "argmax":
        choice = _assign_argmax(score, fixed)
    else:
        images = np.array([j for j, _ in pool])
        choice = _assign_balanced(score, settings.usage_penalty, fixed, images, settings.image_penalty)
        choice = _cover_images(score, choice, images, fixed)

    matches = []
    for c, p in enumerate(choice):
        j, d = pool[p]
        matches.append(Match(
            content_region=content[c].region, style_image=j, style_region=d.region, score=float(score[c, p]),
            terms={name: float(m[c, p]) for name, m in terms.items()}, source="user" if c in fixed else "auto",
        ))
    return sorted(matches, key=lambda m: m.content_region)


def _assign_argmax(score: np.ndarray, fixed: Mapping[int, int]) -> np.ndarray:
    """Pool index per content region: the best one (first on ties), or the fixed one. (Kc,) int."""
    choice = score.argmax(axis=1)
    for c, p in fixed.items():
        choice[c] = p
    return choice


def _assign_balanced(score: np.ndarray, penalty: float, fixed: Mapping[int, int], images: np.ndarray | None = None,
                     image_penalty: float = 0.0) -> np.ndarray:
    """Greedy assignment with usage penalties (see `match`); images[p] is the style image of pooled region p.
    (Kc,) int pool indices."""
    n_content, n_pool = score.shape
    images = np.zeros(n_pool, dtype=np.int64) if images is None else np.asarray(images)
    choice = np.full(n_content, -1, dtype=np.int64)
    uses = np.zeros(n_pool)
    image_uses = np.zeros(int(images.max()) + 1 if n_pool else 0)

    def use(p: int) -> None:
        uses[p] += 1
        image_uses[images[p]] += 1

    for c, p in fixed.items():
        choice[c] = p
        use(p)
    remaining = [c for c in range(n_content) if c not in fixed]
    while remaining:
        cost = penalty * uses + image_penalty * image_uses[images]  # (P,)
        adjusted = score[remaining] - cost[None, :]  # (len(remaining), P)
        i, p = np.unravel_index(int(np.argmax(adjusted)), adjusted.shape)
        choice[remaining.pop(int(i))] = p
        use(int(p))
    return choice


def _cover_images(score: np.ndarray, choice: np.ndarray, images: np.ndarray, fixed: Mapping[int, int]) -> np.ndarray:
    """`choice` changed as little as possible (least summed score lost) so that every style image is used, when the
    automatic (not fixed) content regions are enough for the images no fixed pair uses; with fewer regions than
    images, as many images as there are regions. (Kc,) int pool indices."""
    n_images = int(images.max()) + 1
    if len(set(images[choice].tolist())) == n_images:
        return choice
    free = [c for c in range(len(choice)) if c not in fixed]
    needed = [j for j in range(n_images) if j not in {int(images[p]) for p in fixed.values()}]
    if not free or not needed:
        return choice
    from scipy.optimize import linear_sum_assignment

    best = np.full((len(free), len(needed)), -np.inf)  # (free regions, needed images): best score in that image
    best_p = np.zeros((len(free), len(needed)), dtype=np.int64)
    for k, j in enumerate(needed):
        in_j = np.flatnonzero(images == j)
        sub = score[np.ix_(free, in_j)]  # (free, regions of image j)
        best[:, k], best_p[:, k] = sub.max(axis=1), in_j[sub.argmax(axis=1)]
    current = score[free, choice[free]]  # (free,)
    same = images[choice[free]][:, None] == np.array(needed)[None, :]
    loss = np.where(same, 0.0, current[:, None] - best)  # a region already painting image j loses nothing
    rows, cols = linear_sum_assignment(loss)
    out = choice.copy()
    for r, k in zip(rows, cols):
        if not same[r, k]:
            out[free[r]] = best_p[r, k]
    return out


def unused_styles(matches: Sequence[Match], n_styles: int) -> list[int]:
    """The style images (0-based) that no match paints with."""
    used = {m.style_image for m in matches}
    return [j for j in range(n_styles) if j not in used]


def _span(values: Sequence[int]) -> str:
    values = sorted(values)
    if values == list(range(len(values))):
        return f"0..{len(values) - 1}"
    return ", ".join(str(v) for v in values)


def _check_overrides(
    overrides: Mapping[int, Any],
    content: Sequence[RegionDescriptor],
    styles: Sequence[Sequence[RegionDescriptor]],
    pool: Sequence[tuple[int, RegionDescriptor]],
) -> dict[int, int]:
    """Validated overrides as {content index: pool index}; a bad entry raises OverrideError naming the valid range."""
    content_index = {d.region: i for i, d in enumerate(content)}
    pool_index = {(j, d.region): p for p, (j, d) in enumerate(pool)}
    have = {"content_regions": sorted(content_index), "style_regions": [sorted(d.region for d in s) for s in styles]}
    fixed: dict[int, int] = {}
    for key, value in overrides.items():
        if not _is_int(key) or int(key) not in content_index:
            raise OverrideError(f"override for content region {key!r} is invalid: the content has regions "
                                f"{_span(content_index)}; pick one of those", key, value, **have)
        if value is None:
            continue
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2 \
                or not all(_is_int(v) for v in value):
            raise OverrideError(f"override for content region {key} is {value!r}: expected (style image, style "
                                "region) as two integers, or None for automatic", key, value, **have)
        j, r = int(value[0]), int(value[1])
        if not 0 <= j < len(styles):
            raise OverrideError(f"override {key} -> style image {j} is invalid: there are {len(styles)} style "
                                f"images, numbered 0..{len(styles) - 1}", key, value, **have)
        if (j, r) not in pool_index:
            raise OverrideError(f"override {key} -> style region {r} of style image {j} is invalid: that image has "
                                f"regions {_span([d.region for d in styles[j]])}", key, value, **have)
        fixed[content_index[int(key)]] = pool_index[(j, r)]
    return fixed


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

"""Stage 1: semantic region segmentation (paper 2.1-2.2, the "DFCC" module).

The engine hands over a feature grid; this module turns it into a region map:
z-score -> PCA -> k-means for k = k_min..k_max, best k by silhouette -> merge clusters with close
merge-feature means -> depth split and re-merge -> absorb small islands -> contiguous labels.
numpy, scikit-learn and OpenCV only (no torch), so the weight-free engine can use it too.

Notation (code -> paper, research/paper.md 2.1-2.2):
    weights           -> w_i = d(i) / sum_k d(k), d(t) = 1 / (1 + exp(5 (t/T - 0.7)))   (2.1)
    features          -> F_mix, the time-weighted UNet features, (h, w, C)              (2.1)
    merge_features    -> F, the VAE latent z0 whose region means decide merges, (h, w, c) (2.2)
    depth             -> D, the depth map, near = 1                                     (2.2)
    x, x_pca          -> the z-scored features and their PCA projection (60 dims)        (2.2)
    k_star            -> k*, the argmax of the silhouette over k = 2..K, K = 10          (2.2)
    labels            -> the cluster mask, 0..K-1 here (the official code is 1-based)   (2.2)
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.cluster import KMeans

from stylegallery.config import MergeRule, RegionSettings
from stylegallery.threads import one_thread


# 4-connectivity cross: dilating a component with it gives the component plus its 1-px ring.
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def logistic_time_weights(n_steps: int, slope: float = 5.0, inflection: float = 0.7) -> np.ndarray:
    """Normalised weights w_i of F_mix (paper 2.1), i = 0 is the least noisy step; shape (n_steps,).

    d(i) = 1 / (1 + exp(slope * (i / n_steps - inflection))); decreasing in i, so low-noise steps weigh most.
    """
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r} is invalid: expected an integer >= 1")
    i = np.arange(n_steps, dtype=np.float64)
    d = 1.0 / (1.0 + np.exp(slope * (i / n_steps - inflection)))
    return d / d.sum()


def segment(
    features: np.ndarray,
    merge_features: np.ndarray,
    depth: np.ndarray | None,
    settings: RegionSettings,
) -> np.ndarray:
    """Region map of one image (paper 2.2): (h, w) int32 labels 0..K-1, contiguous, in raster first-occurrence order.

    features: (h, w, C) F_mix; merge_features: (h, w, c) F (the VAE latent); depth: (h, w) in [0, 1] or None.
    Deterministic for `settings.seed`.
    """
    # 1. Check inputs
    features = np.asarray(features)
    merge_features = np.asarray(merge_features)
    if features.ndim != 3 or min(features.shape) < 1:
        raise ValueError(f"features have shape {features.shape}: expected (h, w, C) with h, w, C >= 1")
    h, w = features.shape[:2]
    if merge_features.ndim != 3 or merge_features.shape[:2] != (h, w) or merge_features.shape[2] < 1:
        raise ValueError(f"merge_features have shape {merge_features.shape}: expected ({h}, {w}, c), "
                         "the same grid as the features")
    if depth is not None:
        depth = np.asarray(depth)
        if depth.shape != (h, w):
            raise ValueError(f"depth has shape {depth.shape}: expected ({h}, {w}), the grid of the features, or None")
        if not np.all(np.isfinite(depth)):
            raise ValueError("depth holds NaN or inf values: pass a finite depth map or None")
    for name, arr in (("features", features), ("merge_features", merge_features)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} hold NaN or inf values: check the engine's feature extraction")

    # One BLAS/OpenMP thread: these arrays are small, and with the cores busy (e.g. the app serving another
    # request) threaded eigh and k-means spin-wait: 4.8 s instead of 0.13 s for the 640x640 eigh, 22 s
    # instead of 0.4 s for the k-means sweep (measured on 2 cores at load 6).
    with one_thread():
        # 2. Cluster F_mix with the silhouette-chosen k
        x = features.reshape(h * w, -1).astype(np.float64)  # (n, C)
        x_pca = _pca(_zscore(x), settings.pca_dims)  # (n, q)
        labels = _cluster(x_pca, settings).reshape(h, w)

        # 3. Merge clusters whose mean merge features are close
        f = merge_features.astype(np.float64)
        labels = _merge_close(labels, f, settings.merge_threshold, rule=settings.merge_rule)

        # 4. Depth split and re-merge
        if settings.use_depth and depth is not None:
            d = _minmax(depth.astype(np.float64))
            labels = _split_by_depth(labels, d, settings.depth_split_span, settings.depth_min_cells)
            labels = _merge_close(labels, f, settings.remerge_threshold, depth=d,
                                  depth_threshold=settings.remerge_depth, rule=settings.merge_rule)

        # 5. Absorb small islands, 6. contiguous labels
        labels = _absorb_small(labels, settings.min_region_cells)
    return relabel(labels)


def labels_from_mask(mask: np.ndarray, grid: tuple[int, int], image_shape: tuple[int, int] | None = None,
                     *, name: str = "content mask") -> np.ndarray:
    """User regions (a label mask, see images.load_label_mask) on the feature grid: (h, w) int32, contiguous.

    Replaces stage 1 for the content (the official label masks). The mask is nearest-resized to the grid as the
    official code resizes its masks (F.interpolate "nearest": source index floor(i * H / h)); a region smaller
    than a grid cell can vanish. `image_shape` (H, W) of the working image: the mask must have its aspect ratio
    (within 2 %), since it is drawn on that image. Raises InputError otherwise.
    """
    from stylegallery.errors import InputError

    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0 or not np.issubdtype(mask.dtype, np.integer):
        raise InputError(f"{name} has shape {mask.shape} and dtype {mask.dtype}: expected an (H, W) integer label map")
    h, w = grid
    if h < 1 or w < 1:
        raise ValueError(f"grid={grid!r} is invalid: expected two sides >= 1")
    height, width = mask.shape
    if image_shape is not None:
        ratio, expected = width / height, image_shape[1] / image_shape[0]
        if abs(ratio / expected - 1) > 0.02:
            raise InputError(f"{name} is {width}x{height} px but the content image is "
                             f"{image_shape[1]}x{image_shape[0]} "
                             f"(aspect {ratio:.3f} vs {expected:.3f}): draw the mask on the content image itself, at "
                             "its size or scaled uniformly")
    rows = (np.arange(h) * height) // h
    cols = (np.arange(w) * width) // w
    return relabel(mask[rows][:, cols])


def overlay_label_mask(labels: np.ndarray, mask_on_grid: np.ndarray) -> np.ndarray:
    """The official `update_clusters_with_mask`: every non-zero mask value becomes one new region over the
    clusters; where the mask is 0 the clusters stay. (h, w) labels and mask on the same grid -> contiguous labels."""
    labels, mask_on_grid = np.asarray(labels), np.asarray(mask_on_grid)
    if labels.shape != mask_on_grid.shape:
        raise ValueError(f"labels {labels.shape} and mask {mask_on_grid.shape} must be on the same grid")
    out = labels.astype(np.int64).copy()
    for value in np.unique(mask_on_grid[mask_on_grid != 0]):
        out[mask_on_grid == value] = out.max() + 1
    return relabel(out)


def sam_label_map(masks: list[np.ndarray] | tuple[np.ndarray, ...], grid: tuple[int, int]) -> np.ndarray:
    """The official SAM base map (`generate_mask_with_sam`): masks painted largest first, so smaller ones stay on
    top, label i + 1 for the i-th largest and 0 where no mask covers; nearest-resized to the grid. (h, w) int32."""
    if len(masks) == 0:
        raise ValueError("no SAM masks: the mask generator found no region above its thresholds; use a trained SAM "
                         "(e.g. facebook/sam-vit-base), lower DiffusionSettings.sam_pred_iou_thresh and "
                         "sam_stability_thresh, or drop the SAM model (--sam-model)")
    shape = np.asarray(masks[0]).shape
    painted = np.zeros(shape, dtype=np.int32)
    order = sorted(range(len(masks)), key=lambda i: int(np.asarray(masks[i]).sum()), reverse=True)
    for rank, i in enumerate(order):
        m = np.asarray(masks[i], dtype=bool)
        if m.shape != shape:
            raise ValueError(f"SAM mask {i} has shape {m.shape}, the first has {shape}")
        painted[m] = rank + 1
    h, w = grid
    return painted[(np.arange(h) * shape[0]) // h][:, (np.arange(w) * shape[1]) // w]


def segment_from_base(base: np.ndarray, merge_features: np.ndarray, settings: RegionSettings) -> np.ndarray:
    """Stage 1 from a base label map instead of k-means (the official SAM path of `feature_cluster`): merge base
    regions whose mean merge features are closer than `settings.sam_merge_threshold` (official 0.5; no depth
    split), absorb small islands, contiguous labels. base: (h, w) ints; merge_features: (h, w, c)."""
    base, f = np.asarray(base), np.asarray(merge_features, dtype=np.float64)
    if base.ndim != 2 or f.ndim != 3 or f.shape[:2] != base.shape:
        raise ValueError(f"base {base.shape} and merge_features {f.shape} must share one (h, w) grid")
    labels = _merge_close(base, f, settings.sam_merge_threshold, rule=settings.merge_rule)
    return relabel(_absorb_small(labels, settings.min_region_cells))


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 in order of first occurrence in raster order; same shape, int32."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    values, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    rank = np.empty(len(values), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(values), dtype=np.int32)
    return rank[inverse.ravel()].reshape(labels.shape)


def region_sizes(labels: np.ndarray) -> np.ndarray:
    """Cells per label, (K,) int64, for contiguous labels 0..K-1."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    if labels.min() < 0:
        raise ValueError(f"labels hold a negative value {labels.min()}: pass labels 0..K-1 (see relabel)")
    return np.bincount(labels.ravel().astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Step 1: z-score and PCA
# ---------------------------------------------------------------------------------------------


def _zscore(x: np.ndarray) -> np.ndarray:
    """Per-channel z-score of (n, C) features; constant channels become 0 rather than NaN."""
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])  # torch .std is unbiased
    std = np.where(std > 1e-12, std, 1.0)
    return (x - mean) / std


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Project (n, C) data on its top min(dims, C, n-1) principal axes, without centring.

    The official code calls torch.pca_lowrank(center=False) on z-scored data, which is already centred;
    here the exact eigendecomposition of the smaller Gram matrix is used (deterministic, same subspace).
    Axes signs are fixed so the largest-magnitude loading is positive.
    """
    n, c = x.shape
    q = max(1, min(dims, c, n - 1))
    if c <= n:
        gram = x.T @ x  # (C, C)
        evals, evecs = np.linalg.eigh(gram)
        axes = evecs[:, ::-1][:, :q]  # (C, q), descending variance
        signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(q)])
        return x @ (axes * np.where(signs == 0, 1.0, signs))  # (n, q)
    gram = x @ x.T  # (n, n); same projection through the left singular vectors
    evals, evecs = np.linalg.eigh(gram)
    u = evecs[:, ::-1][:, :q]  # (n, q)
    s = np.sqrt(np.clip(evals[::-1][:q], 0.0, None))
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(q)])
    return u * s * np.where(signs == 0, 1.0, signs)


# ---------------------------------------------------------------------------------------------
# Step 2: k-means with the silhouette-chosen k
# ---------------------------------------------------------------------------------------------


def _cluster(x: np.ndarray, settings: RegionSettings) -> np.ndarray:
    """k-means labels (n,) for the k in k_min..k_max with the best silhouette; all zeros for degenerate data."""
    n = x.shape[0]
    n_distinct = len(np.unique(x, axis=0)) if n > 0 else 0
    k_hi = min(settings.k_max, n - 1, n_distinct)
    if k_hi < settings.k_min:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(n, settings.silhouette_sample, replace=False)) if n > settings.silhouette_sample \
        else np.arange(n)
    dist = _pairwise_distances(x[sample])  # (m, m)
    best_score, best_labels = -np.inf, np.zeros(n, dtype=np.int64)
    for k in range(settings.k_min, k_hi + 1):
        labels = _kmeans(x, k, settings.n_init, settings.max_iter, settings.tol, settings.seed, settings.kmeans_init)
        score = _silhouette(dist, labels[sample])
        if score > best_score:  # strict: ties keep the smaller k
            best_score, best_labels = score, labels
    return best_labels


def _kmeans(x: np.ndarray, k: int, n_init: int, max_iter: int, tol: float, seed: int,
            init: str = "k-means++") -> np.ndarray:
    """Lowest-inertia labels of `n_init` seeded k-means runs (sklearn; its tol is relative to the data variance).

    init "k-means++" is sklearn's seeding; "random" starts from k random data points, as the official code.
    """
    km = KMeans(n_clusters=k, init=init, n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed)
    return km.fit_predict(x.astype(np.float32)).astype(np.int64)


def _pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix (m, m) in float32, computed in place to keep memory at one (m, m) array.

    float32 halves the memory traffic of this (memory-bound) step; the silhouette averages thousands of
    distances, so its error stays around 1e-6.
    """
    x = x.astype(np.float32)
    sq = (x * x).sum(axis=1)
    d = x @ x.T  # (m, m)
    d *= -2.0
    d += sq[:, None]
    d += sq[None, :]
    np.maximum(d, 0.0, out=d)
    np.sqrt(d, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def _silhouette(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a precomputed distance matrix (sklearn's definition: singletons score 0).

    a_i = mean distance to the other members of i's cluster, b_i = smallest mean distance to another
    cluster, s_i = (b_i - a_i) / max(a_i, b_i). Returns -inf when fewer than 2 clusters are present.
    """
    _, lab = np.unique(labels, return_inverse=True)
    k = int(lab.max()) + 1 if lab.size else 0
    if k < 2:
        return -np.inf
    m = lab.size
    onehot = np.zeros((m, k), dtype=dist.dtype)
    onehot[np.arange(m), lab] = 1.0
    sizes = onehot.sum(axis=0, dtype=np.float64)  # (k,)
    sums = (dist @ onehot).astype(np.float64)  # (m, k) distance sums to each cluster
    own = sums[np.arange(m), lab]
    own_size = sizes[lab]
    a = own / np.maximum(own_size - 1.0, 1.0)
    means = sums / sizes
    means[np.arange(m), lab] = np.inf
    b = means.min(axis=1)
    denom = np.maximum(a, b)
    s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    s[own_size <= 1] = 0.0
    return float(s.mean())


# ---------------------------------------------------------------------------------------------
# Steps 3-4: merging and the depth split
# ---------------------------------------------------------------------------------------------


def _merge_close(
    labels: np.ndarray,
    merge_features: np.ndarray,
    threshold: float,
    depth: np.ndarray | None = None,
    depth_threshold: float | None = None,
    rule: MergeRule = "official",
) -> np.ndarray:
    """Merge clusters whose mean merge-feature vectors are closer than `threshold` (L2), paper 2.2.

    With `depth`, a pair also needs its mean-depth difference below `depth_threshold` (the re-merge).
    rule "official" (`merge_similar_clusters`): for every close pair i < j the map sets j -> i, so the
    largest close i < j wins, then chains are followed; this is not a transitive closure (with means
    0.0 / 1.0 / 0.5 at 0.85, cluster 2 joins 1 and 0 stays apart). rule "union_find" joins every
    close pair transitively (0, 1 and 2 all end in one region). Returns compact labels 0..K'-1.
    """
    values, lab = np.unique(labels, return_inverse=True)
    lab = lab.reshape(labels.shape)
    k = len(values)
    counts = np.bincount(lab.ravel(), minlength=k).astype(np.float64)  # (k,)
    f = merge_features.reshape(lab.size, -1)  # (n, c)
    order = np.argsort(lab.ravel(), kind="stable")  # rows grouped by cluster, in raster order within each
    starts = np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.int64)
    means = np.add.reduceat(f[order].astype(np.float64), starts, axis=0)  # (k, c) every cluster has a member
    means /= counts[:, None]  # (k, c)
    close = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=-1) < threshold  # (k, k)
    if depth is not None and depth_threshold is not None:
        dmean = np.bincount(lab.ravel(), weights=depth.ravel(), minlength=k) / counts  # (k,)
        close &= np.abs(dmean[:, None] - dmean[None, :]) < depth_threshold
    roots = _MERGE_RULES[rule](close)
    compact = np.unique(roots, return_inverse=True)[1].ravel()  # (k,) cluster -> merged label
    return compact[lab]


def _official_merge_roots(close: np.ndarray) -> np.ndarray:
    """The official merge map: j -> the largest i < j close to it, chains followed; (k,) root of each cluster."""
    k = close.shape[0]
    roots = np.arange(k)
    for j in range(1, k):
        partners = np.flatnonzero(close[:j, j])
        if partners.size:
            roots[j] = roots[partners[-1]]  # partners[-1] < j is already resolved to its root
    return roots


def _union_find_roots(close: np.ndarray) -> np.ndarray:
    """Transitive closure of the close pairs; the smallest label of each group is its root, (k,)."""
    k = close.shape[0]
    parent = np.arange(k)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(close, k=1))):
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(k)])


# RegionSettings.merge_rule -> (k, k) close-pair matrix -> (k,) root of each cluster
_MERGE_RULES = {"official": _official_merge_roots, "union_find": _union_find_roots}


def _minmax(depth: np.ndarray) -> np.ndarray:
    """Depth stretched to [0, 1] as the official code does before split and re-merge (constant -> 0)."""
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo + 1e-6)


def _split_by_depth(labels: np.ndarray, depth: np.ndarray, span: float, min_cells: int) -> np.ndarray:
    """Split each cluster of >= `min_cells` cells whose depth P95-P05 is >= `span` in two (1-D 2-means on depth).

    Percentiles are read from the sorted depths at int(0.05 n) and int(0.95 n), as the official code does.
    The far part keeps the label; the near part gets a new one. Returns compact labels.
    """
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    out = labels.copy()
    next_label = int(labels.max()) + 1
    flat_labels, flat_depth, flat_out = labels.ravel(), depth.ravel(), out.ravel()
    for lab in range(next_label):
        idx = np.flatnonzero(flat_labels == lab)
        if idx.size < min_cells:
            continue
        values = np.sort(flat_depth[idx])
        if values[int(0.95 * idx.size)] - values[int(0.05 * idx.size)] < span:
            continue
        near = _two_means_1d(flat_depth[idx])
        if near.any() and not near.all():
            flat_out[idx[near]] = next_label
            next_label += 1
    return out


def _two_means_1d(values: np.ndarray) -> np.ndarray:
    """The exact 1-D 2-means partition of `values`: a boolean mask of the upper group.

    Scans every cut between distinct sorted values and keeps the one with the lowest within-group sum of
    squares (Lloyd's algorithm from a random start, as in the official code, can stop at a worse cut).
    All-equal values give an all-False mask.
    """
    v = np.sort(values.astype(np.float64))
    n = v.size
    cuts = np.flatnonzero(v[1:] > v[:-1]) + 1  # left group = v[:cut]
    if cuts.size == 0:
        return np.zeros(n, dtype=bool)
    csum = np.cumsum(v)
    left, right = csum[cuts - 1], csum[-1] - csum[cuts - 1]
    # minimising the within-group SSE == maximising sum_l^2 / n_l + sum_r^2 / n_r
    gain = left ** 2 / cuts + right ** 2 / (n - cuts)
    threshold = v[cuts[int(np.argmax(gain))]]
    return values >= threshold


# ---------------------------------------------------------------------------------------------
# Step 5: absorb small regions
# ---------------------------------------------------------------------------------------------


def _absorb_small(labels: np.ndarray, min_cells: int) -> np.ndarray:
    """Relabel every 4-connected component under `min_cells` cells to the most frequent other label on its ring.

    The ring is the component's 3x3-cross dilation minus the component (utils.remove_small_regions).
    Ties go to the smaller label. Sweeps repeat until nothing changes; every change lowers the number of
    components, so this ends. A component with no other label around it (the whole image) stays.
    """
    labels = np.ascontiguousarray(labels, dtype=np.int32).copy()
    h, w = labels.shape
    changed = True
    while changed:
        changed = False
        for lab in np.unique(labels):
            mask = (labels == lab).astype(np.uint8)
            n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
            for c in range(1, n):
                x0, y0, bw, bh, area = (int(v) for v in stats[c])
                if area >= min_cells:
                    continue
                # work on the component's box grown by the 1-px ring
                ys, ye, xs, xe = max(y0 - 1, 0), min(y0 + bh + 1, h), max(x0 - 1, 0), min(x0 + bw + 1, w)
                part = comp[ys:ye, xs:xe] == c
                ring = cv2.dilate(part.astype(np.uint8), _CROSS).astype(bool) & ~part
                around = labels[ys:ye, xs:xe][ring]
                around = around[around != lab]
                if around.size == 0:
                    continue
                labels[ys:ye, xs:xe][part] = int(np.argmax(np.bincount(around)))
                changed = True
    return labels

"""Stage 1 (regions.py) on planted data whose answer is known."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

from stylegallery import regions
from stylegallery.config import RegionSettings


NO_DEPTH = RegionSettings(use_depth=False)


def planted(layout: np.ndarray, channels: int = 16, spread: float = 8.0, noise: float = 1.0,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features (h, w, C) with one well-separated blob per label of `layout`, and far-apart merge features."""
    rng = np.random.default_rng(seed)
    k = int(layout.max()) + 1
    centres = rng.normal(size=(k, channels)) * spread
    features = centres[layout] + rng.normal(size=(*layout.shape, channels)) * noise
    merge = np.zeros((*layout.shape, 4))
    merge[..., 0] = 3.0 * layout  # region means 3 apart: above every merge threshold
    merge += rng.normal(size=merge.shape) * 0.05
    return features.astype(np.float32), merge.astype(np.float32)


def stripes(h: int, w: int, k: int) -> np.ndarray:
    return np.broadcast_to((np.arange(w) * k // w)[None, :], (h, w)).astype(np.int32).copy()


def layout_three(h: int, w: int) -> np.ndarray:
    lab = np.zeros((h, w), dtype=np.int32)
    lab[: h // 2, w // 2:] = 1
    lab[h // 2:, :] = 2
    return lab


# -- time weights (2.1) ----------------------------------------------------------------------


def test_time_weights_reproduce_paper_values():
    paper = [0.0936, 0.0925, 0.0910, 0.0891, 0.0865, 0.0831, 0.0788, 0.0735, 0.0672, 0.0600, 0.0522, 0.0442,
             0.0364, 0.0292, 0.0229]
    w = regions.logistic_time_weights(15)
    np.testing.assert_allclose(w, paper, atol=5e-5)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) < 0)


def test_time_weights_single_step_and_invalid():
    np.testing.assert_allclose(regions.logistic_time_weights(1), [1.0])
    with pytest.raises(ValueError, match="n_steps"):
        regions.logistic_time_weights(0)


# -- step 1-2: PCA, k-means, silhouette --------------------------------------------------------


def test_pca_spans_the_sklearn_subspace():
    rng = np.random.default_rng(1)
    x = regions._zscore(rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)))
    ours = regions._pca(x, 5)
    ref = PCA(n_components=5, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-8)  # equal up to the sign of each axis


def test_zscore_guards_constant_channels():
    x = np.ones((10, 3))
    x[:, 1] = np.arange(10)
    z = regions._zscore(x)
    assert np.all(np.isfinite(z))
    assert np.allclose(z[:, 0], 0) and np.allclose(z[:, 2], 0)
    assert z[:, 1].std(ddof=1) == pytest.approx(1.0)


def test_silhouette_equals_sklearn():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6))
    labels = rng.integers(0, 4, size=200)
    labels[7] = 4  # a singleton cluster scores 0 in both
    ours = regions._silhouette(regions._pairwise_distances(x), labels)
    assert ours == pytest.approx(silhouette_score(x, labels), abs=1e-5)
    assert regions._silhouette(regions._pairwise_distances(x), np.zeros(200)) == -np.inf


@pytest.mark.parametrize("k", [3, 5])
def test_silhouette_recovers_planted_k(k):
    layout = layout_three(32, 48) if k == 3 else stripes(32, 48, 5)
    features, merge = planted(layout)
    labels = regions.segment(features, merge, None, NO_DEPTH)
    assert labels.shape == (32, 48) and labels.dtype == np.int32
    assert adjusted_rand_score(layout.ravel(), labels.ravel()) == 1.0


def test_kmeans_init_random_starts_from_data_points(monkeypatch):
    from sklearn.cluster import KMeans

    x = np.random.default_rng(6).normal(size=(300, 5)).astype(np.float32)  # no structure: the start shows
    for init in ("k-means++", "random"):
        expected = KMeans(n_clusters=6, init=init, n_init=1, max_iter=64, tol=1e-4, random_state=0).fit_predict(x)
        np.testing.assert_array_equal(regions._kmeans(x, 6, 1, 64, 1e-4, 0, init), expected)
    assert not np.array_equal(regions._kmeans(x, 6, 1, 64, 1e-4, 0, "random"), regions._kmeans(x, 6, 1, 64, 1e-4, 0))
    with pytest.raises(ValueError, match="kmeans_init='lloyd' is invalid"):
        RegionSettings(kmeans_init="lloyd")  # type: ignore[arg-type]
    seen = []
    original = regions._kmeans
    monkeypatch.setattr(regions, "_kmeans", lambda *args: seen.append(args[-1]) or original(*args))
    features, merge = planted(layout_three(16, 24))
    regions.segment(features, merge, None, dataclasses.replace(NO_DEPTH, kmeans_init="random"))
    assert seen and set(seen) == {"random"}  # every k of the silhouette search starts from data points


def test_silhouette_sample_is_used_for_large_grids():
    layout = stripes(40, 40, 4)  # 1600 cells, silhouette on a 300-cell seeded sample
    features, merge = planted(layout, seed=3)
    settings = dataclasses.replace(NO_DEPTH, silhouette_sample=300)
    labels = regions.segment(features, merge, None, settings)
    assert adjusted_rand_score(layout.ravel(), labels.ravel()) == 1.0


def test_non_square_grid():
    layout = layout_three(24, 40).T.copy()  # (40, 24)
    features, merge = planted(layout, seed=4)
    labels = regions.segment(features, merge, None, NO_DEPTH)
    assert labels.shape == (40, 24)
    assert adjusted_rand_score(layout.ravel(), labels.ravel()) == 1.0


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(24, 32, 20)).astype(np.float32)  # no structure: k-means depends on its seed
    merge = rng.normal(size=(24, 32, 4)).astype(np.float32)
    settings = dataclasses.replace(NO_DEPTH, merge_threshold=0.0, min_region_cells=1)
    a = regions.segment(features, merge, None, settings)
    b = regions.segment(features, merge, None, settings)
    np.testing.assert_array_equal(a, b)


def test_constant_features_give_one_region():
    features = np.ones((16, 16, 8), dtype=np.float32)
    merge = np.zeros((16, 16, 4), dtype=np.float32)
    labels = regions.segment(features, merge, np.zeros((16, 16)), RegionSettings())
    assert labels.shape == (16, 16) and np.all(labels == 0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 2), (3, 1)])
def test_tiny_grids_give_valid_labels(shape):
    rng = np.random.default_rng(6)
    features = rng.normal(size=(*shape, 5)).astype(np.float32)
    merge = rng.normal(size=(*shape, 4)).astype(np.float32)
    settings = dataclasses.replace(NO_DEPTH, merge_threshold=0.0, min_region_cells=1)
    labels = regions.segment(features, merge, None, settings)
    assert labels.shape == shape
    assert labels.min() == 0 and np.all(np.bincount(labels.ravel()) > 0)


# -- step 3: merge ------------------------------------------------------------------------------


def quadrants(h: int = 8, w: int = 8) -> np.ndarray:
    lab = np.zeros((h, w), dtype=np.int64)
    lab[: h // 2, w // 2:] = 1
    lab[h // 2:, : w // 2] = 2
    lab[h // 2:, w // 2:] = 3
    return lab


def merge_grid(labels: np.ndarray, means: list[float]) -> np.ndarray:
    f = np.zeros((*labels.shape, 2))
    f[..., 0] = np.asarray(means)[labels]
    return f


def test_merge_joins_close_means_only():
    lab = quadrants()
    merged = regions._merge_close(lab, merge_grid(lab, [0.0, 0.5, 5.0, 10.0]), 0.85)
    assert len(np.unique(merged)) == 3
    assert np.all(merged[lab == 0] == merged[lab == 1].max())
    assert len({int(merged[lab == 2][0]), int(merged[lab == 3][0]), int(merged[lab == 0][0])}) == 3


def test_merge_is_strict_and_uses_region_means():
    lab = quadrants()
    f = merge_grid(lab, [0.0, 0.5, 5.0, 10.0])
    assert len(np.unique(regions._merge_close(lab, f, 0.5))) == 4  # distance == threshold: kept apart
    # cells vary inside a region, only the region means matter
    f[lab == 1, 0] = np.where(np.arange((lab == 1).sum()) % 2 == 0, -3.0, 3.75)  # mean 0.375
    assert len(np.unique(regions._merge_close(lab, f, 0.5))) == 3


def test_merge_resolves_chains():
    lab = quadrants()
    merged = regions._merge_close(lab, merge_grid(lab, [0.0, 0.6, 1.2, 5.0]), 0.85)  # 0~1, 1~2, but 0 !~ 2
    assert len(np.unique(merged)) == 2
    assert len(np.unique(merged[lab <= 2])) == 1


def test_remerge_needs_both_feature_and_depth_closeness():
    lab = quadrants()
    f = merge_grid(lab, [0.0, 0.2, 3.0, 3.2])
    depth = np.array([0.0, 0.5, 0.5, 0.6])[lab]  # pair 0-1: depth apart; pair 2-3: depth close
    merged = regions._merge_close(lab, f, 0.35, depth=depth, depth_threshold=0.3)
    assert len(np.unique(merged)) == 3
    assert merged[lab == 2][0] == merged[lab == 3][0]
    assert merged[lab == 0][0] != merged[lab == 1][0]
    # 1 and 2 are close in depth (0.5 = 0.5) but far in features: not merged either
    assert merged[lab == 1][0] != merged[lab == 2][0]


# -- step 4: depth split --------------------------------------------------------------------------


def test_two_means_1d_is_the_best_cut():
    np.testing.assert_array_equal(regions._two_means_1d(np.array([0.9, 0.0, 1.0, 0.1, 0.2])),
                                  [True, False, True, False, False])
    assert not regions._two_means_1d(np.full(5, 0.3)).any()
    rng = np.random.default_rng(7)
    v = rng.random(40)
    upper = regions._two_means_1d(v)
    sse = lambda a: ((a - a.mean()) ** 2).sum()  # noqa: E731
    s = np.sort(v)
    best = min(sse(s[:i]) + sse(s[i:]) for i in range(1, 40))
    assert sse(v[upper]) + sse(v[~upper]) == pytest.approx(best)


def test_depth_split_splits_a_cluster_spanning_depth():
    lab = np.zeros((8, 10), dtype=np.int64)
    lab[:, 5:] = 1
    depth = np.zeros((8, 10))
    depth[:, :5] = np.linspace(0, 1, 5)[None, :]  # cluster 0 spans 0..1; cluster 1 is flat
    out = regions._split_by_depth(lab, depth, span=0.75, min_cells=20)
    assert len(np.unique(out)) == 3
    assert np.all(out[lab == 1] == out[lab == 1][0])
    near, far = out[:, 4][0], out[:, 0][0]
    assert near != far
    assert depth[out == near].min() > depth[out == far].max()


def test_depth_split_respects_span_and_size():
    lab = np.zeros((8, 10), dtype=np.int64)
    lab[:, 5:] = 1
    depth = np.zeros((8, 10))
    depth[:, :5] = np.linspace(0, 0.7, 5)[None, :]  # span 0.7 < 0.75
    assert len(np.unique(regions._split_by_depth(lab, depth, 0.75, 20))) == 2
    depth[:, :5] = np.linspace(0, 1, 5)[None, :]
    assert len(np.unique(regions._split_by_depth(lab, depth, 0.75, 41))) == 2  # 40 cells < min_cells


def test_segment_depth_split_end_to_end():
    layout = stripes(20, 30, 2)
    features, merge = planted(layout, seed=8)
    depth = np.zeros((20, 30))
    depth[:10, :15] = 1.0  # the top of the left region is near: it splits off
    labels = regions.segment(features, merge, depth, RegionSettings())
    expected = layout.copy()
    expected[:10, :15] = 2
    assert adjusted_rand_score(expected.ravel(), labels.ravel()) == 1.0
    flat = regions.segment(features, merge, depth, NO_DEPTH)
    assert adjusted_rand_score(layout.ravel(), flat.ravel()) == 1.0


# -- step 5: small regions -------------------------------------------------------------------------


def test_island_goes_to_its_surrounding_label():
    lab = np.zeros((12, 12), dtype=np.int32)
    lab[4:7, 4:7] = 1
    np.testing.assert_array_equal(regions._absorb_small(lab, 20), np.zeros((12, 12)))


def test_two_islands_are_absorbed():
    lab = np.full((12, 12), 3, dtype=np.int32)
    lab[1:4, 1:4] = 1
    lab[7:10, 6:9] = 2
    lab[0, 11] = 1  # a second component of label 1, one cell
    np.testing.assert_array_equal(regions._absorb_small(lab, 20), np.full((12, 12), 3))


def test_island_touching_two_labels_goes_to_the_most_frequent():
    lab = np.zeros((10, 10), dtype=np.int32)
    lab[:, 4:] = 1
    lab[3:6, 3:6] = 2  # ring: 5 cells of label 0, 7 of label 1
    out = regions._absorb_small(lab, 20)
    assert np.all(out[3:6, 3:6] == 1)
    np.testing.assert_array_equal(out[lab != 2], lab[lab != 2])


def test_absorption_repeats_until_stable_and_keeps_one_label():
    lab = np.zeros((12, 12), dtype=np.int32)
    lab[3:7, 3:7] = 1  # 16 cells, small
    lab[4:6, 4:6] = 2  # island inside the island
    assert np.all(regions._absorb_small(lab, 20) == 0)
    tiny = np.array([[0, 0, 1], [1, 1, 1]], dtype=np.int32)  # every component is small
    out = regions._absorb_small(tiny, 20)
    assert len(np.unique(out)) == 1


def test_large_regions_are_untouched():
    lab = stripes(10, 12, 3)
    np.testing.assert_array_equal(regions._absorb_small(lab, 20), lab)


# -- relabel, sizes, validation --------------------------------------------------------------------


def test_relabel_orders_by_first_occurrence():
    lab = np.array([[5, 5, 2], [2, 7, 7]])
    out = regions.relabel(lab)
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 2, 2]])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(regions.region_sizes(out), [2, 2, 2])


def test_segment_output_is_contiguous_in_raster_order():
    layout = stripes(20, 30, 3)[:, ::-1].copy()  # planted labels 2, 1, 0 from the left
    features, merge = planted(layout, seed=9)
    labels = regions.segment(features, merge, None, NO_DEPTH)
    assert labels[0, 0] == 0 and labels[0, -1] == 2


@pytest.mark.parametrize("features, merge, depth, match", [
    (np.zeros((4, 4)), np.zeros((4, 4, 4)), None, "features"),
    (np.zeros((4, 4, 3)), np.zeros((4, 5, 4)), None, "merge_features"),
    (np.zeros((4, 4, 3)), np.zeros((4, 4, 4)), np.zeros((4, 5)), "depth"),
    (np.full((4, 4, 3), np.nan), np.zeros((4, 4, 4)), None, "NaN"),
])
def test_segment_validates_shapes(features, merge, depth, match):
    with pytest.raises(ValueError, match=match):
        regions.segment(features, merge, depth, RegionSettings())


def test_regions_module_does_not_import_torch():
    code = ("import sys, numpy as np; from stylegallery import regions; from stylegallery.config import "
            "RegionSettings; regions.segment(np.random.rand(8, 8, 4), np.random.rand(8, 8, 4), None, "
            "RegionSettings()); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=regions.__file__.rsplit("/stylegallery/", 1)[0])


# -- the merge rule: the official map (default) vs union-find (2.2) ---------------------------------


def bands(k: int, h: int = 8, width: int = 6) -> np.ndarray:
    return np.repeat(np.arange(k), width)[None, :].repeat(h, axis=0).astype(np.int64)


def test_merge_rule_official_is_the_default():
    assert RegionSettings().merge_rule == "official"
    with pytest.raises(ValueError, match="merge_rule"):
        RegionSettings(merge_rule="transitive")


def test_official_merge_is_not_transitive():
    # means 0.0 / 1.0 / 0.5 at 0.85: pairs (0, 2) and (1, 2) are close, (0, 1) is not. The official map sets
    # 2 -> 0, then 2 -> 1 (the largest i wins): two regions; union-find joins all three.
    lab = bands(3)
    f = merge_grid(lab, [0.0, 1.0, 0.5])
    official = regions._merge_close(lab, f, 0.85)
    assert len(np.unique(official)) == 2
    assert official[lab == 2][0] == official[lab == 1][0] != official[lab == 0][0]
    assert len(np.unique(regions._merge_close(lab, f, 0.85, rule="union_find"))) == 1


def test_planted_bands_with_the_bridge_as_the_last_label(monkeypatch):
    # four k-means clusters on bands: 0 (mean 0.0), 1 (1.0), 2 (far, 5.0) and the bridge 3 (0.5), the highest
    # label: the official rule keeps 0 apart (3 -> 1 only), union-find joins 0, 1 and 3.
    lab = bands(4, width=8)
    features = np.random.default_rng(0).normal(size=(*lab.shape, 8)).astype(np.float32)
    merge = merge_grid(lab, [0.0, 1.0, 5.0, 0.5]).astype(np.float32)
    monkeypatch.setattr(regions, "_cluster", lambda x, settings: lab.ravel().copy())
    official = regions.segment(features, merge, None, NO_DEPTH)
    union = regions.segment(features, merge, None, dataclasses.replace(NO_DEPTH, merge_rule="union_find"))
    assert len(np.unique(official)) == 3
    assert len(np.unique(union)) == 2
    assert official[lab == 3][0] == official[lab == 1][0]


def test_official_rule_also_drives_the_depth_remerge():
    lab = bands(3)
    f = merge_grid(lab, [0.0, 0.3, 0.15])
    depth = np.zeros(lab.shape)
    assert len(np.unique(regions._merge_close(lab, f, 0.2, depth=depth, depth_threshold=0.3))) == 2
    assert len(np.unique(regions._merge_close(lab, f, 0.2, depth=depth, depth_threshold=0.3,
                                              rule="union_find"))) == 1


def test_merge_rules_agree_with_the_official_source():
    """Both planted cases and random ones against `merge_similar_clusters` executed from the official source."""
    import importlib.util
    from pathlib import Path

    import torch

    spec = importlib.util.spec_from_file_location(
        "official", Path(__file__).resolve().parents[1] / "benchmarks" / "official.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    repo = official.find_official()
    if repo is None:
        pytest.skip(f"the official repository is absent: set ${official.ENV} to a checkout of "
                    "iiiiiiiword/StyleGallery")
    merge = official.official_method(official.official_source(repo), "merge_similar_clusters")
    rng = np.random.default_rng(1)
    cases = [([0.0, 1.0, 0.5], 0.85), ([0.0, 1.0, 5.0, 0.5], 0.85)]
    cases += [(list(rng.random(k) * 2.0), 0.4) for k in range(3, 10) for _ in range(6)]
    for means, threshold in cases:
        lab = bands(len(means), width=3)
        f = merge_grid(lab, means)
        ours = regions._merge_close(lab, f, threshold)
        flat = torch.from_numpy(lab.ravel())
        theirs, _ = merge(None, flat, torch.zeros(len(means), 2), torch.from_numpy(f.reshape(-1, 2)).float(),
                          torch.zeros(flat.numel(), 2), similar_threshold=threshold)
        np.testing.assert_array_equal(ours.ravel(), theirs.numpy())

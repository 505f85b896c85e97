"""The classic engine's analysis (features for stages 1-2) and its pure synthesis helpers, on exact toys."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from stylegallery.config import ClassicSettings, ImageSettings, MatchSettings, Settings
from stylegallery.engines.classic import ClassicEngine, colour, features, synthesis


def _image(h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (h, w, 3)).astype(np.float32)


def test_analysis_shapes_on_the_grid():
    engine = ClassicEngine(face_detector=None)
    img = _image(48, 80)
    a = engine.analyze(img, Settings(), np.ones(1))
    assert a.cluster_features.shape == (6, 10, len(features.CLUSTER_CHANNELS))
    assert a.merge_features.shape == (6, 10, 3)
    assert a.depth is None
    assert a.tokens.ndim == 3 and a.tokens.shape[2] == features.TOKEN_DIMS
    for arr in (a.cluster_features, a.merge_features, a.tokens):
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    coarse = engine.analyze(img, Settings(classic=ClassicSettings(grid_cell=16)), np.ones(1))
    assert coarse.grid_shape == (3, 5)


def test_token_grid_keeps_the_aspect():
    assert features.token_grid((512, 512, 3)) == (16, 16)
    assert features.token_grid((344, 512, 3)) == (11, 16)
    assert features.token_grid((512, 256, 3)) == (16, 8)


def test_merge_features_are_lab_over_the_documented_scale():
    red = np.zeros((16, 16, 3), np.float32)
    red[..., 0] = 1.0
    _, merge = features.cluster_features(red, (2, 2))
    lab = features.rgb_to_lab(red)[0, 0]
    np.testing.assert_allclose(merge[0, 0], lab / features.MERGE_LAB_SCALE, rtol=1e-4, atol=1e-4)
    # two greys 5 Lab units apart merge (< 0.85), two 15 apart do not
    assert 5 / features.MERGE_LAB_SCALE < 0.85 < 15 / features.MERGE_LAB_SCALE


def _mean_token(img: np.ndarray) -> np.ndarray:
    return features.block_tokens(img, features.token_grid(img.shape)).reshape(-1, features.TOKEN_DIMS).mean(0)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _flat(rgb: tuple[float, float, float], size: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.float32), (size, size, 3)).copy()


def test_tokens_compare_palettes():
    """The cosine of mean tokens is a colour-distribution similarity: 1 for the same palette, ~0 for disjoint ones,
    and one shared colour of two gives about half."""
    blue, orange = _flat((0.1, 0.2, 0.8)), _flat((0.9, 0.5, 0.1))
    half = blue.copy()
    half[:, 32:] = orange[:, 32:]
    tb, to, th = _mean_token(blue), _mean_token(orange), _mean_token(half)
    assert _cos(tb, tb) == pytest.approx(1.0)
    assert abs(_cos(tb, to)) < 0.2
    assert 0.5 < _cos(tb, th) < 0.85 and 0.5 < _cos(to, th) < 0.85


def test_a_smooth_sky_is_closer_to_a_painted_sky_than_to_blank_paper():
    """The failure that motivated colour tokens: texture statistics matched a smooth photo sky to blank paper."""
    rng = np.random.default_rng(0)
    sky = _flat((0.45, 0.65, 0.9))
    # painted sky: strokes of blues of varying lightness
    strokes = rng.uniform(-0.25, 0.25, (16, 64, 1)).repeat(4, axis=0)
    painted = np.clip(_flat((0.25, 0.4, 0.8)) + strokes * np.array([0.6, 0.7, 1.0], np.float32), 0, 1)
    paper = np.clip(_flat((0.93, 0.88, 0.75)) + rng.normal(0, 0.01, (64, 64, 3)), 0, 1).astype(np.float32)
    ts, tp, tq = _mean_token(sky), _mean_token(painted.astype(np.float32)), _mean_token(paper)
    assert _cos(ts, tp) > _cos(ts, tq) + 0.2


def test_cluster_features_see_texture():
    flat_blue = _flat((0.1, 0.2, 0.8))
    noisy_blue = np.clip(flat_blue + np.random.default_rng(0).normal(0, 0.2, flat_blue.shape), 0, 1).astype(
        np.float32)
    fb, _ = features.cluster_features(flat_blue, (8, 8))
    fn, _ = features.cluster_features(noisy_blue, (8, 8))
    std = features.CLUSTER_CHANNELS.index("std")
    assert fn[..., std].mean() > fb[..., std].mean() + 1.0


def test_resolve_regions_raises_k_min_to_min_regions_within_k_max():
    engine = ClassicEngine(face_detector=None)
    assert engine.resolve_regions(Settings()).k_min == 3
    from stylegallery.config import RegionSettings

    capped = Settings(regions=RegionSettings(k_max=2))
    assert engine.resolve_regions(capped).k_min == 2  # never above the user's maximum
    assert engine.resolve_regions(Settings(classic=ClassicSettings(min_regions=5))).k_min == 5
    with pytest.raises(ValueError, match="min_regions"):
        ClassicSettings(min_regions=1)


def test_analysis_key_tracks_grid_and_size():
    engine = ClassicEngine(face_detector=None)
    base = Settings()
    key = engine.analysis_key(base)
    assert engine.analysis_key(Settings(classic=ClassicSettings(grid_cell=16))) != key
    assert engine.analysis_key(Settings(image=ImageSettings(size=256))) != key
    # stage-3 settings do not invalidate the analysis cache
    assert engine.analysis_key(dataclasses.replace(base, seed=1, classic=ClassicSettings(content_weight=3))) == key


def test_resolve_matching_picks_moments_and_balanced():
    engine = ClassicEngine(face_detector=None)
    resolved = engine.resolve_matching(MatchSettings())
    assert (resolved.statistics, resolved.assignment) == ("moments", "balanced")
    explicit = engine.resolve_matching(MatchSettings(statistics="random_transformer", assignment="argmax"))
    assert (explicit.statistics, explicit.assignment) == ("random_transformer", "argmax")


# --- synthesis helpers ----------------------------------------------------------------------------------------


def test_patch_grid_covers_the_image_flush_to_the_border():
    py, px = synthesis.patch_grid(20, 31, 9, 5)
    assert py.max() == 20 - 9 and px.max() == 31 - 9
    covered = np.zeros((20, 31), bool)
    for y, x in zip(py, px):
        covered[y:y + 9, x:x + 9] = True
    assert covered.all()


def test_patch_offsets_index_a_patch():
    img = np.arange(6 * 7).reshape(6, 7)
    off = synthesis.patch_offsets(3, 7)
    np.testing.assert_array_equal(img.ravel()[2 * 7 + 1 + off].reshape(3, 3), img[2:5, 1:4])
    sub = synthesis.patch_offsets(5, 7, step=2)  # points 0, 2, 4
    np.testing.assert_array_equal(img.ravel()[sub].reshape(3, 3), img[0:5:2, 0:5:2])


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(300, 8)).astype(np.float32)
    q = rng.normal(size=(50, 8)).astype(np.float32)
    brute = ((q[:, None] - db[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(synthesis.nearest(q, db), brute)


def test_robust_aggregate_l2_is_the_mean_of_overlaps():
    x = np.zeros((1, 4, 3), np.float32)
    index = np.array([[0, 1, 2], [1, 2, 3]])  # two 3-px patches overlapping on px 1, 2
    z = np.stack([np.full((3, 3), 1.0), np.full((3, 3), 3.0)]).astype(np.float32)
    out = synthesis.robust_aggregate(x, index, z, r=2.0, steps=1)
    np.testing.assert_allclose(out[0, :, 0], [1.0, 2.0, 2.0, 3.0], atol=1e-6)


def test_robust_aggregate_grid_fast_path_equals_the_general_one():
    rng = np.random.default_rng(0)
    x = rng.random((30, 41, 3), dtype=np.float32)
    n = 9
    py, px = synthesis.patch_grid(30, 41, n, synthesis.gap_for(n))
    index = (py * 41 + px)[:, None] + synthesis.patch_offsets(n, 41)[None, :]
    z = rng.random((py.size, n * n, 3), dtype=np.float32)
    general = synthesis.robust_aggregate(x, index, z, 0.8, 3)
    fast = synthesis.robust_aggregate(x, index, z, 0.8, 3, corners=(py, px, n))
    np.testing.assert_allclose(fast, general, atol=1e-5)


def test_robust_aggregate_downweights_the_outlier():
    x = np.zeros((1, 3, 3), np.float32)
    index = np.array([[0, 1, 2]] * 3)  # three patches on the same px
    z = np.stack([np.zeros((3, 3)), np.zeros((3, 3)), np.full((3, 3), 1.0)]).astype(np.float32)
    l2 = synthesis.robust_aggregate(x.copy(), index, z, r=2.0, steps=3)
    robust = synthesis.robust_aggregate(x.copy(), index, z, r=0.8, steps=3)
    assert l2[0, 0, 0] == pytest.approx(1 / 3, abs=1e-5)
    assert robust[0, 0, 0] < 0.2


def test_low_band_fusion_pulls_blobs_to_the_content_and_keeps_fine_texture():
    """V > 0 restores the content's large-scale layout (a pasted blob fades) but leaves fine texture mostly alone."""
    content = np.full((64, 64, 3), 0.5, np.float32)
    x = content.copy()
    x[16:48, 16:48] = 0.9  # a pasted 32 px blob
    fine = 0.1 * np.where((np.indices((64, 64)).sum(0) % 2) == 0, 1.0, -1.0).astype(np.float32)[..., None]
    x = x + fine  # 1 px checkerboard texture
    zero = np.zeros((64, 64), np.float32)
    plain = synthesis.fuse(x, content, zero)
    np.testing.assert_allclose(plain, x)  # W = 0, V = 0: unchanged
    pulled = synthesis.fuse(x, content, zero, low_weight=1.0, low_sigma=4.0)
    blob = (slice(24, 40), slice(24, 40))
    assert abs(pulled[blob].mean() - 0.5) < 0.6 * abs(plain[blob].mean() - 0.5)
    texture = lambda img: np.abs(img[blob] - cv2.blur(img, (3, 3))[blob]).mean()  # noqa: E731
    assert texture(pulled) > 0.9 * texture(plain)


def test_protect_colours_restores_the_original_where_protected():
    x = np.zeros((4, 4, 3), np.float32)
    original = np.ones((4, 4, 3), np.float32)
    p = np.zeros((4, 4), np.float32)
    p[0, 0], p[1, 1] = 1.0, 0.5
    out = synthesis.protect_colours(x, original, p)
    assert out[0, 0, 0] == 1.0 and out[1, 1, 0] == 0.5 and out[2, 2, 0] == 0.0
    assert synthesis.protect_colours(x, original, None) is x


def test_fuse_is_a_weighted_mean():
    x = np.zeros((2, 2, 3), np.float32)
    c = np.ones((2, 2, 3), np.float32)
    w = np.array([[0.0, 1.0], [3.0, 1e6]], np.float32)
    out = synthesis.fuse(x, c, w)
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.5], [0.75, 1.0]], atol=1e-5)


def test_quantile_map_matches_the_target_distribution():
    rng = np.random.default_rng(0)
    src = rng.normal(0, 1, (5000, 3)).astype(np.float32)
    dst = rng.uniform(10, 20, (4000, 3)).astype(np.float32)
    out = colour.apply_quantile_map(src, colour.quantiles(src, rng), colour.quantiles(dst, rng))
    assert out.min() >= 10 - 1e-3 and out.max() <= 20 + 1e-3
    np.testing.assert_allclose(np.percentile(out, [25, 50, 75], axis=0).mean(1), [12.5, 15, 17.5], atol=0.3)
    assert np.corrcoef(src[:, 0], out[:, 0])[0, 1] > 0.95  # monotone: the order is kept


def test_anchor_lightness_shifts_each_targets_lightness_towards_its_content_region():
    lab = np.zeros((4, 8, 3), np.float32)
    lab[:, :4, 0], lab[:, 4:, 0] = 80.0, 20.0  # a light region 0 and a dark region 1
    labels = np.zeros((4, 8), np.int32)
    labels[:, 4:] = 1
    dark = np.stack([np.linspace(20, 40, 8), np.full(8, 5.0), np.full(8, -5.0)], -1).astype(np.float32)  # mean L 30
    full, anchored = synthesis.anchor_lightness([dark, dark], lab, labels, 1.0), synthesis.anchor_lightness(
        [dark, dark], lab, labels, 0.25)
    np.testing.assert_array_equal(full[0], dark)
    assert anchored[0][:, 0].mean() == pytest.approx(0.25 * 30 + 0.75 * 80)
    assert anchored[1][:, 0].mean() == pytest.approx(0.25 * 30 + 0.75 * 20)
    np.testing.assert_allclose(np.ptp(anchored[0][:, 0]), np.ptp(dark[:, 0]))  # the style's spread is kept
    np.testing.assert_array_equal(anchored[0][:, 1:], dark[:, 1:])  # hue from the style


def test_regional_transfer_matches_each_region_to_its_target():
    rng = np.random.default_rng(0)
    lab = np.zeros((20, 40, 3), np.float32)
    lab[..., 0] = rng.uniform(40, 60, (20, 40))
    labels = np.zeros((20, 40), np.int32)
    labels[:, 20:] = 1
    masks = colour.soft_masks(labels, 2, sigma=0.0)
    dark = colour.quantiles(np.tile([[20.0, 0.0, 0.0]], (100, 1)).astype(np.float32))
    bright = colour.quantiles(np.tile([[80.0, 10.0, -10.0]], (100, 1)).astype(np.float32))
    out = colour.regional_transfer(lab, masks, [dark, bright], rng)
    np.testing.assert_allclose(out[:, :20].reshape(-1, 3).mean(0), [20, 0, 0], atol=0.5)
    np.testing.assert_allclose(out[:, 20:].reshape(-1, 3).mean(0), [80, 10, -10], atol=0.5)


def test_nn_field_upsampling_copies_the_finer_style():
    """A field that copies style position (y, x) at the coarse scale rebuilds the fine style exactly."""
    fine = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    coarse = synthesis.resize(fine, (16, 16))
    py, px = synthesis.patch_grid(16, 16, 5, 3)
    field = synthesis.NNField(py, px, 5, np.zeros(py.size, np.int64), py * 16 + px)  # identity field
    out = synthesis.upsample_field_copy(field, (16, 16), [coarse], (32, 32), [fine])
    np.testing.assert_allclose(out, fine, atol=1e-6)


def test_snap_labels_moves_a_staircase_boundary_onto_the_colour_edge():
    """Grid labels split at x=32 (cell 4 of 8 px); the image's red/blue edge is at x=37: the snapped map follows it."""
    from stylegallery.engines.classic.edges import snap_labels

    img = np.zeros((40, 80, 3), np.float32)
    img[:, :37] = (0.9, 0.1, 0.1)
    img[:, 37:] = (0.1, 0.2, 0.9)
    grid = np.zeros((5, 10), np.int32)
    grid[:, 4:] = 1
    snapped = snap_labels(grid, img, radius=16)  # the engine's radius: two cells
    assert snapped.shape == (40, 80)
    boundary = (snapped == 1).argmax(axis=1)  # first column of region 1 in each row
    assert (np.abs(boundary - 37) <= 2).all()
    assert (snapped[:, :33] == 0).all() and (snapped[:, 40:] == 1).all()
    nearest = cv2.resize(grid, (80, 40), interpolation=cv2.INTER_NEAREST)
    assert ((nearest == 1).argmax(axis=1) == 32).all()  # the staircase was 5 px off


def test_snap_labels_keeps_every_label_and_leaves_a_flat_image_alone():
    from stylegallery.engines.classic.edges import snap_labels

    flat = np.full((32, 32, 3), 0.5, np.float32)
    grid = np.zeros((4, 4), np.int32)
    grid[0, 0] = 1  # one cell: the guided filter would erase it on a flat guide
    grid[2:, 2:] = 2
    snapped = snap_labels(grid, flat, radius=8)
    assert set(np.unique(snapped)) == {0, 1, 2}
    with pytest.raises(ValueError, match="labels"):
        snap_labels(np.full((4, 4), -1), flat, 4)


def test_classic_results_carry_pixel_level_region_maps():
    from stylegallery import Pipeline

    img = np.zeros((64, 96, 3), np.float32)
    img[:, :50] = (0.9, 0.6, 0.1)
    img[:, 50:] = (0.1, 0.3, 0.8)
    style = _image(64, 64, seed=3)
    settings = Settings(engine="classic", image=ImageSettings(size=96),
                        classic=ClassicSettings(scales=1, patch_sizes=(9,), iterations=1, irls_steps=1))
    result = Pipeline()(img, [style], settings)
    assert result.content_labels.shape == result.content_image.shape[:2]
    assert [lab.shape for lab in result.style_labels] == [s.shape[:2] for s in result.style_images]
    assert {m.content_region for m in result.matches} == set(np.unique(result.content_labels).tolist())

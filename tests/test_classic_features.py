"""The classic engine's analysis (features for stages 1-2) and its pure synthesis helpers, on exact toys."""

from __future__ import annotations

import dataclasses

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
    assert a.tokens.ndim == 3 and a.tokens.shape[2] == len(features.TOKEN_CHANNELS)
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


def test_features_separate_colour_and_texture():
    """Cosines of mean tokens must discriminate (fixed centring, not all ~1), the basis of stage 2's semantic term."""
    flat_blue = np.broadcast_to(np.array([0.1, 0.2, 0.8], np.float32), (64, 64, 3)).copy()
    flat_orange = np.broadcast_to(np.array([0.9, 0.5, 0.1], np.float32), (64, 64, 3)).copy()
    noisy_blue = np.clip(flat_blue + np.random.default_rng(0).normal(0, 0.2, flat_blue.shape), 0, 1).astype(
        np.float32)

    def mean_token(img):
        return features.block_tokens(img, features.token_grid(img.shape)).reshape(-1, 12).mean(0)

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    tb, to, tn = mean_token(flat_blue), mean_token(flat_orange), mean_token(noisy_blue)
    assert cos(tb, to) < 0.5
    assert cos(tb, tn) < 0.95  # texture counts
    assert cos(tb, tb) == pytest.approx(1.0)
    # texture channels of the cluster features rise with noise
    fb, _ = features.cluster_features(flat_blue, (8, 8))
    fn, _ = features.cluster_features(noisy_blue, (8, 8))
    std = features.CLUSTER_CHANNELS.index("std")
    assert fn[..., std].mean() > fb[..., std].mean() + 1.0


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


def test_robust_aggregate_downweights_the_outlier():
    x = np.zeros((1, 3, 3), np.float32)
    index = np.array([[0, 1, 2]] * 3)  # three patches on the same px
    z = np.stack([np.zeros((3, 3)), np.zeros((3, 3)), np.full((3, 3), 1.0)]).astype(np.float32)
    l2 = synthesis.robust_aggregate(x.copy(), index, z, r=2.0, steps=3)
    robust = synthesis.robust_aggregate(x.copy(), index, z, r=0.8, steps=3)
    assert l2[0, 0, 0] == pytest.approx(1 / 3, abs=1e-5)
    assert robust[0, 0, 0] < 0.2


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

"""Stage 2 (matching.py) on planted descriptors and toys whose answer is known."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from stylegallery import matching
from stylegallery.config import MatchSettings
from stylegallery.errors import InputError, OverrideError
from stylegallery.types import RegionDescriptor


ARGMAX = MatchSettings(statistics="moments", assignment="argmax")
BALANCED = MatchSettings(statistics="moments", assignment="balanced")


def desc(region: int, semantic, statistical=None, circle=(0.5, 0.5, 0.25)) -> RegionDescriptor:
    semantic = np.asarray(semantic, dtype=np.float32)
    statistical = np.ones(4, dtype=np.float32) if statistical is None else np.asarray(statistical, dtype=np.float32)
    return RegionDescriptor(region=region, cells=10, statistical=statistical, semantic=semantic, circle=circle)


def onehot(i: int, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim)
    v[i] = 1.0
    return v


# -- matching --------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [ARGMAX, BALANCED], ids=["argmax", "balanced"])
def test_known_pairings_are_recovered_under_shuffled_order(settings):
    rng = np.random.default_rng(0)
    content = [desc(i, onehot(i) + rng.normal(size=8) * 0.05, rng.normal(size=6), tuple(rng.random(3) * 0.5))
               for i in range(5)]
    perm = rng.permutation(5)  # style slot s holds the region planted for content perm[s]
    flat = [desc(0, onehot(int(p)) + rng.normal(size=8) * 0.05, rng.normal(size=6), tuple(rng.random(3) * 0.5))
            for p in perm]
    styles = [[dataclasses.replace(d, region=r) for r, d in enumerate(flat[:3])],
              [dataclasses.replace(d, region=r) for r, d in enumerate(flat[3:])]]
    matches = matching.match(content, styles, settings)
    assert [m.content_region for m in matches] == list(range(5))
    for m in matches:
        slot = 3 * m.style_image + m.style_region
        assert perm[slot] == m.content_region
        assert m.source == "auto"


def test_the_pool_spans_every_style_image():
    content = [desc(0, onehot(0))]
    styles = [[desc(0, onehot(1)), desc(1, onehot(0) + onehot(2))],
              [desc(0, onehot(3)), desc(1, onehot(4)), desc(2, onehot(0) + 0.1 * onehot(5))]]
    (m,) = matching.match(content, styles, ARGMAX)
    assert (m.style_image, m.style_region) == (1, 2)
    expected_sem = 1 / math.sqrt(1.01)
    assert m.terms["semantic"] == pytest.approx(expected_sem)
    assert m.terms["statistical"] == pytest.approx(1.0)
    assert m.terms["positional"] == pytest.approx(1.0)
    assert m.score == pytest.approx(0.25 * 1.0 + 1.0 * expected_sem + 0.125 * 1.0)


def collapsing_case() -> tuple[list[RegionDescriptor], list[list[RegionDescriptor]]]:
    """Every content region likes style region 0 best (cos 0.894) and its own style region second (0.8)."""
    content = [desc(i, onehot(0) + 0.5 * onehot(i + 1)) for i in range(3)]
    style = [desc(0, onehot(0))] + [desc(j, onehot(0) + 2 * onehot(j)) for j in range(1, 4)]
    return content, [style]


def test_argmax_collapses_and_balanced_spreads():
    content, styles = collapsing_case()
    argmax = matching.match(content, styles, ARGMAX)
    assert [m.style_region for m in argmax] == [0, 0, 0]
    balanced = matching.match(content, styles, BALANCED)
    assert [m.style_region for m in balanced] == [0, 2, 3]
    assert balanced[1].score == pytest.approx(0.25 + 0.8 + 0.125)  # the reported score is unpenalised
    # with no penalty, balanced is argmax
    free = matching.match(content, styles, dataclasses.replace(BALANCED, usage_penalty=0.0))
    assert [m.style_region for m in free] == [0, 0, 0]


def test_balanced_greedy_rule_on_a_score_matrix():
    score = np.array([[0.9, 0.8, 0.1],
                      [0.95, 0.5, 0.4],
                      [0.9, 0.85, 0.3]])
    # 1->0 (0.95); then 0->0 at 0.75 vs 0->1 at 0.8 and 2->1 at 0.85: 2->1; then 0: 0.75, 0.65, 0.1 -> 0
    np.testing.assert_array_equal(matching._assign_balanced(score, 0.15, {}), [0, 0, 1])
    np.testing.assert_array_equal(matching._assign_balanced(score, 0.9, {}), [2, 0, 1])  # 0 pays 0.9 for s0, s1
    # an override counts as a use of its style region
    np.testing.assert_array_equal(matching._assign_balanced(score, 0.15, {1: 1}), [0, 1, 0])
    np.testing.assert_array_equal(matching._assign_argmax(score, {2: 2}), [0, 0, 2])


def test_image_penalty_spreads_regions_over_the_style_images():
    # two content regions both prefer style image 0's regions; image 1's region is a close second for region 1
    score = np.array([[0.9, 0.85, 0.3],
                      [0.88, 0.86, 0.8]])
    images = np.array([0, 0, 1])
    # region penalty only: 0->0, then 1 takes 0's other region (0.86 > 0.8)
    np.testing.assert_array_equal(matching._assign_balanced(score, 0.15, {}, images, 0.0), [0, 1])
    # with an image penalty of 0.1, image 0 costs 0.1 more: 1 -> image 1 (0.8 > 0.76)
    np.testing.assert_array_equal(matching._assign_balanced(score, 0.15, {}, images, 0.1), [0, 2])
    # an override counts as a use of its style image
    np.testing.assert_array_equal(matching._assign_balanced(score, 0.0, {1: 2}, images, 0.2), [0, 2])


def test_balanced_match_uses_every_style_when_the_penalty_allows():
    # region 1 goes first to a1 (cos 0.934); then region 0 scores a0 0.894, b0 0.878: a0 unless image a costs more
    content = [desc(i, onehot(0) + 0.5 * onehot(i + 1)) for i in range(2)]
    style_a = [desc(0, onehot(0)), desc(1, onehot(0) + 0.1 * onehot(2))]
    style_b = [desc(0, onehot(0) + 0.25 * onehot(1) + 0.5 * onehot(3))]
    used = {m.style_image for m in matching.match(content, [style_a, style_b], BALANCED)}
    assert used == {0, 1}
    # without the image penalty the greedy pass puts both regions on image a; the coverage step then moves the
    # region that loses least to image b: every chosen style paints when there are enough regions
    alone = matching.match(content, [style_a, style_b], dataclasses.replace(BALANCED, image_penalty=0.0))
    assert {m.style_image for m in alone} == {0, 1}
    argmax = matching.match(content, [style_a, style_b], dataclasses.replace(BALANCED, assignment="argmax"))
    assert {m.style_image for m in argmax} == {0}  # the paper's rule is left as it is (the pipeline notes it)


def test_cover_images_moves_the_regions_that_lose_least_score():
    # pool: image 0 has pooled regions 0, 1; image 1 has 2; image 2 has 3
    images = np.array([0, 0, 1, 2])
    score = np.array([[0.9, 0.8, 0.5, 0.1],
                      [0.9, 0.7, 0.2, 0.6],
                      [0.8, 0.9, 0.7, 0.3],
                      [0.9, 0.1, 0.1, 0.1]])
    greedy = np.array([0, 0, 1, 0])  # every region on image 0
    # image 1 costs region 2 0.2 (0.9 -> 0.7), image 2 costs region 1 0.3 (0.9 -> 0.6): the cheapest cover
    np.testing.assert_array_equal(matching._cover_images(score, greedy, images, {}), [0, 3, 2, 0])
    # a fixed pair is never moved and covers its image: region 3 fixed on image 2 leaves image 1 to cover
    np.testing.assert_array_equal(matching._cover_images(score, np.array([0, 0, 1, 3]), images, {3: 3}),
                                  [0, 0, 2, 3])
    # fewer regions than images: each region on a different image
    two = matching._cover_images(score[:2], np.array([0, 0]), images, {})
    assert len(set(images[two].tolist())) == 2
    # already covered: unchanged
    np.testing.assert_array_equal(matching._cover_images(score, np.array([0, 3, 2, 1]), images, {}), [0, 3, 2, 1])


def test_overrides_replace_the_automatic_pair():
    content, styles = collapsing_case()
    styles = [styles[0], [desc(0, onehot(7)), desc(1, onehot(6))]]
    matches = matching.match(content, styles, ARGMAX, overrides={1: (1, 1), 2: None})
    assert (matches[1].style_image, matches[1].style_region, matches[1].source) == (1, 1, "user")
    assert matches[1].terms["semantic"] == pytest.approx(0.0)
    assert matches[1].score == pytest.approx(0.25 + 0.125)
    assert [m.source for m in matches] == ["auto", "user", "auto"]
    assert (matches[2].style_image, matches[2].style_region) == (0, 0)
    numpy_keys = matching.match(content, styles, ARGMAX, overrides={np.int64(0): [np.int64(1), 0]})
    assert (numpy_keys[0].style_image, numpy_keys[0].style_region, numpy_keys[0].source) == (1, 0, "user")


@pytest.mark.parametrize("overrides, message", [
    ({3: (0, 0)}, "content region 3 .*0..2"),
    ({-1: (0, 0)}, "content region -1"),
    ({"a": (0, 0)}, "content region 'a'"),
    ({0: (2, 0)}, "style image 2 .*0..1"),
    ({0: (1, 2)}, "style region 2 of style image 1 .*0..1"),
    ({0: (0, -1)}, "style region -1"),
    ({0: (0,)}, "expected \\(style image, style region\\)"),
    ({0: "01"}, "expected \\(style image, style region\\)"),
    ({0: (0.0, 1)}, "expected \\(style image, style region\\)"),
])
def test_bad_overrides_raise_input_error(overrides, message):
    content, styles = collapsing_case()
    styles = [styles[0], [desc(0, onehot(7)), desc(1, onehot(6))]]
    with pytest.raises(InputError, match=message):
        matching.match(content, styles, BALANCED, overrides=overrides)


def test_a_bad_override_says_what_the_run_has():
    content, styles = collapsing_case()
    styles = [styles[0], [desc(0, onehot(7)), desc(1, onehot(6))]]
    with pytest.raises(OverrideError) as info:
        matching.match(content, styles, ARGMAX, overrides={0: (1, 5)})
    error = info.value
    assert isinstance(error, InputError) and (error.region, error.target) == (0, (1, 5))
    assert error.content_regions == [0, 1, 2] and error.style_regions == [[d.region for d in styles[0]], [0, 1]]


def test_match_needs_resolved_settings_and_styles():
    content, styles = collapsing_case()
    with pytest.raises(ValueError, match="assignment='auto'"):
        matching.match(content, styles, MatchSettings())
    with pytest.raises(ValueError, match="no style images"):
        matching.match(content, [], ARGMAX)
    with pytest.raises(ValueError, match="style image 1 has no regions"):
        matching.match(content, [styles[0], []], ARGMAX)
    with pytest.raises(ValueError, match="semantic descriptors have different shapes"):
        matching.match(content, [[desc(0, np.ones(3))]], ARGMAX)
    assert matching.match([], styles, ARGMAX) == []


def test_similarity_terms_are_the_unweighted_similarities():
    a = desc(0, [1.0, 0.0, 0.0], statistical=[1.0, 1.0, 0.0, 0.0], circle=(0.5, 0.5, 0.2))
    b = desc(0, [1.0, 1.0, 0.0], statistical=[0.0, 0.0, 1.0, 1.0], circle=(0.5, 0.5, 0.4))
    terms = matching.similarity_terms(a, b)
    assert terms == pytest.approx({"statistical": 0.0, "semantic": 1 / math.sqrt(2), "positional": 0.25})
    zero = desc(0, [0.0, 0.0, 0.0])
    assert matching.similarity_terms(zero, b)["semantic"] == 0.0  # a zero vector scores 0, never NaN


# -- circles (3.2c) --------------------------------------------------------------------------------


def test_circle_iou_known_values():
    assert matching.circle_iou((0.5, 0.5, 0.2), (0.5, 0.5, 0.2)) == pytest.approx(1.0)
    assert matching.circle_iou((0.0, 0.0, 1.0), (0.0, 3.0, 1.0)) == 0.0
    assert matching.circle_iou((0.0, 0.0, 1.0), (0.0, 2.0, 1.0)) == 0.0  # tangent
    assert matching.circle_iou((0.3, 0.3, 0.1), (0.3, 0.3, 0.2)) == pytest.approx(0.25)
    assert matching.circle_iou((0.3, 0.3, 0.1), (0.35, 0.3, 0.2)) == pytest.approx(0.25)  # contained, off-centre
    # two unit circles one apart: lens = 2 pi / 3 - sqrt(3) / 2
    lens = 2 * math.pi / 3 - math.sqrt(3) / 2
    assert matching.circle_iou((0.0, 0.0, 1.0), (1.0, 0.0, 1.0)) == pytest.approx(lens / (2 * math.pi - lens))
    # radii 1 and 2, centres 2 apart: lens area by integrating the overlap of vertical chords
    x = np.linspace(-1.0, 1.0, 200_001)
    chord = np.minimum(np.sqrt(np.clip(1 - x ** 2, 0, None)), np.sqrt(np.clip(4 - (x - 2) ** 2, 0, None)))
    lens2 = float(np.sum(2 * chord) * (x[1] - x[0]))
    assert lens2 == pytest.approx(1.4030, abs=1e-3)
    assert matching.circle_iou((0.0, 0.0, 1.0), (0.0, 2.0, 2.0)) == pytest.approx(lens2 / (5 * math.pi - lens2),
                                                                                  abs=1e-5)
    assert matching.circle_iou((2.0, 0.0, 2.0), (0.0, 0.0, 1.0)) == pytest.approx(lens2 / (5 * math.pi - lens2),
                                                                                  abs=1e-5)


def test_circle_iou_degenerate_radii():
    assert matching.circle_iou((0.2, 0.2, 0.0), (0.2, 0.2, 0.0)) == 1.0
    assert matching.circle_iou((0.2, 0.2, 0.0), (0.3, 0.2, 0.0)) == 0.0
    assert matching.circle_iou((0.2, 0.2, 0.0), (0.2, 0.2, 0.1)) == 0.0
    with pytest.raises(ValueError, match="circle a"):
        matching.circle_iou((0.2, 0.2, -0.1), (0.2, 0.2, 0.1))


def test_circle_iou_matrix_equals_scalar():
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 3)) * 0.6, rng.random((4, 3)) * 0.6
    mat = matching._circle_iou_matrix(a, b)
    for i in range(5):
        for j in range(4):
            assert mat[i, j] == pytest.approx(matching.circle_iou(a[i], b[j]))
            assert mat[i, j] == pytest.approx(matching.circle_iou(b[j], a[i]))
    assert np.all((mat >= 0) & (mat <= 1))


def test_circles_of_regions_in_the_unit_frame():
    labels = np.zeros((4, 8), dtype=np.int64)
    labels[1, 6] = 1
    circles = matching._circles(labels)
    np.testing.assert_allclose(circles[1], [1.5 / 4, 6.5 / 8, 0.0])
    cells_y, cells_x = np.nonzero(labels == 0)
    cy, cx = ((cells_y + 0.5) / 4).mean(), ((cells_x + 0.5) / 8).mean()
    radius = np.hypot((cells_y + 0.5) / 4 - cy, (cells_x + 0.5) / 8 - cx).max()
    np.testing.assert_allclose(circles[0], [cy, cx, radius])
    # the same layout on a grid twice as fine has the same centres (radii differ by the half-cell shift)
    fine = np.zeros((8, 16), dtype=np.int64)
    fine[:, 8:] = 1
    coarse = np.zeros((4, 8), dtype=np.int64)
    coarse[:, 4:] = 1
    np.testing.assert_allclose(matching._circles(fine)[:, :2], matching._circles(coarse)[:, :2])


# -- semantic block filtering (3.2b) -----------------------------------------------------------------


def block_tokens(gh: int, gw: int) -> np.ndarray:
    return np.arange(gh * gw * 3, dtype=np.float32).reshape(gh, gw, 3) ** 1.5  # distinct per block


@pytest.mark.parametrize("pixels, kept_corner", [(10, False), (11, True)])
def test_block_filter_threshold_is_more_than_10_pixels(pixels, kept_corner):
    labels = np.zeros((64, 64), dtype=np.int64)  # one cell = one px: tokens 2x2 with 32-px blocks
    labels[32:, 32:] = 1  # block (1, 1) entirely
    labels[0, :pixels] = 1  # `pixels` px of block (0, 0)
    tokens = block_tokens(2, 2)
    sem = matching._block_semantic(labels, tokens, block_size=32, min_pixels=10)
    expected = (tokens[0, 0] + tokens[1, 1]) / 2 if kept_corner else tokens[1, 1]
    np.testing.assert_allclose(sem[1], expected, rtol=1e-6)
    np.testing.assert_allclose(sem[0], tokens.reshape(4, 3)[:3].mean(axis=0), rtol=1e-6)  # not in block (1, 1)


def test_block_filter_upsamples_the_label_grid_on_any_aspect():
    labels = np.zeros((8, 12), dtype=np.int64)  # cells of 8x8 px under 2x3 blocks of 32 px
    labels[0, 0] = 1  # one cell = 64 px of block (0, 0)
    labels[4:, 8:] = 2  # exactly block (1, 2)
    tokens = block_tokens(2, 3)
    settings = dataclasses.replace(ARGMAX, block_size=32)
    regions = matching.describe_regions(labels, np.zeros((8, 12, 4), dtype=np.float32), tokens, settings)
    np.testing.assert_allclose(regions[1].semantic, tokens[0, 0], rtol=1e-6)
    np.testing.assert_allclose(regions[2].semantic, tokens[1, 2], rtol=1e-6)
    np.testing.assert_allclose(regions[0].semantic, tokens.reshape(6, 3)[:5].mean(axis=0), rtol=1e-6)


def test_block_filter_falls_back_to_the_best_covered_block():
    labels = np.zeros((64, 64), dtype=np.int64)
    labels[0, :3] = 1  # 3 px of block (0, 0)
    labels[40, 40:45] = 1  # 5 px of block (1, 1)
    tokens = block_tokens(2, 2)
    sem = matching._block_semantic(labels, tokens, block_size=32, min_pixels=10)
    np.testing.assert_allclose(sem[1], tokens[1, 1], rtol=1e-6)
    # a region lost in a downsampling (grid finer than the blocks) falls back to its cells' block
    fine = np.zeros((64, 64), dtype=np.int64)
    fine[63, 63] = 1
    sem = matching._block_semantic(fine, tokens, block_size=8, min_pixels=10)  # 16x16 px for 64x64 cells
    assert np.all(np.isfinite(sem))
    np.testing.assert_allclose(sem[1], tokens[1, 1], rtol=1e-6)


# -- statistical descriptors (3.2a) ------------------------------------------------------------------


def toy_image(channels: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[:, 3:] = 1
    labels[4:, :] = 2
    features = rng.normal(size=(6, 6, channels)).astype(np.float32)
    return labels, features, block_tokens(2, 2)


def test_moments_are_the_region_mean_and_variance():
    labels, features, tokens = toy_image()
    regions = matching.describe_regions(labels, features, tokens, ARGMAX)
    assert [r.region for r in regions] == [0, 1, 2] and [r.cells for r in regions] == [12, 12, 12]
    cells = features[labels == 1]
    np.testing.assert_allclose(regions[1].statistical, np.concatenate([cells.mean(0), cells.var(0)]), rtol=1e-5)


def test_official_normalisation_of_the_aggregated_moments():
    labels, features, _ = toy_image()
    stats = matching._aggregated_moments(labels, features, lambda x: 2.0 * x)
    full = np.zeros((36, 8))
    mask = labels.ravel() == 2
    full[mask] = 2.0 * features.reshape(36, 8)[mask]
    n_r = mask.sum()
    np.testing.assert_allclose(stats[2, :8], full.sum(0) / n_r, rtol=1e-5)  # mean over the region's cells
    np.testing.assert_allclose(stats[2, 8:], np.var(full, axis=0, ddof=1) / n_r, rtol=1e-5)  # var over all / n_r


def test_random_transformer_is_deterministic_and_faithful():
    torch = pytest.importorskip("torch")
    labels, features, tokens = toy_image()
    settings = MatchSettings(statistics="random_transformer", assignment="argmax", seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = matching.describe_regions(labels, features, tokens, settings)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    b = matching.describe_regions(labels, features, tokens, settings)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.statistical, rb.statistical)
    moments = matching.describe_regions(labels, features, tokens, ARGMAX)
    assert not np.allclose(a[0].statistical, moments[0].statistical, atol=1e-2)
    other_seed = matching.describe_regions(labels, features, tokens, dataclasses.replace(settings, seed=4))
    assert not np.allclose(a[0].statistical, other_seed[0].statistical, atol=1e-3)
    # the descriptor is the official normalisation applied to the transformer's outputs
    agg = matching.RandomAggregator(8, 3)
    out = agg(features[labels == 1])
    assert out.shape == (12, 8) and not np.allclose(out, features[labels == 1], atol=1e-2)
    full = np.zeros((36, 8))
    full[(labels == 1).ravel()] = out
    np.testing.assert_allclose(a[1].statistical, np.concatenate([full.sum(0) / 12, full.var(0, ddof=1) / 12]),
                               rtol=1e-4, atol=1e-7)
    cached = matching.describe_regions(labels, features, tokens, settings, aggregator=agg)
    np.testing.assert_array_equal(cached[1].statistical, a[1].statistical)


def test_random_transformer_needs_channels_divisible_by_heads():
    pytest.importorskip("torch")
    labels, features, tokens = toy_image(channels=6)
    settings = MatchSettings(statistics="random_transformer", assignment="argmax")
    with pytest.raises(ValueError, match="multiple of heads=4"):
        matching.describe_regions(labels, features, tokens, settings)
    labels, features, tokens = toy_image(channels=8)
    with pytest.raises(ValueError, match="width 12 .* C=8"):
        matching.describe_regions(labels, features, tokens, settings, aggregator=matching.RandomAggregator(12, 0))


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels, features, tokens, settings, message", [
    (np.zeros((6, 6)), np.zeros((6, 6, 4)), np.zeros((2, 2, 3)), ARGMAX, "integer"),
    (np.zeros((6, 6), int), np.zeros((6, 5, 4)), np.zeros((2, 2, 3)), ARGMAX, "features"),
    (np.zeros((6, 6), int), np.zeros((6, 6, 4)), np.zeros((4, 3)), ARGMAX, "tokens"),
    (np.full((6, 6), 2), np.zeros((6, 6, 4)), np.zeros((2, 2, 3)), ARGMAX, "contiguous"),
    (np.zeros((6, 6), int), np.zeros((6, 6, 4)), np.zeros((2, 2, 3)), MatchSettings(), "statistics='auto'"),
    (np.zeros((6, 6), int), np.full((6, 6, 4), np.nan), np.zeros((2, 2, 3)), ARGMAX, "NaN"),
])
def test_describe_regions_validates(labels, features, tokens, settings, message):
    with pytest.raises(ValueError, match=message):
        matching.describe_regions(labels, features, tokens, settings)


def test_moments_path_does_not_import_torch():
    code = ("import sys, numpy as np; from stylegallery import matching; from stylegallery.config import "
            "MatchSettings as M; s = M(statistics='moments', assignment='balanced'); lab = np.arange(64)"
            ".reshape(8, 8) // 32; d = matching.describe_regions(lab, np.random.rand(8, 8, 4), "
            "np.random.rand(2, 2, 5), s); matching.match(d, [d], s); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=matching.__file__.rsplit("/stylegallery/", 1)[0])


def test_engine_statistical_descriptors_replace_the_moments() -> None:
    labels = np.zeros((8, 12), dtype=np.int32)
    labels[:, 6:] = 1
    features = np.random.default_rng(0).normal(size=(8, 12, 4)).astype(np.float32)
    tokens = np.ones((2, 3, 5), dtype=np.float32)
    given = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]], dtype=np.float32)  # (K, d): e.g. each region's style vector
    regions = matching.describe_regions(labels, features, tokens, ARGMAX, statistical=given)
    np.testing.assert_array_equal(np.stack([r.statistical for r in regions]), given)
    moments = matching.describe_regions(labels, features, tokens, ARGMAX)
    assert [r.semantic.tolist() for r in regions] == [r.semantic.tolist() for r in moments]
    with pytest.raises(ValueError, match=r"expected \(2, d\)"):
        matching.describe_regions(labels, features, tokens, ARGMAX, statistical=given[:1])


def test_single_kept_block_quirk_is_a_named_setting():
    # region 1 covers one 32x32 block fully (kept) and no other block by more than 10 px
    labels = np.zeros((8, 8), np.int64)
    labels[:4, :4] = 1  # 4x4 cells of a 8x8 grid = one 32x32 block when the grid is upsampled to 2x2 blocks of 32
    tokens = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3) + 1
    mean = matching._block_semantic(labels, tokens, block_size=32, min_pixels=10)
    zero = matching._block_semantic(labels, tokens, block_size=32, min_pixels=10, single_block="zero")
    np.testing.assert_allclose(mean[1], tokens[0, 0])
    assert not zero[1].any()  # official: the single kept block's descriptor collapses, semantic score 0
    np.testing.assert_allclose(zero[0], mean[0])  # region 0 keeps three blocks: unchanged
    assert MatchSettings().single_block == "mean"

"""Talk-ready figures: sizes, colours, every region and match drawn, any aspect ratio."""

from __future__ import annotations

import numpy as np
import pytest

from stylegallery import viz
from stylegallery.config import Settings
from stylegallery.pipeline import Result
from stylegallery.types import Match


def _labels(h: int, w: int, k: int) -> np.ndarray:
    return (np.arange(w)[None, :].repeat(h, 0) * k // w).astype(np.int32)


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (h, w, 3)).astype(np.float32)


def test_region_colors_are_distinct_beyond_the_palette() -> None:
    colors = viz.region_colors(25)
    assert colors.shape == (25, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 25


def test_upsample_labels_keeps_the_layout() -> None:
    labels = np.array([[0, 1], [2, 3]], np.int32)
    up = viz.upsample_labels(labels, 4, 6)
    assert up.shape == (4, 6)
    assert (up[:2, :3] == 0).all() and (up[2:, 3:] == 3).all()


@pytest.mark.parametrize(("h", "w", "k"), [(96, 160, 3), (80, 240, 10), (64, 64, 1)])
def test_region_overlay_tints_each_region_and_adds_a_legend(h: int, w: int, k: int) -> None:
    image = np.full((h, w, 3), 0.5, np.float32)
    labels = _labels(h // 8, w // 8, k)
    out = viz.region_overlay(image, labels)
    assert out.width == w and out.height > h  # legend below
    top = np.asarray(out)[:h]
    colors = viz.region_colors(k).astype(np.float32)
    for region in range(k):  # near the bottom of each band (badges sit mid-height) the tint is the region's
        cols = np.where(viz.upsample_labels(labels, h, w)[1] == region)[0]
        pixel = top[h - 2, cols[len(cols) // 2]].astype(np.float32)
        expected = 0.45 * 127.5 + 0.55 * colors[region]
        assert np.abs(pixel - expected).max() < 3
    bare = viz.region_overlay(image, labels, legend=False)
    assert bare.size == (w, h)


def _matches(k: int, n_styles: int) -> list[Match]:
    terms = {"statistical": 0.5, "semantic": 0.7, "positional": 0.2}
    return [Match(i, i % n_styles, 0, 0.9 - 0.01 * i, terms, "user" if i == 0 else "auto") for i in range(k)]


@pytest.mark.parametrize(("k", "n_styles"), [(1, 1), (4, 3), (10, 5)])
def test_match_figure_has_a_row_per_region(k: int, n_styles: int) -> None:
    content, labels = _image(96, 144), _labels(12, 18, k)
    styles = [_image(64 + 16 * j, 64) for j in range(n_styles)]
    style_labels = [_labels(s.shape[0] // 8, 8, 2) for s in styles]
    figure = viz.match_figure(content, labels, styles, style_labels, _matches(k, n_styles), row_height=100)
    columns = 2 if k > 6 else 1
    assert figure.height >= 100 * int(np.ceil(k / columns))
    assert figure.width > 144


def test_panel_puts_everything_side_by_side() -> None:
    content, labels = _image(96, 144), _labels(12, 18, 3)
    styles = [_image(64, 64), _image(80, 64)]
    style_labels = [_labels(8, 8, 2), _labels(10, 8, 2)]
    result = Result(content, content, styles, labels, style_labels, _matches(3, 2), {"total": 1.0}, "classic",
                    "test", Settings())
    panel = viz.panel(result, height=256)
    assert panel.height > 256 and panel.width > 4 * 144

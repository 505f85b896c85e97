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


def _result(h: int, w: int, k: int, n_styles: int) -> Result:
    content, labels = _image(h, w), _labels(max(1, h // 8), max(1, w // 8), k)
    styles = [_image(64 + 16 * j, 80) for j in range(n_styles)]
    style_labels = [_labels(s.shape[0] // 8, 10, 3) for s in styles]
    output = np.random.default_rng(1).uniform(0, 1, (h, w, 3)).astype(np.float32)
    return Result(output, content, styles, labels, style_labels, _matches(k, n_styles), {"total": 1.0}, "classic",
                  "test", Settings())


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("aspect", ["16:9", "4:3"])
@pytest.mark.parametrize(("h", "w", "k", "n_styles"), [(680, 1024, 3, 2), (168, 256, 10, 5), (256, 168, 1, 1),
                                                       (1024, 1024, 16, 5), (2048, 1360, 4, 3)])
def test_the_talk_panel_is_a_slide_with_text_of_20_px_or_more(aspect, h: int, w: int, k: int, n_styles: int) -> None:
    result = _result(h, w, k, n_styles)
    names = ["The Starry Night", "The Great Wave off Kanagawa", "Udnie (Young American Girl, The Dance)", "", "x"]
    panel, layout = viz._panel_layout(result, aspect, names[:n_styles], "Colour and texture regions")
    assert panel.size == viz.SLIDES[aspect] == ((1920, 1080) if aspect == "16:9" else (1440, 1080))
    texts, pictures = [p for p in layout if "text" in p], [p for p in layout if "picture" in p]
    assert min(t["px"] for t in texts) >= viz.MIN_TEXT_PX == 20
    for i, part in enumerate(layout):  # everything on the slide, nothing on top of anything else
        x0, y0, x1, y1 = part["box"]
        assert 0 <= x0 and 0 <= y0 and x1 <= panel.width and y1 <= panel.height, part
        for other in layout[i + 1:]:
            assert not _overlap(part["box"], other["box"]), (part, other)
    shown = " ".join(t["text"] for t in texts)
    assert "Colour and texture regions" in shown and "Result (classic engine)" in shown and f"{w} x {h} px" in shown
    assert "1. The Starry Night" in shown  # styles by name in the grid...
    # ...and in the matches (two columns of matches shorten them: "R1 → The Starry… · 1 (you)")
    assert "R1 \u2192 The Starry Night \u00b7 region 1 (you)" in shown or ("R1 \u2192 The" in shown and k > 8)
    assert sum(t["text"].startswith("R") and "\u2192" in t["text"] for t in texts) + sum(
        "more" in t["text"] for t in texts) >= min(k, 1)
    # the result is the largest picture on the slide
    areas = sorted(((p["box"][2] - p["box"][0]) * (p["box"][3] - p["box"][1]), i) for i, p in enumerate(pictures))
    assert pictures[areas[-1][1]]["picture"][0] / pictures[areas[-1][1]]["picture"][1] == pytest.approx(w / h, 0.02)


def test_every_match_is_listed_or_counted() -> None:
    _, layout = viz._panel_layout(_result(168, 256, 16, 5))
    lines = [p["text"] for p in layout if "text" in p and "\u2192" in p["text"]]
    more = [p["text"] for p in layout if "text" in p and p["text"].startswith("+")]
    assert len(lines) + sum(int(t[1:].split()[0]) for t in more) == 16


def test_style_regions_have_a_palette_of_their_own() -> None:
    content, style = viz.region_colors(8, "content"), viz.region_colors(8, "style")
    assert not ({tuple(c) for c in content} & {tuple(c) for c in style})
    assert viz.style_name(0, ["The Starry Night"]) == "The Starry Night" and viz.style_name(1, ["a"]) == "Style 2"
    assert viz.style_name(0, ["x" * 50], limit=10) == "x" * 9 + "\u2026"


def test_match_figure_scales_with_the_working_size() -> None:
    small, large = _result(168, 256, 4, 2), _result(680, 1024, 4, 2)
    figures = [viz.match_figure(r.content_image, r.content_labels, r.style_images, r.style_labels, r.matches)
               for r in (small, large)]
    assert figures[1].height >= 680 and figures[1].width >= 1024
    assert figures[1].height > 1.5 * figures[0].height and figures[1].width > 1.5 * figures[0].width


def test_highlight_keeps_the_chosen_style_region_and_greys_the_rest() -> None:
    image = np.zeros((80, 80, 3), np.float32)
    image[..., 0] = 1.0  # pure red
    labels = np.zeros((10, 10), np.int32)
    labels[:, 5:] = 1
    thumb = np.asarray(viz._highlight(image, labels, 1, 80)).astype(int)
    assert thumb.shape == (80, 80, 3)
    assert (thumb[5:15, 70:75] == (255, 0, 0)).all()  # inside region 2, away from its number badge: untouched
    outside = thumb[5:75, 2:30]
    assert (np.abs(outside[..., 0] - outside[..., 1]) < 5).all()  # grey, no longer red


def test_inner_point_of_a_large_map_is_in_the_region_and_deep():
    mask = np.zeros((512, 512), bool)
    mask[100:400, 50:300] = True
    x, y = viz._inner_point(mask)
    assert mask[y, x] and abs(x - 175) <= 8 and abs(y - 250) <= 8  # near the centre of the rectangle
    thin = np.zeros((512, 512), bool)
    thin[201, 10:500] = True  # thinner than the coarse search's step: found at full size
    x, y = viz._inner_point(thin)
    assert thin[y, x]

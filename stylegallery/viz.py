"""Talk-ready pictures: the region map with a numbered legend, the match figure, and the side-by-side panel.

Regions and style images are numbered from 1 in every picture (region label 0 is "R1", style index 0 is
"Style 1"); the Python API and the JSON files use 0-based indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stylegallery.images import to_uint8
from stylegallery.types import Match


if TYPE_CHECKING:
    from stylegallery.pipeline import Result

# A qualitative palette that stays distinguishable on photos and in print (Tableau 20, reordered).
_PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
        (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127), (174, 199, 232), (255, 187, 120),
        (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141),
        (158, 218, 229), (199, 199, 199),
    ],
    dtype=np.uint8,
)
_BACKGROUND = (250, 250, 248)
_INK = (30, 30, 34)
_MUTED = (110, 110, 118)


def region_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 colours, one per region label; repeats after 20 with a darker shade."""
    out = np.empty((max(n, 0), 3), dtype=np.uint8)
    for i in range(max(n, 0)):
        base = _PALETTE[i % len(_PALETTE)].astype(np.float32)
        out[i] = (base * (0.7 ** (i // len(_PALETTE)))).astype(np.uint8)
    return out


def labels_to_color(labels: np.ndarray) -> np.ndarray:
    """(h, w) int labels -> (h, w, 3) uint8 colour map."""
    labels = np.asarray(labels)
    return region_colors(int(labels.max()) + 1 if labels.size else 0)[labels]


def upsample_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour (h, w) -> (height, width), aligned on cell centres."""
    h, w = labels.shape
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(np.intp)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(np.intp)
    return labels[rows[:, None], cols[None, :]]


def region_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55, legend: bool = True,
                   title: str | None = None) -> Image.Image:
    """The image with each region tinted in its colour, outlined, numbered at its centre, and a legend."""
    rgb = _as_uint8(image)
    height, width = rgb.shape[:2]
    full = upsample_labels(np.asarray(labels), height, width)
    colors = labels_to_color(full).astype(np.float32)
    blended = rgb.astype(np.float32) * (1 - alpha) + colors * alpha
    edges = _edges(full)
    blended[edges] = 255.0
    canvas = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, min(height, width) // 22), bold=True)
    n = int(full.max()) + 1
    for region in range(n):
        point = _inner_point(full == region)
        if point is not None:
            _badge(draw, point, str(region + 1), font, tuple(int(c) for c in region_colors(n)[region]))
    if not legend:
        return _with_title(canvas, title)
    return _with_title(_with_legend(canvas, full, n), title)


def match_figure(content_image: np.ndarray, content_labels: np.ndarray, style_images: Sequence[np.ndarray],
                 style_labels: Sequence[np.ndarray], matches: Sequence[Match], row_height: int = 120) -> Image.Image:
    """Content regions on the left; one row per content region showing the style region it takes its look from."""
    content = region_overlay(content_image, content_labels, legend=False)
    n_regions = int(np.asarray(content_labels).max()) + 1
    colors = region_colors(n_regions)
    rows = sorted(matches, key=lambda m: m.content_region)
    font = _font(max(13, row_height // 7))
    small = _font(max(11, row_height // 9))
    bold = _font(max(14, row_height // 6), bold=True)

    thumb_cache: dict[tuple[int, int], Image.Image] = {}
    row_w = 0
    row_images = []
    for m in rows:
        key = (m.style_image, m.style_region)
        if key not in thumb_cache:
            thumb_cache[key] = _highlight(style_images[m.style_image], style_labels[m.style_image], m.style_region,
                                          row_height - 16)
        thumb = thumb_cache[key]
        who = "you" if m.source == "user" else "auto"
        lines = [
            (f"R{m.content_region + 1}  \u2192  Style {m.style_image + 1}, region {m.style_region + 1}", bold, _INK),
            (f"score {m.score:.3f}  ({who})", font, _INK),
            ("stat {statistical:.2f} \u00b7 sem {semantic:.2f} \u00b7 pos {positional:.2f}".format(
                **{k: m.terms.get(k, 0.0) for k in ("statistical", "semantic", "positional")}), small, _MUTED),
        ]
        text_w = max(_text_size(text, f)[0] for text, f, _ in lines)
        row = Image.new("RGB", (28 + thumb.width + 16 + text_w + 16, row_height), _BACKGROUND)
        d = ImageDraw.Draw(row)
        d.rectangle([6, 8, 18, row_height - 8], fill=tuple(int(c) for c in colors[m.content_region]))
        row.paste(thumb, (28, (row_height - thumb.height) // 2))
        x, y = 28 + thumb.width + 16, 12
        for text, f, color in lines:
            d.text((x, y), text, font=f, fill=color)
            y += _text_size(text, f)[1] + 8
        row_images.append(row)
        row_w = max(row_w, row.width)

    # Content on the left at the height of the rows (or at least 360 px), rows stacked in one or two columns.
    per_column = max(1, int(np.ceil(len(row_images) / (2 if len(row_images) > 6 else 1))))
    columns = [row_images[i:i + per_column] for i in range(0, len(row_images), per_column)]
    rows_h = per_column * row_height
    content_h = max(360, rows_h)
    content = _fit(content, 10**6, content_h)
    title = "Region matches: each content region takes its look from one style region"
    total_w = max(content.width + 24 + len(columns) * (row_w + 12), _text_size(title, bold)[0] + 24)
    figure = Image.new("RGB", (total_w, max(content.height, rows_h) + 56), _BACKGROUND)
    d = ImageDraw.Draw(figure)
    d.text((12, 10), title, font=bold, fill=_INK)
    figure.paste(content, (12, 48))
    x = content.width + 24
    for column in columns:
        for i, row in enumerate(column):
            figure.paste(row, (x, 48 + i * row_height))
        x += row_w + 12
    return figure


def panel(result: Result, height: int = 512) -> Image.Image:
    """content | regions | matches | result, captioned, each scaled to `height`: one picture for a slide."""
    parts = [
        ("Content", images_to_pil(result.content_image)),
        ("Semantic regions", region_overlay(result.content_image, result.content_labels, legend=False)),
        ("Style images", _style_strip(result.style_images, result.style_labels, height)),
        ("Region matches", match_figure(result.content_image, result.content_labels, result.style_images,
                                        result.style_labels, result.matches)),
        (f"Result ({result.engine} engine)", images_to_pil(result.image)),
    ]
    font = _font(max(16, height // 20), bold=True)
    scaled = [(title, _fit(img, 10**6, height)) for title, img in parts]
    caption_h = _text_size("Ag", font)[1] + 20
    width = sum(img.width for _, img in scaled) + 16 * (len(scaled) + 1)
    canvas = Image.new("RGB", (width, height + caption_h + 16), _BACKGROUND)
    d = ImageDraw.Draw(canvas)
    x = 16
    for title, img in scaled:
        d.text((x, 8), title, font=font, fill=_INK)
        canvas.paste(img, (x, caption_h))
        x += img.width + 16
    return canvas


def images_to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(_as_uint8(image))


# -- small drawing helpers ----------------------------------------------------------------------


def _as_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else to_uint8(image)


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    names = ("DejaVuSans-Bold.ttf", "Arial Bold.ttf") if bold else ("DejaVuSans.ttf", "Arial.ttf")
    for name in names:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _text_size(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> tuple[int, int]:
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return int(box[2] - box[0]), int(box[3] - box[1])


def _edges(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge


def _inner_point(mask: np.ndarray) -> tuple[int, int] | None:
    """The point of `mask` farthest from its border (a good place for a label), as (x, y)."""
    if not mask.any():
        return None
    import cv2

    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(mask)
    yy, xx = np.indices(mask.shape)
    # Among the deepest points, prefer the one nearest the centroid (ties would otherwise go to the top row).
    score = dist - 1e-3 * np.hypot(yy - ys.mean(), xx - xs.mean())
    y, x = np.unravel_index(int(np.argmax(np.where(mask, score, -np.inf))), dist.shape)
    return int(x), int(y)


def _badge(draw: ImageDraw.ImageDraw, center: tuple[int, int], text: str, font, color: tuple[int, ...]) -> None:
    w, h = _text_size(text, font)
    r = max(w, h) // 2 + 7
    x, y = center
    draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=(255, 255, 255), width=2)
    draw.text((x, y), text, font=font, fill=(255, 255, 255), anchor="mm")


def _with_legend(canvas: Image.Image, labels: np.ndarray, n: int) -> Image.Image:
    font = _font(max(12, canvas.height // 34))
    colors = region_colors(n)
    counts = np.bincount(labels.ravel(), minlength=n) / labels.size
    entries = [f"R{i + 1}  {100 * counts[i]:.0f}%" for i in range(n)]
    sw = _text_size("Ag", font)[1] + 4
    item_w = max(_text_size(e, font)[0] for e in entries) + sw + 22
    per_row = max(1, canvas.width // item_w)
    n_rows = int(np.ceil(n / per_row))
    out = Image.new("RGB", (canvas.width, canvas.height + n_rows * (sw + 10) + 10), _BACKGROUND)
    out.paste(canvas, (0, 0))
    d = ImageDraw.Draw(out)
    for i, entry in enumerate(entries):
        x = 8 + (i % per_row) * item_w
        y = canvas.height + 10 + (i // per_row) * (sw + 10)
        d.rectangle([x, y, x + sw, y + sw], fill=tuple(int(c) for c in colors[i]))
        d.text((x + sw + 6, y + sw // 2), entry, font=font, fill=_INK, anchor="lm")
    return out


def _with_title(canvas: Image.Image, title: str | None) -> Image.Image:
    if not title:
        return canvas
    font = _font(max(14, canvas.width // 30), bold=True)
    th = _text_size(title, font)[1] + 16
    out = Image.new("RGB", (canvas.width, canvas.height + th), _BACKGROUND)
    ImageDraw.Draw(out).text((8, 8), title, font=font, fill=_INK)
    out.paste(canvas, (0, th))
    return out


def _highlight(image: np.ndarray, labels: np.ndarray, region: int, height: int) -> Image.Image:
    """The style image with `region` outlined and the rest dimmed, scaled to `height`."""
    rgb = _as_uint8(image).astype(np.float32)
    full = upsample_labels(np.asarray(labels), rgb.shape[0], rgb.shape[1])
    inside = full == region
    out = np.where(inside[..., None], rgb, rgb * 0.3 + 255 * 0.7 * 0.35)
    border = _edges(inside.astype(np.int32)) & inside
    out[border] = (255, 64, 64)
    return _fit(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)), 10**6, height)


def _style_strip(style_images: Sequence[np.ndarray], style_labels: Sequence[np.ndarray], height: int) -> Image.Image:
    """Style images stacked vertically, each with its numbered regions and a caption readable at `height`."""
    font = _font(max(12, height // 26), bold=True)
    caption_h = _text_size("Style 9", font)[1] + 8
    gap = 8
    n = max(1, len(style_images))
    tile_h = max(24, (height - gap * (n - 1)) // n - caption_h)
    tiles = [_fit(region_overlay(img, lab, alpha=0.35, legend=False), 10**6, tile_h)
             for img, lab in zip(style_images, style_labels)]
    strip = Image.new("RGB", (max(max(t.width for t in tiles), 120), height), _BACKGROUND)
    draw = ImageDraw.Draw(strip)
    y = 0
    for i, tile in enumerate(tiles):
        draw.text((0, y), f"Style {i + 1}", font=font, fill=_INK)
        strip.paste(tile, (0, y + caption_h))
        y += caption_h + tile.height + gap
    return strip


def _fit(image: Image.Image, max_w: int, max_h: int) -> Image.Image:
    scale = min(max_w / image.width, max_h / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.LANCZOS)

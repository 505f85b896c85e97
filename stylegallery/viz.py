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
_RING = (214, 26, 120)  # the chosen style region in the match figure


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
                 style_labels: Sequence[np.ndarray], matches: Sequence[Match],
                 row_height: int | None = None) -> Image.Image:
    """Content regions on the left; one row per content region showing the style region it takes its look from.

    Sizes follow the working resolution: rows are 120 px high per 512 px of the content's long side (at least
    120) unless `row_height` is given, and the content is shown at its own size (at least 360 px high).
    """
    content = region_overlay(content_image, content_labels, legend=False)
    unit = max(1.0, max(content.size) / 512)
    row_height = row_height or round(120 * unit)
    n_regions = int(np.asarray(content_labels).max()) + 1
    rows = _match_rows(style_images, style_labels, matches, n_regions, row_height)
    content = _fit(content, 10**6, max(rows.height, content.height, 360))
    pad = max(12, row_height // 10)
    title = "Region matches: each content region takes its look from one style region"
    bold = _font(max(14, row_height // 6), bold=True)
    title_h = _text_size(title, bold)[1] + 2 * pad
    width = max(content.width + rows.width + 3 * pad, _text_size(title, bold)[0] + 2 * pad)
    figure = Image.new("RGB", (width, max(content.height, rows.height) + title_h + pad), _BACKGROUND)
    ImageDraw.Draw(figure).text((pad, pad), title, font=bold, fill=_INK)
    figure.paste(content, (pad, title_h))
    figure.paste(rows, (content.width + 2 * pad, title_h))
    return figure


def _match_rows(style_images: Sequence[np.ndarray], style_labels: Sequence[np.ndarray], matches: Sequence[Match],
                n_regions: int, row_height: int) -> Image.Image:
    """One row per match (content colour, the highlighted style region, the pair and its scores), in one column,
    or two beyond six rows. Rows grow beyond `row_height` when their text needs it."""
    s = row_height / 120  # paddings scale with the rows
    font, small = _font(max(13, row_height // 7)), _font(max(11, row_height // 9))
    bold = _font(max(14, row_height // 6), bold=True)
    gap, pad = max(8, round(8 * s)), max(12, round(12 * s))
    text_h = sum(_text_size("Ag", f)[1] for f in (bold, font, small)) + 2 * gap
    row_height = max(row_height, text_h + 2 * pad)
    colors = region_colors(n_regions)
    thumbs: dict[tuple[int, int], Image.Image] = {}
    rows = []
    for m in sorted(matches, key=lambda m: m.content_region):
        key = (m.style_image, m.style_region)
        if key not in thumbs:
            thumbs[key] = _highlight(style_images[m.style_image], style_labels[m.style_image], m.style_region,
                                     row_height - 2 * gap)
        thumb = thumbs[key]
        who = "you" if m.source == "user" else "auto"
        lines = [
            (f"R{m.content_region + 1}  \u2192  Style {m.style_image + 1}, region {m.style_region + 1}", bold, _INK),
            (f"score {m.score:.3f}  ({who})", font, _INK),
            ("stat {statistical:.2f} \u00b7 sem {semantic:.2f} \u00b7 pos {positional:.2f}".format(
                **{k: m.terms.get(k, 0.0) for k in ("statistical", "semantic", "positional")}), small, _MUTED),
        ]
        bar = max(12, round(12 * s))
        x_text = bar + 2 * gap + thumb.width + 2 * gap
        row = Image.new("RGB", (x_text + max(_text_size(t, f)[0] for t, f, _ in lines) + 2 * gap, row_height),
                        _BACKGROUND)
        d = ImageDraw.Draw(row)
        color = tuple(int(c) for c in colors[m.content_region])
        d.rectangle([gap // 2, gap, gap // 2 + bar, row_height - gap], fill=color)
        row.paste(thumb, (bar + 2 * gap, (row_height - thumb.height) // 2))
        y = (row_height - text_h) // 2
        for text, f, color in lines:
            d.text((x_text, y), text, font=f, fill=color)
            y += _text_size("Ag", f)[1] + gap
        rows.append(row)
    if not rows:
        return Image.new("RGB", (1, 1), _BACKGROUND)
    per_column = int(np.ceil(len(rows) / (2 if len(rows) > 6 else 1)))
    columns = [rows[i:i + per_column] for i in range(0, len(rows), per_column)]
    row_w = max(r.width for r in rows)
    out = Image.new("RGB", (len(columns) * row_w + (len(columns) - 1) * pad, per_column * row_height), _BACKGROUND)
    for c, column in enumerate(columns):
        for i, row in enumerate(column):
            out.paste(row, (c * (row_w + pad), i * row_height))
    return out


def panel(result: Result, min_height: int = 360) -> Image.Image:
    """content | regions | style images | matches | result, captioned: one picture for a slide.

    The content, its regions and the result are shown at the working size (nothing is rescaled); the style
    images and the matches fill the same height (at least `min_height`), and the text scales with it.
    """
    return _panel_layout(result, min_height)[0]


def _panel_layout(result: Result, min_height: int = 360) -> tuple[Image.Image, list[dict[str, object]]]:
    """The panel and, per column, its caption, the caption's text box and the column's box (x0, y0, x1, y1)."""
    content, output = images_to_pil(result.content_image), images_to_pil(result.image)
    body = max(output.height, content.height, min_height)
    n_regions = int(np.asarray(result.content_labels).max()) + 1
    per_column = int(np.ceil(len(result.matches) / (2 if len(result.matches) > 6 else 1))) or 1
    rows = _match_rows(result.style_images, result.style_labels, result.matches, n_regions,
                       max(48, min(body // per_column, body // 3)))
    parts = [
        ("Content", content),
        ("Semantic regions", region_overlay(result.content_image, result.content_labels, legend=False)),
        ("Style images", _style_strip(result.style_images, result.style_labels, body)),
        ("Region matches", rows),  # the content's regions are the column before: not drawn again
        (f"Result ({result.engine} engine)", output),
    ]
    body = max(body, *(img.height for _, img in parts))
    margin = max(16, body // 40)
    font = _font(max(16, body // 22), bold=True)
    caption_h = _text_size("Ag", font)[1] + 2 * margin
    widths = [max(img.width, _text_size(title, font)[0]) for title, img in parts]  # a caption never overhangs
    canvas = Image.new("RGB", (sum(widths) + margin * (len(parts) + 1), caption_h + body + margin), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    layout = []
    x = margin
    for (title, img), width in zip(parts, widths):
        draw.text((x, margin), title, font=font, fill=_INK)
        y = caption_h + (body - img.height) // 2  # centred in the row of pictures
        canvas.paste(img, (x + (width - img.width) // 2, y))
        layout.append({"title": title, "text": draw.textbbox((x, margin), title, font=font),
                       "column": (x, margin, x + width, caption_h + body),
                       "image": (x + (width - img.width) // 2, y, x + (width + img.width) // 2, y + img.height)})
        x += width + margin
    return canvas, layout


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


def _inner_point(mask: np.ndarray, max_side: int = 160) -> tuple[int, int] | None:
    """The point of `mask` farthest from its border (a good place for a label), as (x, y).

    Found on every `step`-th pixel of a mask larger than `max_side` (a badge needs no finer place; the full-size
    distance transforms of a pixel-level region map cost 0.2 s per figure), else on the mask itself.
    """
    if not mask.any():
        return None
    step = -(-max(mask.shape) // max_side)
    if step > 1:
        point = _inner_point(mask[::step, ::step], max_side)
        if point is not None:  # the sampled pixel, itself in the mask; a region thinner than the step falls through
            return point[0] * step, point[1] * step
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
    """The style image scaled to `height`: `region` in full colour, ringed and numbered; the rest pale grey."""
    thumb = np.asarray(_fit(images_to_pil(image), 10**6, height)).astype(np.float32)
    full = upsample_labels(np.asarray(labels), thumb.shape[0], thumb.shape[1])
    inside = full == region
    grey = thumb.mean(axis=2, keepdims=True) * 0.35 + 150  # (h, w, 1)
    out = np.where(inside[..., None], thumb, np.broadcast_to(grey, thumb.shape))
    if inside.any():  # a ring just outside the region, so even its small pieces keep their own pixels
        import cv2

        width = max(2, height // 45)
        kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
        ring = (cv2.dilate(inside.astype(np.uint8), kernel) > 0) & ~inside
        out[ring] = _RING
    picture = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    point = _inner_point(inside)
    if point is not None:
        _badge(ImageDraw.Draw(picture), point, str(region + 1), _font(max(10, height // 8), bold=True), _RING)
    return picture


def _style_strip(style_images: Sequence[np.ndarray], style_labels: Sequence[np.ndarray], height: int) -> Image.Image:
    """Style images in one column (in rows of two beyond two images), each with its numbered regions and a caption
    readable at `height`."""
    font = _font(max(12, height // 26), bold=True)
    gap = max(8, height // 60)
    caption_h = _text_size("Style 9", font)[1] + gap
    n = max(1, len(style_images))
    columns = 1 if n <= 2 else 2
    rows = int(np.ceil(n / columns))
    tile_h = max(24, (height - gap * (rows - 1)) // rows - caption_h)
    tiles = [_fit(region_overlay(img, lab, alpha=0.35, legend=False), 10**6, tile_h)
             for img, lab in zip(style_images, style_labels)]
    col_w = max([t.width for t in tiles] + [_text_size(f"Style {n}", font)[0]])
    strip = Image.new("RGB", (columns * col_w + (columns - 1) * gap,
                              max(height, rows * (caption_h + tile_h + gap) - gap)), _BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for i, tile in enumerate(tiles):
        x, y = (i % columns) * (col_w + gap), (i // columns) * (caption_h + tile_h + gap)
        draw.text((x, y), f"Style {i + 1}", font=font, fill=_INK)
        strip.paste(tile, (x, y + caption_h))
    return strip


def _fit(image: Image.Image, max_w: int, max_h: int) -> Image.Image:
    scale = min(max_w / image.width, max_h / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.LANCZOS)

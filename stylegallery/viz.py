"""Talk-ready pictures: the region map with a numbered legend, the match figure, and the talk panel (a 16:9 or 4:3
slide whose smallest text is 20 px).

Regions and style images are numbered from 1 in every picture (region label 0 is "R1", style index 0 is style 1);
the Python API and the JSON files use 0-based indices. Styles are named by their titles or file names where known.
Content regions are drawn in one palette with round badges, style regions in another with square ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

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
# Style regions get their own palette (muted, warm-to-cool earth and pastel tones) and square badges, so a content
# region R1 in blue never seems to match "blue" style region 1: the two numberings look different at a glance.
_STYLE_PALETTE = np.array(
    [
        (102, 194, 165), (252, 141, 98), (141, 160, 203), (231, 138, 195), (166, 216, 84), (255, 217, 47),
        (229, 196, 148), (179, 179, 179), (27, 158, 119), (217, 95, 2), (117, 112, 179), (231, 41, 138),
        (102, 166, 30), (230, 171, 2), (166, 118, 29), (102, 102, 102),
    ],
    dtype=np.uint8,
)
Palette = Literal["content", "style"]
_BACKGROUND = (250, 250, 248)
_INK = (30, 30, 34)
_MUTED = (110, 110, 118)
_RING = (214, 26, 120)  # the chosen style region in the match figure


def region_colors(n: int, palette: Palette = "content") -> np.ndarray:
    """(n, 3) uint8 colours, one per region label, from the content or the style palette; repeats with a darker
    shade after the palette's end."""
    table = _STYLE_PALETTE if palette == "style" else _PALETTE
    out = np.empty((max(n, 0), 3), dtype=np.uint8)
    for i in range(max(n, 0)):
        base = table[i % len(table)].astype(np.float32)
        out[i] = (base * (0.7 ** (i // len(table)))).astype(np.uint8)
    return out


def labels_to_color(labels: np.ndarray, palette: Palette = "content") -> np.ndarray:
    """(h, w) int labels -> (h, w, 3) uint8 colour map."""
    labels = np.asarray(labels)
    return region_colors(int(labels.max()) + 1 if labels.size else 0, palette)[labels]


def upsample_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour (h, w) -> (height, width), aligned on cell centres."""
    h, w = labels.shape
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(np.intp)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(np.intp)
    return labels[rows[:, None], cols[None, :]]


def region_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55, legend: bool = True,
                   title: str | None = None, palette: Palette = "content", badge_px: int | None = None) -> Image.Image:
    """The image with each region tinted in its colour, outlined, numbered at its centre, and a legend.

    Content regions (palette "content") are numbered in round badges, style regions (palette "style") in square
    ones with colours of their own. The picture keeps the image's size (plus the legend and title below/above);
    region maps on a coarser grid are upsampled to it. `badge_px`: the badges' font size (default: by image size).
    """
    rgb = _as_uint8(image)
    height, width = rgb.shape[:2]
    full = upsample_labels(np.asarray(labels), height, width)
    colors = labels_to_color(full, palette).astype(np.float32)
    blended = rgb.astype(np.float32) * (1 - alpha) + colors * alpha
    edges = _edges(full)
    if max(height, width) > 1200:  # a 1-px outline vanishes when a large map is shown small: thicken it
        import cv2

        edges = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    blended[edges] = 255.0
    canvas = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = _font(badge_px or max(12, min(height, width) // 22), bold=True)
    n = int(full.max()) + 1
    for region in range(n):
        point = _inner_point(full == region)
        if point is not None:
            _badge(draw, point, str(region + 1), font, tuple(int(c) for c in region_colors(n, palette)[region]),
                   square=palette == "style")
    if not legend:
        return _with_title(canvas, title)
    return _with_title(_with_legend(canvas, full, n, palette), title)


def match_figure(content_image: np.ndarray, content_labels: np.ndarray, style_images: Sequence[np.ndarray],
                 style_labels: Sequence[np.ndarray], matches: Sequence[Match],
                 row_height: int | None = None, style_names: Sequence[str] | None = None) -> Image.Image:
    """Content regions on the left; one row per content region showing the style region it takes its look from.

    Sizes follow the working resolution: rows are 120 px high per 512 px of the content's long side (at least
    120) unless `row_height` is given, and the content is shown at its own size (at least 360 px high).
    `style_names` (titles or file names) name the styles; "Style N" without them.
    """
    content = region_overlay(content_image, content_labels, legend=False)
    unit = max(1.0, max(content.size) / 512)
    row_height = row_height or round(120 * unit)
    n_regions = int(np.asarray(content_labels).max()) + 1
    rows = _match_rows(style_images, style_labels, matches, n_regions, row_height, style_names)
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


def style_name(index: int, style_names: Sequence[str] | None = None, limit: int = 32) -> str:
    """The name of style `index` (0-based) as pictures show it: its title or file name, shortened, else "Style N"."""
    name = style_names[index] if style_names and index < len(style_names) and style_names[index] else ""
    name = name.strip() or f"Style {index + 1}"
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "\u2026"


def _match_rows(style_images: Sequence[np.ndarray], style_labels: Sequence[np.ndarray], matches: Sequence[Match],
                n_regions: int, row_height: int, style_names: Sequence[str] | None = None) -> Image.Image:
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
            (f"R{m.content_region + 1}  \u2192  {style_name(m.style_image, style_names)} \u00b7 region "
             f"{m.style_region + 1}", bold, _INK),
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


SLIDES = {"16:9": (1920, 1080), "4:3": (1440, 1080)}  # talk panel sizes, px
MIN_TEXT_PX = 20  # no text on a talk panel is smaller (font size in px at the slide's own size)


def panel(result: Result, aspect: str = "16:9", style_names: Sequence[str] | None = None,
          region_title: str = "Regions") -> Image.Image:
    """One slide: content and its regions | the style images (named) and the region matches | the result.

    A 1920x1080 (16:9) or 1440x1080 (4:3) picture whose smallest text is MIN_TEXT_PX px at that size, for a talk.
    `style_names` default to the result's (file names); `region_title` says what the engine's regions are.
    """
    return _panel_layout(result, aspect, style_names, region_title)[0]


def _panel_layout(result: Result, aspect: str = "16:9", style_names: Sequence[str] | None = None,
                  region_title: str = "Regions") -> tuple[Image.Image, list[dict[str, object]]]:
    """The slide and every text drawn on it: {"text", "px" (font size), "box" (x0, y0, x1, y1)}, and every picture:
    {"picture", "box"}."""
    if aspect not in SLIDES:
        raise ValueError(f"aspect={aspect!r} is invalid: expected one of {', '.join(SLIDES)}")
    width, height = SLIDES[aspect]
    names = list(style_names) if style_names is not None else list(result.style_names)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    slide = _Slide(canvas)
    m = 28
    n_regions = int(np.asarray(result.content_labels).max()) + 1
    out_h, out_w = result.image.shape[:2]

    # Title bar
    slide.text((m, m - 4), "StyleGallery", 40, bold=True)
    x = m + slide.last_box()[2] - slide.last_box()[0] + 24
    styles_word = "style" if len(result.style_images) == 1 else "styles"
    slide.text((x, m + 10), f"{result.content_name} \u00b7 {result.engine} engine \u00b7 {n_regions} regions \u00b7 "
               f"{len(result.style_images)} {styles_word}", 26, colour=_MUTED, max_width=width - x - m)
    top = m + 64

    # Boxes (x0, y0, x1, y1): 16:9 in three columns (content over regions | styles over matches | result);
    # 4:3 in two rows (content over regions | result; then styles | matches), so the result stays large
    inner_w, bottom = width - 2 * m, height - m
    if aspect == "16:9":
        wa, wb = int((inner_w - 2 * m) * 0.25), int((inner_w - 2 * m) * 0.28)
        xb, xc = m + wa + m, m + wa + m + wb + m
        n_regions_tall = n_regions > 8
        split = top + int((bottom - top) * (0.42 if n_regions_tall else 0.52))
        boxes = {"content": (m, top, m + wa, bottom), "styles": (xb, top, xb + wb, split),
                 "matches": (xb, split + 8, xb + wb, bottom), "result": (xc, top, width - m, bottom)}
    else:
        wa = int((inner_w - m) * 0.32)
        split = top + int((bottom - top) * 0.56)
        wm = int((inner_w - m) * 0.42)
        boxes = {"content": (m, top, m + wa, split), "result": (m + wa + m, top, width - m, split),
                 "styles": (m, split + m // 2, width - m - wm - m, bottom),
                 "matches": (width - m - wm, split + m // 2, width - m, bottom)}
    _content_and_regions(slide, result, region_title, boxes["content"])
    _styles(slide, result, names, boxes["styles"], one_row=aspect != "16:9")
    x0, y0, x1, y1 = boxes["matches"]
    slide.text((x0, y0), "Region matches", _CAPTION_PX, bold=True)
    _match_list(slide, result.matches, names, n_regions, (x0, y0 + _CAPTION_H, x1, y1))
    _result(slide, result, boxes["result"])
    return canvas, slide.layout


_CAPTION_PX, _CAPTION_H = 28, 42  # the slide's captions


def _content_and_regions(slide: _Slide, result: Result, region_title: str, box: tuple[int, int, int, int]) -> None:
    """The content, and under it its region map at the same size."""
    x0, y0, x1, y1 = box
    gap = 14
    cell = (y1 - y0 - gap) // 2
    content = _fit(images_to_pil(result.content_image), x1 - x0, cell - _CAPTION_H)
    slide.text((x0, y0), "Content", _CAPTION_PX, bold=True)
    slide.picture(content, (x0, y0 + _CAPTION_H))
    regions = region_overlay(np.asarray(content).astype(np.float32) / 255.0, result.content_labels, legend=False,
                             badge_px=22)
    below = y0 + _CAPTION_H + content.height + gap
    slide.text((x0, below), region_title, _CAPTION_PX, bold=True, max_width=x1 - x0)
    slide.picture(regions, (x0, below + _CAPTION_H))


def _styles(slide: _Slide, result: Result, names: Sequence[str], box: tuple[int, int, int, int],
            one_row: bool) -> None:
    """The style images with their regions (style palette, square badges), each named under it."""
    x0, y0, x1, y1 = box
    slide.text((x0, y0), "Styles", _CAPTION_PX, bold=True)
    k = max(1, len(result.style_images))
    slots = 3 if one_row else 1 if k == 1 else 2  # one_row: three slots a row, so a lone style stays small
    cols = min(k, slots) if not one_row else slots
    rows = -(-k // cols)
    gap, name_h = 14, 32
    tile_w = (x1 - x0 - (cols - 1) * gap) // cols
    tile_h = (y1 - y0 - _CAPTION_H - (rows - 1) * gap) // rows
    for i, (img, lab) in enumerate(zip(result.style_images, result.style_labels)):
        tx, ty = x0 + (i % cols) * (tile_w + gap), y0 + _CAPTION_H + (i // cols) * (tile_h + gap)
        thumb = _fit(images_to_pil(img), tile_w, max(16, tile_h - name_h))
        tile = region_overlay(np.asarray(thumb).astype(np.float32) / 255.0, lab, alpha=0.35, legend=False,
                              palette="style", badge_px=MIN_TEXT_PX)
        slide.picture(tile, (tx, ty))
        slide.text((tx, ty + tile.height + 2), f"{i + 1}. {style_name(i, names, 60)}", 22, max_width=tile_w)


def _result(slide: _Slide, result: Result, box: tuple[int, int, int, int]) -> None:
    """The result as large as its box allows, with its size in px under it."""
    x0, y0, x1, y1 = box
    out_h, out_w = result.image.shape[:2]
    slide.text((x0, y0), f"Result ({result.engine} engine)", _CAPTION_PX, bold=True, max_width=x1 - x0)
    shown = _fit(images_to_pil(result.image), x1 - x0, y1 - y0 - _CAPTION_H - 36)
    left = x0 + (x1 - x0 - shown.width) // 2
    slide.picture(shown, (left, y0 + _CAPTION_H))
    slide.text((left, y0 + _CAPTION_H + shown.height + 6), f"{out_w} x {out_h} px", MIN_TEXT_PX, colour=_MUTED)


class _Slide:
    """Draws on a slide and records each text's font size and box, and each picture's box (the tests read them)."""

    def __init__(self, canvas: Image.Image) -> None:
        self.canvas, self.draw, self.layout = canvas, ImageDraw.Draw(canvas), []

    def text(self, xy: tuple[int, int], text: str, px: int, bold: bool = False, colour: tuple[int, ...] = _INK,
             max_width: int | None = None) -> None:
        font = _font(px, bold)
        while max_width and _text_size(text, font)[0] > max_width and len(text) > 2:
            text = text[:-2].rstrip() + "\u2026"
        box = self.draw.textbbox(xy, text, font=font)
        self.draw.text(xy, text, font=font, fill=colour)
        self.layout.append({"text": text, "px": px, "box": tuple(int(v) for v in box)})

    def picture(self, image: Image.Image, xy: tuple[int, int]) -> None:
        self.canvas.paste(image, xy)
        self.layout.append({"picture": image.size, "box": (xy[0], xy[1], xy[0] + image.width, xy[1] + image.height)})

    def last_box(self) -> tuple[int, int, int, int]:
        return self.layout[-1]["box"]  # type: ignore[return-value]


def _match_list(slide: _Slide, matches: Sequence[Match], names: Sequence[str], n_regions: int,
                box: tuple[int, int, int, int]) -> None:
    """One line per match: the content region's round swatch, the style region's square one, the pair and its score;
    in two columns when one does not fit, and "+N more" when two do not."""
    x0, y0, x1, y1 = box
    px, line_h = 22, 31
    per_column = max(1, (y1 - y0) // line_h)
    ordered = sorted(matches, key=lambda m: m.content_region)
    columns = 1 if len(ordered) <= per_column else 2
    shown = ordered[: per_column * columns]
    if len(shown) < len(ordered):
        shown = shown[:-1]
    col_w = (x1 - x0) // columns
    content_colours = region_colors(n_regions)
    for i, m in enumerate(shown):
        cx, cy = x0 + (i // per_column) * col_w, y0 + (i % per_column) * line_h
        style_colour = tuple(int(c) for c in region_colors(m.style_region + 1, "style")[m.style_region])
        r = 9
        slide.draw.ellipse([cx, cy + 6, cx + 2 * r, cy + 6 + 2 * r], fill=tuple(int(c) for c in
                                                                                  content_colours[m.content_region]))
        slide.draw.rectangle([cx + 2 * r + 6, cy + 6, cx + 4 * r + 6, cy + 6 + 2 * r], fill=style_colour,
                             outline=_INK)
        who = " (you)" if m.source == "user" else ""
        region = f"region {m.style_region + 1}" if columns == 1 else f"{m.style_region + 1}"  # two columns: compact
        head, tail = f"R{m.content_region + 1} \u2192 ", f" \u00b7 {region}{who}"
        room = col_w - 4 * r - 24 - _text_size(head + tail, _font(px))[0]
        name = style_name(m.style_image, names, 60)
        while _text_size(name, _font(px))[0] > room and len(name) > 4:
            name = name[:-2].rstrip() + "\u2026"
        slide.text((cx + 4 * r + 14, cy + 2), head + name + tail, px, max_width=col_w - 4 * r - 20)
    if len(shown) < len(ordered):
        last = len(shown)
        slide.text((x0 + (last // per_column) * col_w, y0 + (last % per_column) * line_h + 2),
                   f"+{len(ordered) - len(shown)} more (see the match figure)", px, colour=_MUTED)


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


def _badge(draw: ImageDraw.ImageDraw, center: tuple[int, int], text: str, font, color: tuple[int, ...],
           square: bool = False) -> None:
    """A number in a round badge (content regions) or a square one (style regions)."""
    w, h = _text_size(text, font)
    r = max(w, h) // 2 + 7
    x, y = center
    if square:
        draw.rectangle([x - r, y - r, x + r, y + r], fill=color, outline=(30, 30, 34), width=2)
        draw.text((x, y), text, font=font, fill=(30, 30, 34), anchor="mm")
        return
    draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=(255, 255, 255), width=2)
    draw.text((x, y), text, font=font, fill=(255, 255, 255), anchor="mm")


def _with_legend(canvas: Image.Image, labels: np.ndarray, n: int, palette: Palette = "content") -> Image.Image:
    font = _font(max(12, canvas.height // 34))
    colors = region_colors(n, palette)
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
        color = tuple(int(c) for c in region_colors(region + 1, "style")[region])
        _badge(ImageDraw.Draw(picture), point, str(region + 1), _font(max(10, height // 8), bold=True), color,
               square=True)
    return picture


def _fit(image: Image.Image, max_w: int, max_h: int) -> Image.Image:
    scale = min(max_w / image.width, max_h / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.LANCZOS)

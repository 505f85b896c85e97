"""The page's side of a run: pipeline events rendered as widget updates, and the region-choice codec.

- `stream`: pipeline events -> one update tuple per event, in the order of `OUTPUTS` (the generate endpoint's
  outputs); every picture goes out as a PNG the app wrote itself (`hosting.RunPictures`).
- `parse_overrides`, `override_message`: region choices in the page's 1-based numbers ({"2": [1, 3]}) to the
  library's 0-based indices, and the library's complaint about one back in the page's numbers.
- `failures_said`, `page_error`: a failed run ends with the status line saying so, and the library's errors are
  worded for the page (uploads named by their file names, region choices in the page's numbers).
- `take_uploads`, `unreadable`, `refused`, `toggle_style`, `choose_target`, `show_choice`, `all_automatic`: the
  chosen styles and region choices as the page's small events change them (bad uploads refused at once).
- `status`, `timings`, `thumbs`, `numbered`, `overrides_text`, `target`, `style_label`, `regions_title`, `hero`,
  `credits`: the page's text.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from stylegallery import images, viz
from stylegallery.engines import ENGINES
from stylegallery.errors import InputError, OverrideError
from stylegallery.gallery import GalleryItem
from stylegallery.pipeline import ContentSegmented, Done, Matched, Preview, Segmented
from stylegallery.web.gate import described, named_as_uploaded
from stylegallery.web.hosting import CannotSave, RunPictures


PAPER = ("StyleGallery: Training-free and Semantic-aware Personalized Style Transfer from Arbitrary Image "
         "References (He et al., CVPR 2026)")
DOWNLOADS = {"result": "Result PNG", "regions": "Region map", "matches": "Match figure",
             "panel": "Talk panel 16:9", "panel43": "Talk panel 4:3"}
OUTPUTS = ("seed", "status", "region_map", "result", "match_figure", "style_regions", "timings", "match_table",
           "region_pick", "target_pick", *(f"dl_{k}" for k in DOWNLOADS))
# A target dropdown's choice: "2. The Great Wave off Kanagawa · region 3" (or the older "Style 2 · region 3"); the
# style's name may itself hold any text, so the region is the last "· region N".
TARGET = re.compile(r"(?:Style\s+)?(\d+)\b.*·\s*region\s+(\d+)", re.DOTALL)
LOG = logging.getLogger("stylegallery.web")


def parse_overrides(overrides: dict | None) -> dict[int, tuple[int, int]]:
    """{"2": [1, 3]} (1-based, as on the page) -> {1: (0, 2)} (the library's 0-based indices).

    A malformed choice is described, not echoed (a client's string would come back quoted and escaped)."""
    example = 'expected e.g. {"2": [1, 3]}: region R2 painted like region 3 of style 1'
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise gr.Error(f"Region choices are malformed: got {described(overrides)}, {example}.")
    parsed: dict[int, tuple[int, int]] = {}
    for key, value in overrides.items():
        if value in (None, [], ""):  # automatic
            continue
        if not is_whole(str(key)):
            shown = "".join(c for c in str(key) if c.isprintable())[:20]
            raise gr.Error(f"Region choices are malformed: the key {shown or 'given'} is not a region number; "
                           f"{example}.")
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(is_whole(v) for v in value):
            raise gr.Error(f"Region choices are malformed: region {key} takes [style, style region] (two whole "
                           f"numbers), got {described(value)}; {example}.")
        parsed[int(key)] = (int(value[0]), int(value[1]))
    for region, (style, style_region) in parsed.items():
        if min(region, style, style_region) < 1:
            raise gr.Error(f"Region choice R{region} → Style {style} · region {style_region} is invalid: regions and "
                           "styles are numbered from 1.")
    return {k - 1: (v[0] - 1, v[1] - 1) for k, v in parsed.items()}


def parse_region_strengths(strengths: dict | None) -> tuple[tuple[int, float], ...] | None:
    """{"2": 0.4} (regions numbered from 1, as on the page) -> ((2, 0.4),), the front desk's region strengths; None
    when there are none. A malformed entry is described, not echoed; the front desk checks the range."""
    example = 'expected e.g. {"2": 0.4}: region R2 painted at style strength 0.4'
    if strengths is None:
        return None
    if not isinstance(strengths, dict):
        raise gr.Error(f"Region strengths are malformed: got {described(strengths)}, {example}.")
    pairs = []
    for key, value in strengths.items():
        if value in (None, ""):  # the run's Style strength
            continue
        if not is_whole(str(key)) or int(key) < 1:
            shown = "".join(c for c in str(key) if c.isprintable())[:20]
            raise gr.Error(f"Region strengths are malformed: the key {shown or 'given'} is not a region number "
                           f"(from 1); {example}.")
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or not 0 <= value <= 1:
            got = f"{value:g}" if number else described(value)
            raise gr.Error(f"Region strengths are malformed: region {key} takes a number from 0 to 1, got {got}; "
                           f"{example}.")
        pairs.append((int(key), float(value)))
    return tuple(sorted(pairs)) or None


def choose_strength(strengths: dict | None, region: str | None, value: float, overrides: dict | None,
                    names: list[str] | None = None) -> tuple[Any, Any]:
    """Moving the region's strength slider records it for the region shown; Regenerate applies it."""
    if not region:
        gr.Info("Generate first: the regions you can paint at their own strength appear after a run.")
        return gr.skip(), gr.skip()
    strengths = {**(strengths or {}), region.lstrip("R"): value}
    return strengths, overrides_text(overrides or {}, names, strengths)


def strength_of(strengths: dict | None, region: str | None, strength: float) -> Any:
    """The region strength slider shows the value recorded for the region picked, else the Style strength; it can be
    moved only while a region is picked."""
    value = (strengths or {}).get((region or "").lstrip("R"))
    return gr.update(value=strength if value is None else value, interactive=bool(region))


def is_whole(value: object) -> bool:
    """A whole number a region choice can hold: an int, or ASCII digits, below a million ("²" is a digit to
    str.isdigit, and int() of thousands of digits raises)."""
    if isinstance(value, str):
        return value.isascii() and value.isdigit() and len(value) <= 6
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**6


def whole_seed(seed: object, most: int) -> int:
    """The Seed box's value as a whole number 0..`most`; anything else (NaN, text, a fraction) is one worded line."""
    if seed is None or seed == "":
        return 0
    if (isinstance(seed, bool) or not isinstance(seed, (int, float)) or not math.isfinite(seed)
            or seed != int(seed) or not 0 <= seed <= most):
        raise gr.Error(f"Invalid setting: the seed must be a whole number from 0 to {most} (got "
                       f"{described(seed)}).")
    return int(seed)


def within_limits(**knobs: tuple[object, int, str]) -> None:
    """{knob: (value, limit, the setting that sets the limit)}: a value above its limit is one worded line (values
    that are not numbers are worded where they are read)."""
    for knob, (value, limit, setting) in knobs.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
            raise gr.Error(f"Invalid setting: {knob} {value:g} is above this server's limit of {limit} "
                           f"({setting}): choose {limit} or less.")


def override_message(exc: OverrideError) -> str:
    """The library's complaint about a region choice (0-based), in the page's numbers (R1, Style 1, region 1)."""
    return exc.numbered_from_one("choose again under Personalise, or press “All regions automatic”.")


def stream(events: Iterator, pictures: RunPictures, keep_picks: bool = False, names: list[str] | None = None,
           reuse: bool = False) -> Iterator[tuple]:
    """Pipeline events -> page updates. Every picture goes out as a PNG the app wrote itself (`pictures`), whole or
    not at all. `keep_picks`: the run has region choices, so the Personalise dropdowns keep showing the user's last
    choice (the browser keeps a value that is still among the new choices). `names`: each style's title or file
    name, as the table, the dropdown and the pictures name it. `reuse`: a Regenerate, whose regions and analyses
    come from the pipeline's cache when the pictures and settings are those of the last run."""
    shown: dict[str, str] = {}  # key -> the file of a picture on the page
    noted: list[str] = []  # the run's notes (settings it does not honour as asked): with the engine line throughout
    names = list(names or [])

    def note(notes: tuple[str, ...]) -> None:
        for line in notes:
            if line not in noted:
                noted.append(line)
                gr.Warning(line)

    def said(text: str) -> str:
        return status(text + "".join(f"<br><span class='sg-note'>Note: {html.escape(line, quote=False)}</span>"
                                     for line in noted))

    def region_map(ev: ContentSegmented | Segmented) -> dict:  # titled by the engine (`region_label`)
        shown.update(pictures.save({"regions": viz.region_overlay(ev.content_image, ev.content_labels)}))
        return {"region_map": shown["regions"]}

    for ev in events:
        if isinstance(ev, ContentSegmented):  # the content's regions, before the styles are analysed
            note(ev.notes)
            engine, n = engine_line(ev), int(ev.content_labels.max()) + 1
            doing = "analysing the styles' regions (or reusing them from the cache)…" if reuse else \
                "segmenting the styles…"
            yield out(**region_map(ev), timings=timings(ev.timings),
                      status=said(f"{engine}: {n} content regions found; {doing}"))
        elif isinstance(ev, Segmented):
            note(ev.notes)
            seg, engine, n = ev, engine_line(ev), int(ev.content_labels.max()) + 1
            style_maps = pictures.save({f"style{i + 1}-regions": viz.region_overlay(
                img, lab, alpha=0.45, legend=False, palette="style")
                for i, (img, lab) in enumerate(zip(ev.style_images, ev.style_labels))})
            targets = ["auto"] + [target_label(i, r, names) for i, lab in enumerate(ev.style_labels)
                                  for r in range(int(lab.max()) + 1)]
            update = {} if "regions" in shown else region_map(ev)
            regions = [f"R{i + 1}" for i in range(n)]
            if keep_picks:
                picks = {"region_pick": gr.update(choices=regions), "target_pick": gr.update(choices=targets)}
            else:
                picks = {"region_pick": gr.update(choices=regions, value="R1"),
                         "target_pick": gr.update(choices=targets, value="auto")}
            yield out(**update, **picks, timings=timings(ev.timings),
                      style_regions=[(path, style_label(i, names)) for i, path in enumerate(style_maps.values())],
                      status=said(f"{engine}: {n} content regions found; matching them to the styles’ regions"
                                  f"{' with your choices' if keep_picks else ''}…"))
        elif isinstance(ev, Matched):
            rows = [[f"R{m.content_region + 1}", style_label(m.style_image, names), f"region {m.style_region + 1}",
                     round(m.score, 3), "you" if m.source == "user" else "auto"] for m in ev.matches]
            shown.update(pictures.save({"matches": viz.match_figure(
                seg.content_image, seg.content_labels, seg.style_images, seg.style_labels, ev.matches,
                style_names=names or None)}))
            yield out(match_figure=shown["matches"], match_table=rows, timings=timings(ev.timings),
                      status=said(f"{engine}: regions matched; painting…"))
        elif isinstance(ev, Preview):
            preview = pictures.save({f"preview{ev.step}": images.to_pil(ev.image)})
            yield out(result=preview[f"preview{ev.step}"], timings=timings(ev.timings),
                      status=said(f"{engine}: painting, step {ev.step} of {ev.total}…"))
        elif isinstance(ev, Done):  # full-resolution downloads: the result, the pictures shown, the talk panels
            note(ev.result.notes)
            title = regions_title(ev.result.engine)
            panels = {key: viz.panel(ev.result, aspect, style_names=names or None, region_title=title)
                      for key, aspect in (("panel", "16:9"), ("panel43", "4:3"))}
            files = {**shown, **pictures.save({"result": ev.result.to_pil(), **panels}, done=True)}
            height, width = ev.result.image.shape[:2]
            sized = {"result": f"Result PNG ({width} × {height} px)", "regions": f"Region map ({width} × {height} px)"}
            yield out(result=files["result"], timings=timings(ev.result.timings),
                      status=said(f"{engine}: done in {ev.result.timings['total']:.1f} s; the result and the "
                                  f"region map are {width} × {height} px. Reassign regions below, or download "
                                  "the pictures."),
                      **{f"dl_{k}": gr.update(value=files[k], interactive=True, label=sized.get(k, label))
                         for k, label in DOWNLOADS.items()})


def region_label(engine: str) -> str:
    """The region map's title for the engine that paints: "3 · Colour and texture regions"."""
    return f"3 · {regions_title(engine)}"


def regions_title(engine: str) -> str:
    """What the engine's stage-1 regions are ("Colour and texture regions"), as the region map's title says."""
    spec = ENGINES.get(engine)
    return spec.regions_title if spec is not None else "Regions"


def style_label(index: int, names: list[str] | None = None) -> str:
    """A style as the page names it: "2. The Great Wave off Kanagawa" (its title, or an upload's file name)."""
    name = names[index] if names and index < len(names) and names[index] else ""
    return f"{index + 1}. {name}" if name else f"Style {index + 1}"


def target_label(style: int, region: int, names: list[str] | None = None) -> str:
    """0-based (style, region) -> the target dropdown's choice, "2. The Great Wave off Kanagawa · region 3"."""
    return f"{style_label(style, names)} · region {region + 1}"


def failures_said(updates: Iterator[tuple]) -> Iterator[tuple]:
    """`updates`; when they fail, one more update whose status line says so, then the error (gradio shows what was
    yielded before it)."""
    try:
        yield from updates
    except gr.Error as exc:  # a user's mistake or a worded failure: one line in the server's log, no traceback
        exc.print_exception = False
        LOG.warning("run refused: %s", " ".join(str(exc.message).split()))
        yield out(status=status(f"<b>Failed:</b> {html.escape(str(exc.message))}", "sg-failed"))
        raise
    except Exception:
        yield out(status=status("<b>Failed</b> with an unexpected error (details are in the server's log).",
                                "sg-failed"))
        raise


def page_error(exc: Exception, uploads: list[str]) -> gr.Error:
    """A run's error (the library's InputError, OverrideError, ModelLoadError, EngineUnavailable, ValueError, or the
    app's CannotSave) as the page says it; `uploads` are the run's files, named by their file names."""
    if isinstance(exc, CannotSave):
        if exc.disk_full:
            return gr.Error("The server's disk is full, so this run's pictures could not be saved; try again later.")
        return gr.Error(f"The server could not save this run's pictures ({exc.reason}); try again later.")
    if isinstance(exc, OverrideError):
        return gr.Error(override_message(exc))
    return gr.Error(named_as_uploaded(str(exc), uploads))


def engine_line(ev: ContentSegmented | Segmented) -> str:
    return f"<b>{ev.engine}</b> engine ({html.escape(ev.engine_reason, quote=False)})"


def out(**updates: object) -> tuple:
    """One value per name in OUTPUTS; outputs not named stay as they are."""
    return tuple(updates.get(name, gr.skip()) for name in OUTPUTS)


def status(text: str, kind: str = "") -> str:
    """The status line's HTML; `kind` "sg-failed" marks a failure."""
    return f"<div class='sg-status {kind}'>{text}</div>"


def timings(seconds: dict[str, float]) -> str:
    """The stages' times on one Markdown line (the page has no room for a table beside the pictures)."""
    names = {"analyze": "analyse", "segment": "1 segment", "match": "2 match", "transfer": "3 transfer",
             "total": "**total**"}
    shown = [f"{label} {seconds[key]:.2f} s" for key, label in names.items() if key in seconds]
    return "Stage times: " + (" · ".join(shown) if shown else "after a run.")


# ---- page text -------------------------------------------------------------------------------------------

def thumbs(items: list[GalleryItem], chosen: set[str]) -> list[tuple[str, str]]:
    """Gallery thumbnails; a chosen image's caption starts with a check mark (assets/chosen.js outlines it)."""
    return [(str(i.thumb), f"✓ {i.title}" if i.title in chosen else i.title) for i in items]


def titles(styles: list | None) -> list[str]:
    """The names of the chosen styles (guard_styles names each by its gallery title or its upload's file name)."""
    return [caption or "" for _, caption in styles or []]


def numbered(styles: list) -> list[tuple[str, str]]:
    return [(path, f"{i + 1}: {cap or Path(path).name}") for i, (path, cap) in enumerate(styles)]


def overrides_text(overrides: dict, names: list[str] | None = None, strengths: dict | None = None) -> str:
    chosen = [f"R{k} → {target(v, names)}" for k, v in sorted(overrides.items(), key=lambda kv: int(kv[0])) if v]
    chosen += [f"R{k} at strength {v:.2f}" for k, v in sorted((strengths or {}).items(), key=lambda kv: int(kv[0]))
               if isinstance(v, (int, float))]
    return ("Your choices (applied by **Regenerate**): "
            + (", ".join(chosen) if chosen else "none yet (every region is matched automatically)."))


def target(choice: list[int] | None, names: list[str] | None = None) -> str:
    """[2, 3] -> "2. The Great Wave off Kanagawa · region 3" (the target dropdown's wording); None -> "auto"."""
    return target_label(choice[0] - 1, choice[1] - 1, names) if choice else "auto"


def take_uploads(styles: list | None, most: int, known: set[str] = frozenset()) -> tuple[list, str | None]:
    """Uploads join the chosen styles when they are readable images of a usable size; the others, and any beyond
    `most`, are refused by name. `known`: the gallery's paths (checked when the gallery was made). Returns the
    styles kept and the reason for what was refused (None when all were kept)."""
    kept, refused = [], []
    for path, name in styles or []:
        problem = None if str(path) in known else unreadable(path, name or Path(path).name)
        if problem:
            refused.append(problem)
        elif len(kept) >= most:
            refused.append(f"{name or Path(path).name} was not added: at most {most} styles (click a chosen style "
                           "to remove it, then upload again)")
        else:
            kept.append((path, name))
    return kept, ("; ".join(refused) + ".") if refused else None


def unreadable(path: str, name: str) -> str | None:
    """Why an uploaded file cannot be used (not an image, damaged, too small or too large), or None."""
    try:
        images.to_rgb(path, name=name)
    except InputError as exc:
        return named_as_uploaded(str(exc).replace(f"{name} {str(path)!r}", name), [str(path)])
    return None


def refused(message: str) -> str:
    """A user's mistake: one line in the server's log (no traceback), and the status line's HTML saying it."""
    LOG.warning("refused: %s", message)
    return status(f"<b>Not added:</b> {html.escape(message, quote=False)}", "sg-failed")


def toggle_style(styles: list | None, item: GalleryItem, most: int) -> list:
    """A click on a gallery style: chosen if it was not (at most `most`), removed if it was."""
    styles, chosen = list(styles or []), titles(styles)
    if item.title in chosen:
        styles.pop(chosen.index(item.title))
    elif len(styles) >= most:
        gr.Warning(f"At most {most} styles: click a chosen style to remove it first.")
    else:
        styles.append((str(item.path), item.title))
    return styles


def choose_target(overrides: dict | None, region: str | None, target: str | None,
                  names: list[str] | None = None, strengths: dict | None = None) -> tuple[Any, Any]:
    """Choosing a target records it for the region shown (no separate "Set" to forget); Regenerate applies it."""
    if not region:
        gr.Info("Generate first: the regions you can reassign appear after a run.")
        return gr.skip(), gr.skip()
    match = TARGET.fullmatch(target or "")
    overrides = {**(overrides or {}), region.lstrip("R"): [int(match[1]), int(match[2])] if match else None}
    return overrides, overrides_text(overrides, names, strengths)


def show_choice(overrides: dict | None, region: str | None, names: list[str] | None = None) -> str:
    """The target dropdown shows the choice recorded for the region picked; `names`: the chosen styles' names."""
    return target((overrides or {}).get((region or "").lstrip("R")), names)


def all_automatic(table: Any, strengths: dict | None = None, strength: float = 1.0) -> tuple:
    """"All regions automatic": no choices (targets or region strengths: the region's slider back at the Style
    `strength`), the table's "Set by" says auto, and the result on the page is marked as not yet showing that (the
    next Regenerate or Generate paints it)."""
    rows = table.values.tolist() if hasattr(table, "values") else [list(r) for r in table or []]
    rows = [list(r) for r in rows if len(r) >= 5 and r[0]]
    had = any(r[4] == "you" for r in rows) or any(v is not None for v in (strengths or {}).values())
    rows = [[*r[:4], "auto"] for r in rows]
    note = ("The result still shows your earlier choices: press <b>Regenerate with my choices</b> (or Generate) "
            "to paint every region automatically." if had else "Every region is matched automatically.")
    return {}, overrides_text({}), "auto", rows, status(note, "sg-stale" if had else ""), {}, gr.update(value=strength)


def hero(engine: str, reason: str, summary: str) -> str:
    """The page's title block, saying which engine paints here and why (the front desk's choice for `auto`)."""
    notice = (f"<p class='sg-notice'>The <b>{html.escape(engine)}</b> engine paints here "
              f"({html.escape(reason, quote=False)}): {html.escape(summary, quote=False)}.</p>")
    return (f"<div class='sg-hero'><h1>StyleGallery</h1> <p class='sg-sub'>Restyle a photo region by region from "
            "several style images: each part of the picture takes its look from the style region that fits it "
            f"best.</p><p class='sg-paper'>A reimplementation of <i>{PAPER}</i>.</p>{notice}</div>")


def credits(items: list[GalleryItem]) -> str:
    """The gallery's credits as a Markdown table."""
    return ("| Image | Kind | Licence | Source |\n|---|---|---|---|\n"
            + "".join(f"| {i.title} | {i.kind} | {i.licence} | {i.source} |\n" for i in items))

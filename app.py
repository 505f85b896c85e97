"""StyleGallery demo: pick a photo and one to five styles, watch the regions, matches and result appear.

    python app.py [--host 127.0.0.1] [--port 7860] [--gallery DIR ...]

This file only wires widgets to one cached `stylegallery.Pipeline`; the method lives in the library.
The "generate" API endpoint takes (content, styles, overrides, engine, preset, size, max regions,
content weight, steps, seed, randomise). Overrides use the page's 1-based numbers: {"2": [1, 3]}
paints content region R2 like region 3 of style 1. Steps go to the engine that runs, as the CLI's --steps:
diffusion optimisation timesteps (1-1000) or classic iterations per patch size (1-20).
"""

import os
import sys


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # set before gradio is imported: no outbound lookups
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import html  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Container, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from stylegallery import images, viz  # noqa: E402
from stylegallery.config import DiffusionSettings, Settings, preset  # noqa: E402
from stylegallery.errors import (  # noqa: E402
    Cancelled,
    EngineUnavailable,
    InputError,
    ModelLoadError,
    OverrideError,
)
from stylegallery.gallery import GalleryItem, by_kind, folders_of, load_gallery  # noqa: E402
from stylegallery.pipeline import (  # noqa: E402
    ContentSegmented,
    Done,
    Matched,
    Pipeline,
    Preview,
    Segmented,
    gpu_available,
)
from stylegallery.serving import (  # noqa: E402
    BodyCap,
    CannotSave,
    FileGate,
    Refused,
    RunPictures,
    blocked_beside,
    limit_malloc_arenas,
    parse_size,
)


_ENV_ERRORS: list[str] = []  # bad STYLEGALLERY_* values: `python app.py` stops with them before serving


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """A whole-number setting from the environment; a bad value is recorded (the default is used meanwhile)."""
    text = os.environ.get(name, str(default)).strip()
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        _ENV_ERRORS.append(f"{name}={text!r} is invalid: expected a whole number >= {minimum}")
        return default
    return value


try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU(duration=env_int("STYLEGALLERY_GPU_SECONDS", 180))
except ImportError:
    def gpu(fn):
        return fn

ASSETS = Path(__file__).resolve().parent / "assets"
MAX_STYLES = 5
MAX_SEED = 2**31 - 1
QUEUE_SIZE = env_int("STYLEGALLERY_QUEUE_SIZE", 16)
MAX_UPLOAD = os.environ.get("STYLEGALLERY_MAX_UPLOAD", "15mb")  # per file (gradio's max_file_size)
MAX_REQUEST = os.environ.get("STYLEGALLERY_MAX_REQUEST", "32mb")  # per request: all the files of one upload
PICTURES_MAX_AGE = 3600  # s; the pictures of sessions idle for longer are removed
PAPER = ("StyleGallery: Training-free and Semantic-aware Personalized Style Transfer from Arbitrary Image "
         "References (He et al., CVPR 2026)")
DOWNLOADS = {"result": "Result PNG", "regions": "Region map", "matches": "Match figure", "panel": "Talk panel"}
OUTPUTS = ("seed", "status", "region_map", "result", "match_figure", "style_regions", "timings", "match_table",
           "region_pick", "target_pick", *(f"dl_{k}" for k in DOWNLOADS))
TARGET = re.compile(r"Style (\d+) · region (\d+)")
_STOPPED_AT: dict[str, float] = {}  # session -> time.monotonic() of its last Stop: stops the runs queued before it


def file_gate(items: list[GalleryItem], uploads: Callable[[], Container[str]]) -> FileGate:
    """The files a client may name: its uploads (`uploads()`, the server's record) and the gallery's images, by the
    exact paths the page holds for them (the original, or the copy gradio serves it from)."""
    gallery = {}
    for item in items:
        held = (item.path, item.title)
        gallery[str(item.path)] = gallery[_served_copy(item.path)] = held
    return FileGate(gr.utils.get_upload_folder(), uploads, gallery)


def _served_copy(path: Path) -> str:
    """Where gradio's postprocess puts its copy of a file the app returns (processing_utils.save_file_to_cache)."""
    from gradio import processing_utils
    from gradio_client.utils import strip_invalid_filename_characters

    folder = Path(gr.utils.get_upload_folder()) / processing_utils.hash_file(path)
    return os.path.abspath(folder / strip_invalid_filename_characters(path.name))


class _Payload:
    """A widget's data model that answers a payload of the wrong shape with a clear page error (gradio's own answer
    is an empty "error: None"); everything else is the model's."""

    def __init__(self, model: Any, message: str) -> None:
        self.model, self.message = model, message

    def model_validate(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.model.model_validate(value, *args, **kwargs)
        except ValueError:  # pydantic's ValidationError
            raise gr.Error(f"{self.message}, not {_described(value)}.") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def guard_content(widget: gr.Image, gate: FileGate) -> gr.Image:
    """Only an upload or a gallery image reaches the content widget's decoder, and unreadable ones end in a clear
    page error (gradio's own message for them is generic).

    Wraps the instance's preprocess: a gr.Image subclass would make gradio write an app.pyi stub next to this file.
    """
    preprocess = widget.preprocess
    widget.data_model = _Payload(widget.data_model, 'The content image must be an uploaded file, {"path": <the path '
                                 "the upload route returned>} (gradio_client: handle_file(path))")

    def checked(payload: Any) -> Any:
        if payload is None:
            return None
        try:
            named = gate.check(payload.path, payload.url, "The content image")
        except Refused as exc:
            raise gr.Error(str(exc)) from None
        payload = payload.model_copy(update={"path": str(named.path), "url": None})
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:  # Pillow raises many types on hostile files
            reason = _named_as_uploaded(str(exc), [payload.path])
            reason = " ".join(reason.split())[:200] or type(exc).__name__
            raise gr.Error(f"The content image cannot be read ({reason}); upload a PNG, JPEG or WebP image.") from None

    widget.preprocess = checked
    return widget


def guard_styles(widget: gr.Gallery, gate: FileGate) -> gr.Gallery:
    """Only uploads and gallery images enter (and are sent back out of) the chosen-styles gallery: gradio's gallery
    checks only a name's extension, and would copy and serve any server file an event returns."""
    preprocess = widget.preprocess
    widget.data_model = _Payload(widget.data_model, 'The styles must be a list of uploaded files, [{"image": '
                                 '{"path": <the path the upload route returned>}}] (gradio_client: [{"image": '
                                 "handle_file(path)}])")

    def checked(payload: Any) -> list[tuple[str, str]] | None:
        if payload is None or not payload.root:
            return None
        named = []
        for i, element in enumerate(payload.root):
            image = getattr(element, "image", None)
            try:
                if image is None:
                    raise Refused(f"Style image {i + 1} is not an image: upload a PNG, JPEG or WebP image.")
                named.append(gate.check(image.path, image.url, f"Style image {i + 1}"))
            except Refused as exc:
                raise gr.Error(str(exc)) from None
        for element, name in zip(payload.root, named):
            element.image = element.image.model_copy(update={"path": str(name.path), "url": None})
        preprocess(payload)  # gradio's own checks (the file type)
        return [(str(name.path), name.name) for name in named]

    widget.preprocess = checked
    return widget


@functools.lru_cache(maxsize=1)
def get_pipeline() -> Pipeline:
    """The one pipeline of this process: it keeps loaded models and cached stage-1/2 work between runs."""
    return Pipeline()


@functools.lru_cache(maxsize=1)
def gpu_device() -> tuple[str | None, str]:
    """("cuda" | "mps" | None, why): the app, not the library, picks the GPU and half precision."""
    found, why = gpu_available()
    if not found:
        return None, why
    return ("mps" if "mps" in why else "cuda"), why


def model_settings(base: DiffusionSettings) -> DiffusionSettings:
    """Model locations from the environment (hub ids or local folders), and the GPU when there is one."""
    env = os.environ.get
    depth = env("STYLEGALLERY_DEPTH_MODEL", base.depth_model or "none")
    device, _ = gpu_device()
    return dataclasses.replace(
        base, sd_model=env("STYLEGALLERY_SD_MODEL", base.sd_model), dino_model=env("STYLEGALLERY_DINO_MODEL",
                                                                                  base.dino_model),
        depth_model=None if depth.lower() == "none" else depth, lora=env("STYLEGALLERY_LORA") or base.lora,
        device=device or "cpu", dtype="float16" if device == "cuda" else "float32",
    )


# What the page's one "Steps" setting means on each engine, and the range the library accepts for it
# (DiffusionSettings.steps, ClassicSettings.iterations), as the CLI's --steps.
STEPS = {"diffusion": ("optimisation timesteps", 1, 1000), "classic": ("iterations per patch size", 1, 20)}


def make_settings(engine: str, preset_name: str, size: float, k_max: float, content_weight: float, steps: float,
                  seed: int) -> Settings:
    """Widget values -> Settings; invalid values raise ValueError (no clamping).

    As the CLI's --steps and --content-weight, `steps` and `content_weight` go to the engine that runs
    (`Pipeline.resolve_engine`): diffusion timesteps or classic iterations per patch size. `content_weight`
    scales the preset's content weight (1 = the preset's).
    """
    base = preset(preset_name)  # type: ignore[arg-type]
    base = dataclasses.replace(
        base, engine=engine, seed=seed, diffusion=model_settings(base.diffusion),
        image=dataclasses.replace(base.image, size=_whole("size", size)),
        regions=dataclasses.replace(base.regions, k_max=_whole("max regions", k_max)),
    )
    runs_on, _ = get_pipeline().resolve_engine(base)
    steps = _whole("steps", steps)
    what, low, high = STEPS[runs_on]
    if not low <= steps <= high:
        raise ValueError(f"steps={steps} is out of range for the {runs_on} engine ({what}): choose {low} to {high}")
    if runs_on == "classic":
        return dataclasses.replace(base, classic=dataclasses.replace(
            base.classic, iterations=steps, content_weight=base.classic.content_weight * content_weight))
    return dataclasses.replace(base, diffusion=dataclasses.replace(
        base.diffusion, steps=steps, content_weight=base.diffusion.content_weight * content_weight))


def _whole(name: str, value: float) -> int:
    if value is None or value != int(value):
        raise ValueError(f"{name}={value!r} is invalid: expected a whole number")
    return int(value)


def steps_setting(engine: str, preset_name: str) -> dict:
    """The Steps slider for the engine that `engine` runs on here: its meaning, range and the preset's value."""
    runs_on, _ = get_pipeline().resolve_engine(Settings(engine=engine))  # type: ignore[arg-type]
    what, low, high = STEPS[runs_on]
    base = preset(preset_name)  # type: ignore[arg-type]
    value = base.classic.iterations if runs_on == "classic" else base.diffusion.steps
    return {"minimum": low, "maximum": high, "value": value, "label": "Steps",
            "info": f"{runs_on} engine: {what}, {low} to {high} (the {preset_name} preset uses {value})"}


def parse_overrides(overrides: dict | None) -> dict[int, tuple[int, int]]:
    """{"2": [1, 3]} (1-based, as on the page) -> {1: (0, 2)} (the library's 0-based indices).

    A malformed choice is described, not echoed (a client's string would come back quoted and escaped)."""
    example = 'expected e.g. {"2": [1, 3]}: region R2 painted like region 3 of style 1'
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise gr.Error(f"Region choices are malformed: got {_described(overrides)}, {example}.")
    parsed: dict[int, tuple[int, int]] = {}
    for key, value in overrides.items():
        if value in (None, [], ""):  # automatic
            continue
        if not str(key).isdigit():
            shown = "".join(c for c in str(key) if c.isprintable())[:20]
            raise gr.Error(f"Region choices are malformed: the key {shown or 'given'} is not a region number; "
                           f"{example}.")
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_whole(v) for v in value):
            raise gr.Error(f"Region choices are malformed: region {key} takes [style, style region] (two whole "
                           f"numbers), got {_described(value)}; {example}.")
        parsed[int(key)] = (int(value[0]), int(value[1]))
    for region, (style, style_region) in parsed.items():
        if min(region, style, style_region) < 1:
            raise gr.Error(f"Region choice R{region} → Style {style} · region {style_region} is invalid: regions and "
                           "styles are numbered from 1.")
    return {k - 1: (v[0] - 1, v[1] - 1) for k, v in parsed.items()}


def _is_whole(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())


def _described(value: object) -> str:
    """What a client sent, by its JSON kind: "a string", "a list of 3 items"."""
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    kinds = {bool: "true or false", str: "a string", int: "a number", float: "a number", dict: "an object"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), "null")


def _override_message(exc: OverrideError) -> str:
    """The library's complaint about a region choice (0-based), in the page's numbers (R1, Style 1, region 1)."""
    fix = "choose again under Personalise, or press “All regions automatic”."
    region, target = exc.region, exc.target
    if not isinstance(region, int):
        return str(exc)  # not a choice the page can make
    if region not in exc.content_regions:
        have = ", ".join(f"R{i + 1}" for i in exc.content_regions)
        return f"Your choice for region R{region + 1} cannot be used: this run found regions {have}; {fix}"
    if target is None or len(target) != 2:
        return str(exc)
    style, style_region = target
    if not 0 <= style < len(exc.style_regions):
        return (f"Your choice R{region + 1} → Style {style + 1} cannot be used: this run has "
                f"{len(exc.style_regions)} style images; {fix}")
    have = ", ".join(str(r + 1) for r in exc.style_regions[style])
    return (f"Your choice R{region + 1} → Style {style + 1} · region {style_region + 1} cannot be used: Style "
            f"{style + 1} has regions {have}; {fix}")


@gpu
def generate(content: str | None, styles: list | None, overrides: dict | None, engine: str, preset_name: str,
             size: float, k_max: float, content_weight: float, steps: float, seed: float, randomize: bool,
             request: gr.Request) -> Iterator[tuple]:
    """Run the pipeline and stream its stages into the page: region map, matches, previews, result, files.

    A failure ends with the status line saying so, then the page error (gradio shows what was yielded before)."""
    try:
        for update in _generate(content, styles, overrides, engine, preset_name, size, k_max, content_weight, steps,
                                seed, randomize, request):
            _forget_stale_copies(request)
            yield update
    except gr.Error as exc:
        yield _out(status=_status(f"<b>Failed:</b> {html.escape(str(exc.message))}", "sg-failed"))
        raise
    except Exception:
        yield _out(status=_status("<b>Failed</b> with an unexpected error (details are in the server's log).",
                                  "sg-failed"))
        raise


def _generate(content: str | None, styles: list | None, overrides: dict | None, engine: str, preset_name: str,
              size: float, k_max: float, content_weight: float, steps: float, seed: float, randomize: bool,
              request: gr.Request) -> Iterator[tuple]:
    session, queued_at = _session(request), _queued_at()

    def stopped() -> bool:  # Stop was pressed for this session since this run was submitted
        return _STOPPED_AT.get(session, -math.inf) >= queued_at

    if stopped():  # while the run waited in the queue
        yield _out(status=_status("Stopped before it started. Press <b>Generate</b> to run again."))
        return
    if not content:
        raise gr.Error("Choose a content image: click a photo in the gallery or upload your own.")
    style_paths = [s[0] if isinstance(s, (tuple, list)) else s for s in styles or []]
    if not style_paths:
        raise gr.Error("Choose at least one style image: click a style in the gallery or upload your own.")
    if len(style_paths) > MAX_STYLES:
        raise gr.Error(f"{len(style_paths)} style images chosen: use at most {MAX_STYLES} (click one to remove it).")
    device, why = gpu_device()
    if engine == "diffusion" and device is None and os.environ.get("STYLEGALLERY_ALLOW_CPU_DIFFUSION") != "1":
        raise gr.Error(f"The diffusion engine needs a GPU and this machine has none ({why}): choose the classic "
                       "or auto engine.")
    chosen = parse_overrides(overrides)
    seed = random.randint(0, MAX_SEED) if randomize else int(seed or 0)
    try:
        settings = make_settings(engine, preset_name, size, k_max, content_weight, steps, seed)
    except ValueError as exc:
        raise gr.Error(f"Invalid setting: {exc}") from None
    name, reason = get_pipeline().resolve_engine(settings)
    # The last run's pictures go first: nothing on the page may pass for a picture of this run.
    yield _out(seed=seed, status=_status(f"Running the <b>{name}</b> engine ({html.escape(reason, quote=False)}): "
                                         "finding regions…"),
               region_map=None, result=None, match_figure=None, style_regions=[], match_table=[],
               timings=_timings({}), **{f"dl_{k}": gr.update(value=None, interactive=False) for k in DOWNLOADS})
    try:
        pictures = RunPictures(_pictures_root(), session, max_age=PICTURES_MAX_AGE)
        yield from _stream(_run(content, style_paths, settings, chosen, stopped), pictures, keep_picks=bool(chosen))
    except Cancelled:
        yield _out(status=_status("Stopped. Press <b>Generate</b> to run again."))
    except gr.Error:  # already worded for the page (and a ValueError: the clause below would quote it)
        raise
    except CannotSave as exc:
        if exc.disk_full:
            raise gr.Error("The server's disk is full, so this run's pictures could not be saved; try again later.") \
                from None
        raise gr.Error(f"The server could not save this run's pictures ({exc.reason}); try again later.") from None
    except OverrideError as exc:
        raise gr.Error(_override_message(exc)) from None
    except (InputError, ModelLoadError, EngineUnavailable, ValueError) as exc:
        raise gr.Error(_named_as_uploaded(str(exc), [content, *style_paths])) from None


def _session(request: gr.Request) -> str:
    """The browser tab's (or gradio_client's) session, safe as a folder name."""
    return re.sub(r"[^A-Za-z0-9_-]", "", request.session_hash or "") or "anonymous"


def _queued_at() -> float:
    """When the running event joined gradio's queue (time.monotonic, as gradio's queue), so that a Stop pressed while
    it waited stops it; now, when there is no queued event (a direct call). gradio 6.31 has no public way to ask: this
    reads its queue's record of the event (tests/test_faults.py checks it through a real server)."""
    from gradio.context import LocalContext

    queue = getattr(LocalContext.blocks.get(None), "_queue", None)
    event = getattr(queue, "event_ids_to_events", {}).get(LocalContext.event_id.get(None))
    return getattr(event, "enqueue_time", None) or time.monotonic()


def _forget_stale_copies(request: gr.Request) -> None:
    """Drop the session's stale copies of components, which gradio 6.31 never drops itself.

    An update that changes a property (gr.update(), and gr.skip(), which is one) makes gradio put a new copy of the
    component, with an id of its own, into the session's state under the component's id; when that copy later
    takes a plain value or serves as an input, gradio files it, and its config, once more under the copy's own id,
    where nothing looks them up again. A run's updates skip the pictures already shown, so each run left ~9 such
    entries and a long session's memory grew by ~0.3 MB per run. Entries under ids that are none of the app's
    components are those copies: they go; the copies in use stay under their components' ids. Nothing happens
    outside a request or where gradio keeps its state otherwise (tests/test_app.py checks what a session keeps).
    """
    from gradio.context import LocalContext

    app = LocalContext.blocks.get(None)
    components, holder = getattr(app, "blocks", None), getattr(app, "state_holder", None)
    session = getattr(request, "session_hash", None)
    if not isinstance(components, dict) or holder is None or session is None or session not in holder:
        return
    state = holder[session]
    blocks = getattr(getattr(state, "blocks_config", None), "blocks", None)
    for kept in (blocks, getattr(state, "config_values", None)):
        if isinstance(kept, dict) and kept is not components:
            for key in [key for key in list(kept) if key not in components]:
                kept.pop(key, None)


def _named_as_uploaded(message: str, paths: list[str]) -> str:
    """A library message with the server's copy of each upload ('/tmp/gradio/<hash>/cat.png') named by its file
    name ('cat.png'), the name the user knows it by (gradio keeps the uploaded file's name)."""
    for path in sorted(set(paths), key=len, reverse=True):
        message = message.replace(path, Path(path).name)
    return message


def _run(content: str, styles: list[str], settings: Settings, overrides: dict, stop: Callable[[], bool]) -> Iterator:
    """`Pipeline.run`; an explicitly chosen diffusion engine whose models cannot be loaded paints with classic.

    For engine "auto" the pipeline itself falls back to classic and says why in the events' engine_reason. An
    explicit "diffusion" that cannot load is an error in the library (the CLI exits 2 on it); the page paints with
    the classic engine instead, warns, and gives the reason the same way.
    """
    events = get_pipeline().run(content, styles, settings, overrides, should_stop=stop)
    if settings.engine != "diffusion":
        yield from events
        return
    try:
        first = next(events)
    except (ModelLoadError, EngineUnavailable) as exc:
        gr.Warning(f"The diffusion models could not be loaded, so the classic engine paints instead: {exc}")
        classic = dataclasses.replace(settings, engine="classic")
        events = _with_reason(get_pipeline().run(content, styles, classic, overrides, should_stop=stop),
                              f"the diffusion models could not be loaded: {exc}")
        first = next(events)
    yield first
    yield from events


def _with_reason(events: Iterator, reason: str) -> Iterator:
    """The events with `reason` as their engine_reason (why the engine that runs was chosen)."""
    for ev in events:
        if hasattr(ev, "engine_reason"):
            ev.engine_reason = reason
        yield ev


def _stream(events: Iterator, pictures: RunPictures, keep_picks: bool = False) -> Iterator[tuple]:
    """Pipeline events -> page updates. Every picture goes out as a PNG the app wrote itself (`pictures`), whole or
    not at all. `keep_picks`: the run has region choices, so the Personalise dropdowns keep showing the user's last
    choice (the browser keeps a value that is still among the new choices)."""
    shown: dict[str, str] = {}  # key -> the file of a picture on the page
    noted: list[str] = []  # the run's notes (settings it does not honour as asked): with the engine line throughout

    def note(notes: tuple[str, ...]) -> None:
        for line in notes:
            if line not in noted:
                noted.append(line)
                gr.Warning(line)

    def status(text: str) -> str:
        return _status(text + "".join(f"<br><span class='sg-note'>Note: {html.escape(line, quote=False)}</span>"
                                      for line in noted))

    for ev in events:
        if isinstance(ev, ContentSegmented):  # the content's regions, before the styles are analysed
            note(ev.notes)
            engine, n = _engine_line(ev), int(ev.content_labels.max()) + 1
            shown.update(pictures.save({"regions": viz.region_overlay(ev.content_image, ev.content_labels)}))
            yield _out(region_map=shown["regions"], timings=_timings(ev.timings),
                       status=status(f"{engine}: {n} content regions found; segmenting the styles…"))
        elif isinstance(ev, Segmented):
            note(ev.notes)
            seg, engine, n = ev, _engine_line(ev), int(ev.content_labels.max()) + 1
            style_maps = pictures.save({f"style{i + 1}-regions": viz.region_overlay(img, lab, alpha=0.45, legend=False)
                                        for i, (img, lab) in enumerate(zip(ev.style_images, ev.style_labels))})
            targets = ["auto"] + [f"Style {i + 1} · region {r + 1}" for i, lab in enumerate(ev.style_labels)
                                  for r in range(int(lab.max()) + 1)]
            update = {}
            if "regions" not in shown:
                shown.update(pictures.save({"regions": viz.region_overlay(ev.content_image, ev.content_labels)}))
                update["region_map"] = shown["regions"]
            regions = [f"R{i + 1}" for i in range(n)]
            if keep_picks:
                picks = {"region_pick": gr.update(choices=regions), "target_pick": gr.update(choices=targets)}
            else:
                picks = {"region_pick": gr.update(choices=regions, value="R1"),
                         "target_pick": gr.update(choices=targets, value="auto")}
            yield _out(**update, **picks, timings=_timings(ev.timings),
                       style_regions=[(path, f"Style {i + 1}") for i, path in enumerate(style_maps.values())],
                       status=status(f"{engine}: {n} content regions found; matching them to the styles…"))
        elif isinstance(ev, Matched):
            rows = [[f"R{m.content_region + 1}", f"Style {m.style_image + 1}", f"region {m.style_region + 1}",
                     round(m.score, 3), "you" if m.source == "user" else "auto"] for m in ev.matches]
            shown.update(pictures.save({"matches": viz.match_figure(
                seg.content_image, seg.content_labels, seg.style_images, seg.style_labels, ev.matches)}))
            yield _out(match_figure=shown["matches"], match_table=rows, timings=_timings(ev.timings),
                       status=status(f"{engine}: regions matched; painting…"))
        elif isinstance(ev, Preview):
            preview = pictures.save({f"preview{ev.step}": images.to_pil(ev.image)})
            yield _out(result=preview[f"preview{ev.step}"], timings=_timings(ev.timings),
                       status=status(f"{engine}: painting, step {ev.step} of {ev.total}…"))
        elif isinstance(ev, Done):  # full-resolution downloads: the result, the pictures shown, the talk panel
            note(ev.result.notes)
            files = {**shown, **pictures.save({"result": ev.result.to_pil(), "panel": viz.panel(ev.result)})}
            yield _out(result=files["result"], timings=_timings(ev.result.timings),
                       status=status(f"{engine}: done in {ev.result.timings['total']:.1f} s. Reassign regions "
                                      "below, or download the pictures."),
                       **{f"dl_{k}": gr.update(value=files[k], interactive=True) for k in DOWNLOADS})


def _engine_line(ev: ContentSegmented | Segmented) -> str:
    return f"<b>{ev.engine}</b> engine ({html.escape(ev.engine_reason, quote=False)})"


def _pictures_root() -> Path:
    """Where runs put their pictures: inside gradio's cache, which it serves from without copying."""
    return Path(gr.utils.get_upload_folder()) / "stylegallery-runs"


def _out(**updates: object) -> tuple:
    """One value per name in OUTPUTS; outputs not named stay as they are."""
    return tuple(updates.get(name, gr.skip()) for name in OUTPUTS)


def _status(text: str, kind: str = "") -> str:
    return f"<div class='sg-status {kind}'>{text}</div>"


def _timings(timings: dict[str, float]) -> str:
    names = {"analyze": "Analyse images", "segment": "1 · Segment regions", "match": "2 · Match regions",
             "transfer": "3 · Transfer style", "total": "Total"}
    return "| Stage | Time |\n|---|---:|\n" + "".join(f"| {label} | {timings[key]:.2f} s |\n"
                                                     for key, label in names.items() if key in timings)


# ---- page -------------------------------------------------------------------------------------------

def _thumbs(items: list[GalleryItem], chosen: set[str]) -> list[tuple[str, str]]:
    """Gallery thumbnails; a chosen image's caption starts with a check mark (assets/chosen.js outlines it)."""
    return [(str(i.thumb), f"✓ {i.title}" if i.title in chosen else i.title) for i in items]


def _titles(styles: list | None) -> list[str]:
    """The names of the chosen styles (guard_styles names each by its gallery title or its upload's file name)."""
    return [caption or "" for _, caption in styles or []]


def _numbered(styles: list) -> list[tuple[str, str]]:
    return [(path, f"{i + 1}: {cap or Path(path).name}") for i, (path, cap) in enumerate(styles)]


def _overrides_text(overrides: dict) -> str:
    chosen = [f"R{k} → {_target(v)}" for k, v in sorted(overrides.items(), key=lambda kv: int(kv[0])) if v]
    return "Your choices: " + (", ".join(chosen) if chosen else "none yet (every region is matched automatically).")


def _target(choice: list[int] | None) -> str:
    """[2, 3] -> "Style 2 · region 3" (the target dropdown's wording); None -> "auto"."""
    return f"Style {choice[0]} · region {choice[1]}" if choice else "auto"


def build_demo(extra_galleries: list[str] | None = None) -> gr.Blocks:
    items = load_gallery(extra_galleries or [])
    contents, style_items = by_kind(items, "content"), by_kind(items, "style")
    engine_name, engine_reason = get_pipeline().resolve_engine(Settings())
    # Region choices and the Personalise dropdowns: cleared together when the regions will change.
    no_overrides = ({}, _overrides_text({}), gr.update(choices=[], value=None),
                    gr.update(choices=["auto"], value="auto"))

    def pick_content(evt: gr.SelectData):
        return str(contents[evt.index].path), _thumbs(contents, {contents[evt.index].title}), *no_overrides

    def set_styles(styles: list):
        return _numbered(styles), _thumbs(style_items, set(_titles(styles))), *no_overrides

    def take_uploads(styles: list | None):
        """Uploads join the chosen styles; beyond MAX_STYLES they are refused, by name."""
        styles = list(styles or [])
        if len(styles) > MAX_STYLES:
            refused = [Path(path).name for path, _ in styles[MAX_STYLES:]]
            gr.Warning(f"At most {MAX_STYLES} styles: {', '.join(refused)} {'was' if len(refused) == 1 else 'were'} "
                       "not added. Click a chosen style to remove it, then upload again.")
            styles = styles[:MAX_STYLES]
        return set_styles(styles)

    def toggle_style(styles: list | None, evt: gr.SelectData):
        item, styles, titles = style_items[evt.index], list(styles or []), _titles(styles)
        if item.title in titles:
            styles.pop(titles.index(item.title))
        elif len(styles) >= MAX_STYLES:
            gr.Warning(f"At most {MAX_STYLES} styles: click a chosen style to remove it first.")
        else:
            styles.append((str(item.path), item.title))
        return set_styles(styles)

    def drop_style(styles: list | None, evt: gr.SelectData):
        return set_styles([s for i, s in enumerate(styles or []) if i != evt.index])

    def clear_choices(overrides: dict | None):
        """Region choices name regions of the last run: settings that change the regions make them meaningless."""
        if any((overrides or {}).values()):
            gr.Info("Your region choices were cleared: the new choice changes the regions.")
        return no_overrides

    def choose_target(overrides: dict | None, region: str | None, target: str | None):
        """Choosing a target records it at once for the region shown (no separate "Set" to forget)."""
        if not region:
            gr.Info("Generate first: the regions you can reassign appear after a run.")
            return gr.skip(), gr.skip()
        match = TARGET.fullmatch(target or "")
        overrides = {**(overrides or {}), region.lstrip("R"): [int(match[1]), int(match[2])] if match else None}
        return overrides, _overrides_text(overrides)

    def show_choice(overrides: dict | None, region: str | None) -> str:
        """The target dropdown shows the choice recorded for the region picked."""
        return _target((overrides or {}).get((region or "").lstrip("R")))

    def stop_run(request: gr.Request) -> None:
        """Stops the session's run at its next step, and its runs still waiting in the queue before they start."""
        now = time.monotonic()
        for session, at in list(_STOPPED_AT.items()):  # forget Stops older than any wait in the queue
            if now - at > PICTURES_MAX_AGE:
                _STOPPED_AT.pop(session, None)
        _STOPPED_AT[_session(request)] = now

    with gr.Blocks(title="StyleGallery", delete_cache=(1800, 3600)) as demo:
        gate = file_gate(items, lambda: demo.upload_file_set)  # the paths gradio's upload route stored
        notice = ("" if engine_name == "diffusion" else f"<p class='sg-notice'>Running on CPU ({engine_reason}): "
                  "the weight-free classic engine paints the result.</p>")
        gr.HTML(f"<div class='sg-hero'><h1>StyleGallery</h1><p class='sg-sub'>Restyle a photo region by region "
                "from several style images: each part of the picture takes its look from the style region that "
                f"fits it best.</p><p class='sg-paper'>A reimplementation of <i>{PAPER}</i>.</p>{notice}</div>")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, elem_classes="sg-card"):
                gr.HTML("<h3 class='sg-step'><span>1</span> Choose a content photo</h3>"
                        "<p class='sg-hint'>Click a photo, or drop your own below.</p>")
                content_gallery = gr.Gallery(_thumbs(contents, set()), columns=3, allow_preview=False, buttons=[],
                                             object_fit="cover", show_label=False, elem_id="content-gallery")
                content = guard_content(gr.Image(  # image_mode=None: no full decode before the size check
                    type="filepath", image_mode=None, sources=["upload", "clipboard"], height=220,
                    label="Content photo", elem_id="content-image"), gate)
            with gr.Column(scale=7, elem_classes="sg-card"):
                gr.HTML(f"<h3 class='sg-step'><span>2</span> Choose 1 to {MAX_STYLES} style images</h3>"
                        "<p class='sg-hint'>Click a style to choose it; click it again, or under Chosen styles, to "
                        "remove it. Or upload your own below.</p>")
                style_gallery = gr.Gallery(_thumbs(style_items, set()), columns=6, allow_preview=False, buttons=[],
                                           object_fit="cover", show_label=False, elem_id="style-gallery")
                styles = guard_styles(gr.Gallery(
                    [], type="filepath", interactive=True, columns=5, height=220, allow_preview=False,
                    object_fit="cover", file_types=["image"], fit_columns=False, label="Chosen styles",
                    elem_id="chosen-styles"), gate)
        with gr.Row(elem_classes="sg-actions"):
            run = gr.Button("Generate", variant="primary", size="lg", elem_id="generate", scale=4)
            stop = gr.Button("Stop", variant="stop", size="lg", elem_id="stop", scale=1)
        with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
            with gr.Row():
                engine = gr.Radio(["auto", "diffusion", "classic"], value="auto", label="Engine",
                                  info="auto: diffusion on a GPU, else the weight-free classic engine",
                                  elem_id="engine")
                preset_name = gr.Radio(["paper", "fast"], value="paper", label="Preset",
                                       info="paper: the official defaults; fast: the accelerated schedule",
                                       elem_id="preset")
            with gr.Row():
                size = gr.Slider(256, 1024, value=512, step=64, label="Working size (px, long side)", elem_id="size")
                k_max = gr.Slider(2, 16, value=10, step=1, label="Max regions (K)", elem_id="k-max")
                content_weight = gr.Slider(0, 3, value=1, step=0.05, label="Content weight",
                                           info="× the preset's weight; higher keeps more of the photo")
            with gr.Row():
                # Built with every engine's range, so API callers may pass any engine's steps (gradio checks a
                # slider's bounds); the page narrows it to the engine that runs when it loads.
                steps = gr.Slider(step=1, elem_id="steps", **{**steps_setting("auto", "paper"), "minimum": 1,
                                                             "maximum": max(high for _, _, high in STEPS.values())})
                seed = gr.Number(42, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                randomize = gr.Checkbox(False, label="Randomise seed")
        status = gr.HTML(_status("Pick a photo and some styles, then press <b>Generate</b>."), elem_id="status")
        with gr.Row(equal_height=True):
            region_map = gr.Image(label="3 · Semantic regions of the content", type="filepath", format="png",
                                  interactive=False, elem_id="region-map", min_width=300)
            result = gr.Image(label="Stylised result", format="png", interactive=False, elem_id="result",
                              min_width=300)
        match_figure = gr.Image(label="Region matches", show_label=False, type="filepath", format="png",
                                interactive=False, elem_id="match-figure")
        with gr.Row():
            style_regions = gr.Gallery(label="Regions of each style", columns=5, height=240, object_fit="contain",
                                       elem_id="style-regions", scale=3)
            timings = gr.Markdown(_timings({}), elem_id="timings", elem_classes="sg-timings")
        with gr.Accordion("4 · Personalise: choose which style region paints each content region", open=True):
            match_table = gr.Dataframe(headers=["Region", "Style", "Style region", "Score", "Set by"],
                                       interactive=False, elem_id="match-table")
            with gr.Row(equal_height=True):
                region_pick = gr.Dropdown([], label="Content region", elem_id="region-pick", interactive=True)
                target_pick = gr.Dropdown(["auto"], value="auto", label="takes its look from (applies at once)",
                                          elem_id="target-pick", interactive=True)
            overrides = gr.JSON({}, visible=False, elem_id="overrides")
            overrides_text = gr.Markdown(_overrides_text({}))
            with gr.Row():
                regenerate = gr.Button("Regenerate with my choices", variant="primary", elem_id="regenerate")
                reset = gr.Button("All regions automatic")
        with gr.Row(elem_classes="sg-downloads"):
            downloads = {f"dl_{k}": gr.DownloadButton(label, interactive=False, elem_id=f"dl-{k}")
                         for k, label in DOWNLOADS.items()}
        with gr.Accordion("Gallery credits", open=False):
            gr.Markdown("| Image | Kind | Licence | Source |\n|---|---|---|---|\n"
                        + "".join(f"| {i.title} | {i.kind} | {i.licence} | {i.source} |\n" for i in items))

        # The page's own small events: queued (gradio shows gr.Warning/gr.Info, and gr.Error's text, only for queued
        # events) but never waiting behind a run (no concurrency limit), and without a progress overlay.
        private = {"api_visibility": "private", "queue": True, "concurrency_limit": None, "show_progress": "hidden"}
        choices = [overrides, overrides_text, region_pick, target_pick]
        content_gallery.select(pick_content, None, [content, content_gallery, *choices], **private)
        content.upload(lambda: (_thumbs(contents, set()), *no_overrides), None, [content_gallery, *choices],
                       **private)
        style_gallery.select(toggle_style, styles, [styles, style_gallery, *choices], **private)
        styles.select(drop_style, styles, [styles, style_gallery, *choices], **private)
        styles.upload(take_uploads, styles, [styles, style_gallery, *choices], **private)
        target_pick.input(choose_target, [overrides, region_pick, target_pick], [overrides, overrides_text], **private)
        region_pick.input(show_choice, [overrides, region_pick], target_pick, **private)
        reset.click(lambda: ({}, _overrides_text({}), "auto"), None, [overrides, overrides_text, target_pick],
                    **private)
        demo.load(lambda: gr.update(**steps_setting("auto", "paper")), None, steps, **private)
        for widget in (engine, preset_name):  # Steps means what the engine that runs does with it
            widget.change(lambda e, p: gr.update(**steps_setting(e, p)), [engine, preset_name], steps, **private)
        for widget in (engine, preset_name, size, k_max):  # stage 1/2 settings: the regions change
            widget.change(clear_choices, overrides, choices, **private)
        content.clear(lambda: no_overrides, None, choices, **private)
        stop.click(stop_run, None, None, **private)
        widgets = {"seed": seed, "status": status, "region_map": region_map, "result": result,
                   "match_figure": match_figure, "style_regions": style_regions, "timings": timings,
                   "match_table": match_table, "region_pick": region_pick, "target_pick": target_pick, **downloads}
        inputs = [content, styles, overrides, engine, preset_name, size, k_max, content_weight, steps, seed, randomize]
        # Progress (and gradio's "Error" badge) on the result only: the status line says what is going on.
        run.click(generate, inputs, [widgets[name] for name in OUTPUTS], api_name="generate", show_progress_on=result)
        regenerate.click(generate, inputs, [widgets[name] for name in OUTPUTS], api_visibility="private",
                         show_progress_on=result)
    return demo


def warm_up() -> None:
    """One tiny classic run before serving: the first visitor's run then pays no first-use costs (lazy imports of
    scikit-learn and OpenCV's face cascade, about 0.8 s). Its analyses are dropped from the cache."""
    import numpy as np

    rng = np.random.default_rng(0)
    tiny = [rng.uniform(0, 1, (64, 96 - 16 * i, 3)).astype(np.float32) for i in range(2)]
    pipe = get_pipeline()
    pipe(tiny[0], [tiny[1]], dataclasses.replace(preset("fast", engine="classic"),
                                                 image=dataclasses.replace(preset("fast").image, size=64)))
    pipe.cache.clear()


def request_cap() -> Middleware:
    """gradio caps each uploaded file (max_file_size), not a request: one upload of many files is capped here."""
    limit, per_file = parse_size(MAX_REQUEST, "STYLEGALLERY_MAX_REQUEST"), parse_size(MAX_UPLOAD,
                                                                                      "STYLEGALLERY_MAX_UPLOAD")
    message = (f"This upload is too large: at most {limit / 2**20:g} MB per upload and {per_file / 2**20:g} MB per "
               "file. Upload fewer or smaller images at once.")
    return Middleware(BodyCap, limit=limit, message=message)


def launch_kwargs(extra_galleries: list[str] | None = None) -> dict:
    """Everything `launch` needs besides host and port: theme, CSS, the only folders the server may read, and the
    app's own files it must never serve (gradio serves files under its working directory that an event returns)."""
    folders = folders_of(load_gallery(extra_galleries or []))
    fonts = [gr.themes.LocalFont("Source Sans Pro"), gr.themes.LocalFont("Lora"), "sans-serif"]  # bundled: offline
    theme = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate", font=fonts).set(
        button_primary_background_fill="*primary_600", button_primary_background_fill_hover="*primary_700",
        button_primary_text_color="white")
    return {"theme": theme, "css_paths": [ASSETS / "style.css"], "js": (ASSETS / "chosen.js").read_text(),
            "allowed_paths": [str(ASSETS), *map(str, folders)], "max_file_size": MAX_UPLOAD,
            "blocked_paths": blocked_beside(ASSETS.parent, [ASSETS, *folders]),
            "app_kwargs": {"middleware": [request_cap()]},
            "favicon_path": ASSETS / "favicon.png", "footer_links": ["api", "gradio"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the StyleGallery demo.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a network)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--gallery", action="append", default=[], metavar="DIR",
                        help="extra gallery folder (manifest.json, or content/ and style/ subfolders); repeatable")
    args = parser.parse_args()
    limit_malloc_arenas()  # before gradio starts its threads: resident memory levels off over many runs
    try:  # check the STYLEGALLERY_* settings before serving: one line and exit 2, not a failed first request
        if _ENV_ERRORS:
            raise ValueError(_ENV_ERRORS[0])
        get_pipeline()  # reads STYLEGALLERY_CACHE_BYTES
        request_cap()  # reads STYLEGALLERY_MAX_REQUEST and STYLEGALLERY_MAX_UPLOAD
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    warm_up()
    demo = build_demo(args.gallery)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs(args.gallery))

"""StyleGallery demo: pick a photo and one to five styles, watch the regions, matches and result appear.

    python app.py [--host 127.0.0.1] [--port 7860] [--gallery DIR ...]

This file only wires widgets to one cached `stylegallery.Pipeline`: the method lives in the library, and the web
app's own machinery (file gate, page rendering, hosting limits, gradio shims) in `stylegallery/web/`.
The "generate" API endpoint takes (content, styles, overrides, engine, preset, size, max regions, content weight,
steps, seed, randomise, style strength, region strengths), regions numbered from 1 as on the page: overrides
{"2": [1, 3]} paint region R2 like region 3 of style 1, region strengths {"2": 0.4} paint R2 at strength 0.4.
Widget values become a `stylegallery.request.Request` as the CLI's flags do (web/knobs.py).
"""

import os
import sys


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # set before gradio is imported: no outbound lookups
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import html  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from stylegallery.config import PRESETS, ImageSettings, NeuralSettings, RegionSettings, Settings, knob_range  # noqa: E402
from stylegallery.engines import AUTO_ORDER, ENGINES  # noqa: E402
from stylegallery.errors import Cancelled, EngineUnavailable, InputError, ModelLoadError, OverrideError  # noqa: E402
from stylegallery.gallery import by_kind, folders_of, groups, load_gallery  # noqa: E402
from stylegallery.pipeline import Pipeline  # noqa: E402
from stylegallery.request import KnobError, Request, engine_names, plan  # noqa: E402
from stylegallery.web import compat, hosting, knobs, render  # noqa: E402
from stylegallery.web.gate import Refused, file_gate, guard_content, guard_number, guard_styles  # noqa: E402
from stylegallery.web.hosting import CannotSave, RunPictures, env_int  # noqa: E402
from stylegallery.web.knobs import page_request, slider_range  # noqa: E402
from stylegallery.web.render import DOWNLOADS, OUTPUTS, out, status, thumbs, timings  # noqa: E402


gpu = hosting.zero_gpu(env_int("STYLEGALLERY_GPU_SECONDS", 180))  # ZeroGPU on Hugging Face Spaces; else a no-op
ASSETS = Path(__file__).resolve().parent / "assets"
MAX_STYLES = env_int("STYLEGALLERY_MAX_STYLES", 5)  # a Space operator's limits on a run's cost
MAX_SIZE = env_int("STYLEGALLERY_MAX_SIZE", 1024)  # px, long side
MAX_STEPS = env_int("STYLEGALLERY_MAX_STEPS", 200)  # the painting engine's steps (the paper's 150 fit)
MAX_SEED = 2**31 - 1
QUEUE_SIZE = env_int("STYLEGALLERY_QUEUE_SIZE", 16)
MAX_UPLOAD = os.environ.get("STYLEGALLERY_MAX_UPLOAD", "15MB")  # per file (gradio's max_file_size); MB = 10^6 bytes
MAX_REQUEST = os.environ.get("STYLEGALLERY_MAX_REQUEST", "32MB")  # per request: all the files of one upload
PICTURES_MAX_AGE = 3600  # s; the pictures of sessions idle for longer are removed
STOPS = hosting.Stops(max_age=PICTURES_MAX_AGE)  # Stop stops the session's run, and its runs queued before it
COSTS = hosting.RunCosts()  # seconds per unit of work of each engine's last runs here: the estimate before a run
MAX_CONNECTIONS = env_int("STYLEGALLERY_MAX_CONNECTIONS", 500)  # open connections; beyond them new ones are closed
HEADER_TIMEOUT = env_int("STYLEGALLERY_HEADER_TIMEOUT", 10)  # s for a request's headers; its body gets 300 s
BUSY = "Your previous run is still running or queued: wait for it, or press Stop, before pressing Generate again."


@functools.lru_cache(maxsize=1)
def get_pipeline() -> Pipeline:
    """The one pipeline of this process: it keeps loaded models and cached stage-1/2 work between runs."""
    return Pipeline()


# steps_setting(engine, preset): the Steps slider of the engine that paints here, capped by STYLEGALLERY_MAX_STEPS
steps_setting = functools.partial(knobs.steps_setting, max_steps=MAX_STEPS)


@gpu
def generate(content: str | None, styles: list | None, overrides: dict | None, engine: str, preset_name: str,
             size: float, k_max: float, content_weight: float, steps: float, seed: float, randomize: bool,
             request: gr.Request, strength: float = 1.0, strengths: dict | None = None) -> Iterator[tuple]:
    """Run the pipeline and stream its stages into the page: region map, matches, previews, result, files.

    A failure ends with the status line saying so, then the page error (gradio shows what was yielded before)."""
    for update in render.failures_said(_generate(content, styles, overrides, engine, preset_name, size, k_max,
                                                 content_weight, steps, seed, randomize, request, strength,
                                                 strengths)):
        compat.forget_stale_copies(request)
        yield update


@gpu
def regenerate(content: str | None, styles: list | None, overrides: dict | None, engine: str, preset_name: str,
               size: float, k_max: float, content_weight: float, steps: float, seed: float, randomize: bool,
               request: gr.Request, strength: float = 1.0, strengths: dict | None = None) -> Iterator[tuple]:
    """The Regenerate button: `generate`, saying it repaints (stages 1-2 come from the cache when unchanged)."""
    for update in render.failures_said(_generate(content, styles, overrides, engine, preset_name, size, k_max,
                                                 content_weight, steps, seed, randomize, request, strength,
                                                 strengths, reuse=True)):
        compat.forget_stale_copies(request)
        yield update


def _generate(content: str | None, styles: list | None, overrides: dict | None, engine: str, preset_name: str,
              size: float, k_max: float, content_weight: float, steps: float, seed: float, randomize: bool,
              request: gr.Request, strength: float = 1.0, strengths: dict | None = None,
              reuse: bool = False) -> Iterator[tuple]:
    session, queued_at = hosting.session(request), compat.queued_at()

    def stopped() -> bool:  # Stop was pressed for this session since this run was submitted
        return STOPS.since(session, queued_at)

    if stopped():  # while the run waited in the queue
        yield out(status=status("Stopped before it started. Press <b>Generate</b> to run again."))
        return
    if not content:
        raise gr.Error("Choose a content image: click a photo in the gallery or upload your own.")
    style_paths = [s[0] if isinstance(s, (tuple, list)) else s for s in styles or []]
    names = [s[1] if isinstance(s, (tuple, list)) and len(s) > 1 and s[1] else Path(str(p)).name
             for s, p in zip(styles or [], style_paths)]
    if not style_paths:
        raise gr.Error("Choose at least one style image: click a style in the gallery or upload your own.")
    if len(style_paths) > MAX_STYLES:
        raise gr.Error(f"{len(style_paths)} style images chosen: use at most {MAX_STYLES} (click one to remove it).")
    chosen, by_region = render.parse_overrides(overrides), render.parse_region_strengths(strengths)
    seed = random.randint(0, MAX_SEED) if randomize else render.whole_seed(seed, MAX_SEED)
    render.within_limits(size=(size, MAX_SIZE, "STYLEGALLERY_MAX_SIZE"), steps=(steps, MAX_STEPS,
                                                                                "STYLEGALLERY_MAX_STEPS"))
    try:
        run_plan = plan(page_request(engine, preset_name, size, k_max, content_weight, steps, seed, strength,
                                     by_region))
    except KnobError as exc:
        raise gr.Error(f"Invalid setting: {exc.knob.replace('_', ' ')} {exc.detail}") from None
    except InputError as exc:
        raise gr.Error(str(exc)) from None
    name, reason = run_plan.engine, run_plan.reason
    work = hosting.run_work(run_plan.settings.image.size, len(style_paths), steps)
    # The last run's pictures go first: nothing on the page may pass for a picture of this run.
    doing = "repainting with your region choices…" if reuse else "finding regions…"
    yield out(seed=seed, status=status(f"Running the <b>{name}</b> engine ({html.escape(reason, quote=False)}"
                                       f"{COSTS.estimate(name, work)}): " + doing),
              region_map=None, result=None, match_figure=None, style_regions=[], match_table=[],
              timings=timings({}), **{f"dl_{k}": gr.update(value=None, interactive=False) for k in DOWNLOADS})
    try:
        pictures = RunPictures(hosting.pictures_root(), session, max_age=PICTURES_MAX_AGE)
        events = get_pipeline().run(content, style_paths, run_plan, chosen, should_stop=stopped)
        started = time.monotonic()
        yield from render.stream(events, pictures, keep_picks=bool(chosen or by_region), names=names, reuse=reuse)
        COSTS.record(name, work, time.monotonic() - started)
    except Cancelled:
        yield out(status=status("Stopped. Press <b>Generate</b> to run again."))
    except gr.Error:  # already worded for the page (and a ValueError: the clause below would quote it)
        raise
    except (CannotSave, OverrideError, InputError, ModelLoadError, EngineUnavailable, ValueError) as exc:
        raise render.page_error(exc, [content, *style_paths]) from None


def build_demo(extra_galleries: list[str] | None = None) -> gr.Blocks:
    items = load_gallery(extra_galleries or [])
    content_groups, style_groups = groups(by_kind(items, "content")), groups(by_kind(items, "style"))
    start = plan(Request(engine="auto"))
    engine_name, engine_reason = start.engine, start.reason
    # Region choices and the Personalise dropdowns: cleared together when the regions will change.
    no_overrides = ({}, render.overrides_text({}), gr.update(choices=[], value=None),
                    gr.update(choices=["auto"], value="auto"), {}, gr.update(interactive=False))

    def content_thumbs(chosen: set[str]) -> list:
        return [thumbs(group, chosen) for _, group in content_groups]

    def pick_content(group: list):
        def picked(evt: gr.SelectData):
            item = group[evt.index]
            return str(item.path), *content_thumbs({item.title}), *no_overrides
        return picked

    def set_styles(styles: list, said: str | None = None):
        chosen = set(render.titles(styles))
        return (render.numbered(styles), *[thumbs(group, chosen) for _, group in style_groups],
                said or gr.skip(), render.titles(styles), *no_overrides)

    def take_uploads(styles: list | None):
        kept, problem = render.take_uploads(styles, MAX_STYLES, {str(i.path) for _, g in style_groups for i in g})
        return set_styles(kept, render.refused(problem) if problem else None)

    def take_content(payload: dict | None):
        """An uploaded photo is checked at once: one that is not a readable image of a usable size is refused, with
        the reason in the status line, and the content widget is cleared."""
        path, url = (payload.get("path"), payload.get("url")) if isinstance(payload, dict) else (None, None)
        shown = (payload or {}).get("orig_name") or Path(str(path)).name if isinstance(payload, dict) else "upload"
        try:  # a path the page did not upload is a forged request (not a user's mistake): an error, as for Generate
            problem = render.unreadable(str(gate.check(path, url, "The content image").path), shown)
        except Refused as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        said = render.refused(problem) if problem else render.status(f"Photo <b>{html.escape(shown)}</b> ready.")
        return (None if problem else gr.skip()), *content_thumbs(set()), said, *no_overrides

    def toggle_style(group: list):
        def toggled(styles: list | None, evt: gr.SelectData):
            after = render.toggle_style(styles, group[evt.index], MAX_STYLES)
            if len(after) != len(styles or []):
                return set_styles(after)
            return set_styles(after, render.refused(f"{group[evt.index].title} was not added: at most {MAX_STYLES} "
                                                    "styles (click a chosen style to remove it first)"))
        return toggled

    def drop_style(styles: list | None, evt: gr.SelectData):
        return set_styles([s for i, s in enumerate(styles or []) if i != evt.index])

    def clear_choices(overrides: dict | None, strengths: dict | None):
        """Region choices name regions of the last run: settings that change the regions make them meaningless."""
        if any((overrides or {}).values()) or strengths:
            gr.Info("Your region choices were cleared: the new choice changes the regions.")
        return no_overrides

    def stop_run(request: gr.Request) -> None:
        """Stops the session's run at its next step, and its runs still waiting in the queue before they start."""
        STOPS.press(hosting.session(request))

    def picker(group_list: list, kind: str, columns: int) -> list[gr.Gallery]:
        """One tab of thumbnails per gallery group ("Masterpieces" first), each a fixed-height scrolling grid."""
        shown = []
        with gr.Tabs(elem_classes="sg-tabs"):
            for i, (title, group) in enumerate(group_list):
                with gr.Tab(f"{title} ({len(group)})"):
                    shown.append(gr.Gallery(thumbs(group, set()), columns=columns, allow_preview=False, buttons=[],
                                            object_fit="cover", show_label=False, height=164,
                                            elem_id=f"{kind}-gallery-{i}", elem_classes=["sg-pick", f"sg-{kind}"]))
        return shown

    with gr.Blocks(title="StyleGallery", delete_cache=(1800, 3600)) as demo:
        gate = file_gate(items, compat.uploaded_paths(demo))  # the paths gradio's upload route stored
        gr.HTML(render.hero(engine_name, engine_reason, ENGINES[engine_name].summary))
        with gr.Row(equal_height=False, elem_classes="sg-pickers"):
            with gr.Column(scale=5, elem_classes="sg-card"):
                gr.HTML("<h3 class='sg-step'><span>1</span> Choose a content photo <small class='sg-hint'>click "
                        "one, or drop your own below</small></h3>")
                content_galleries = picker(content_groups, "content", 4)
                content = guard_content(gr.Image(  # image_mode=None: no full decode before the size check
                    type="filepath", image_mode=None, sources=["upload", "clipboard"], height=124,
                    label="Content photo", elem_id="content-image"), gate)
            with gr.Column(scale=7, elem_classes="sg-card"):
                gr.HTML(f"<h3 class='sg-step'><span>2</span> Choose 1 to {MAX_STYLES} styles <small class='sg-hint'>"
                        "click to add, click again (or below) to remove, or upload your own</small></h3>")
                style_galleries = picker(style_groups, "style", 6)
                styles = guard_styles(gr.Gallery(
                    [], type="filepath", interactive=True, columns=6, height=140, allow_preview=False,
                    object_fit="cover", file_types=["image"], fit_columns=False, label="Chosen styles",
                    elem_id="chosen-styles"), gate)
        with gr.Row(elem_classes="sg-actions", equal_height=False):
            with gr.Column(scale=3, min_width=260):
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate", scale=3, min_width=150)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, min_width=80)
            with gr.Column(scale=7, min_width=300):
                status = gr.HTML(render.status("Pick a photo and some styles, then press <b>Generate</b>."),
                                 elem_id="status")
        with gr.Row(equal_height=False, elem_classes="sg-results"):
            region_map = gr.Image(label=render.region_label(engine_name), type="filepath", format="png", height=300,
                                  interactive=False, elem_id="region-map", min_width=300, buttons=["download"],
                                  scale=4)
            match_figure = gr.Image(label="Region matches", type="filepath", format="png", height=300, scale=5,
                                    interactive=False, elem_id="match-figure", min_width=300, buttons=["download"])
            result = gr.Image(label="Stylised result", format="png", interactive=False, elem_id="result",
                              height=300, min_width=300, buttons=["download"], scale=4)
        with gr.Row(elem_classes="sg-downloads"):
            downloads = {f"dl_{k}": gr.DownloadButton(label, interactive=False, elem_id=f"dl-{k}", size="sm",
                                                      min_width=120)
                         for k, label in DOWNLOADS.items()}
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, elem_classes="sg-card", elem_id="personalise"):
                gr.HTML("<h3 class='sg-step'><span>4</span> Personalise: which style region paints each region</h3>")
                match_table = gr.Dataframe(headers=["Region", "Style", "Style region", "Score", "Set by"],
                                           interactive=False, elem_id="match-table", max_height=220, wrap=True,
                                           column_widths=["16%", "29%", "19%", "18%", "18%"])
                with gr.Row(equal_height=True):
                    region_pick = gr.Dropdown([], label="Region", elem_id="region-pick", interactive=True,
                                              min_width=120, scale=1)
                    target_pick = gr.Dropdown(["auto"], value="auto", elem_id="target-pick", interactive=True,
                                              label="takes its look from",
                                              min_width=200, scale=3)
                    region_strength = gr.Slider(value=1, step=0.05, label="at strength", visible=False,
                                                interactive=False, elem_id="region-strength", scale=2, min_width=160,
                                                buttons=[], **slider_range(NeuralSettings, "strength"))
                overrides = gr.JSON({}, visible=False, elem_id="overrides")
                strengths = gr.JSON({}, visible=False, elem_id="region-strengths")  # {"2": 0.4}
                names = gr.State([])  # the chosen styles' names, as the dropdown's choices name them
                overrides_text = gr.Markdown(render.overrides_text({}), elem_id="overrides-text")
                with gr.Row():
                    regenerate_button = gr.Button("Regenerate with my choices", variant="primary", size="md",
                                                  elem_id="regenerate", min_width=150)
                    reset = gr.Button("All regions automatic", elem_id="reset", size="md", min_width=130)
            with gr.Column(scale=4):
                style_regions = gr.Gallery(label="Regions of each style (square badges)", columns=3, height=240,
                                           object_fit="contain", elem_id="style-regions", allow_preview=False)
                timings = gr.Markdown(render.timings({}), elem_id="timings", elem_classes="sg-timings")
                with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
                    with gr.Row():
                        engine = gr.Radio(list(engine_names()), value="auto", label="Engine", elem_id="engine",
                                          info=f"auto: the first of {', '.join(AUTO_ORDER)} that can run here")
                        preset_name = gr.Radio(list(PRESETS), value="paper", label="Preset",
                                               info="paper: the official defaults; fast: the accelerated schedule",
                                               elem_id="preset")
                    with gr.Row():
                        size = gr.Slider(value=min(512, MAX_SIZE), step=32, label="Working size (px, long side)",
                                         elem_id="size", **slider_range(ImageSettings, "size", MAX_SIZE))
                        k_max = gr.Slider(value=10, step=1, label="Max regions (K)", elem_id="k-max",
                                          **slider_range(RegionSettings, "k_max"))
                        content_weight = gr.Slider(
                            value=1, step=0.05, label="Content weight", elem_id="content-weight",
                            info="× the preset's weight; higher keeps more of the photo",
                            **slider_range(Request, "content_weight"))
                        strength = gr.Slider(value=1, step=0.05, label="Style strength", elem_id="strength",
                                             info="share of each matched style; 0 paints in the photo's own style",
                                             **slider_range(NeuralSettings, "strength"), visible=False)
                    with gr.Row():
                        # Built with every engine's range, so API callers may pass any engine's steps (gradio checks
                        # a slider's bounds); the page narrows it to the engine that paints when it loads.
                        every = [knob_range(getattr(Settings(), spec.settings), spec.knobs["steps"])
                                 for spec in ENGINES.values() if "steps" in spec.knobs]
                        steps = gr.Slider(step=1, elem_id="steps", **{
                            **steps_setting("auto", "paper"), "visible": True,
                            "minimum": min(lo for lo, _ in every),
                            "maximum": min(MAX_STEPS, max(hi for _, hi in every))})
                        seed = gr.Number(42, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                        randomize = gr.Checkbox(False, label="Randomise seed")
                    for widget, label in ((size, "the size"), (k_max, "max regions"), (steps, "steps"),
                                          (content_weight, "the content weight"), (seed, "the seed"),
                                          (strength, "the style strength"), (region_strength, "a region's strength")):
                        guard_number(widget, label, optional=widget is seed)  # NaN, text or null: one worded line
                with gr.Accordion("Gallery credits", open=False):
                    gr.Markdown(render.credits(items))

        # The page's own small events: queued (gradio shows gr.Warning/gr.Info, and gr.Error's text, only for queued
        # events) but never waiting behind a run (no concurrency limit), and without a progress overlay.
        private = {"api_visibility": "private", "queue": True, "concurrency_limit": None, "show_progress": "hidden"}
        choices = [overrides, overrides_text, region_pick, target_pick, strengths, region_strength]
        for gallery, (_, group) in zip(content_galleries, content_groups):
            gallery.select(pick_content(group), None, [content, *content_galleries, *choices],
                           **private)
        for gallery, (_, group) in zip(style_galleries, style_groups):
            gallery.select(toggle_style(group), styles, [styles, *style_galleries, status, names, *choices], **private)
        content.upload(take_content, content, [content, *content_galleries, status, *choices], preprocess=False,
                       **private)
        styles.select(drop_style, styles, [styles, *style_galleries, status, names, *choices], **private)
        styles.upload(take_uploads, styles, [styles, *style_galleries, status, names, *choices], **private)
        target_pick.input(render.choose_target, [overrides, region_pick, target_pick, names, strengths],
                          [overrides, overrides_text], **private)
        region_strength.input(render.choose_strength, [strengths, region_pick, region_strength, overrides, names],
                              [strengths, overrides_text], trigger_mode="always_last", **private)
        region_pick.change(render.strength_of, [strengths, region_pick, strength], region_strength, **private)
        region_pick.input(render.show_choice, [overrides, region_pick, names], target_pick, **private)
        reset.click(render.all_automatic, [match_table, strengths, strength], [overrides, overrides_text, target_pick,
                    match_table, status, strengths, region_strength], **private)
        shown = [steps, content_weight, strength, region_strength]  # what the engine that paints takes; others hide
        demo.load(lambda: knobs.sliders("auto", "paper", MAX_STEPS), None, shown, **private)
        for widget in (engine, preset_name):
            widget.change(lambda e, p: knobs.sliders(e, p, MAX_STEPS), [engine, preset_name], shown, **private)
        engine.change(lambda e: gr.update(label=render.region_label(plan(Request(engine=e)).engine)), engine,
                      region_map, **private)  # the map's title says what that engine's regions are
        for widget in (engine, preset_name, size, k_max):  # stage 1/2 settings: the regions change
            widget.change(clear_choices, [overrides, strengths], choices, **private)
        content.clear(lambda: no_overrides, None, choices, **private)
        stop.click(stop_run, None, None, **private)
        widgets = {"seed": seed, "status": status, "region_map": region_map, "result": result,
                   "match_figure": match_figure, "style_regions": style_regions, "timings": timings,
                   "match_table": match_table, "region_pick": region_pick, "target_pick": target_pick, **downloads}
        inputs = [content, styles, overrides, engine, preset_name, size, k_max, content_weight, steps, seed, randomize,
                  strength, strengths]
        # Progress (and gradio's "Error" badge) on the result only: the status line says what is going on.
        run.click(generate, inputs, [widgets[name] for name in OUTPUTS], api_name="generate", show_progress_on=result)
        regenerate_button.click(regenerate, inputs, [widgets[name] for name in OUTPUTS], api_visibility="private",
                                show_progress_on=result)
    return demo


def launch_kwargs(extra_galleries: list[str] | None = None) -> dict:
    """Everything `launch` needs besides host and port (hosting.launch_kwargs), for the gallery's folders."""
    return hosting.launch_kwargs(ASSETS, folders_of(load_gallery(extra_galleries or [])), MAX_UPLOAD, MAX_REQUEST)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the StyleGallery demo.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a network)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--gallery", action="append", default=[], metavar="DIR",
                        help="extra gallery folder (manifest.json, or content/ and style/ subfolders); repeatable")
    args = parser.parse_args()
    hosting.limit_malloc_arenas()  # before gradio starts its threads: resident memory levels off over many runs
    try:  # check the settings and gradio before serving: one line and exit 2, not a failed first request
        if hosting.ENV_ERRORS:
            raise ValueError(hosting.ENV_ERRORS[0])
        get_pipeline()  # reads STYLEGALLERY_CACHE_BYTES
        load_gallery(args.gallery)  # a missing folder or a bad manifest: one line (unreadable images are skipped)
        hosting.request_cap(MAX_REQUEST, MAX_UPLOAD)  # reads STYLEGALLERY_MAX_REQUEST and STYLEGALLERY_MAX_UPLOAD
        compat.check()  # the private gradio attributes stylegallery/web/compat.py relies on
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    hosting.warm_up(get_pipeline(), plan(page_request("auto", "fast", 64, 10, 1.0, 1, 0)))  # first-use costs
    demo = build_demo(args.gallery)
    demo.queue(max_size=None, default_concurrency_limit=1)  # the runs' queue is bounded below; Stop never waits
    compat.limit_runs(demo, generate, QUEUE_SIZE, BUSY)  # one run per session running or queued
    compat.drop_failed_uploads()  # a refused or abandoned upload leaves no temporary file
    compat.word_path_refusals("Files are taken from your uploads and the gallery only: upload the image "
                              "(gradio_client: handle_file(path) uploads it), or click it in the gallery.")
    compat.serve_with(hosting.guarded_protocol(MAX_CONNECTIONS, HEADER_TIMEOUT, 300), timeout_keep_alive=5,
                      h11_max_incomplete_event_size=16 * 1024, limit_concurrency=MAX_CONNECTIONS)
    demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs(args.gallery))

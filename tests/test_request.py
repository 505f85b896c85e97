"""The front desk (stylegallery/request.py): one translation of what a person asks into Settings."""

from __future__ import annotations

import pytest

from stylegallery import request as rq
from stylegallery.config import ClassicSettings, DiffusionSettings, preset
from stylegallery.engines import AUTO_ORDER, ENGINES
from stylegallery.errors import InputError


GPU = rq.Machine("cuda", "GPU found: test")
CPU = rq.Machine(None, "no GPU found")


@pytest.fixture()
def installed(monkeypatch: pytest.MonkeyPatch):
    """Pretend every engine's packages are installed, or that the named modules are missing."""
    def set_missing(*modules: str) -> None:
        monkeypatch.setattr(rq, "missing_packages", lambda name: next(
            (f"{m} is not installed" for m in ENGINES[name].requires if m in modules), None))

    set_missing()
    return set_missing


def test_auto_paints_with_the_gpu_engine_where_a_gpu_is_and_falls_back_to_the_cpu_engines(installed) -> None:
    engine, reason, fallbacks = rq.choose_engine("auto", GPU)
    assert engine == "diffusion" and reason == "GPU found: test"
    assert fallbacks == tuple(n for n in AUTO_ORDER if not ENGINES[n].gpu)
    engine, reason, fallbacks = rq.choose_engine("auto", CPU)
    assert not ENGINES[engine].gpu and "no GPU found for the diffusion engine" in reason
    assert engine not in fallbacks


def test_auto_says_which_packages_are_missing(installed) -> None:
    installed("torch")
    engine, reason, _ = rq.choose_engine("auto", GPU)
    assert engine != "diffusion" and "torch is not installed for the diffusion engine" in reason


def test_an_asked_engine_paints_as_asked_and_falls_back_only_when_the_door_says_so(installed) -> None:
    assert rq.choose_engine("diffusion", CPU) == ("diffusion", "chosen in the settings", ())
    _, _, fallbacks = rq.choose_engine("diffusion", CPU, fallback=True)
    assert fallbacks and "diffusion" not in fallbacks and all(not ENGINES[n].gpu for n in fallbacks)
    with pytest.raises(InputError, match="engine 'quantum' is not one of auto"):
        rq.choose_engine("quantum", CPU)


def test_engine_diffusion_uses_the_gpu_when_there_is_one_in_half_precision(installed) -> None:
    on_gpu = rq.plan(rq.Request(engine="diffusion"), GPU).settings.diffusion
    assert (on_gpu.device, on_gpu.dtype) == ("cuda", "float16")
    on_cpu = rq.plan(rq.Request(engine="diffusion"), CPU).settings.diffusion
    assert (on_cpu.device, on_cpu.dtype) == ("cpu", "float32")
    asked = rq.plan(rq.Request(engine="diffusion", device="cpu", dtype="bfloat16"), GPU).settings.diffusion
    assert (asked.device, asked.dtype) == ("cpu", "bfloat16")


def test_a_public_page_refuses_a_gpu_engine_without_a_gpu(installed) -> None:
    with pytest.raises(InputError, match="The diffusion engine needs a GPU and this machine has none"):
        rq.plan(rq.Request(engine="diffusion", allow_slow=False), CPU)
    assert rq.plan(rq.Request(engine="diffusion", allow_slow=False), GPU).engine == "diffusion"


@pytest.mark.parametrize("engine", [name for name in ENGINES if "content_weight" in ENGINES[name].knobs])
def test_content_weight_is_a_multiple_of_the_preset_value_on_every_engine(installed, engine) -> None:
    spec = ENGINES[engine]
    field = spec.knobs["content_weight"]
    for preset_name in ("paper", "fast"):
        base = getattr(getattr(preset(preset_name), spec.settings), field)
        got = rq.plan(rq.Request(engine=engine, preset=preset_name, content_weight=2.0), GPU).settings
        assert getattr(getattr(got, spec.settings), field) == pytest.approx(2 * base)
        unchanged = rq.plan(rq.Request(engine=engine, preset=preset_name), GPU).settings
        assert getattr(getattr(unchanged, spec.settings), field) == base


def test_steps_go_to_the_painting_engine_within_its_own_range(installed) -> None:
    classic = rq.plan(rq.Request(engine="classic", steps=7), CPU).settings
    assert classic.classic.iterations == 7 and classic.diffusion.steps == DiffusionSettings().steps
    diffusion = rq.plan(rq.Request(engine="diffusion", steps=40), GPU).settings
    assert diffusion.diffusion.steps == 40 and diffusion.classic.iterations == ClassicSettings().iterations
    with pytest.raises(rq.KnobError) as excinfo:
        rq.plan(rq.Request(engine="classic", steps=40), CPU)
    assert excinfo.value.knob == "steps"
    assert excinfo.value.detail == ("40 is out of range for the classic engine: choose 1 to 20 (iterations per patch "
                                    "size)")


def test_a_knob_the_engine_does_not_take_is_reported_not_applied(installed) -> None:
    run_plan = rq.plan(rq.Request(engine="diffusion", face_boost=0.0), GPU)
    assert run_plan.ignored == ("face_boost",)
    assert run_plan.settings.classic.face_boost == ClassicSettings().face_boost


def test_sam_model_and_resident_reach_the_diffusion_engine_and_are_noted_on_another(installed) -> None:
    got = rq.plan(rq.Request(engine="diffusion", sam_model="/sam", resident="dtype"), GPU)
    assert (got.settings.diffusion.sam_model, got.settings.diffusion.resident, got.ignored) == ("/sam", "dtype", ())
    plain = rq.plan(rq.Request(engine="diffusion"), GPU).settings.diffusion
    assert (plain.sam_model, plain.resident) == (None, "auto")  # k-means and the engine's own choice by default
    classic = rq.plan(rq.Request(engine="classic", sam_model="/sam", resident="float32"), CPU)
    assert classic.ignored == ("sam_model", "resident")
    with pytest.raises(InputError, match="resident 'fp16' is not one of auto, float32, dtype"):
        rq.Request(resident="fp16")  # type: ignore[arg-type]


def test_model_knobs_reach_every_engine_that_loads_them_and_none_turns_depth_off(installed) -> None:
    got = rq.plan(rq.Request(engine="auto", sd_model="/sd", depth_model="none", lora="/l.safetensors"), CPU).settings
    assert (got.diffusion.sd_model, got.diffusion.depth_model, got.diffusion.lora) == ("/sd", None, "/l.safetensors")
    assert got.regions.use_depth is False


@pytest.mark.parametrize(("request_kwargs", "knob", "detail"), [
    ({"size": 10}, "size", "10 is invalid: expected an integer in 64..2048"),
    ({"max_regions": 1}, "max_regions", "1 is invalid: expected an integer in 2..32"),
    ({"seed": -1}, "seed", "-1 is invalid: expected an integer in 0..2^32-1"),
    ({"content_weight": 6.0}, "content_weight", "6 is out of range: choose 0 to 5"),
    ({"steps": 2.5}, "steps", "2.5 is invalid: expected a whole number"),
])
def test_bad_knobs_name_the_knob(installed, request_kwargs, knob, detail) -> None:
    with pytest.raises(rq.KnobError) as excinfo:
        rq.plan(rq.Request(**request_kwargs), CPU)
    assert excinfo.value.knob == knob and excinfo.value.detail.startswith(detail)


def test_knob_setting_describes_the_widget_of_the_engine_that_paints(installed) -> None:
    steps = rq.knob_setting("classic", "paper", "steps", CPU)
    assert steps == {"engine": "classic", "minimum": 1, "maximum": 20, "value": 2,
                     "means": "iterations per patch size"}
    assert rq.knob_setting("diffusion", "fast", "steps", GPU)["value"] == preset("fast").diffusion.steps
    assert rq.knob_setting("diffusion", "paper", "face_boost", GPU) is None  # the page hides it


def test_settings_given_directly_run_as_they_say_and_auto_takes_the_gpu_it_finds(installed) -> None:
    explicit = rq.plan_settings(preset("paper", engine="classic"), GPU)
    assert (explicit.engine, explicit.reason, explicit.fallbacks) == ("classic", "chosen in the settings", ())
    auto = rq.plan_settings(preset("paper"), GPU)
    assert auto.engine == "diffusion" and auto.settings.diffusion.device == "cuda"
    assert auto.settings.diffusion.dtype == "float32"  # the library keeps float32; only the doors ask for half


def test_every_registered_engine_has_a_settings_part_and_knob_fields_with_ranges() -> None:
    from stylegallery.config import Settings, knob_range

    for name, spec in ENGINES.items():
        part = getattr(Settings(), spec.settings)
        for knob in ("steps", "content_weight", "face_boost"):
            if knob in spec.knobs:
                low, high = knob_range(part, spec.knobs[knob])
                assert low <= getattr(part, spec.knobs[knob]) <= high, (name, knob)
    assert set(AUTO_ORDER) <= set(ENGINES)


def test_region_strengths_are_numbered_from_one_at_the_doors_and_from_zero_in_the_settings(installed) -> None:
    asked = rq.Request(engine="neural", strength=0.8, region_strengths=((2, 0.3), (1, 0.0)))
    got = rq.plan(asked, CPU).settings.neural
    assert got.region_strengths == ((1, 0.3), (0, 0.0)) and got.strength_of(1) == 0.3 and got.strength_of(5) == 0.8
    assert rq.plan(rq.Request(engine="classic", region_strengths=((1, 0.5),)), CPU).ignored == ("region_strengths",)
    for bad in (((0, 0.5),), ((1, 1.5),), ((1, True),), [(1, 0.5)]):
        with pytest.raises(rq.KnobError, match="expected R:S pairs"):
            rq.Request(region_strengths=bad)
    with pytest.raises(rq.KnobError, match="gives a region twice"):
        rq.Request(region_strengths=((1, 0.5), (1, 0.2)))
    assert rq.parse_region_strength("2:0.3") == (2, 0.3)
    for text in ("0:0.5", "2:1.5", "2", "x:0.1", "-1:0.2"):
        with pytest.raises(ValueError, match="is not R:S, e.g. 2:0.3"):
            rq.parse_region_strength(text)

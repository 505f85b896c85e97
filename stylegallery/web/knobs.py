"""What the page's widgets mean: their values become the front desk's Request (as the CLI's flags do), and the
sliders take their ranges from the settings (config.knob) and the operator's caps."""

from __future__ import annotations

import math
import os

from stylegallery.config import knob_range
from stylegallery.engines import ENGINES
from stylegallery.request import KnobError, Request, knob_setting, plan


def page_request(engine: str, preset_name: str, size: float, k_max: float, content_weight: float, steps: float,
                 seed: int, strength: float | None = None,
                 region_strengths: tuple[tuple[int, float], ...] | None = None) -> Request:
    """Widget values -> the front desk's Request, with the same meaning per knob as the CLI's flags. Model locations
    come from the environment; an engine that cannot load paints with the next one that can (the page says so)."""
    env = os.environ.get
    return Request(
        engine=engine, preset=preset_name, size=_whole("size", size), max_regions=_whole("max_regions", k_max),
        content_weight=content_weight, steps=_whole("steps", steps), seed=seed, strength=strength,
        region_strengths=region_strengths,
        sd_model=env("STYLEGALLERY_SD_MODEL"), dino_model=env("STYLEGALLERY_DINO_MODEL"),
        depth_model=env("STYLEGALLERY_DEPTH_MODEL"), lora=env("STYLEGALLERY_LORA"), fallback=True,
        allow_slow=env("STYLEGALLERY_ALLOW_CPU_DIFFUSION") == "1",
    )


def sliders(engine: str, preset_name: str, max_steps: float = math.inf) -> tuple:
    """Updates of the Steps, Content weight, Style strength and region Style strength sliders for the engine that
    `engine` paints with here: Steps in its range and meaning (`steps_setting`), the others shown only where that
    engine takes them (a slider that changes nothing is not shown)."""
    import gradio as gr

    spec = ENGINES[plan(Request(engine=engine)).engine]
    return (gr.update(**steps_setting(engine, preset_name, max_steps)),
            *(gr.update(visible=name in spec.knobs) for name in ("content_weight", "strength", "region_strengths")))


def _whole(knob: str, value: float) -> int:
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value != int(value)):
        raise KnobError(knob, f"{value!r} is invalid: expected a whole number")
    return int(value)


def steps_setting(engine: str, preset_name: str, max_steps: float = math.inf) -> dict:
    """The Steps slider for the engine that `engine` paints with here: its range (capped at `max_steps`), the
    preset's value, its meaning; hidden where that engine takes no steps."""
    knob = knob_setting(engine, preset_name, "steps")
    if knob is None:
        return {"visible": False}
    high = min(knob["maximum"], max_steps)
    return {"minimum": knob["minimum"], "maximum": high, "value": min(knob["value"], high), "label": "Steps",
            "visible": True, "info": f"{knob['engine']} engine: {knob['means']}, {knob['minimum']} to "
                                     f"{high} (the {preset_name} preset uses {knob['value']})"}


def slider_range(settings: object, name: str, cap: float = math.inf) -> dict:
    low, high = knob_range(settings, name)
    return {"minimum": low, "maximum": min(high, cap)}

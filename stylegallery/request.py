"""The front desk: what a person asks at any door, and the one translation of it into `Settings`.

Every door (the page, `python -m stylegallery run|bench|eval|batch`, the Python API) describes a run as a
`Request` in the person's words and calls `plan`, which decides, once and here:

- which engine paints (the asked one, or `auto`'s first engine that can run on this machine) and why, and
  which engines take over when it cannot load (the fallbacks: `auto`'s later engines, or the ones a door asks
  for with `Request.fallback`);
- the device and precision (the GPU when there is one, half precision on CUDA), from one `Machine`;
- what each generic knob sets, through the knob table beside the engine registry (`stylegallery.engines`).

One meaning per knob at every door: `content_weight` is a multiple of the engine's preset value (1 = the
preset's), `steps` is the painting engine's own step count within that engine's range. Absolute values stay
reachable through `Settings` in the Python API. Ranges live in the config fields (`config.knob`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stylegallery.config import PRESETS, Settings, knob_range, preset
from stylegallery.engines import AUTO_ORDER, ENGINES, EngineSpec
from stylegallery.errors import InputError


DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("cpu", "cuda", "mps")
ASSIGNMENTS = ("auto", "argmax", "balanced")
ASPECTS = ("keep", "square")
# Knobs that name model locations; "none" as depth_model turns depth off.
MODEL_KNOBS = ("sd_model", "dino_model", "depth_model", "lora", "sam_model")
# Knobs of one engine's models that the painting engine may not take: set where taken, noted as ignored otherwise
ENGINE_MODEL_KNOBS = ("sam_model", "resident")
RESIDENTS = ("auto", "float32", "dtype")
STAGE3_KNOBS = ("steps", "content_weight", "face_boost", "strength", "region_strengths", "keep_colours",
                "stroke_size")


def engine_names() -> tuple[str, ...]:
    """The engines a door offers, by key (`auto` first)."""
    return ("auto", *ENGINES)


class KnobError(InputError):
    """A knob's value cannot be used. `knob` names it ("steps"), `detail` says the rest ("50 is out of range ..."),
    so each door can name the knob as its person sees it (--steps, the Steps slider)."""

    def __init__(self, knob: str, detail: str) -> None:
        super().__init__(f"{knob.replace('_', ' ')} {detail}")
        self.knob, self.detail = knob, detail


@dataclass(frozen=True)
class Machine:
    """What this machine offers the engines: a GPU (and why or why not)."""

    gpu: str | None  # "cuda" | "mps" | None
    why: str  # e.g. "no GPU found", "GPU found: NVIDIA A10G"


@functools.lru_cache(maxsize=1)
def detect_machine() -> Machine:
    """The machine, detected once per process. Imports torch only where a GPU may exist."""
    nvidia = Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    if not nvidia and not apple:
        return Machine(None, "no GPU found")
    if importlib.util.find_spec("torch") is None:
        return Machine(None, "torch is not installed")
    import torch

    if nvidia and torch.cuda.is_available():
        return Machine("cuda", f"GPU found: {torch.cuda.get_device_name(0)}")
    if apple and torch.backends.mps.is_available():
        return Machine("mps", "Apple GPU (mps) found")
    return Machine(None, "no usable GPU found (the driver did not answer)")


def missing_packages(name: str) -> str | None:
    """Why engine `name` cannot run here for want of packages ("torch is not installed"), or None."""
    missing = [module for module in ENGINES[name].requires if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"


@dataclass(frozen=True)
class Request:
    """What a person can ask at any door, in their words. None means "the preset's value"."""

    engine: str = "auto"  # a key of stylegallery.engines.ENGINES, or "auto"
    preset: str = "paper"  # a preset of config.preset
    size: int | None = None  # long side of the working image, px (ImageSettings.size)
    aspect: Literal["keep", "square"] | None = None  # ImageSettings.aspect
    seed: int | None = None  # Settings.seed
    max_regions: int | None = None  # the most regions per image (RegionSettings.k_max)
    merge_rule: Literal["official", "union_find"] | None = None  # stage 1's cluster merge (RegionSettings.merge_rule)
    assignment: Literal["auto", "argmax", "balanced"] | None = None  # MatchSettings.assignment
    steps: int | None = None  # the painting engine's step count, in its own range (the knob table says which)
    # content vs style, as a multiple of the painting engine's preset value (1 = the preset's); 0..5
    content_weight: float | None = field(default=None, metadata={"range": (0.0, 5.0)})
    face_boost: float | None = None  # extra content weight on faces, where the engine protects faces
    strength: float | None = None  # share of each matched style in its region, 0..1, where the engine mixes styles
    # the strength of single content regions, numbered from 1 as on the page: ((region, strength 0..1), ...)
    region_strengths: tuple[tuple[int, float], ...] | None = None
    keep_colours: bool | None = None  # keep the photo's colours under the painted strokes, where the engine can
    stroke_size: int | None = None  # long side in px at which the engine paints (its strokes scale with it)
    sd_model: str | None = None  # model locations (hub ids or folders), for the engines that load them
    dino_model: str | None = None
    depth_model: str | None = None  # "none" turns depth off
    lora: str | None = None
    sam_model: str | None = None  # SAM's masks replace k-means as stage 1's base map (the official SAM path)
    # where the UNet weights live (DiffusionSettings.resident); None: the engine's default, "auto"
    resident: Literal["auto", "float32", "dtype"] | None = None
    device: Literal["cpu", "cuda", "mps"] | None = None  # None: the GPU when there is one, else the CPU
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: float16 on CUDA, else float32
    # when the asked engine cannot load, paint with the next engine that can (the page does; the CLI says why and
    # exits 2); `auto` always falls back
    fallback: bool = False
    # an engine that needs a GPU may run on a machine without one (minutes per image): the CLI allows it, a public
    # page does not unless its operator says so
    allow_slow: bool = True

    def __post_init__(self) -> None:
        _one_of("engine", self.engine, engine_names())
        _one_of("preset", self.preset, PRESETS)
        _one_of("dtype", self.dtype, DTYPES)
        for name, options in (("aspect", ASPECTS), ("assignment", ASSIGNMENTS), ("device", DEVICES),
                              ("resident", RESIDENTS), ("merge_rule", ("official", "union_find"))):
            if getattr(self, name) is not None:
                _one_of(name, getattr(self, name), options)
        for name in ("size", "seed", "max_regions", "steps", "stroke_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise KnobError(name, f"{value!r} is invalid: expected a whole number")
        if self.keep_colours is not None and not isinstance(self.keep_colours, bool):
            raise KnobError("keep_colours", f"{self.keep_colours!r} is invalid: expected true or false")
        for name in ("content_weight", "face_boost", "strength"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value != value):
                raise KnobError(name, f"{value!r} is invalid: expected a number")
        if self.region_strengths is not None:
            pairs = self.region_strengths
            if not isinstance(pairs, tuple) or not all(
                    isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
                    and p[0] >= 1 and isinstance(p[1], (int, float)) and not isinstance(p[1], bool)
                    and 0 <= p[1] <= 1 for p in pairs):
                raise KnobError("region_strengths", f"{pairs!r} is invalid: expected R:S pairs, a region numbered "
                                "from 1 and a strength 0 to 1, e.g. 2:0.3")
            if len({r for r, _ in pairs}) != len(pairs):
                raise KnobError("region_strengths", "gives a region twice; give each region once")
        if self.content_weight is not None:
            low, high = knob_range(Request, "content_weight")
            if not low <= self.content_weight <= high:
                raise KnobError("content_weight", f"{self.content_weight:g} is out of range: choose {low:g} to "
                                f"{high:g} (a multiple of the preset's content weight; 1 keeps the preset's)")


@dataclass(frozen=True)
class Plan:
    """What a run will do: its settings, the engine that paints and why, and who takes over if it cannot load."""

    settings: Settings
    engine: str  # the key of the engine that paints
    reason: str  # why that engine, in words for the page and the CLI
    fallbacks: tuple[str, ...] = ()  # engines tried in order when `engine` cannot be loaded
    ignored: tuple[str, ...] = ()  # knobs given that the painting engine does not take (the CLI notes them)


def plan(request: Request, machine: Machine | None = None) -> Plan:
    """The one translation of a `Request` into `Settings`, with the engine, device and precision decided."""
    machine = machine or detect_machine()
    engine, reason, fallbacks = choose_engine(request.engine, machine, request.fallback)
    spec = ENGINES[engine]
    if spec.gpu and machine.gpu is None and request.engine == engine and not request.allow_slow:
        raise InputError(f"The {engine} engine needs a GPU and this machine has none ({machine.why}): choose "
                         f"{' or '.join(repr(n) for n in engine_names() if n != engine)} instead.")

    # 1. The preset, and the knobs every engine shares
    settings = preset(request.preset)  # type: ignore[arg-type]
    settings = dataclasses.replace(settings, engine=request.engine)  # type: ignore[arg-type]
    if request.size is not None:
        settings = _replace(settings, "image", {"size": request.size}, knob="size")
    if request.aspect is not None:
        settings = _replace(settings, "image", {"aspect": request.aspect})
    if request.seed is not None:
        settings = _set(settings, "seed", request.seed)
    if request.max_regions is not None:
        settings = _replace(settings, "regions", {"k_max": request.max_regions}, knob="max_regions")
    if request.merge_rule is not None:
        settings = _replace(settings, "regions", {"merge_rule": request.merge_rule})
    if request.assignment is not None:
        settings = _replace(settings, "matching", {"assignment": request.assignment})

    # 2. Model locations, device and precision, on every engine that takes them (a fallback loads with them too,
    #    and the settings say the same whichever engine auto picked)
    device = request.device or machine.gpu or "cpu"
    dtype = request.dtype if request.dtype != "auto" else ("float16" if device.startswith("cuda") else "float32")
    models: dict[str, Any] = {name: getattr(request, name) for name in MODEL_KNOBS if getattr(request, name)}
    if str(models.get("depth_model", "")).lower() == "none":
        models["depth_model"] = None
        settings = _replace(settings, "regions", {"use_depth": False})
    loads = {**models, "device": device, "dtype": dtype}
    if request.resident is not None:
        loads["resident"] = request.resident
    for spec_n in ENGINES.values():
        changes = {spec_n.knobs[k]: v for k, v in loads.items() if k in spec_n.knobs}
        settings = _replace(settings, spec_n.settings, changes)
    ignored = [name for name in ENGINE_MODEL_KNOBS if getattr(request, name) and name not in spec.knobs]

    # 3. Stage-3 knobs on the engine that paints (a fallback keeps its preset's values, and the run notes it)
    base = getattr(settings, spec.settings)
    changes = {}
    for name in STAGE3_KNOBS:
        value = getattr(request, name)
        if value is None:
            continue
        if name not in spec.knobs:
            ignored.append(name)
            continue
        target = spec.knobs[name]
        if name == "region_strengths":  # numbered from 1 (as on the page) -> the settings' 0-based regions
            changes[target] = tuple((r - 1, float(v)) for r, v in value)
            continue
        changes[target] = getattr(base, target) * value if name == "content_weight" else value
        if not isinstance(value, bool):
            _check_knob(spec, engine, target, name, changes[target], value, reason if request.engine == "auto" else "")
    settings = _replace(settings, spec.settings, changes)
    return Plan(settings, engine, reason, fallbacks, tuple(ignored))


def plan_settings(settings: Settings, machine: Machine | None = None) -> Plan:
    """The plan of `Settings` given directly (the Python API): the engine `auto` picks, with its fallbacks, and an
    auto-picked GPU engine on the GPU found; an explicit engine runs as its settings say."""
    if not isinstance(settings, Settings):
        raise InputError(f"settings must be a stylegallery.Settings, got {type(settings).__name__}")
    machine = machine or detect_machine()
    engine, reason, fallbacks = choose_engine(settings.engine, machine, False)
    spec = ENGINES[engine]
    if settings.engine == "auto" and spec.gpu and machine.gpu and "device" in spec.knobs:
        own = getattr(settings, spec.settings)
        if getattr(own, spec.knobs["device"]) == "cpu":
            settings = _replace(settings, spec.settings, {spec.knobs["device"]: machine.gpu})
    return Plan(settings, engine, reason, fallbacks)


def choose_engine(asked: str, machine: Machine, fallback: bool = False) -> tuple[str, str, tuple[str, ...]]:
    """(the engine that paints, why, the engines that take over if it cannot load).

    `auto` takes the first engine of AUTO_ORDER whose packages are installed and, for GPU engines, where a GPU is;
    the later ones that can run are its fallbacks. An asked engine paints as asked; with `fallback` the engines of
    AUTO_ORDER after it that can run take over.
    """
    _one_of("engine", asked, engine_names())
    runnable = [name for name in AUTO_ORDER if missing_packages(name) is None]
    if asked != "auto":
        later = AUTO_ORDER[AUTO_ORDER.index(asked) + 1:] if asked in AUTO_ORDER else AUTO_ORDER
        others = tuple(n for n in later if n in runnable and n != asked and not ENGINES[n].gpu) if fallback else ()
        return asked, "chosen in the settings", others
    passed = []
    for name in AUTO_ORDER:
        missing = missing_packages(name)
        if missing is None and ENGINES[name].gpu and machine.gpu is None:
            missing = machine.why
        if missing is None:
            why = "; ".join(passed + ([machine.why] if ENGINES[name].gpu else []))
            rest = tuple(n for n in AUTO_ORDER[AUTO_ORDER.index(name) + 1:] if n in runnable and not ENGINES[n].gpu)
            return name, why or "the first engine that can run here", rest
        passed.append(f"{missing} for the {name} engine")
    raise InputError("no engine can run here: " + "; ".join(passed) + "; run `pip install -r requirements.txt`")


def knob_setting(engine: str, preset_name: str, knob: str, machine: Machine | None = None) -> dict[str, Any] | None:
    """What the generic `knob` ("steps") is on the engine that `engine` paints with here: its range, the preset's
    value and what it counts; None when that engine does not take it (the page hides the widget)."""
    name, _, _ = choose_engine(engine, machine or detect_machine())
    spec = ENGINES[name]
    if knob not in spec.knobs:
        return None
    own = getattr(preset(preset_name), spec.settings)  # type: ignore[arg-type]
    low, high = knob_range(own, spec.knobs[knob])
    return {"engine": name, "minimum": low, "maximum": high, "value": getattr(own, spec.knobs[knob]),
            "means": spec.steps_means if knob == "steps" else spec.knobs[knob]}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _one_of(name: str, value: object, options: tuple[str, ...]) -> None:
    if value not in options:
        raise InputError(f"{name} {value!r} is not one of {', '.join(options)}")


def _set(settings: Settings, knob: str, value: Any) -> Settings:
    try:
        return dataclasses.replace(settings, **{knob: value})
    except ValueError as exc:
        raise KnobError(knob, str(exc).split("=", 1)[-1]) from None


def _replace(settings: Settings, part: str, changes: dict[str, Any], knob: str | None = None) -> Settings:
    """`settings` with fields of its part `part` ("image", "classic", ...) changed; a bad value is an InputError
    (a KnobError naming `knob`, the knob as the person knows it: "max_regions", not "k_max")."""
    if not changes:
        return settings
    try:
        return dataclasses.replace(settings, **{part: dataclasses.replace(getattr(settings, part), **changes)})
    except ValueError as exc:
        if knob:
            raise KnobError(knob, str(exc).split("=", 1)[-1]) from None
        raise InputError(str(exc)) from None


def _check_knob(spec: EngineSpec, engine: str, target: str, knob: str, value: Any, asked: Any, why: str) -> None:
    """A stage-3 knob's value against the painting engine's range, in the knob's words."""
    low, high = knob_range(getattr(Settings(), spec.settings), target)
    whole = isinstance(getattr(getattr(Settings(), spec.settings), target), int)
    if (low <= value <= high) and (not whole or isinstance(value, int)):
        return
    where = f", which runs here ({why})" if why else ""
    if knob == "content_weight":
        raise KnobError(knob, f"{asked:g} gives {value:g}, out of range for the {engine} engine{where}: its "
                        f"{target} takes {low:g} to {high:g}")
    means = f" ({spec.steps_means})" if knob == "steps" and spec.steps_means else ""
    raise KnobError(knob, f"{asked:g} is out of range for the {engine} engine{where}: choose {low:g} to "
                    f"{high:g}{means}")


def parse_override(text: str) -> tuple[int, int, int]:
    """"2:1:3" -> (2, 1, 3): content region R2 painted like region 3 of style 1 (numbered from 1, as on the page).
    Raises ValueError saying what R:S:SR means."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() and 0 < int(p) < 10**6 for p in parts):
        raise ValueError(f"{text!r} is not R:S:SR, e.g. 2:1:3 paints region R2 like region 3 of style 1 (numbered "
                         "from 1)")
    return int(parts[0]), int(parts[1]), int(parts[2])


def parse_region_strength(text: str) -> tuple[int, float]:
    """"2:0.3" -> (2, 0.3): content region R2 (numbered from 1) at strength 0.3. Raises ValueError saying the form."""
    region, _, value = text.partition(":")
    try:
        pair = int(region), float(value)
    except ValueError:
        pair = (0, -1.0)
    if not (region.isdigit() and pair[0] >= 1 and 0 <= pair[1] <= 1):
        raise ValueError(f"{text!r} is not R:S, e.g. 2:0.3 paints region R2 with strength 0.3 (regions numbered from "
                         "1, strength 0 to 1)")
    return pair

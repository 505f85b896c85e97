"""Loading the diffusion engine's models: SD 1.5, DINOv2, Depth-Anything-V2 and an optional LoRA.

Every model comes from `from_pretrained` on a local folder: a hub id is first resolved to its folder in
the Hugging Face cache (downloaded if the hub is reachable). Weights are safetensors only
(`use_safetensors=True`, never pickle) and no remote code is ever run. Every failure becomes one
`ModelLoadError` line: what is wrong, the value, how to fix it.

Notation (code -> paper): SDModels -> the SD 1.5 pipeline of 2.2/4.2 (UNet, VAE, CLIP text encoder,
DDIM scheduler); dino -> DINOv2 of 3.2b; depth -> Depth-Anything-V2 of 2.2; stage3 timesteps -> 4.2.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from stylegallery.errors import ModelLoadError


SD_FILES = [
    "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors*",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors*", "text_encoder/config.json",
    "text_encoder/model.safetensors*", "text_encoder/model-*.safetensors", "tokenizer/*", "scheduler/*",
]
TRANSFORMERS_FILES = ["config.json", "preprocessor_config.json", "model.safetensors*", "model-*.safetensors"]
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_ADAPTER = "stylegallery_fast"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name, chosen when a LoRA folder holds several files
SD_FIX = "check that the folder is a complete SD 1.5 pipeline with safetensors weights"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
T = TypeVar("T")

# DINOv2's documented preprocessing (facebook/dinov2-*): resize the short side to 256, crop 224, ImageNet norm.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SDModels:
    unet: Any  # UNet2DConditionModel, float32
    vae: Any  # AutoencoderKL, float32 (encode and inversion stay float32)
    text_encoder: Any  # CLIPTextModel
    tokenizer: Any  # CLIPTokenizer
    scheduler: Any  # DDIMScheduler with the pipeline's config (leading spacing, steps_offset 1)


def quiet_libraries() -> None:
    """No progress bars or info chatter from diffusers/transformers: the CLI and app report progress themselves."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.disable_progress_bar()
        lib.set_verbosity_error()


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_text(exc: BaseException) -> str:
    """The exception's one-line text, prefixed by its type where the text alone does not say what failed."""
    text = _one_line(exc)
    kind = type(exc).__name__
    return text if kind in ("OSError", "ValueError") or text.startswith(kind) else f"{kind}: {text}"


def _safetensors_error(exc: BaseException) -> BaseException | None:
    """The SafetensorError behind `exc` (diffusers wraps it in an OSError naming the file twice), if any."""
    for _ in range(8):
        if type(exc).__name__ == "SafetensorError":
            return exc
        exc = exc.__cause__ or exc.__context__
        if exc is None:
            break
    return None


def _within(folder: Path, location: str) -> str:
    """" in '<folder>'" when `location` (e.g. a hub id) does not already name the folder."""
    return "" if folder == Path(location).expanduser() else f" in {str(folder)!r}"


def _loaded(field: str, location: str, component: str, fix: str, load: Callable[[], T]) -> T:
    """`load()`, with any failure of the library call turned into one ModelLoadError line: the setting, the
    component (and where it is), what went wrong, and how to fix it (a damaged weights file is told apart)."""
    try:
        return load()
    except (ModelLoadError, MemoryError):
        raise
    except Exception as exc:  # from_pretrained raises many types on broken files: SafetensorError, OSError, ...
        damaged = _safetensors_error(exc)
        if damaged is not None:
            exc, fix = damaged, ("a weights file is damaged or incomplete (e.g. an interrupted download): download "
                                 "it again or pass a complete copy")
        raise ModelLoadError(f"{field} {location!r}: {component} could not be loaded ({_error_text(exc)}): "
                             f"{fix}") from None


def _offline() -> bool:
    from huggingface_hub.constants import is_offline_mode

    flag = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or is_offline_mode()


def _looks_like_path(location: str) -> bool:
    return (location.startswith(("/", ".", "~")) or "\\" in location or location.count("/") != 1
            or location.endswith("/"))


def resolve_location(location: str, field: str, patterns: list[str]) -> Path:
    """The local folder of `location`: the folder itself, or a hub id's snapshot in the HF cache.

    `field` names the setting in messages (e.g. "sd_model"). Only files matching `patterns` are fetched.
    """
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{field} {location!r} is a file, not a model folder: pass the folder that holds "
                             "the model's config.json, or a hub id")
    if _looks_like_path(location) and "/" in location.strip("/"):
        raise ModelLoadError(f"{field} folder {location!r} does not exist: check the path, or pass a hub id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(location, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not in the cache (or not a valid id): decided below
        pass
    if _looks_like_path(location):
        raise ModelLoadError(f"{field} {location!r} is neither a folder nor a hub id (owner/name): check the "
                             "path, or pass a hub id")
    if _offline():
        raise ModelLoadError(f"{field} {location!r} is not a local folder and not in the Hugging Face cache, and "
                             f"the hub is offline: download it first with `hf download {location}` or pass a "
                             "local folder")
    try:
        return Path(snapshot_download(location, allow_patterns=patterns))
    except Exception as exc:
        raise ModelLoadError(f"{field} {location!r} could not be downloaded ({_one_line(exc)}): download it first "
                             f"with `hf download {location}` or pass a local folder") from None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def describe_folder(path: Path) -> str:
    """A few words on what a model folder holds, for error messages."""
    index = _read_json(path / "model_index.json")
    if index is not None:
        return f"a {index.get('_class_name', 'diffusers')} pipeline"
    config = _read_json(path / "config.json")
    if config is not None:
        kind = config.get("model_type") or config.get("_class_name") or "unknown"
        return f"a {kind} model"
    if not any(path.iterdir()):
        return "nothing (the folder is empty)"
    return "no config.json or model_index.json"


def _check_safetensors(folder: Path, field: str, location: str) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
    what = f"only pickle weights ({pickles[0]})" if pickles else "no .safetensors weights"
    raise ModelLoadError(f"{field} {location!r} holds {what} in {folder.name}/: StyleGallery loads safetensors "
                         "only; convert the weights to .safetensors or use a folder that has them")


def _check_sd_folder(root: Path, location: str) -> None:
    missing = [part for part in SD_PARTS if not (root / part).is_dir()]
    if missing:
        raise ModelLoadError(f"sd_model {location!r} holds {describe_folder(root)}, not a Stable Diffusion 1.5 "
                             f"pipeline (no {', '.join(p + '/' for p in missing)}): pass a folder with unet/, vae/, "
                             "text_encoder/, tokenizer/ and scheduler/, e.g. from `hf download "
                             "stable-diffusion-v1-5/stable-diffusion-v1-5`")
    unet = _read_json(root / "unet" / "config.json") or {}
    if (unet.get("_class_name") != "UNet2DConditionModel" or unet.get("in_channels") != 4
            or len(unet.get("up_block_types", ())) != 4):
        raise ModelLoadError(f"sd_model {location!r} has a UNet that is not in the SD 1.5 layout "
                             f"({unet.get('_class_name')}, in_channels={unet.get('in_channels')}, "
                             f"{len(unet.get('up_block_types', ()))} up blocks): pass an SD 1.5 pipeline folder")
    for part in ("unet", "vae", "text_encoder"):
        _check_safetensors(root / part, "sd_model", location)


def _check_transformers_folder(root: Path, field: str, location: str, model_types: tuple[str, ...],
                               expected: str, example: str) -> dict[str, Any]:
    config = _read_json(root / "config.json")
    if config is None or config.get("model_type") not in model_types:
        raise ModelLoadError(f"{field} {location!r} holds {describe_folder(root)}, not {expected}: pass a folder "
                             f"or hub id of {expected}, e.g. {example}")
    _check_safetensors(root, field, location)
    return config


def load_sd(location: str, device: str | torch.device = "cpu") -> SDModels:
    """UNet, VAE, text encoder, tokenizer and a DDIMScheduler of an SD 1.5-layout pipeline, float32, frozen."""
    quiet_libraries()
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = resolve_location(location, "sd_model", SD_FILES)
    _check_sd_folder(root, location)

    def part(name: str, load: Callable[[Path], T]) -> T:
        return _loaded("sd_model", location, f"{name}/{_within(root, location)}", SD_FIX, lambda: load(root / name))

    unet = part("unet", lambda f: UNet2DConditionModel.from_pretrained(f, use_safetensors=True))
    vae = part("vae", lambda f: AutoencoderKL.from_pretrained(f, use_safetensors=True))
    text_encoder = part("text_encoder", lambda f: CLIPTextModel.from_pretrained(f, use_safetensors=True))
    tokenizer = part("tokenizer", CLIPTokenizer.from_pretrained)  # no weights: vocab.json/merges.txt or tokenizer.json
    scheduler = part("scheduler", DDIMScheduler.from_pretrained)
    _check_tokenizer(tokenizer, text_encoder.config, location, root)
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise ModelLoadError(f"sd_model {location!r}: the UNet expects {unet.config.cross_attention_dim}-d text "
                             f"features but the text encoder gives {text_encoder.config.hidden_size}: pass an SD 1.5 "
                             "pipeline folder")
    for model in (unet, vae, text_encoder):
        model.to(device).float().eval().requires_grad_(False)
    return SDModels(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def _check_tokenizer(tokenizer, text_config, location: str, root: Path) -> None:
    """The tokenizer must encode the empty prompt into ids the text encoder has: a broken tokenizer/ (e.g. an empty
    folder) loads without error and only fails at the first run (OverflowError on its unset model_max_length)."""
    limit, vocab = int(text_config.max_position_embeddings), int(text_config.vocab_size)
    problem = None
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        problem = f"it holds no vocabulary, only {len(tokenizer)} special tokens"
    elif not 1 <= tokenizer.model_max_length <= limit:
        problem = f"its model_max_length {tokenizer.model_max_length} is not in 1..{limit}, the text encoder's length"
    else:
        try:
            ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
        except Exception as exc:  # noqa: BLE001 (any failure here means the tokenizer is unusable)
            problem = f"encoding the empty prompt failed: {_error_text(exc)}"
        else:
            outside = [i for i in ids if not 0 <= i < vocab]
            if outside:
                problem = f"it gives token id {outside[0]}, outside the text encoder's vocabulary of {vocab}"
    if problem:
        raise ModelLoadError(f"sd_model {location!r}: tokenizer/{_within(root, location)} is unusable ({problem}): "
                             "restore tokenizer/ from the same SD 1.5 pipeline (vocab.json and merges.txt, or "
                             "tokenizer.json)")


def _image_processor(root: Path, fallback):
    from transformers import AutoImageProcessor

    if (root / "preprocessor_config.json").exists():
        return AutoImageProcessor.from_pretrained(root, backend="pil", trust_remote_code=False)
    return fallback()


def load_dino(location: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """A DINOv2 model (float32, frozen) and its image processor (the documented default if none is saved)."""
    quiet_libraries()
    from transformers import AutoModel, BitImageProcessorPil

    root = resolve_location(location, "dino_model", TRANSFORMERS_FILES)
    _check_transformers_folder(root, "dino_model", location, ("dinov2", "dinov2_with_registers"),
                               "a DINOv2 model", "facebook/dinov2-base")
    fix = "check that the folder is a complete DINOv2 model with safetensors weights"
    model = _loaded("dino_model", location, f"the model{_within(root, location)}", fix,
                    lambda: AutoModel.from_pretrained(root, use_safetensors=True, trust_remote_code=False))
    processor = _loaded("dino_model", location, f"the image processor{_within(root, location)}", fix,
                        lambda: _image_processor(root, lambda: BitImageProcessorPil(
                            size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                            resample=3, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))))
    model.to(device).float().eval().requires_grad_(False)
    return model, processor


def load_depth(location: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """A Depth-Anything(-V2) model (float32, frozen) and its image processor."""
    quiet_libraries()
    from transformers import DepthAnythingForDepthEstimation, DPTImageProcessorPil

    root = resolve_location(location, "depth_model", TRANSFORMERS_FILES)
    _check_transformers_folder(root, "depth_model", location, ("depth_anything",), "a Depth-Anything model",
                               "depth-anything/Depth-Anything-V2-Small-hf")
    fix = "check that the folder is a complete Depth-Anything model with safetensors weights"
    model = _loaded("depth_model", location, f"the model{_within(root, location)}", fix,
                    lambda: DepthAnythingForDepthEstimation.from_pretrained(root, use_safetensors=True))
    processor = _loaded("depth_model", location, f"the image processor{_within(root, location)}", fix,
                        lambda: _image_processor(root, lambda: DPTImageProcessorPil(
                            size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                            resample=3, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))))
    model.to(device).float().eval().requires_grad_(False)
    return model, processor


def load_lora(unet, location: str) -> str:
    """Load a LoRA (LCM-LoRA, Hyper-SD, diffusers or kohya format) into `unet`, disabled; returns its name.

    Fusing happens only around the "fast" transfer (`fused_lora`), as demo_accelerate.py does after
    stages 1-2 ran on the plain UNet.
    """
    if importlib.util.find_spec("peft") is None:
        raise ModelLoadError(f"lora {location!r} needs the peft package, which is not installed: "
                             "`pip install peft`, or drop the LoRA (the fast preset then runs without it)")
    from diffusers import StableDiffusionPipeline

    weights = lora_file(location)  # a .safetensors file: diffusers never sees a pickle (it would torch.load one)

    def load() -> None:
        state_dict, alphas = StableDiffusionPipeline.lora_state_dict(
            str(weights.parent), weight_name=weights.name, use_safetensors=True, unet_config=unet.config)
        StableDiffusionPipeline.load_lora_into_unet(state_dict, alphas, unet, adapter_name=LORA_ADAPTER)

    _loaded("lora", location, f"the LoRA{_within(weights, location)}", "pass an SD 1.5 UNet LoRA in safetensors, e.g. "
            "latent-consistency/lcm-lora-sdv1-5", load)
    if LORA_ADAPTER not in (getattr(unet, "peft_config", None) or {}):  # diffusers skips a file without UNet keys
        raise ModelLoadError(f"lora {location!r} holds no UNet LoRA weights (e.g. a text-encoder-only LoRA or another "
                             "kind of file): pass an SD 1.5 UNet LoRA in safetensors, e.g. "
                             "latent-consistency/lcm-lora-sdv1-5")
    unet.disable_adapters()
    return LORA_ADAPTER


def lora_file(location: str) -> Path:
    """The one .safetensors file a LoRA location names: the file itself, or the one in a folder or hub snapshot.

    Anything else (a .bin/.pt pickle, a folder without safetensors) is refused before any file is opened.
    """
    path = Path(location).expanduser()
    suffix = path.suffix.lower()
    if not path.is_dir() and (suffix in PICKLE_SUFFIXES or (path.is_file() and suffix != ".safetensors")):
        raise ModelLoadError(f"lora {location!r} is not a .safetensors file: StyleGallery loads LoRAs only as "
                             "safetensors (a pickle can run code when loaded); use the LoRA's .safetensors release "
                             "or convert it")
    if suffix == ".safetensors" and not path.is_dir():
        if not path.is_file():
            raise ModelLoadError(f"lora file {location!r} does not exist: check the path, or pass a hub id")
        return path
    folder = path if path.is_dir() else resolve_location(location, "lora", ["*.safetensors"])
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if len(files) > 1 and (folder / LORA_FILE) in files:
        files = [folder / LORA_FILE]
    if len(files) == 1:
        return files[0]
    if files:
        names = ", ".join(p.name for p in files)
        raise ModelLoadError(f"lora {location!r} holds several .safetensors files ({names}): pass the path of the one "
                             "to load")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    what = f"only pickle weights ({pickles[0]})" if pickles else "no .safetensors file"
    raise ModelLoadError(f"lora {location!r} holds {what}: StyleGallery loads LoRAs only as safetensors; pass an SD "
                         "1.5 LoRA in safetensors, e.g. latent-consistency/lcm-lora-sdv1-5")


def _ddim_timesteps(config, steps: int):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps


def _lcm_timesteps(config, steps: int):
    from diffusers import LCMScheduler

    scheduler = LCMScheduler.from_config(config)
    scheduler.set_timesteps(steps, original_inference_steps=max(50, steps))
    return scheduler.timesteps


def _euler_trailing_timesteps(config, steps: int):
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    return scheduler.timesteps


# settings.diffusion.scheduler -> (SD scheduler config, steps) -> descending timesteps
STAGE3_SCHEDULES = {"ddim": _ddim_timesteps, "lcm": _lcm_timesteps, "euler_trailing": _euler_trailing_timesteps}


def stage3_timesteps(scheduler_config, kind: str, steps: int) -> list[float]:
    """The timesteps of the latent optimisation (paper 4.2): only which UNet features are read.

    "ddim": DDIM set_timesteps(steps) (895..1 for 150); "lcm": LCMScheduler's list (LCM-LoRA);
    "euler_trailing": EulerDiscreteScheduler with trailing spacing (Hyper-SD).
    """
    if kind not in STAGE3_SCHEDULES:
        raise ValueError(f"scheduler={kind!r} is invalid: expected one of {', '.join(STAGE3_SCHEDULES)}")
    return [float(t) for t in STAGE3_SCHEDULES[kind](scheduler_config, steps)]


def load_sam(location: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(SamModel, SamImageProcessorPil) of a SAM model folder or hub id, for `sam.sam_masks` (optional; the official
    SAM base masks). Safetensors only, no remote code; no torchvision needed."""
    quiet_libraries()
    root = resolve_location(location, "sam_model", TRANSFORMERS_FILES)
    _check_transformers_folder(root, "sam_model", location, ("sam",), "a SAM model", "facebook/sam-vit-base")
    from transformers import SamImageProcessorPil, SamModel

    fix = "check that the folder is a complete SAM model (config.json, preprocessor_config.json, safetensors)"
    model = _loaded("sam_model", location, f"the model{_within(root, location)}", fix,
                    lambda: SamModel.from_pretrained(root, use_safetensors=True))
    processor = _loaded("sam_model", location, f"the image processor{_within(root, location)}", fix,
                        lambda: SamImageProcessorPil.from_pretrained(root))
    model.to(device).float().eval().requires_grad_(False)
    return model, processor

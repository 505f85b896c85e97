"""Ready for the first GPU: our diffusion stages against the official methods, then one full float16 run.

    python benchmarks/gpu_check.py --sd SD15_DIR --dino DINOV2_DIR --depth DEPTH_DIR --official STYLEGALLERY_CHECKOUT \
        [--lora LCM_OR_HYPER_LORA] [--device cuda] [--size 512] [--styles 5] [--steps 150] [--json out.json]
    python benchmarks/gpu_check.py --tiny                   # CPU smoke run on tiny random models (a test runs it)
    python benchmarks/gpu_check.py --random-weights DIR     # real-size random models (built into DIR when empty)

Checks, each printed as one line (ok / skipped: why / FAILED) with its figures:
  inversion  our ddim_invert vs the official forward_process on the same z0: relative difference of C15 and F_mix
  regions    our regions.segment (kmeans_init="random") vs the official feature_cluster + remove_small_regions
             on the same F_mix, z0 and depth: region counts and adjusted Rand index (512 px, square: its 64x64 grid)
  matches    our matching on the official region maps vs the official match_content_style_clusters
             (dino_input="center_crop", seed 42): same matches, largest score difference
  stage3     1 and N (20) optimisation steps, ours vs the official style_transfer from the same inputs: relative
             latent difference, against a perturbation baseline (the official run from C15 perturbed by 1e-4)
  run        the whole pipeline in the engine's dtype with --styles styles at --size px: time per stage, peak
             memory, finite result, UNet calls against the official count, host syncs per step, weight bytes
  lora       with --lora: the UNet's output is changed while fused for a fast transfer and back afterwards
The official methods are run from the checkout's own source (benchmarks/official.py): nothing is copied.
Designed to finish in under 10 minutes on one GPU at 512 px with 5 styles and 150 steps. Exit status 1 on a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import json
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_spec = importlib.util.spec_from_file_location("sg_official", Path(__file__).with_name("official.py"))
official = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(official)


CHECKS = ("inversion", "regions", "matches", "stage3", "run", "lora")


@dataclasses.dataclass
class Check:
    name: str
    status: str  # "ok", "skipped", "FAILED"
    figures: dict
    note: str = ""

    def line(self) -> str:
        figures = ", ".join(f"{k} {_fmt(v)}" for k, v in self.figures.items())
        note = f" ({self.note})" if self.note else ""
        return f"{self.name:10s} {self.status}{note}{': ' + figures if figures else ''}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# ---- the official code, with a stand-in `self` ------------------------------------------------------------


class _NoAccelerator:
    """A stand-in for accelerate.Accelerator where accelerate is not installed (the CPU smoke run, float32 only).

    The official style_transfer casts the content latent to half even without mixed precision; a float32 UNet
    cannot take it, so the prepared UNet casts its floating inputs to its own dtype (the value stays the
    half-rounded one, as under accelerate's fp16 autocast)."""

    def __init__(self, mixed_precision: str = "no", **_: object) -> None:
        if mixed_precision != "no":
            raise RuntimeError("accelerate is not installed: the official fp16 run needs it (pip install accelerate)")
        self.device = None
        self.mixed_precision = mixed_precision

    def prepare(self, obj):
        import torch

        if isinstance(obj, torch.nn.Module):
            forward = obj.forward
            dtype = next(obj.parameters()).dtype

            def cast_forward(*args, **kwargs):
                args = [a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
                kwargs = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                          for k, v in kwargs.items()}
                return forward(*args, **kwargs)

            obj.forward = cast_forward  # on the official run's own UNet copy only
        return obj

    def backward(self, loss):
        loss.backward()


def _stub_missing(name: str, attrs: dict) -> None:
    """Register a stand-in module for an import the official utils.py makes but the checks never use."""
    top = name.split(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is not None:
        return
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        sys.modules.setdefault(sub, types.ModuleType(sub))
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)


def load_official(repo: Path, device) -> tuple[types.SimpleNamespace, type]:
    """The official utils and basic_module modules and a class holding the official StyleGallery methods."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    _stub_missing("torchvision.transforms", {"ToTensor": object})
    _stub_missing("matplotlib.pyplot", {})
    _stub_missing("matplotlib.colors", {})
    for parent, child in (("matplotlib", "pyplot"), ("matplotlib", "colors"), ("torchvision", "transforms")):
        if f"{parent}.{child}" in sys.modules and not hasattr(sys.modules[parent], child):
            setattr(sys.modules[parent], child, sys.modules[f"{parent}.{child}"])

    def module(name: str):
        text = official.official_source(repo, f"{name}.py")
        mod = types.ModuleType(f"official_{name}")
        exec(compile(text, f"<official {name}.py>", "exec"), mod.__dict__)  # noqa: S102
        return mod

    utils, basic = module("utils"), module("basic_module")
    source = official.official_source(repo, "pipeline.py")
    try:
        from accelerate import Accelerator as _Accelerate
    except ImportError:
        _Accelerate = None

    def Accelerator(mixed_precision: str = "no", **kwargs):  # noqa: N802
        # float32 runs use the stand-in (it casts the official half content latent for a float32 UNet)
        if mixed_precision == "no" or _Accelerate is None:
            return _NoAccelerator(mixed_precision, **kwargs)
        return _Accelerate(mixed_precision=mixed_precision, **kwargs)
    names = ["weighted_features", "forward_process", "feature_cluster", "gpu_kmeans", "silhouette_score_gpu",
             "merge_similar_clusters", "refine_with_depth", "update_clusters_with_mask", "extract_semantic_features",
             "match_content_style_clusters", "style_transfer", "get_style_loss", "extract_feature", "remove_style"]
    methods = {}
    import ast

    tree = ast.parse(source)
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "StyleGallery")
    body = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in names]
    for n in body:
        n.decorator_list = []  # torch.no_grad on get_depth etc.: not extracted
    class _Progress(list):  # the official loop calls pbar.set_postfix
        def set_postfix(self, *args, **kwargs):
            pass

    namespace = {"torch": torch, "np": np, "F": F, "device": device, "tqdm": lambda x, **_: _Progress(x),
                 "utils": utils,
                 "Transformer": basic.Transformer, "Accelerator": Accelerator, "Image": __import__("PIL.Image").Image,
                 "print": lambda *a, **k: None}
    del tqdm
    exec(compile(ast.Module(body=body, type_ignores=[]), "<official StyleGallery>", "exec"), namespace)  # noqa: S102
    for name in names:
        methods[name] = namespace[name]
    shim = type("OfficialStyleGallery", (), methods)
    return types.SimpleNamespace(utils=utils, basic=basic, namespace=namespace), shim


def official_self(shim: type, engine, unet=None):
    """A stand-in `self` for the official methods: our loaded models under the official attribute names."""
    import torch
    from diffusers import DDIMScheduler

    me = shim()
    me.unet = engine.sd.unet if unet is None else unet
    me.extractor = me.unet
    me.vae, me.text_encoder = engine.sd.vae, engine.sd.text_encoder
    me.scheduler = DDIMScheduler.from_config(engine.sd.scheduler.config)
    me.device = engine.device
    me.latent2image = lambda latent: latent.detach().clone()  # the checks compare latents, not pictures
    me.encode_prompt = lambda *a, **k: (engine.text_embedding.to(me.unet.dtype),)
    me.enable_vae_slicing = lambda: None
    me.maybe_free_model_hooks = lambda: None
    me.freeze = lambda: None

    def init(enable_gradient_checkpoint):  # the official init's casts, on the official run's own UNet copy only
        dtype = torch.float16 if me.accelerator.mixed_precision == "fp16" else torch.float32
        me.unet.to(me.device, dtype=dtype)
        me.extractor = me.unet

    me.init = init
    return me


# ---- inputs -------------------------------------------------------------------------------------------------


def pictures(size: int, n_styles: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The content and n style images at size x size (square: the official grid), from the gallery."""
    from stylegallery import images
    from stylegallery.config import ImageSettings

    settings = ImageSettings(size=size, aspect="square")
    gallery = REPO / "gallery"
    contents = sorted((gallery / "content").glob("*"))
    styles = sorted((gallery / "style").glob("*"))
    content = images.load(contents[0], settings)
    return content, [images.load(styles[i % len(styles)], settings) for i in range(n_styles)]


def _rel(a, b) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# ---- checks ---------------------------------------------------------------------------------------------------


def check_inversion(engine, image, off, shim) -> tuple[Check, dict]:
    import torch

    from stylegallery.engines.diffusion.inversion import ddim_invert, inversion_timesteps
    from stylegallery.regions import logistic_time_weights

    z0 = engine._encode(image)
    scheduler = type(engine.sd.scheduler).from_config(engine.sd.scheduler.config)
    steps = 15
    ours = ddim_invert(engine.sd.unet, z0, engine.text_embedding, engine.alphas_cumprod,
                       inversion_timesteps(scheduler, steps), list(logistic_time_weights(steps)))
    data = {"z0": z0, "f_mix": ours.f_mix, "c15": ours.latent}
    if shim is None:
        return Check("inversion", "skipped", {}, "no official checkout (--official)"), data
    me = official_self(shim, engine)
    with torch.no_grad():
        _, latents, f_mix = shim.forward_process(me, z0.to(engine.unet_dtype), engine.text_embedding.to(
            engine.unet_dtype), steps)
    data.update(official_f_mix=f_mix.float(), official_c15=latents[-1].float())
    figures = {"C15 rel diff": _rel(ours.latent, latents[-1]), "F_mix rel diff": _rel(ours.f_mix, f_mix)}
    ok = figures["C15 rel diff"] < 1e-2 and figures["F_mix rel diff"] < 1e-2
    return Check("inversion", "ok" if ok else "FAILED", figures), data


def check_regions(engine, data: dict, depth, off, shim, size: int) -> tuple[Check, np.ndarray | None]:
    import torch
    from sklearn.metrics import adjusted_rand_score

    from stylegallery import regions
    from stylegallery.config import RegionSettings

    grid = tuple(data["z0"].shape[2:])
    settings = RegionSettings(kmeans_init="random")
    f_mix = data.get("official_f_mix", data["f_mix"])
    ours = regions.segment(f_mix[0].permute(1, 2, 0).cpu().numpy(), data["z0"][0].permute(1, 2, 0).cpu().numpy(),
                           depth, settings)
    if shim is None:
        return Check("regions", "skipped", {"ours": int(ours.max()) + 1}, "no official checkout"), None
    if grid != (64, 64):
        return Check("regions", "skipped", {"ours": int(ours.max()) + 1},
                     f"the official feature_cluster assumes a 64x64 grid (512 px square), here {grid}"), None
    me = official_self(shim, engine)
    with torch.no_grad():
        mask, _ = shim.feature_cluster(me, f_mix.to(engine.device), data["z0"].to(engine.device),
                                       None if depth is None else np.asarray(depth, np.float32))
        mask = off.utils.remove_small_regions(mask, engine.device, min_size=20)
    theirs = np.asarray(mask.cpu().numpy() if hasattr(mask, "cpu") else mask).astype(np.int64) - 1
    figures = {"ours": int(ours.max()) + 1, "official": len(np.unique(theirs)),
               "adjusted Rand": float(adjusted_rand_score(theirs.ravel(), ours.ravel()))}
    return Check("regions", "ok", figures, "k-means starts differ (sklearn vs torch): compare, do not expect equal"), \
        regions.relabel(theirs)


def check_matches(engine, content, styles, labels, off, shim, workdir: Path) -> tuple[Check, list | None]:
    import torch

    from stylegallery import matching, regions
    from stylegallery.config import DiffusionSettings, MatchSettings
    from stylegallery.engines.diffusion.inversion import ddim_invert, inversion_timesteps
    from stylegallery.images import to_pil

    if shim is None or labels is None:
        return Check("matches", "skipped", {}, "needs the official checkout and region maps"), None
    d = DiffusionSettings(dino_input="center_crop")
    scheduler = type(engine.sd.scheduler).from_config(engine.sd.scheduler.config)
    steps = inversion_timesteps(scheduler, 15)
    weights = list(regions.logistic_time_weights(15))
    all_images = [content, *styles]
    features, label_maps, paths, tokens = [], [], [], []
    me = official_self(shim, engine)
    for i, image in enumerate(all_images):
        z0 = engine._encode(image)
        f_mix = ddim_invert(engine.sd.unet, z0, engine.text_embedding, engine.alphas_cumprod, steps, weights).f_mix
        features.append(f_mix)
        if i == 0:
            lab = labels
        else:
            lab = regions.segment(f_mix[0].permute(1, 2, 0).cpu().numpy(), z0[0].permute(1, 2, 0).cpu().numpy(),
                                  None, dataclasses.replace(regions.RegionSettings(), use_depth=False))
        label_maps.append(lab)
        path = workdir / f"image{i}.png"
        to_pil(image).save(path)
        paths.append(str(path))
        tokens.append(engine._tokens(image, d))
    settings = MatchSettings(statistics="random_transformer", assignment="argmax", seed=42)
    descriptors = [matching.describe_regions(lab, f[0].permute(1, 2, 0).cpu().numpy(), tok, settings)
                   for lab, f, tok in zip(label_maps, features, tokens)]
    ours = matching.match(descriptors[0], descriptors[1:], settings)
    namespace = off.namespace
    namespace["AutoModel"] = types.SimpleNamespace(from_pretrained=lambda *a, **k: engine.dino)
    namespace["AutoImageProcessor"] = types.SimpleNamespace(from_pretrained=lambda *a, **k: engine.dino_processor)
    style_dicts = [{"unet_feature": features[i], "mask": torch.from_numpy(label_maps[i]).to(engine.device),
                    "image": paths[i]} for i in range(1, len(all_images))]
    torch.manual_seed(42)
    with torch.no_grad():
        theirs = shim.match_content_style_clusters(me, features[0], torch.from_numpy(labels).to(engine.device),
                                                   paths[0], style_dicts)
    same = sum((m.style_image, m.style_region) == (theirs[m.content_region]["style_dict_index"],
                                                   theirs[m.content_region]["style_cluster"]) for m in ours)
    diff = max(abs(m.score - theirs[m.content_region]["similarity"]) for m in ours)
    status = "ok" if same == len(ours) else "FAILED"
    return Check("matches", status, {"same": f"{same}/{len(ours)}", "max score diff": diff}), ours


def check_stage3(engine, data: dict, labels: np.ndarray, style_data: list[dict], style_labels: list[np.ndarray],
                 matches, off, shim, step_counts: tuple[int, ...], dtype: str) -> Check:
    import torch

    from stylegallery.config import preset
    from stylegallery.engines.diffusion.latents import remove_style
    from stylegallery.types import Analysis

    if shim is None or matches is None:
        return Check("stage3", "skipped", {}, "needs the official checkout and matches")

    def analysis(d: dict) -> Analysis:
        return Analysis(image=np.zeros((8 * d["z0"].shape[2], 8 * d["z0"].shape[3], 3), np.float32),
                        cluster_features=np.zeros((*d["z0"].shape[2:], 1), np.float32),
                        merge_features=np.zeros((*d["z0"].shape[2:], 1), np.float32), depth=None,
                        tokens=np.zeros((1, 1, 1), np.float32), payload={"z0": d["z0"].cpu(), "c15": d["c15"].cpu()})

    figures = {}
    ok = True
    for n in step_counts:
        captured = {}
        real_decode = engine._decode
        engine._decode = lambda z: captured.setdefault("z", z.detach().clone()) is None or real_decode(z)
        try:
            settings = dataclasses.replace(preset("paper"), diffusion=dataclasses.replace(
                preset("paper").diffusion, steps=n, preview_every=10_000))
            list(engine.transfer(analysis(data), labels, [analysis(s) for s in style_data], style_labels, matches,
                                 settings))
        finally:
            engine._decode = real_decode
        ours = captured["z"]

        def official_run(c15):
            unet = copy.deepcopy(engine.sd.unet)
            me = official_self(shim, engine, unet)
            content = {"feature": data["z0"], "mask": torch.from_numpy(labels + 1), "C15": c15}
            styles = [{"feature": s["z0"], "mask": torch.from_numpy(lab + 1)} for s, lab in zip(style_data,
                                                                                                 style_labels)]
            cluster_matches = {m.content_region + 1: {"style_dict_index": m.style_image,
                                                      "style_cluster": m.style_region + 1} for m in matches}
            out = shim.style_transfer(me, content, styles, off.utils.Controller(self_layers=(10, 16)), cluster_matches,
                                      mixed_precision="fp16" if dtype == "float16" else "no", num_optimize_steps=n)
            del unet, me
            return out.float()

        theirs = official_run(data["c15"])
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(data["c15"].shape, generator=g).to(data["c15"].device)
        baseline = official_run(data["c15"] + 1e-4 * data["c15"].std() * noise)
        start = remove_style(data["c15"].float())
        moved = float((theirs - start).norm())
        figures[f"{n} step ours-official"] = float((ours - theirs).norm()) / moved
        figures[f"{n} step baseline"] = float((baseline - theirs).norm()) / moved
        figures[f"{n} step ours-official / latent norm"] = float((ours - theirs).norm() / theirs.norm())
        ok &= figures[f"{n} step ours-official"] <= 3 * figures[f"{n} step baseline"] + 1e-5
    return Check("stage3", "ok" if ok else "FAILED", figures,
                 "differences relative to how far the official run moved the latent")


def check_run(engine_settings, content, styles, steps: int, size: int) -> Check:
    import torch

    from stylegallery.config import ImageSettings, Settings, preset
    from stylegallery.pipeline import Pipeline

    base = preset("paper")
    settings = dataclasses.replace(base, engine="diffusion", image=ImageSettings(size=size, aspect="square"),
                                   diffusion=dataclasses.replace(engine_settings, steps=steps, preview_every=10_000))
    assert isinstance(settings, Settings)
    pipe = Pipeline()
    engine = pipe.engine("diffusion", settings)
    engine.reset_stats()
    engine.count_host_syncs = True
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = pipe(content, styles, settings)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    stats = engine.stats
    used = len({m.style_image for m in result.matches})
    iters = settings.diffusion.iters
    official_forwards = steps * (1 + used + iters)  # per step: content + each style, then iters forward/backward
    figures = {"wall s": wall, **{f"{k} s": v for k, v in result.timings.items()},
               "finite": bool(np.isfinite(result.image).all()),
               "UNet forwards (stage 3)": stats["unet_forward_transfer"],
               "official forwards": official_forwards,
               "UNet backwards": stats["unet_backward_transfer"], "official backwards": steps * iters,
               "UNet weights": {k.removeprefix("unet_weight_bytes_"): v for k, v in stats.items()
                                if k.startswith("unet_weight_bytes_")}}
    if cuda:
        figures["peak GB"] = torch.cuda.max_memory_allocated() / 1e9
        figures["host syncs / step"] = stats["host_syncs_transfer"] / max(1, stats["transfer_steps"])
    else:
        figures["host syncs / step"] = "n/a on CPU"
    ok = figures["finite"]
    return Check("run", "ok" if ok else "FAILED", figures, f"{len(styles)} styles ({used} matched), {steps} steps, "
                 f"{size} px, {settings.diffusion.dtype}")


def check_lora(engine, lora: str | None) -> Check:
    import torch

    from stylegallery.config import preset
    from stylegallery.engines.diffusion import DiffusionEngine
    from stylegallery.types import Match

    if lora is None:
        return Check("lora", "skipped", {}, "no --lora")
    with_lora = DiffusionEngine(engine.sd_model, engine.dino_model, None, device=str(engine.device),
                                dtype=str(engine.dtype).removeprefix("torch."), lora=lora)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).to(with_lora.device, with_lora.unet_dtype)
    emb = with_lora.text_embedding.to(with_lora.unet_dtype)

    def output():
        with torch.no_grad():
            return with_lora.sd.unet(z, 400, encoder_hidden_states=emb).sample.float()

    before = output()
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    from stylegallery.regions import logistic_time_weights

    analysis = with_lora.analyze(image, preset("fast"), logistic_time_weights(15))
    labels = np.zeros(analysis.grid_shape, np.int64)
    run = with_lora.transfer(analysis, labels, [analysis], [labels], [Match(0, 0, 0, 1.0, {})],
                             dataclasses.replace(preset("fast"), diffusion=dataclasses.replace(
                                 preset("fast").diffusion, steps=2, iters=1, preview_every=1)))
    next(run)
    fused = output()
    list(run)
    after = output()
    figures = {"fused change": float((fused - before).abs().max()),
               "after unfuse": float((after - before).abs().max())}
    ok = figures["fused change"] > 1e-3 and figures["after unfuse"] <= 1e-2 * max(figures["fused change"], 1e-6)
    return Check("lora", "ok" if ok else "FAILED", figures)


def _tiny_lora(folder: Path, sd: Path) -> str:
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    donor = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    torch.manual_seed(0)
    donor.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(donor))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return str(folder)


# ---- main --------------------------------------------------------------------------------------------------------


def run_checks(args: argparse.Namespace, emit: Callable[[str], None] = print) -> list[Check]:
    import torch

    from stylegallery.config import DiffusionSettings
    from stylegallery.engines.diffusion import DiffusionEngine

    work = Path(tempfile.mkdtemp(prefix="stylegallery-gpu-check-"))
    if args.tiny:
        from stylegallery.engines.diffusion.tiny import save_tiny_models

        paths = save_tiny_models(work / "tiny")
        args.sd, args.dino, args.depth = str(paths.sd), str(paths.dino), str(paths.depth)
        if args.lora is None and importlib.util.find_spec("peft") is not None:
            args.lora = _tiny_lora(work / "lora", paths.sd)
    elif args.random_weights:
        from stylegallery.engines.diffusion.tiny import real_size_models

        emit(f"real-size random models in {args.random_weights} (built there when absent, about a minute)")
        paths = real_size_models(Path(args.random_weights))
        args.sd, args.dino, args.depth = str(paths.sd), str(paths.dino), str(paths.depth)
    if not args.sd:
        raise SystemExit("error: give --sd/--dino/--depth model folders, --random-weights DIR or --tiny")
    repo = official.find_official(args.official)
    device = torch.device(args.device)
    checks: list[Check] = []

    def report(check: Check) -> None:
        checks.append(check)
        emit(check.line())

    t_load = time.perf_counter()
    # float16: the UNet resident in float16, as the official init casts it (the official run gets its own copy)
    resident = "dtype" if args.dtype == "float16" else "float32"
    engine = DiffusionEngine(args.sd, args.dino, args.depth, device=args.device, dtype=args.dtype, resident=resident)
    emit(f"models loaded in {time.perf_counter() - t_load:.1f} s on {device} ({args.dtype}); official checkout: "
         f"{repo or 'absent (official comparisons skipped)'}")
    off, shim = load_official(repo, device) if repo is not None and not args.skip_official else (None, None)
    content, styles = pictures(args.size, args.styles)
    if shim is not None:
        torch.manual_seed(0)
    check, data = check_inversion(engine, content, off, shim)
    report(check)
    depth = engine._depth(content, tuple(data["z0"].shape[2:])) if engine.depth is not None else None
    grid = tuple(data["z0"].shape[2:])
    if "regions" in args.checks:
        check, official_labels = check_regions(engine, data, depth, off, shim, args.size)
        report(check)
    else:  # planted halves, so stage 3 can still be compared
        official_labels = np.zeros(grid, np.int64)
        official_labels[:, grid[1] // 2:] = 1
    if "matches" in args.checks:
        check, matches = check_matches(engine, content, styles[:2], official_labels, off, shim, work)
        report(check)
    else:  # planted: content region r -> style r % 2, its region 1 - r % 2
        from stylegallery.types import Match

        matches = [Match(r, r % len(styles[:2]), 1 - r % 2, 1.0, {}) for r in range(int(official_labels.max()) + 1)]
    if "stage3" not in args.checks:
        pass
    elif matches is not None:
        style_data, style_labels = [], []
        for image in styles[:2]:
            z0 = engine._encode(image)
            style_data.append({"z0": z0, "c15": z0})
        from stylegallery import regions

        for i in range(len(style_data)):
            used = {m.style_region for m in matches if m.style_image == i}
            lab = np.zeros(tuple(data["z0"].shape[2:]), np.int64)
            for r in sorted(used):  # planted stripes: each matched style region gets cells
                lab[:, r::max(1, len(used) + 1)] = r
            style_labels.append(lab)
        del regions
        report(check_stage3(engine, data, official_labels, style_data, style_labels, matches, off, shim,
                            tuple(args.compare_steps), args.dtype))
    else:
        report(Check("stage3", "skipped", {}, "needs the official checkout and matches"))
    del engine
    settings = DiffusionSettings(sd_model=args.sd, dino_model=args.dino, depth_model=args.depth, device=args.device,
                                 dtype=args.dtype)
    if "run" in args.checks:
        report(check_run(settings, content, styles, args.steps, args.size))
    if "lora" not in args.checks:
        pass
    elif args.lora:
        report(check_lora(DiffusionEngine(args.sd, args.dino, None, device=args.device, dtype=args.dtype), args.lora))
    else:
        report(Check("lora", "skipped", {}, "no --lora"))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd")
    parser.add_argument("--dino")
    parser.add_argument("--depth")
    parser.add_argument("--official",
                        help=f"checkout (or bare git dir) of iiiiiiiword/StyleGallery; else ${official.ENV}")
    parser.add_argument("--lora")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--styles", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--compare-steps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 20])
    parser.add_argument("--skip-official", action="store_true", help="run only our side (e.g. random weights)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run on tiny random models")
    parser.add_argument("--random-weights", metavar="DIR", help="real-size random models (built into DIR if empty)")
    parser.add_argument("--json", metavar="PATH", help="also write the checks as JSON")
    parser.add_argument("--checks", type=lambda s: set(s.split(",")), default=set(CHECKS),
                        help=f"comma-separated subset of {','.join(CHECKS)} (inversion always runs: the others use "
                        "its latents); without regions/matches, stage3 uses planted regions and matches")
    args = parser.parse_args(argv)
    size_given = args.size is not None
    args.size = args.size or 512
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.dtype is None:
        args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    if args.tiny:  # small and quick: 2 styles, 3 steps, 1 and 2 compared steps, 128 px unless --size is given
        args.styles, args.steps, args.compare_steps = min(args.styles, 2), min(args.steps, 3), [1, 2]
        args.size = args.size if size_given else 128
    t0 = time.perf_counter()
    with contextlib.ExitStack():
        checks = run_checks(args)
    print(f"total {time.perf_counter() - t0:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(c) for c in checks], indent=1, default=str))
    return 1 if any(c.status == "FAILED" for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())

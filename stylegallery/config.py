"""Settings of every stage, as frozen dataclasses holding the paper's defaults.

Each field's comment names where the value comes from (research/paper.md section, "code" for the
official repository's defaults) and its valid range. Change settings with `dataclasses.replace`;
`__post_init__` rejects invalid values with a `ValueError` naming the field.

Deviations from the official code are named settings; the faithful value is the default unless the
official behaviour is a plain bug (then the faithful value stays available, see README "Deviations").
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from stylegallery.engines import ENGINES  # the engine registry (it imports nothing of the library)


EngineName = str  # "auto" or a key of stylegallery.engines.ENGINES (the registry: no engine is named here)
PresetName = Literal["paper", "fast", "hyper"]
MergeRule = Literal["official", "union_find"]

PRESETS: tuple[str, ...] = ("paper", "fast", "hyper")
# presets whose stage 3 runs on the UNet with the LoRA fused (demo_accelerate.py modes "lcm" and "hyper")
LORA_PRESETS: tuple[str, ...] = ("fast", "hyper")

DEFAULT_SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_DINO_MODEL = "facebook/dinov2-base"
# Small is Apache-2.0; the official code uses ViT-L, whose weights (Depth-Anything-V2-Large-hf) are CC-BY-NC-4.0:
# opt in with depth_model=LARGE_DEPTH_MODEL (--depth-model) where non-commercial use is fine.
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
LARGE_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Large-hf"


BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int, name: str = "size") -> int:
    """A byte count from "1500000000", "1.5GB", "512MB" or "2GiB" (case and spaces ignored; KB/MB/GB/TB are
    powers of 10, KiB/MiB/GiB/TiB powers of 2). `name` labels the value in the ValueError."""
    if isinstance(text, int) and not isinstance(text, bool):
        number, unit = float(text), ""
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", str(text))
        number, unit = (float(found[1]), found[2].lower()) if found else (math.nan, "?")
    if unit not in BYTE_UNITS or not math.isfinite(number) or number < 0:
        raise ValueError(f"{name}={text!r} is invalid: expected a byte count such as 1500000000, 1.5GB, 512MB or "
                         "2GiB")
    return int(round(number * BYTE_UNITS[unit]))


def _check(cond: bool, name: str, value: object, expect: str) -> None:
    if not cond:
        raise ValueError(f"{name}={value!r} is invalid: expected {expect}")


def knob(default: float, low: float, high: float) -> Any:
    """A field a person can set at a door (page, CLI), with its valid range: the one place that range lives.

    `knob_range` reads it back (the page's sliders, the CLI's messages); `_check_knobs` enforces it."""
    return field(default=default, metadata={"range": (low, high)})


def knob_range(settings: object, name: str) -> tuple[float, float]:
    """(low, high) of the knob `name` of a settings dataclass (class or instance)."""
    fields = {f.name: f for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    if name not in fields or "range" not in fields[name].metadata:
        raise KeyError(f"{getattr(settings, '__name__', type(settings).__name__)}.{name} is not a knob with a range")
    return fields[name].metadata["range"]


def _check_knobs(settings: object) -> None:
    """Every knob of `settings` within its range (integers where the default is one)."""
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        if "range" not in f.metadata:
            continue
        low, high = f.metadata["range"]
        value = getattr(settings, f.name)
        whole = isinstance(f.default, int) and not isinstance(f.default, bool)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if whole:
            ok = ok and isinstance(value, int)
        shown = f"{'an integer' if whole else 'a number'} in {_num(low)}..{_num(high)}"
        _check(ok, f.name, value, shown)


def _num(value: float) -> str:
    return "2^32-1" if value == 2**32 - 1 else f"{value:g}"


@dataclass(frozen=True)
class ImageSettings:
    size: int = knob(512, 64, 2048)  # long side of the working image in px (paper 2.2 uses 512x512); 64..2048
    multiple: int = 8  # sides rounded to a multiple of this (8 = SD latent factor); 1..64
    max_input_pixels: int = 40_000_000  # larger decoded inputs are refused (decompression bombs); >= 1
    min_side: int = 32  # smaller inputs are refused; >= 1
    # "keep": the long side at `size`, aspect ratio kept (deviation: any aspect); "square": every image resized
    # to size x size, the official squash (2.2 code resizes everything to 512x512; the result is square too)
    aspect: Literal["keep", "square"] = "keep"

    def __post_init__(self) -> None:
        _check_knobs(self)
        _check(isinstance(self.multiple, int) and 1 <= self.multiple <= 64, "multiple", self.multiple, "1..64")
        _check(self.max_input_pixels >= 1, "max_input_pixels", self.max_input_pixels, ">= 1")
        _check(self.min_side >= 1, "min_side", self.min_side, ">= 1")
        _check(self.aspect in ("keep", "square"), "aspect", self.aspect, "'keep' or 'square'")


@dataclass(frozen=True)
class RegionSettings:
    """Stage 1, semantic region segmentation (paper 2.1-2.2)."""

    time_slope: float = 5.0  # d(t) = 1/(1+exp(slope*(t/T - inflection))) (2.1); > 0
    time_inflection: float = 0.7  # inflection of d(t) (2.1); 0..1
    pca_dims: int = 60  # PCA components before k-means (2.2 code); 1..512
    k_min: int = 2  # smallest k tried (2.2 code); >= 2
    k_max: int = knob(10, 2, 32)  # the cluster upper bound K (2.1); k_min..32
    n_init: int = 10  # k-means restarts per k (2.2 code); >= 1
    max_iter: int = 64  # k-means iterations (2.2 code); >= 1
    tol: float = 1e-4  # k-means tolerance (2.2 code); >= 0
    # k-means initial centres: "k-means++" (scikit-learn's seeding, deviation) or "random" (random data points, as
    # the official gpu_kmeans, 2.2 code); both keep the lowest-inertia of n_init runs
    kmeans_init: Literal["k-means++", "random"] = "k-means++"
    silhouette_sample: int = 5000  # points used for the silhouette (2.2 code); >= 100
    merge_threshold: float = 0.85  # merge clusters whose mean merge-feature L2 distance is below (2.2); >= 0
    # how close pairs become merges, in the merge and the depth re-merge (2.2): "official" maps j to the largest
    # close i < j and follows chains (merge_similar_clusters, faithful; not transitive); "union_find" joins every
    # close pair transitively (deviation)
    merge_rule: MergeRule = "official"
    use_depth: bool = True  # depth split and re-merge (2.2 code default True)
    depth_split_span: float = 0.75  # split a cluster whose depth P95-P05 >= this (2.2); 0..1
    depth_min_cells: int = 20  # only clusters with at least this many cells are split (2.2 code); >= 1
    remerge_threshold: float = 0.35  # re-merge below this merge-feature distance... (2.2); >= 0
    remerge_depth: float = 0.3  # ...and below this mean-depth difference (2.2); 0..1
    min_region_cells: int = 20  # connected components under this are absorbed by a neighbour (2.2); >= 1
    sam_merge_threshold: float = 0.5  # merge SAM base regions below this merge-feature distance (2.2 code); >= 0
    seed: int = 42  # k-means / sampling seed (2.2 code); >= 0

    def __post_init__(self) -> None:
        _check(self.time_slope > 0, "time_slope", self.time_slope, "> 0")
        _check(0 <= self.time_inflection <= 1, "time_inflection", self.time_inflection, "0..1")
        _check(1 <= self.pca_dims <= 512, "pca_dims", self.pca_dims, "1..512")
        _check(self.k_min >= 2, "k_min", self.k_min, ">= 2")
        _check_knobs(self)
        _check(self.k_min <= self.k_max <= 32, "k_max", self.k_max, f"{self.k_min}..32")
        _check(self.n_init >= 1, "n_init", self.n_init, ">= 1")
        _check(self.max_iter >= 1, "max_iter", self.max_iter, ">= 1")
        _check(self.tol >= 0, "tol", self.tol, ">= 0")
        _check(self.kmeans_init in ("k-means++", "random"), "kmeans_init", self.kmeans_init,
               "'k-means++' or 'random'")
        _check(self.silhouette_sample >= 100, "silhouette_sample", self.silhouette_sample, ">= 100")
        _check(self.merge_threshold >= 0, "merge_threshold", self.merge_threshold, ">= 0")
        _check(self.merge_rule in ("official", "union_find"), "merge_rule", self.merge_rule,
               "'official' or 'union_find'")
        _check(0 <= self.depth_split_span <= 1, "depth_split_span", self.depth_split_span, "0..1")
        _check(self.depth_min_cells >= 1, "depth_min_cells", self.depth_min_cells, ">= 1")
        _check(self.remerge_threshold >= 0, "remerge_threshold", self.remerge_threshold, ">= 0")
        _check(0 <= self.remerge_depth <= 1, "remerge_depth", self.remerge_depth, "0..1")
        _check(self.min_region_cells >= 1, "min_region_cells", self.min_region_cells, ">= 1")
        _check(self.sam_merge_threshold >= 0, "sam_merge_threshold", self.sam_merge_threshold, ">= 0")
        _check(self.seed >= 0, "seed", self.seed, ">= 0")


@dataclass(frozen=True)
class MatchSettings:
    """Stage 2, clustered region matching (paper 3.1-3.2)."""

    w_statistical: float = 0.25  # lambda_1 (3.1); >= 0
    w_semantic: float = 1.0  # lambda_2 (3.1); >= 0
    w_positional: float = 0.125  # lambda_3 (3.1); >= 0
    # "random_transformer" reproduces the official random-init 8-layer aggregation (3.2a, faithful);
    # "moments" uses the plain mean/variance of the region's features (a deviation, no torch needed);
    # "auto": the engine's choice (diffusion: random_transformer; classic: moments).
    statistics: Literal["auto", "random_transformer", "moments"] = "auto"
    block_size: int = 32  # px of a semantic block at 512 px (3.2b: 16x16 blocks of 32x32); >= 1
    block_min_pixels: int = 10  # a block is kept if more than this many of its px are in the region (3.2b); >= 0
    # a region with exactly one kept block: "mean" uses that block's token (deviation: the official quirk is a bug);
    # "zero" gives it a zero semantic descriptor, semantic similarity 0 with everything (official, 3.2b code)
    single_block: Literal["mean", "zero"] = "mean"
    # "argmax": every content region takes the best pooled style region (3.2, faithful, many-to-one);
    # "balanced": a usage penalty spreads content regions over distinct style regions (deviation);
    # "auto": the engine's choice (diffusion: argmax; classic: balanced).
    assignment: Literal["auto", "argmax", "balanced"] = "auto"
    usage_penalty: float = 0.15  # score subtracted per earlier use of a style region ("balanced"); >= 0
    # score subtracted per earlier use of the same style IMAGE ("balanced"): with at least as many content regions as
    # styles, every chosen style gets used unless another is better by more than this; >= 0
    image_penalty: float = 0.1
    seed: int = 42  # seed of the random aggregation transformer (3.2a); >= 0

    def __post_init__(self) -> None:
        for name in ("w_statistical", "w_semantic", "w_positional", "usage_penalty", "image_penalty"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        _check(self.statistics in ("auto", "random_transformer", "moments"), "statistics", self.statistics,
               "'auto', 'random_transformer' or 'moments'")
        _check(self.assignment in ("auto", "argmax", "balanced"), "assignment", self.assignment,
               "'auto', 'argmax' or 'balanced'")
        _check(self.block_size >= 1, "block_size", self.block_size, ">= 1")
        _check(self.block_min_pixels >= 0, "block_min_pixels", self.block_min_pixels, ">= 0")
        _check(self.single_block in ("mean", "zero"), "single_block", self.single_block, "'mean' or 'zero'")
        _check(self.seed >= 0, "seed", self.seed, ">= 0")


@dataclass(frozen=True)
class DiffusionSettings:
    """The diffusion engine: models, inversion (2.2) and latent optimisation (4.2)."""

    sd_model: str = DEFAULT_SD_MODEL  # hub id or local folder of an SD 1.5-layout pipeline
    dino_model: str = DEFAULT_DINO_MODEL  # hub id or local folder of a DINOv2 model
    depth_model: str | None = DEFAULT_DEPTH_MODEL  # hub id or local folder; None disables depth
    lora: str | None = None  # LoRA fused for stage 3 of the "fast" (LCM-LoRA) and "hyper" (Hyper-SD) presets
    # hub id or local folder of a SAM model (facebook/sam-vit-*, Apache-2.0): its automatic masks replace k-means as
    # the base map of stage 1 for every image (the official SAM path, 2.2 code); None: k-means (the paper's default)
    sam_model: str | None = None
    sam_pred_iou_thresh: float = 0.98  # SAM masks kept above this predicted IoU (official generator); 0..1
    sam_stability_thresh: float = 0.95  # ...and at or above this stability score (official generator); 0..1
    inversion_steps: int = 15  # DDIM inversion steps T (2.2); 1..100
    steps: int = knob(150, 1, 1000)  # optimisation timesteps N (4.2); 1..1000
    iters: int = 1  # Adam steps per timestep (4.2); 1..10
    lr: float = 0.05  # Adam learning rate eta (4.1); > 0
    content_weight: float = knob(0.26, 0.0, 10.0)  # lambda_c (4.1; demo.py 0.26, app 0.24); 0..10
    temperature: float = 1.5  # attention temperature on Q in the regional style loss (4.2); > 0
    # "zero" multiplies masked Q/K/V by zero (faithful, 4.2); "exclude" drops masked keys from the softmax
    # (the clean variant the authors did not test).
    mask_mode: Literal["zero", "exclude"] = "zero"
    # self-attention layers of the loss, by module name (4.2: up_blocks 2 and 3, forward idx 10-15)
    layers: tuple[str, ...] = ("up_blocks.2.", "up_blocks.3.")
    scheduler: Literal["ddim", "lcm", "euler_trailing"] = "ddim"  # timestep list of stage 3 (4.2)
    # "full": DINOv2 sees the whole image resized to a 14-multiple grid (deviation: aligned blocks, any aspect);
    # "center_crop": the default processor's resize-256/crop-224 (faithful, misaligned, 3.2b).
    dino_input: Literal["full", "center_crop"] = "full"
    dino_grid: int = 16  # tokens on the long side for dino_input="full" (3.2b uses 16); 1..64
    # "official": the depth input's short side goes to 518 px (Depth-Anything-V2 infer_image, lower_bound) and the
    # prediction returns by bilinear align_corners=True (faithful, 2.2 code); "dpt": the transformers DPT
    # processor's "scale as little as possible" resize and align_corners=False (the earlier behaviour)
    depth_resize: Literal["official", "dpt"] = "official"
    # "content": styles whose working shape differs from the content's are resized (pixels) to the content's
    # working shape and VAE-encoded for stage 3, their region labels resized by nearest, so the reference pass
    # is one batched call (4.2; the official code squashes every image to 512x512: this is that behaviour
    # generalised to any aspect); "own": each style keeps its own shape, one reference call per distinct shape.
    style_fit: Literal["content", "own"] = "content"
    preview_every: int = 10  # stream a cheap latent preview every this many steps; >= 1
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # UNet dtype; inversion stays float32
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "mps"
    # where the UNet weights live (DiffusionEngine): "dtype" stores them in `dtype` (as the official fp16 UNet),
    # "float32" keeps float32 weights under autocast, "auto" is "dtype" on CUDA and "float32" elsewhere
    resident: Literal["auto", "float32", "dtype"] = "auto"

    def __post_init__(self) -> None:
        _check(bool(self.sd_model), "sd_model", self.sd_model, "a hub id or a folder")
        _check(self.sam_model is None or bool(self.sam_model), "sam_model", self.sam_model,
               "None or a hub id or a folder")
        _check(0 <= self.sam_pred_iou_thresh <= 1, "sam_pred_iou_thresh", self.sam_pred_iou_thresh, "0..1")
        _check(0 <= self.sam_stability_thresh <= 1, "sam_stability_thresh", self.sam_stability_thresh, "0..1")
        _check(self.resident in ("auto", "float32", "dtype"), "resident", self.resident,
               "'auto', 'float32' or 'dtype'")
        _check(1 <= self.inversion_steps <= 100, "inversion_steps", self.inversion_steps, "1..100")
        _check_knobs(self)
        _check(1 <= self.iters <= 10, "iters", self.iters, "1..10")
        _check(self.lr > 0, "lr", self.lr, "> 0")
        _check(self.temperature > 0, "temperature", self.temperature, "> 0")
        _check(self.mask_mode in ("zero", "exclude"), "mask_mode", self.mask_mode, "'zero' or 'exclude'")
        _check(len(self.layers) > 0, "layers", self.layers, "at least one layer name prefix")
        _check(self.scheduler in ("ddim", "lcm", "euler_trailing"), "scheduler", self.scheduler,
               "'ddim', 'lcm' or 'euler_trailing'")
        _check(self.dino_input in ("full", "center_crop"), "dino_input", self.dino_input, "'full' or 'center_crop'")
        _check(1 <= self.dino_grid <= 64, "dino_grid", self.dino_grid, "1..64")
        _check(self.depth_resize in ("official", "dpt"), "depth_resize", self.depth_resize, "'official' or 'dpt'")
        _check(self.style_fit in ("content", "own"), "style_fit", self.style_fit, "'content' or 'own'")
        _check(self.preview_every >= 1, "preview_every", self.preview_every, ">= 1")
        _check(self.dtype in ("float32", "float16", "bfloat16"), "dtype", self.dtype,
               "'float32', 'float16' or 'bfloat16'")
        _check(self.device == "cpu" or self.device == "mps" or self.device.startswith("cuda"), "device",
               self.device, "'cpu', 'cuda', 'cuda:N' or 'mps'")


@dataclass(frozen=True)
class ClassicSettings:
    """The weight-free engine: Elad-Milanfar texture optimisation restricted by region (research/classic.md)."""

    grid_cell: int = 8  # px per feature-grid cell (the "latent" grid of the classic engine); 4..32
    content_weight: float = knob(1.0, 0.0, 10.0)  # scale of the content-fusion weight map W; 0 = all style .. 10
    face_boost: float = knob(2.0, 0.0, 10.0)  # extra content weight on detected faces; 0 (off)..10
    scales: int = 3  # pyramid levels L; 1..5
    patch_sizes: tuple[int, ...] = (33, 21, 13, 9)  # coarse-to-fine patch sizes
    # I_alg per patch size (Elad-Milanfar use 3; 2 looked the same on the dev images in 60% of the time); 1..20
    iterations: int = knob(2, 1, 20)
    irls_steps: int = 2  # robust-aggregation IRLS steps (the ports use 3-10; 2 gave the same results); 1..10
    robust_r: float = 0.8  # exponent r of the robust energy; 0.1..2
    pca_dims: int = 24  # PCA dims of the patch search; 4..128
    init_noise: float = 50 / 255  # sigma of the initial noise; 0..1
    denoise_sigma_s: float = 5.0  # edge-preserving filter spatial sigma; 0 disables
    denoise_sigma_r: float = 0.2  # edge-preserving filter range sigma; 0..1
    max_db: int = 4096  # style patches kept per region database (random subset, seeded); 256..65536
    # k-means restarts of stage 1 on the classic features (replaces RegionSettings.n_init for this engine: its
    # 11-dim features converge in fewer restarts than F_mix; 3 gives the same regions in half the time); 1..20
    kmeans_restarts: int = 3
    # points of stage 1's silhouette on the classic features (replaces RegionSettings.silhouette_sample, 5000, which
    # covers all 4096 cells of a 512 px image): 2048 gave the same regions on 37 of 39 dev images, stage 1 38%
    # faster; 100..20000
    silhouette_sample: int = 2048
    # fewest regions stage 1 may pick on the classic features (raises RegionSettings.k_min, up to k_max): on
    # hand-made features the silhouette favours k=2 (e.g. "sky" vs "everything else"), too few for several
    # styles to show; the merge rule still joins regions of the same colour; 2..32
    min_regions: int = 3
    # share of each region's mean lightness that the per-region colour steps take from the style (1 = Elad-Milanfar's
    # full match): 0.25 keeps most of the content's light-and-dark layout between regions (a light sky and dark ground
    # matched to two dark style regions stay apart); hue, saturation and the style's light-dark texture within each
    # region come in full; 0..1
    colour_luminance: float = 0.25

    def __post_init__(self) -> None:
        _check(4 <= self.grid_cell <= 32, "grid_cell", self.grid_cell, "4..32")
        _check_knobs(self)
        _check(1 <= self.scales <= 5, "scales", self.scales, "1..5")
        _check(len(self.patch_sizes) > 0 and all(3 <= p <= 65 for p in self.patch_sizes), "patch_sizes",
               self.patch_sizes, "one or more sizes in 3..65")
        _check(1 <= self.irls_steps <= 10, "irls_steps", self.irls_steps, "1..10")
        _check(0.1 <= self.robust_r <= 2, "robust_r", self.robust_r, "0.1..2")
        _check(4 <= self.pca_dims <= 128, "pca_dims", self.pca_dims, "4..128")
        _check(0 <= self.init_noise <= 1, "init_noise", self.init_noise, "0..1")
        _check(self.denoise_sigma_s >= 0, "denoise_sigma_s", self.denoise_sigma_s, ">= 0")
        _check(0 <= self.denoise_sigma_r <= 1, "denoise_sigma_r", self.denoise_sigma_r, "0..1")
        _check(256 <= self.max_db <= 65536, "max_db", self.max_db, "256..65536")
        _check(1 <= self.kmeans_restarts <= 20, "kmeans_restarts", self.kmeans_restarts, "1..20")
        _check(100 <= self.silhouette_sample <= 20000, "silhouette_sample", self.silhouette_sample, "100..20000")
        _check(2 <= self.min_regions <= 32, "min_regions", self.min_regions, "2..32")
        _check(0 <= self.colour_luminance <= 1, "colour_luminance", self.colour_luminance, "0..1")


@dataclass(frozen=True)
class NeuralSettings:
    """The neural engine: Ghiasi et al. 2017's arbitrary-style networks on CPU (research/neural.md)."""

    # share of the matched style in each region's style vector: S = s S_style + (1 - s) S_own, the interpolation of
    # Ghiasi et al. 2017 (section 4: 0 paints with the photo's own style vector, 1 is the full style); 0..1
    strength: float = knob(1.0, 0.0, 1.0)
    # per-region strength as ((content region, strength), ...), replacing `strength` for those regions; 0..1 each
    region_strengths: tuple[tuple[int, float], ...] = ()
    keep_colours: bool = False  # the photo's chroma (Lab a, b) under the painted lightness (Ghiasi et al. 2017 5.3)
    # detected faces keep the photo's skin tone and eye colour (its Lab a, b and half of its lightness); Haar cascade
    face_protect: bool = True
    # long side in px at which the network paints (its strokes scale with it): a larger output is painted at this
    # size and brought up to the photo's size with its edges restored from the photo (research/neural.md); 128..2048
    stroke_size: int = knob(768, 128, 2048)
    # paint at the content photo's own size (long side capped at 2048) when the pipeline gives it, else at the
    # working size (ImageSettings.size)
    full_size: bool = True
    feather: float = 12.0  # px (at 512 px) of the soft masks that blend the per-region passes without seams; 0..64
    # "passes": one transformer pass per distinct style vector, blended by the soft masks (each region exactly as the
    # network paints it with its vector); "map": ONE pass with a per-pixel map of style vectors feeding the
    # conditional instance norms (K times faster, seamless, but the norms' statistics are shared by all regions,
    # which shifts each region's palette, e.g. Turner's dark golds turn olive next to a Van Gogh sky)
    blend: Literal["passes", "map"] = "passes"
    # k-means restarts of stage 1 on the predictor's features (replaces RegionSettings.n_init): 1 restart and 1024
    # silhouette points picked the same k on 4 of 5 dev images (one more region on the fifth), stage 1 2.4x faster;
    # 1..20
    kmeans_restarts: int = 1
    # points of stage 1's silhouette (replaces RegionSettings.silhouette_sample); 100..20000
    silhouette_sample: int = 1024
    # fewest regions stage 1 may pick (raises RegionSettings.k_min, never above k_max); 2..32
    min_regions: int = 3
    pca_dims: int = 30  # PCA components of stage 1 on the predictor's features (research/neural.md); 1..512
    # long side in px at which style images are analysed and segmented (stages 1-2), when below the working size:
    # the predictor's training size, at which each painting's own vector S is taken anyway; 64..2048
    style_size: int = 256

    def __post_init__(self) -> None:
        _check_knobs(self)
        _check(isinstance(self.region_strengths, tuple) and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], int) and p[0] >= 0 and 0 <= p[1] <= 1
            for p in self.region_strengths), "region_strengths", self.region_strengths,
            "a tuple of (content region >= 0, strength 0..1) pairs")
        _check(0 <= self.feather <= 64, "feather", self.feather, "0..64")
        _check(self.blend in ("passes", "map"), "blend", self.blend, "'passes' or 'map'")
        _check(1 <= self.kmeans_restarts <= 20, "kmeans_restarts", self.kmeans_restarts, "1..20")
        _check(100 <= self.silhouette_sample <= 20000, "silhouette_sample", self.silhouette_sample, "100..20000")
        _check(2 <= self.min_regions <= 32, "min_regions", self.min_regions, "2..32")
        _check(1 <= self.pca_dims <= 512, "pca_dims", self.pca_dims, "1..512")
        _check(isinstance(self.style_size, int) and 64 <= self.style_size <= 2048, "style_size", self.style_size,
               "64..2048")

    def strength_of(self, region: int) -> float:
        """The strength of content region `region`: its entry in region_strengths, else `strength`."""
        return dict(self.region_strengths).get(region, self.strength)


@dataclass(frozen=True)
class Settings:
    """Everything one run needs. `engine` and `preset` pick the engine and its defaults."""

    engine: EngineName = "auto"
    preset: PresetName = "paper"
    seed: int = knob(42, 0, 2**32 - 1)  # stage-3 seed (classic: initial noise; diffusion draws no noise); 0..2^32-1
    image: ImageSettings = field(default_factory=ImageSettings)
    regions: RegionSettings = field(default_factory=RegionSettings)
    matching: MatchSettings = field(default_factory=MatchSettings)
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    classic: ClassicSettings = field(default_factory=ClassicSettings)
    neural: NeuralSettings = field(default_factory=NeuralSettings)

    def __post_init__(self) -> None:
        _check(self.engine == "auto" or self.engine in ENGINES, "engine", self.engine, " | ".join(("auto", *ENGINES)))
        _check(self.preset in PRESETS, "preset", self.preset, " | ".join(PRESETS))
        _check_knobs(self)


def preset(name: PresetName, **overrides: object) -> Settings:
    """Settings for a named preset, with top-level field overrides.

    "paper": the official demo.py defaults (150 steps of DDIM timesteps, 1 iteration, lr 0.05, content 0.26).
    "fast": demo_accelerate.py mode "lcm" (its default): 28 steps x 3 iterations of LCMScheduler timesteps,
    lr 0.25, content weight 0.33; meant for LCM-LoRA SD 1.5 in `diffusion.lora`.
    "hyper": demo_accelerate.py mode "hyper": 28 steps x 3 iterations of EulerDiscreteScheduler timesteps with
    trailing spacing, lr 0.15, content weight 0.38; meant for the Hyper-SD15 4-step LoRA in `diffusion.lora`.
    """
    if name == "paper":
        base = Settings(preset="paper")
    elif name == "fast":
        base = Settings(
            preset="fast",
            diffusion=DiffusionSettings(steps=28, iters=3, lr=0.25, content_weight=0.33, scheduler="lcm"),
            classic=ClassicSettings(scales=2, patch_sizes=(21, 13, 9), iterations=2),
        )
    elif name == "hyper":
        base = Settings(
            preset="hyper",
            diffusion=DiffusionSettings(steps=28, iters=3, lr=0.15, content_weight=0.38, scheduler="euler_trailing"),
            classic=ClassicSettings(scales=2, patch_sizes=(21, 13, 9), iterations=2),
        )
    else:
        raise ValueError(f"preset={name!r} is invalid: expected one of {', '.join(PRESETS)}")
    return dataclasses.replace(base, **overrides) if overrides else base

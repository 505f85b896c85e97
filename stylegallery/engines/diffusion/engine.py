"""The diffusion engine: the paper's method on SD 1.5 + DINOv2 + Depth-Anything (paper 2.2, 3.2, 4.2).

Notation (code -> paper):
    z0            -> the clean VAE latent of an image (VAE mean x scaling factor), (1, 4, h, w)
    c15           -> C15, the DDIM-inverted content latent (2.2), start of stage 3
    f_mix         -> F_mix (2.1), the time-weighted up_blocks[2] features, Analysis.cluster_features
    z             -> the optimised latent z_{t-1} of 4.1, initialised as remove_style(C15)
    q_ref         -> Q_c of the clean content latent; k_ref, v_ref -> K_s, V_s of the clean style latents
    timesteps     -> the 150 DDIM timesteps 895..1 (4.2): they only choose which UNet features are read

Stage 3 per timestep t (official `style_transfer`): one no-grad UNet call on the batch [content z0,
style z0s] records Q_c and K_s, V_s (styles of another shape are first resized to the content's, see
DiffusionSettings.style_fit); then `iters` times: a UNet call on z records Q and the attention output,
loss = L_RSL + content_weight * L_GCL, one step of the Adam optimiser that persists over all t.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from stylegallery.config import (
    DEFAULT_DEPTH_MODEL,
    DEFAULT_DINO_MODEL,
    DEFAULT_SD_MODEL,
    LORA_PRESETS,
    DiffusionSettings,
    MatchSettings,
    Settings,
)
from stylegallery.engines.base import Engine
from stylegallery.engines.diffusion.attention import AttentionState, recording
from stylegallery.engines.diffusion.inversion import ddim_invert, inversion_timesteps
from stylegallery.engines.diffusion.latents import latent_preview, remove_style
from stylegallery.engines.diffusion.losses import (
    RegionIndex,
    content_loss,
    region_index,
    region_masks,
    regional_style_loss,
)
from stylegallery.engines.diffusion.models import (
    load_depth,
    load_dino,
    load_lora,
    load_sam,
    load_sd,
    stage3_timesteps,
)
from stylegallery.engines.diffusion.sam import sam_masks
from stylegallery.errors import Cancelled, EngineUnavailable, InputError
from stylegallery.types import Analysis, Match, TransferStep


logger = logging.getLogger(__name__)  # INFO: inversion progress (the CLI shows it; minutes per image on a CPU)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DiffusionEngine(Engine):
    """SD 1.5 features for stages 1-2 and the regional attention-distillation loop of stage 3.

    Models load once, in the constructor (ModelLoadError on a bad location). `device`/`dtype` are
    explicit: the VAE and the optimised latent stay float32; a float16/bfloat16 `dtype` runs the stage-3
    UNet calls under autocast with a GradScaler (float16). `resident` says where the UNet weights live:
    "dtype" stores them in `dtype` (as the official `init` casts the UNet to fp16: no float32 copy re-cast
    at every forward, about 1.7 GB less for SD 1.5; the inversion's UNet calls then run in `dtype` too, as
    demo_accelerate.py, with the latent update in float32); "float32" keeps float32 weights under autocast;
    "auto" is "dtype" on CUDA and "float32" elsewhere. With `sam_model`, `analyze` adds SAM's automatic masks
    (Analysis.masks) and stage 1 starts from their map instead of k-means (the official SAM path).

    `stats` counts since construction, flat for the benchmark: unet_forward_analyze,
    unet_forward_transfer, unet_backward_transfer, vae_encode, vae_decode, dino_calls, depth_calls,
    transfer_steps, sam_calls; unet_weight_bytes_<dtype> and weight_bytes_<dtype> (all models) of the resident
    weights; grad_scale (the GradScaler's last scale, float16 only); and, with `count_host_syncs` set on
    CUDA, host_syncs_transfer (synchronising calls inside the stage-3 loop, counted by
    torch.cuda.set_sync_debug_mode). `reset_stats()` zeroes the counts and re-reads the weight bytes.
    `notes(settings)` explains a run that ignores part of its settings (e.g. "fast" without a LoRA).
    """

    name = "diffusion"

    def __init__(
        self,
        sd_model: str = DEFAULT_SD_MODEL,
        dino_model: str = DEFAULT_DINO_MODEL,
        depth_model: str | None = DEFAULT_DEPTH_MODEL,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        lora: str | None = None,
        resident: Literal["auto", "float32", "dtype"] = "auto",
        sam_model: str | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is invalid: expected one of {', '.join(DTYPES)}")
        if resident not in ("auto", "float32", "dtype"):
            raise ValueError(f"resident={resident!r} is invalid: expected 'auto', 'float32' or 'dtype'")
        self.device = _check_device(device)
        self.dtype = DTYPES[dtype]
        self.sd_model, self.dino_model, self.depth_model, self.lora = sd_model, dino_model, depth_model, lora
        self.sam_model, self.resident = sam_model, resident
        self.sd = load_sd(sd_model, self.device)
        self.dino, self.dino_processor = load_dino(dino_model, self.device)
        self.depth, self.depth_processor = load_depth(depth_model, self.device) if depth_model else (None, None)
        self.lora_adapter = load_lora(self.sd.unet, lora) if lora else None
        self.sam = load_sam(sam_model, self.device) if sam_model else None  # (SamModel, processor)
        if resident == "auto":
            resident = "dtype" if self.device.type == "cuda" else "float32"
        if resident == "dtype" and self.dtype != torch.float32:
            self.sd.unet.to(self.dtype)  # LoRA layers included; fused/unfused in this dtype, as the official fp16 pipe
        self.unet_dtype = self.sd.unet.dtype
        self.text_embedding = self._empty_prompt_embedding()  # (1, 77, D), computed once
        self.alphas_cumprod = self.sd.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.count_host_syncs = False  # the benchmark sets it: counts syncs in the stage-3 loop (CUDA only)
        self.stats: Counter[str] = Counter()
        self._weight_stats()

    @classmethod
    def from_settings(cls, settings: Settings) -> DiffusionEngine:
        d = settings.diffusion
        return cls(d.sd_model, d.dino_model, d.depth_model, device=d.device, dtype=d.dtype, lora=d.lora,
                   resident=d.resident, sam_model=d.sam_model)

    @classmethod
    def load_key(cls, settings: Settings) -> Hashable:
        d = settings.diffusion
        return (d.sd_model, d.dino_model, d.depth_model, d.lora, d.device, d.dtype, d.resident, d.sam_model)

    def reset_stats(self) -> None:
        self.stats.clear()
        self._weight_stats()

    def _weight_stats(self) -> None:
        """unet_weight_bytes_<dtype> and weight_bytes_<dtype> (all loaded models) of the resident parameters."""
        models = [self.sd.unet, self.sd.vae, self.sd.text_encoder, self.dino, self.depth,
                  self.sam[0] if self.sam else None]
        for index, model in enumerate(m for m in models if m is not None):
            for tensor in [*model.parameters(), *model.buffers()]:
                name = str(tensor.dtype).removeprefix("torch.")
                size = tensor.numel() * tensor.element_size()
                self.stats[f"weight_bytes_{name}"] += size
                if index == 0:
                    self.stats[f"unet_weight_bytes_{name}"] += size

    # -- Engine interface ------------------------------------------------------------------------

    def analysis_key(self, settings: Settings) -> Hashable:
        d, r = settings.diffusion, settings.regions
        use_depth = r.use_depth and self.depth is not None
        return ("diffusion", self.sd_model, self.dino_model, self.depth_model if use_depth else None,
                d.inversion_steps, use_depth, d.depth_resize if use_depth else None, d.dino_input, d.dino_grid,
                settings.image.size,
                settings.image.multiple, r.time_slope, r.time_inflection,
                (self.sam_model, d.sam_pred_iou_thresh, d.sam_stability_thresh) if self.sam else None)

    def time_steps(self, settings: Settings) -> int:
        return settings.diffusion.inversion_steps

    def notes(self, settings: Settings) -> tuple[str, ...]:
        fast = settings.preset in LORA_PRESETS
        wanted = "LCM-LoRA" if settings.preset == "fast" else "Hyper-SD"
        if fast and self.lora_adapter is None:
            return (f"preset {settings.preset!r} runs without a LoRA (none given): its "
                    f"{settings.diffusion.scheduler!r} "
                    f"timesteps run on the plain SD 1.5 UNet, which stylises less than with {wanted}; give one "
                    "with --lora (DiffusionSettings.lora)",)
        if not fast and self.lora_adapter is not None:
            return (f"lora {self.lora!r} is loaded but not used: only presets 'fast' and 'hyper' fuse it, preset "
                    f"{settings.preset!r} runs the plain SD 1.5 UNet; use --preset fast (LCM-LoRA) or --preset hyper "
                    "(Hyper-SD), or drop the LoRA",)
        return ()

    def resolve_matching(self, matching: MatchSettings) -> MatchSettings:
        return dataclasses.replace(
            matching,
            statistics="random_transformer" if matching.statistics == "auto" else matching.statistics,
            assignment="argmax" if matching.assignment == "auto" else matching.assignment,
        )

    @torch.no_grad()
    def analyze(self, image: np.ndarray, settings: Settings, time_weights: np.ndarray,
                should_stop: Callable[[], bool] = lambda: False) -> Analysis:
        """Paper 2.2: z0, 15-step DDIM inversion -> F_mix and C15; depth (2.2); DINOv2 tokens (3.2b); with a SAM
        model, its automatic masks (2.2 code).

        `should_stop` is asked before every UNet call of the inversion and before depth, DINOv2 and SAM.
        """
        d = settings.diffusion
        image = _check_image(image)
        weights = np.asarray(time_weights, dtype=np.float64)
        if weights.shape != (d.inversion_steps,):
            raise ValueError(f"time_weights has shape {weights.shape}; expected ({d.inversion_steps},), one weight "
                             "per inversion step")
        # 1. Encode (float32: fp16 inversion gives NaNs)
        z0 = self._encode(image)  # (1, 4, h, w)
        grid = (int(z0.shape[2]), int(z0.shape[3]))
        # 2. Invert, capturing up_blocks[2]
        scheduler = type(self.sd.scheduler).from_config(self.sd.scheduler.config)
        timesteps = inversion_timesteps(scheduler, d.inversion_steps)
        height, width = image.shape[:2]

        def on_step(i: int, total: int) -> None:
            logger.info("stage 1: inversion step %d/%d of a %dx%d image", i, total, width, height)

        result = ddim_invert(self.sd.unet, z0, self.text_embedding, self.alphas_cumprod, timesteps,
                             [float(w) for w in weights], scheduler.config.num_train_timesteps, on_step, should_stop)
        self.stats["unet_forward_analyze"] += len(timesteps)
        # 3. Depth and semantic tokens
        _raise_if(should_stop, "the depth model")
        depth = (self._depth(image, grid, d.depth_resize) if settings.regions.use_depth and self.depth is not None
                 else None)
        _raise_if(should_stop, "DINOv2")
        tokens = self._tokens(image, d)
        masks = None
        if self.sam is not None:
            _raise_if(should_stop, "SAM")
            found = sam_masks(self.sam, image, pred_iou_thresh=d.sam_pred_iou_thresh,
                              stability_score_thresh=d.sam_stability_thresh)
            self.stats["sam_calls"] += 1
            masks = np.stack(found) if found else np.zeros((0, *image.shape[:2]), dtype=bool)  # (M, H, W)
        return Analysis(
            image=image,
            cluster_features=_to_grid(result.f_mix),
            merge_features=_to_grid(z0),
            depth=depth,
            tokens=tokens,
            payload={"z0": z0.cpu(), "c15": result.latent.cpu()},
            masks=masks,
        )

    def transfer(
        self,
        content: Analysis,
        content_labels: np.ndarray,
        styles: Sequence[Analysis],
        style_labels: Sequence[np.ndarray],
        matches: Sequence[Match],
        settings: Settings,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        source: np.ndarray | None = None,  # ignored: this engine paints at the working size
    ) -> Iterator[TransferStep]:
        """Paper 4.2. Checks the inputs now; the returned iterator runs the optimisation."""
        for name, analysis in [("content", content), *((f"style {j}", s) for j, s in enumerate(styles))]:
            if "z0" not in analysis.payload or "c15" not in analysis.payload:
                raise InputError(f"the {name} analysis has no SD latents: analyse it with the diffusion engine")
        if len(style_labels) != len(styles):
            raise InputError(f"{len(style_labels)} style label maps given for {len(styles)} style images")
        labels = [_check_labels(content_labels, content.grid_shape, "content")]
        labels += [_check_labels(lab, s.grid_shape, f"style {j}") for j, (lab, s) in
                   enumerate(zip(style_labels, styles))]
        for m in matches:
            if not 0 <= m.style_image < len(styles):
                raise InputError(f"match {m.content_region} -> style image {m.style_image}: there are "
                                 f"{len(styles)} style images")
            style_max = labels[1 + m.style_image].max()
            if not (0 <= m.content_region <= labels[0].max() and 0 <= m.style_region <= style_max):
                raise InputError(f"match {m.content_region} -> ({m.style_image}, {m.style_region}) names a region "
                                 "that is not in the label maps")
        return self._optimise(content, styles, labels, matches, settings, should_stop)

    # -- stage 3 ---------------------------------------------------------------------------------

    def _optimise(
        self,
        content: Analysis,
        styles: Sequence[Analysis],
        labels: list[np.ndarray],
        matches: Sequence[Match],
        settings: Settings,
        should_stop: Callable[[], bool],
    ) -> Iterator[TransferStep]:
        d = settings.diffusion
        unet, stats = self.sd.unet, self.stats
        fast = settings.preset in LORA_PRESETS  # the LoRA, when loaded, is fused only then (see `notes`)
        timesteps = stage3_timesteps(self.sd.scheduler.config, d.scheduler, d.steps)
        total = len(timesteps)
        size = content.image.shape[:2]

        # 1. Only the style images some match uses enter the reference batch; pairs use their compact index.
        used = sorted({m.style_image for m in matches})
        compact = {j: i for i, j in enumerate(used)}
        pairs = [(int(m.content_region), compact[m.style_image], int(m.style_region)) for m in matches]
        latents = [content.payload["z0"].to(self.device)]
        label_maps = [torch.from_numpy(labels[0]).to(self.device)]
        for j in used:
            z0, style_labels = styles[j].payload["z0"].to(self.device), torch.from_numpy(labels[1 + j]).to(self.device)
            if d.style_fit == "content" and z0.shape != latents[0].shape:  # encoded once per transfer
                z0, style_labels = self._fit_style(styles[j].image, style_labels, content.image.shape[:2],
                                                   content.grid_shape)
            latents.append(z0)
            label_maps.append(style_labels)
        n_regions = [int(labels[0].max()) + 1] + [int(labels[1 + j].max()) + 1 for j in used]  # before any resize
        groups = _shape_groups(latents)  # one batched reference call per latent size (one if sizes agree)
        # token indices of each region on each layer grid: built at the first step (one host sync per region and
        # grid), then reused, so the loop itself never calls .nonzero()
        mask_cache: dict[tuple[int, tuple[int, int]], RegionIndex] = {}

        def masks(index: int, grid: tuple[int, int]) -> RegionIndex:
            if (index, grid) not in mask_cache:
                mask_cache[index, grid] = region_index(region_masks(label_maps[index], grid, n_regions[index]))
            return mask_cache[index, grid]

        # 2. The optimised latent and its optimiser (one Adam over all timesteps, 4.2)
        z = remove_style(content.payload["c15"].to(self.device, torch.float32)).detach().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=d.lr)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        state = AttentionState()
        embedding = self.text_embedding.to(self.unet_dtype)
        latents = [latent.to(self.unet_dtype) for latent in latents]
        t_values = torch.tensor(timesteps, dtype=torch.float32, device=self.device)  # one copy, not one per step

        with self._fused_lora(fast), recording(unet, d.layers, state) as layers, self._sync_counter():
            for i in range(total):
                if should_stop():
                    raise Cancelled(f"transfer cancelled at step {i + 1} of {total}")
                t_value = t_values[i]
                # 3. No-grad reference pass: Q_c of the content, K_s and V_s of each used style
                state.mode = "record"
                per_image: list[list] = [[] for _ in latents]  # [image] -> records of each layer
                with torch.no_grad(), self._autocast():
                    for group in groups:
                        batch = torch.cat([latents[g] for g in group])  # (G, 4, h, w)
                        state.latent_hw = (int(batch.shape[2]), int(batch.shape[3]))
                        unet(batch, t_value, encoder_hidden_states=embedding.expand(len(group), -1, -1))
                        stats["unet_forward_transfer"] += 1
                        for b, g in enumerate(group):
                            per_image[g] = [_take(state.records[name], b) for name in layers]
                        state.clear()
                q_ref = [rec.q for rec in per_image[0]]
                k_ref = [[rec.k for rec in per_image[s]] for s in range(1, len(latents))]
                v_ref = [[rec.v for rec in per_image[s]] for s in range(1, len(latents))]
                style_masks = [[masks(s, rec.grid) for rec in per_image[s]] for s in range(1, len(latents))]
                # 4. `iters` gradient steps on z
                state.mode, state.latent_hw = "grad", (int(z.shape[2]), int(z.shape[3]))
                for _ in range(d.iters):
                    with self._autocast():
                        unet(z.to(self.unet_dtype), t_value, encoder_hidden_states=embedding)
                    stats["unet_forward_transfer"] += 1
                    records = [state.records[name] for name in layers]
                    q, out = [rec.q for rec in records], [rec.out for rec in records]
                    content_masks = [masks(0, rec.grid) for rec in records]
                    loss = regional_style_loss(q, out, k_ref, v_ref, content_masks, style_masks, pairs,
                                               d.temperature, d.mask_mode)
                    loss = loss + d.content_weight * content_loss(q, q_ref)
                    if loss.requires_grad:  # False only without matches and with content_weight 0
                        optimiser.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        stats["unet_backward_transfer"] += 1
                        scaler.step(optimiser)
                        scaler.update()
                    state.clear()
                    del records, q, out, loss
                stats["transfer_steps"] += 1
                del per_image, q_ref, k_ref, v_ref, style_masks
                state.mode = "off"
                if (i + 1) % d.preview_every == 0 and i + 1 < total:
                    yield TransferStep(step=i + 1, total=total, image=latent_preview(z, size).cpu().numpy())
        if should_stop():
            raise Cancelled(f"transfer cancelled at step {total} of {total}")
        if scaler.is_enabled():
            stats["grad_scale"] = float(scaler.get_scale())
        # 5. Decode the final latent with the VAE (float32)
        image = self._decode(z.detach())
        stats["vae_decode"] += 1
        del z, optimiser
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        yield TransferStep(step=total, total=total, image=image, final=True)

    # -- helpers ---------------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    @contextlib.contextmanager
    def _sync_counter(self) -> Iterator[None]:
        """With `count_host_syncs` on CUDA: count the synchronising calls of the stage-3 loop into
        stats["host_syncs_transfer"] (torch.cuda.set_sync_debug_mode "warn" warns once per sync)."""
        if not (self.count_host_syncs and self.device.type == "cuda"):
            yield
            return
        import warnings

        before = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode(before)
        self.stats["host_syncs_transfer"] += sum("synchroniz" in str(w.message) for w in caught)

    @contextlib.contextmanager
    def _fused_lora(self, fast: bool) -> Iterator[None]:
        """Fuse the LoRA into the UNet for a "fast"/"hyper" run only, and unfuse it afterwards (demo_accelerate.py)."""
        if not fast or self.lora_adapter is None:
            yield
            return
        unet = self.sd.unet
        unet.enable_adapters()
        unet.fuse_lora(adapter_names=[self.lora_adapter])
        try:
            yield
        finally:
            unet.unfuse_lora()
            unet.disable_adapters()

    def _fit_style(self, image: np.ndarray, labels: torch.Tensor, size: tuple[int, int],
                   grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """style_fit="content": the style image resized (bicubic) to the content's working size and VAE-encoded,
        its region labels nearest-resized to the content's grid, as the official 512x512 squash does (4.2)."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]  # (1, 3, H_s, W_s)
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        z0 = self._encode(x[0].permute(1, 2, 0).contiguous().numpy())  # (1, 4, h, w)
        resized = F.interpolate(labels[None, None].float(), size=grid, mode="nearest")[0, 0]  # (h, w)
        return z0, resized.round().long()

    def _empty_prompt_embedding(self) -> torch.Tensor:
        tokenizer = self.sd.tokenizer
        ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids  # (1, 77)
        with torch.no_grad():
            return self.sd.text_encoder(ids.to(self.device))[0].float()  # (1, 77, D)

    @torch.no_grad()
    def _encode(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(self.device) * 2 - 1  # (1, 3, H, W) in [-1, 1]
        z0 = self.sd.vae.encode(x).latent_dist.mean * self.sd.vae.config.scaling_factor  # (1, 4, h, w)
        self.stats["vae_encode"] += 1
        return z0.float()

    @torch.no_grad()
    def _decode(self, z: torch.Tensor) -> np.ndarray:
        x = self.sd.vae.decode(z.float() / self.sd.vae.config.scaling_factor).sample  # (1, 3, H, W)
        return ((x[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).float().cpu().numpy()  # (H, W, 3)

    @torch.no_grad()
    def _depth(self, image: np.ndarray, grid: tuple[int, int], resize: str = "official") -> np.ndarray:
        """Depth-Anything disparity (near = high) nearest-resized to the latent grid, min-max to [0, 1] (2.2).

        resize "official" (DiffusionSettings.depth_resize): the input's short side goes to the processor's 518 px
        (Depth-Anything-V2 `infer_image`: lower_bound resize, multiple of 14) and the prediction comes back with
        bilinear align_corners=True; "dpt": the DPT processor's "scale as little as possible" rule and
        align_corners=False. Either runs on the working image (the official code reads the original file).
        """
        processor = self.depth_processor
        patch = int(getattr(getattr(self.depth.config, "backbone_config", None), "patch_size", 14) or 14)
        target = _height_width(getattr(processor, "size", None)) or (518, 518)  # Depth-Anything-V2's 518 px
        official = resize == "official"
        size = depth_input_size(image.shape[0], image.shape[1], target, patch,
                                bool(getattr(processor, "keep_aspect_ratio", True)),
                                rule="lower_bound" if official else "closest")
        inputs = processor(images=_to_uint8(image), size={"height": size[0], "width": size[1]},
                           keep_aspect_ratio=False, ensure_multiple_of=1, return_tensors="pt")
        predicted = self.depth(pixel_values=inputs["pixel_values"].to(self.device)).predicted_depth  # (1, h', w')
        # official infer_image: bilinear with align_corners=True back to the image size
        full = F.interpolate(predicted[None], size=image.shape[:2], mode="bilinear", align_corners=official)
        depth = F.interpolate(full, size=grid, mode="nearest")[0, 0]  # (h, w)
        self.stats["depth_calls"] += 1
        lo, hi = depth.min(), depth.max()
        depth = (depth - lo) / (hi - lo) if hi > lo else torch.zeros_like(depth)
        return depth.float().cpu().numpy()

    @torch.no_grad()
    def _tokens(self, image: np.ndarray, d: DiffusionSettings) -> np.ndarray:
        """DINOv2 patch tokens (CLS and registers dropped) on a (gh, gw) grid (3.2b)."""
        patch = int(self.dino.config.patch_size)
        if d.dino_input == "center_crop":  # faithful: the processor's resize 256 / crop 224
            pixels = self.dino_processor(images=_to_uint8(image), return_tensors="pt")["pixel_values"]
        else:  # the whole image, aspect kept, dino_grid tokens on the long side
            height, width = image.shape[:2]
            gh = max(1, round(d.dino_grid * height / max(height, width)))
            gw = max(1, round(d.dino_grid * width / max(height, width)))
            x = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W)
            x = F.interpolate(x, size=(gh * patch, gw * patch), mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 1)
            mean = torch.tensor(self.dino_processor.image_mean, dtype=torch.float32)[None, :, None, None]
            std = torch.tensor(self.dino_processor.image_std, dtype=torch.float32)[None, :, None, None]
            pixels = (x - mean) / std
        gh, gw = pixels.shape[2] // patch, pixels.shape[3] // patch
        hidden = self.dino(pixel_values=pixels.to(self.device, torch.float32)).last_hidden_state  # (1, 1+R+gh*gw, D)
        skip = 1 + int(getattr(self.dino.config, "num_register_tokens", 0) or 0)
        self.stats["dino_calls"] += 1
        return hidden[0, skip:].reshape(gh, gw, -1).float().cpu().numpy()  # (gh, gw, D)


def depth_input_size(height: int, width: int, target: tuple[int, int], patch: int,
                     keep_aspect: bool = True, rule: Literal["closest", "lower_bound"] = "closest") -> tuple[int, int]:
    """The (h, w) input of the depth model for an image of (height, width) px (paper 2.2, Depth-Anything-V2).

    As DPT's processor: with `keep_aspect`, the one scale of (target / side) closer to 1 applies to both sides
    ("scale as little as possible"), else each side goes to its target; each side is then rounded to a
    multiple of `patch`, and here never below one patch (DPT's rounding gives 0 px for the short side of a
    very long image, e.g. 8x512, which the model cannot take).
    rule "lower_bound" is Depth-Anything-V2's `infer_image` (official code): the larger scale, so both sides
    reach their target, each side rounded to a multiple of `patch` and up where rounding would fall short.
    """
    if min(height, width, patch, *target) <= 0:
        raise ValueError(f"depth input of {width}x{height} px to {target[1]}x{target[0]} with patch {patch} is "
                         "invalid: every size must be positive")
    scale_h, scale_w = target[0] / height, target[1] / width
    if rule == "lower_bound":
        scale = max(scale_h, scale_w)

        def side(x: float, least: int) -> int:
            y = round(x / patch) * patch
            return int(math.ceil(x / patch) * patch) if y < least else int(y)

        return side(height * scale, target[0]), side(width * scale, target[1])
    if keep_aspect:
        scale_h = scale_w = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    return (max(patch, round(height * scale_h / patch) * patch), max(patch, round(width * scale_w / patch) * patch))


def _height_width(size: object) -> tuple[int, int] | None:
    """(height, width) of a processor's `size` (a dict or transformers' SizeDict), None if it has no such keys."""
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    height, width = get("height"), get("width")
    return (int(height), int(width)) if height and width else None


def _raise_if(should_stop: Callable[[], bool], before: str) -> None:
    if should_stop():
        raise Cancelled(f"analysis cancelled before {before}")


def _check_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable(f"device {device!r} is not available here (no CUDA device found): use device 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise EngineUnavailable(f"device {device!r} is not available here (no MPS device found): use device 'cpu'")
    return dev


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be an (H, W, 3) array, got {getattr(image, 'shape', type(image).__name__)}")
    if image.shape[0] % 8 or image.shape[1] % 8:
        raise InputError(f"image is {image.shape[1]}x{image.shape[0]} px; the diffusion engine needs sides that are "
                         "multiples of 8: load it with stylegallery.images.load")
    image = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise InputError("image values must be finite and in [0, 1]; load it with stylegallery.images.load")
    return image


def _check_labels(labels: np.ndarray, grid: tuple[int, int], name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != grid:
        raise InputError(f"{name} label map has shape {labels.shape}; expected the analysis grid {grid}")
    if labels.min() < 0:
        raise InputError(f"{name} label map has negative labels; expected 0..K-1")
    return labels.astype(np.int64)


def _shape_groups(latents: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, latent in enumerate(latents):
        groups.setdefault(tuple(latent.shape[1:]), []).append(index)
    return list(groups.values())


def _take(record, b: int):
    return dataclasses.replace(record, q=record.q[b:b + 1], k=record.k[b:b + 1], v=record.v[b:b + 1],
                               out=record.out[b:b + 1])


def _to_grid(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].permute(1, 2, 0).float().cpu().numpy().astype(np.float32)  # (1, C, h, w) -> (h, w, C)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255).round().clip(0, 255).astype(np.uint8)

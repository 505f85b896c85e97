"""Tiny random stand-ins of SD 1.5, DINOv2 and Depth-Anything-V2, for tests, the CLI test and benchmarks.

They keep the real block layout (SD 1.5: 4 down / 4 up blocks, cross-attention in the same blocks,
layers_per_block 2; the VAE downscales 8x) with tiny widths, are built from seeded configs, and are
saved with `save_pretrained` (safetensors) so that they load through the same `from_pretrained` path as
the real models. No weights are downloaded. Building and saving all three takes about a second.

    paths = save_tiny_models(Path("/tmp/tiny"))
    DiffusionEngine(sd_model=str(paths.sd), dino_model=str(paths.dino), depth_model=str(paths.depth))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class TinyModelPaths:
    sd: Path  # an SD 1.5-layout pipeline folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)
    dino: Path  # a Dinov2Model folder
    depth: Path  # a DepthAnythingForDepthEstimation folder


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character table (not importable from transformers 5).
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _tiny_tokenizer():
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in chars:
            vocab[ch + suffix] = len(vocab)  # 514 tokens: a character-level BPE without merges
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _save_sd(folder: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64),  # up_blocks[2] (the F_mix source) then has 32 channels
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000,
        max_position_embeddings=77, projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    scheduler = DDIMScheduler(  # the SD 1.5 scheduler values
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=_tiny_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def _dino_config(**extra):
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=32, num_attention_heads=4, mlp_ratio=2, image_size=56, patch_size=14, **extra)


def _save_dino(folder: Path, seed: int) -> None:
    from transformers import BitImageProcessor, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(_dino_config(num_hidden_layers=2)).save_pretrained(folder, safe_serialization=True)
    BitImageProcessor(  # facebook/dinov2-base's preprocessing
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)


def _save_depth(folder: Path, seed: int) -> None:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    torch.manual_seed(seed)
    backbone = _dino_config(num_hidden_layers=4, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16, head_hidden_size=8)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(  # Depth-Anything-V2-*-hf preprocessing, at 126 px instead of 518 to stay fast
        size={"height": 126, "width": 126}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False,
        resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)


def save_tiny_sam(folder: Path, seed: int = 3) -> Path:
    """A tiny random SAM (64 px input) with its image processor, saved for `models.load_sam`; returns `folder`."""
    from transformers import (
        SamConfig,
        SamImageProcessorPil,
        SamMaskDecoderConfig,
        SamModel,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    from stylegallery.engines.diffusion.models import quiet_libraries

    quiet_libraries()
    vision = SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                             image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64,
                             num_pos_feats=8)
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                   iou_head_hidden_dim=16)
    config = SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                       mask_decoder_config=decoder.to_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        SamModel(config).save_pretrained(folder, safe_serialization=True)
    processor = SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                  mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    processor.save_pretrained(folder)
    return Path(folder)


def save_tiny_models(root: Path, seed: int = 0) -> TinyModelPaths:
    """Build the three tiny random models and save them under `root` (sd/, dino/, depth/).

    Seeded, so two calls give identical weights; the caller's global torch RNG state is left untouched.
    """
    from stylegallery.engines.diffusion.models import quiet_libraries

    quiet_libraries()
    root = Path(root)
    paths = TinyModelPaths(sd=root / "sd", dino=root / "dino", depth=root / "depth")
    with torch.random.fork_rng(devices=[]):
        _save_sd(paths.sd, seed)
        _save_dino(paths.dino, seed + 1)
        _save_depth(paths.depth, seed + 2)
    return paths


def tiny_model_knobs(root: Path) -> dict[str, str]:
    """The tiny models saved under `root`, as the front desk's model knobs (`bench --tiny`, tests)."""
    paths = save_tiny_models(Path(root))
    return {"sd_model": str(paths.sd), "dino_model": str(paths.dino), "depth_model": str(paths.depth)}


def save_real_size_models(root: Path, seed: int = 0, dtype: str = "float16") -> TinyModelPaths:
    """SD 1.5, DINOv2-base and Depth-Anything-V2-Small at their real sizes, with random weights, under `root`.

    Built from the published configs (no download), saved as safetensors in `dtype` (float16 halves the 4.6 GB of
    float32), loadable by DiffusionEngine like real weights: for measuring speed, memory and call counts where no
    weights can be fetched (`bench --random-weights`). The results are noise, the costs are the real ones. The
    tokenizer is the tiny character-level one (the prompt is always empty). Takes about a minute and ~7 GB RAM.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import (
        BitImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        Dinov2Model,
        DPTImageProcessor,
    )

    from stylegallery.engines.diffusion.models import quiet_libraries

    quiet_libraries()
    torch_dtype = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    root = Path(root)
    paths = TinyModelPaths(sd=root / "sd", dino=root / "dino", depth=root / "depth")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # the defaults are SD 1.x's layout
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, vocab_size=49408,
            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1,
            pad_token_id=1,
        ))
        scheduler = DDIMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
        )
        pipe = StableDiffusionPipeline(
            vae=vae.to(torch_dtype), text_encoder=text_encoder.to(torch_dtype), tokenizer=_tiny_tokenizer(),
            unet=unet.to(torch_dtype), scheduler=scheduler, safety_checker=None, feature_extractor=None,
            image_encoder=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(paths.sd, safe_serialization=True)
        del pipe, unet, vae, text_encoder
        Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                                 patch_size=14, image_size=518)).to(torch_dtype).save_pretrained(
            paths.dino, safe_serialization=True)
        BitImageProcessor(
            size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True, resample=3,
            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        ).save_pretrained(paths.dino)
        backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                                patch_size=14, image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
        config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384,
                                     reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
                                     fusion_hidden_size=64, head_hidden_size=32, depth_estimation_type="relative")
        DepthAnythingForDepthEstimation(config).to(torch_dtype).save_pretrained(paths.depth, safe_serialization=True)
        DPTImageProcessor(
            size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False,
            resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        ).save_pretrained(paths.depth)
    return paths


def real_size_models(root: Path, dtype: str = "float16") -> TinyModelPaths:
    """The real-size random models under `root`, built there first when absent (see save_real_size_models)."""
    root = Path(root)
    paths = TinyModelPaths(sd=root / "sd", dino=root / "dino", depth=root / "depth")
    complete = all((p / name).exists() for p, name in ((paths.sd, "model_index.json"), (paths.dino, "config.json"),
                                                        (paths.depth, "config.json")))
    return paths if complete else save_real_size_models(root, dtype=dtype)


def real_size_model_knobs(root: Path) -> dict[str, str]:
    """The real-size random models under `root` (built there when absent), as the front desk's model knobs
    (`bench --random-weights DIR`)."""
    paths = real_size_models(Path(root))
    return {"sd_model": str(paths.sd), "dino_model": str(paths.dino), "depth_model": str(paths.depth)}


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tiny-models")
    print(save_tiny_models(target))

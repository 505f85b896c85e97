"""Small pure functions on SD latents: the stage-3 start latent and the cheap preview (paper 4.2).

Notation (code -> paper 4.2 / official code):
    remove_style(c15) -> the official `remove_style`: per-pixel z-score over the 4 channels of C15
    latent_preview(z) -> an approximate RGB of z without the VAE decoder (previews only)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# The widely used linear SD 1.x latent -> RGB approximation (rows: latent channels; columns: R, G, B),
# for latents already multiplied by the VAE scaling factor; the result is roughly in [-1, 1].
SD15_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


def remove_style(latent: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(z - mean_c z) / (std_c z + eps), statistics over the channel axis at each pixel. (B, 4, h, w)."""
    mean = latent.mean(dim=1, keepdim=True)  # (B, 1, h, w)
    std = latent.std(dim=1, keepdim=True)  # (B, 1, h, w), unbiased like torch's default in the official code
    return (latent - mean) / (std + eps)


def latent_preview(latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Approximate RGB of a (1, 4, h, w) latent at `size` = (H, W): (H, W, 3) float32 in [0, 1]."""
    matrix = latent.new_tensor(SD15_LATENT_RGB, dtype=torch.float32)  # (4, 3)
    rgb = torch.einsum("bchw,ck->bkhw", latent.detach().float(), matrix)  # (1, 3, h, w)
    rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)  # (1, 3, H, W)
    return ((rgb[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1)  # (H, W, 3)

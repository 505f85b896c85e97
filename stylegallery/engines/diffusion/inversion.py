"""DDIM inversion with feature capture: F_mix and C15 (paper 2.1-2.2, official `forward_process`).

Notation (code -> paper 2.1-2.2):
    z0            -> the clean VAE latent of the image (VAE mean x scaling factor), (1, 4, h, w)
    timesteps     -> t_i = 1, 67, ..., 925 for T = 15 (leading spacing, steps_offset 1), ascending
    weights       -> w_i = d(i) / sum_k d(k), i = 0 the least noisy step
    features      -> F_i, the output of `unet.up_blocks[2]` at step i, (1, C, h, w)
    f_mix         -> F_mix = sum_i w_i F_i (accumulated, never all T maps at once)
    latent        -> C15, the last inverted latent (t ~ 925 for T = 15)

The update is the hand-written one of the official code, evaluating the UNet at (z, t_i):
    z <- (z - sqrt(1 - a_prev) eps) sqrt(a_t) / sqrt(a_prev) + sqrt(1 - a_t) eps,  t_prev = max(0, t_i - 1000 // T)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from stylegallery.errors import Cancelled


@dataclass
class InversionResult:
    f_mix: torch.Tensor  # (1, C, h, w) float32
    latent: torch.Tensor  # (1, 4, h, w) float32, C_T


def inversion_timesteps(scheduler, steps: int) -> list[int]:
    """The ascending timesteps the inversion visits: the scheduler's `set_timesteps(steps)` list reversed."""
    scheduler.set_timesteps(steps)
    return [int(t) for t in reversed(scheduler.timesteps)]


def ddim_step_forward(
    z: torch.Tensor, eps: torch.Tensor, alpha_prev: torch.Tensor, alpha_t: torch.Tensor
) -> torch.Tensor:
    """One inversion step from t_prev to t (the official hand-written update)."""
    return (z - (1 - alpha_prev).sqrt() * eps) * alpha_t.sqrt() / alpha_prev.sqrt() + (1 - alpha_t).sqrt() * eps


@torch.no_grad()
def ddim_invert(
    unet,
    z0: torch.Tensor,
    text_embedding: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    weights: Sequence[float],
    num_train_timesteps: int = 1000,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> InversionResult:
    """Invert z0 along `timesteps`, capturing `unet.up_blocks[2]`'s output at each step into F_mix.

    The forward hook is removed before returning, even on error. The UNet runs in its own dtype, the update in z0's
    (float32).
    `on_step(i, T)`, if given, is called after step i (1-based) of T, for progress reports. `should_stop()`, if
    given, is asked before every UNet call: `Cancelled` is raised at once when it answers True.
    """
    if len(weights) != len(timesteps):
        raise ValueError(f"{len(weights)} time weights given for {len(timesteps)} inversion steps; "
                         "pass one weight per step")
    stride = num_train_timesteps // len(timesteps)
    captured: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        captured["feature"] = output

    dtype = unet.dtype  # a UNet resident in float16 runs in float16; the latent update stays in z0's float32
    embedding = text_embedding.to(dtype)
    handle = unet.up_blocks[2].register_forward_hook(hook)
    try:
        z = z0
        f_mix = None
        for i, (t, w) in enumerate(zip(timesteps, weights)):
            if should_stop is not None and should_stop():
                raise Cancelled(f"analysis cancelled at inversion step {i + 1} of {len(timesteps)}")
            alpha_prev = alphas_cumprod[max(0, t - stride)]
            alpha_t = alphas_cumprod[t]
            eps = unet(z.to(dtype), t, encoder_hidden_states=embedding).sample.float()  # (1, 4, h, w)
            feature = captured.pop("feature").float()  # (1, C, h, w)
            f_mix = w * feature if f_mix is None else f_mix + w * feature
            z = ddim_step_forward(z, eps, alpha_prev, alpha_t)
            if on_step is not None:
                on_step(i + 1, len(timesteps))
    finally:
        handle.remove()
    return InversionResult(f_mix=f_mix, latent=z)

"""Every attention processor of the diffusion engine (paper 4.2: Q/K/V of the last self-attention layers).

Notation (code -> paper 4.2 / official `utils.register_attn_control`):
    AttentionState.records[name] -> the per-layer cache of q, k, v and the SDPA output before `to_out`
    LayerRecord.q, k, v, out     -> Q, K, V, Self-Attn(Q, K, V), each (B, heads, N, d)
    LayerRecord.grid             -> (h_l, w_l), the layer's token grid (N = h_l * w_l)
    layer names                  -> diffusers module names: SD 1.5 forward indices 10-15 are
                                    up_blocks.{2,3}.attentions.{0,1,2}.transformer_blocks.0.attn1

Layers are chosen by name prefix, never by counting calls; the loop sets `state.mode` and
`state.latent_hw`, the processors only read them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F


Mode = Literal["off", "record", "grad"]


@dataclass
class LayerRecord:
    q: torch.Tensor  # (B, heads, N, d)
    k: torch.Tensor  # (B, heads, N, d)
    v: torch.Tensor  # (B, heads, N, d)
    out: torch.Tensor  # (B, heads, N, d), before the head merge and to_out
    grid: tuple[int, int]  # (h_l, w_l)


@dataclass
class AttentionState:
    """Shared by all record processors: what to do, and what they stored (keyed by layer name)."""

    mode: Mode = "off"  # "off": plain attention; "record": store detached; "grad": store with the graph
    latent_hw: tuple[int, int] | None = None  # (h, w) of the latent of the current UNet call
    records: dict[str, LayerRecord] = field(default_factory=dict)

    def clear(self) -> None:
        self.records.clear()


def token_grid(latent_hw: tuple[int, int], n_tokens: int) -> tuple[int, int]:
    """The (h_l, w_l) grid of a UNet level with `n_tokens` tokens, for a latent of (h, w).

    Each SD down block halves a side with a stride-2 conv (padding 1), i.e. ceil(side / 2); the up path
    mirrors those sizes. Carrying (h, w) keeps non-square latents right (never sqrt(N)).
    """
    h, w = latent_hw
    for _ in range(8):
        if h * w == n_tokens:
            return h, w
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    raise ValueError(f"{n_tokens} tokens match no UNet level of a {latent_hw[0]}x{latent_hw[1]} latent")


class RecordAttnProcessor:
    """diffusers' `AttnProcessor2_0`, plus storing q, k, v and the attention output of self-attention."""

    def __init__(self, name: str, state: AttentionState) -> None:
        self.name = name
        self.state = state

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim

        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)

        is_self_attention = encoder_hidden_states is None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads

        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, d)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )  # (B, heads, N, d)

        # ---- StyleGallery: record Q, K, V and the attention output (paper 4.2) -------------------
        mode = self.state.mode
        if mode != "off" and is_self_attention:
            if self.state.latent_hw is None:
                raise RuntimeError("AttentionState.latent_hw must be set before a recording UNet call")
            grid = token_grid(self.state.latent_hw, query.shape[2])
            tensors = (query, key, value, hidden_states)
            if mode == "record":
                tensors = tuple(t.detach() for t in tensors)
            self.state.records[self.name] = LayerRecord(*tensors, grid=grid)
        # ---- end StyleGallery ------------------------------------------------------------------

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)

        if attn.residual_connection:
            hidden_states = hidden_states + residual

        hidden_states = hidden_states / attn.rescale_output_factor

        return hidden_states


def select_layers(processor_names: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    """Names of the self-attention (`attn1`) modules that start with one of `prefixes`.

    `processor_names` are the keys of `unet.attn_processors` ("<module>.processor"). Raises ValueError
    when nothing matches, naming the available layers.
    """
    modules = [n.removesuffix(".processor") for n in processor_names]
    chosen = [m for m in modules if m.endswith(".attn1") and any(m.startswith(p) for p in prefixes)]
    if not chosen:
        available = sorted({m.rsplit(".attentions", 1)[0] for m in modules if m.endswith(".attn1")})
        raise ValueError(f"layers={tuple(prefixes)!r} match no self-attention layer of this UNet; "
                         f"use name prefixes such as {', '.join(p + '.' for p in available)}")
    return chosen


@contextlib.contextmanager
def recording(unet, prefixes: Sequence[str], state: AttentionState) -> Iterator[list[str]]:
    """Install record processors on the chosen layers; on exit restore the exact previous processors.

    Yields the chosen module names (the keys of `state.records`).
    """
    snapshot = dict(unet.attn_processors)
    layers = select_layers(list(snapshot), prefixes)
    installed = dict(snapshot)
    for name in layers:
        installed[f"{name}.processor"] = RecordAttnProcessor(name, state)
    unet.set_attn_processor(installed)  # set_attn_processor pops from the dict it is given: pass copies
    try:
        yield layers
    finally:
        unet.set_attn_processor(dict(snapshot))
        state.mode = "off"
        state.clear()

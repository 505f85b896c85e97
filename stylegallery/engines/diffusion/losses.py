"""Stage-3 losses of the diffusion engine (paper 4.1-4.2), as pure functions on tensors.

Notation (code -> paper 4.1 / official `utils.style_loss`, `utils.content_loss`):
    q, out        -> Q and Self-Attn(Q, K, V) of the optimised latent z at one self-attention layer,
                     per head and before `to_out`: (1, heads, N, d) with N = h_l * w_l tokens
    q_ref         -> Q_c, the queries of the clean content latent at the same timestep
    k_ref, v_ref  -> K_s^j, V_s^j of the clean style latent j: (1, heads, M, d)
    content_masks -> M_c, one row per content region on the layer's token grid: (R, N) bool
    style_masks   -> M_s, one row per style region of style image j: (R_j, M) bool
    pairs         -> the matches (content region c, style image j, style region r)
    temperature   -> the 1.5 that scales the masked queries of the target (4.2)

The faithful loss (mask_mode "zero", 4.2) multiplies by the masks:
    L_RSL = sum_layers sum_pairs mean| O * M_c - sg(SDPA(t * Q * M_c, K_s * M_s, V_s * M_s)) |
where the mean runs over all heads * N * d elements (no region-size normalisation) and zeroed keys
keep their softmax mass (logit 0, value 0). `_regional_style_loss_naive` is that formula word for word;
`_regional_style_loss` computes the same value on the gathered rows of each region (research/code.md 2.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


MaskMode = Literal["zero", "exclude"]
Pair = tuple[int, int, int]  # (content region, style image, style region)


def region_masks(labels: torch.Tensor, grid: tuple[int, int], n_regions: int) -> torch.Tensor:
    """One boolean row per region of a (h, w) label map, nearest-resized to a layer's (h_l, w_l) grid.

    Returns (n_regions, h_l * w_l) bool. Nearest resizing is `F.interpolate(mode="nearest")`, as the
    official code does for its square masks; here the grid's two sides are given, so any aspect works.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be a (h, w) map, got shape {tuple(labels.shape)}")
    h_l, w_l = grid
    resized = F.interpolate(labels[None, None].float(), size=(h_l, w_l), mode="nearest")[0, 0]  # (h_l, w_l)
    resized = resized.round().long().reshape(-1)  # (h_l * w_l,)
    return resized[None, :] == torch.arange(n_regions, device=labels.device)[:, None]  # (R, N)


@dataclass(frozen=True)
class RegionIndex:
    """The token indices of each region on one layer grid, built once per run so the loss never syncs the host."""

    rows: tuple[torch.Tensor, ...]  # per region, (n_r,) long indices into the N tokens
    counts: tuple[int, ...]  # n_r, on the host
    n_tokens: int  # N

    def __len__(self) -> int:
        return len(self.rows)


def region_index(masks: torch.Tensor) -> RegionIndex:
    """RegionIndex of (R, N) bool region masks (one host sync per region, here and only here)."""
    if masks.ndim != 2 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be (R, N) bool, got {tuple(masks.shape)} {masks.dtype}")
    rows = tuple(masks[r].nonzero()[:, 0] for r in range(masks.shape[0]))
    return RegionIndex(rows=rows, counts=tuple(int(x.numel()) for x in rows), n_tokens=int(masks.shape[1]))


def _as_index(masks: torch.Tensor | RegionIndex) -> RegionIndex:
    return masks if isinstance(masks, RegionIndex) else region_index(masks)


def content_loss(q: Sequence[torch.Tensor], q_ref: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_GCL = sum_layers mean|Q - sg(Q_c)| (paper 4.1; official `content_loss`, L1 with mean reduction)."""
    if len(q) != len(q_ref) or not q:
        raise ValueError(f"q and q_ref must list the same non-zero number of layers, got {len(q)} and {len(q_ref)}")
    return sum(F.l1_loss(a.float(), b.detach().float()) for a, b in zip(q, q_ref))  # type: ignore[return-value]


def regional_style_loss(
    q: Sequence[torch.Tensor],
    out: Sequence[torch.Tensor],
    k_ref: Sequence[Sequence[torch.Tensor]],
    v_ref: Sequence[Sequence[torch.Tensor]],
    content_masks: Sequence[torch.Tensor | RegionIndex],
    style_masks: Sequence[Sequence[torch.Tensor | RegionIndex]],
    pairs: Sequence[Pair],
    temperature: float,
    mask_mode: MaskMode = "zero",
) -> torch.Tensor:
    """L_RSL summed over layers and matched pairs (paper 4.2).

    q, out, content_masks: one entry per layer. k_ref, v_ref, style_masks: indexed [style image][layer].
    mask_mode "zero" is the official zero-multiplication; "exclude" drops the keys outside the style
    region from the softmax (a boolean attention mask), and a pair whose content or style region has no
    cell on a layer's grid contributes nothing there. Masks are (R, N) bool rows or their `region_index`
    (what the engine passes: built once per run, so a loss call never waits on the device). The target
    SDPA runs under no_grad: it is detached in the official code, so its graph was never used.
    """
    content_masks = [_as_index(m) for m in content_masks]
    style_masks = [[_as_index(m) for m in per_layer] for per_layer in style_masks]
    n_layers = len(q)
    if n_layers == 0 or len(out) != n_layers or len(content_masks) != n_layers:
        raise ValueError(f"q, out and content_masks must list the same layers, got {len(q)}, {len(out)}, "
                         f"{len(content_masks)}")
    if mask_mode not in ("zero", "exclude"):
        raise ValueError(f"mask_mode={mask_mode!r} is invalid: expected 'zero' or 'exclude'")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r} is invalid: expected > 0")
    for c, j, r in pairs:
        if not 0 <= j < len(k_ref):
            raise ValueError(f"pair {(c, j, r)} names style image {j}, but {len(k_ref)} style images were given")
        if not (0 <= c < len(content_masks[0]) and 0 <= r < len(style_masks[j][0])):
            raise ValueError(f"pair {(c, j, r)} names a region that has no mask row")
    for layer in range(n_layers):
        if q[layer].shape[0] != 1 or out[layer].shape != q[layer].shape:
            raise ValueError(f"layer {layer}: q and out must be (1, heads, N, d), got {tuple(q[layer].shape)} "
                             f"and {tuple(out[layer].shape)}")
    return _regional_style_loss(q, out, k_ref, v_ref, content_masks, style_masks, pairs, temperature, mask_mode)


def _regional_style_loss(q, out, k_ref, v_ref, content_masks, style_masks, pairs, temperature, mask_mode):
    # Works on the rows of each content region only: rows outside it have Q * M_c = 0, so their target
    # is the uniform average of the masked values and their output is 0; that constant is added back
    # so the value equals the naive formula, and it carries no gradient. Masks are RegionIndex here.
    total = q[0].new_zeros((), dtype=torch.float32)
    for layer in range(len(q)):
        q_l, o_l = q[layer].float(), out[layer].float()  # (1, H, N, d)
        _, heads, n, d = q_l.shape
        numel = heads * n * d
        for c, j, r in pairs:
            content, style = content_masks[layer], style_masks[j][layer]
            rows, n_rows = content.rows[c], content.counts[c]  # (n_c,)
            keys, n_keys = style.rows[r], style.counts[r]  # (m_r,)
            k_all, v_all = k_ref[j][layer].float(), v_ref[j][layer].float()  # (1, H, M, d)
            m = k_all.shape[2]
            o_c = o_l[:, :, rows]  # (1, H, n_c, d)
            if mask_mode == "exclude":
                if n_rows == 0 or n_keys == 0:  # the region vanished on this grid: nothing to match
                    continue
                with torch.no_grad():
                    target = F.scaled_dot_product_attention(temperature * q_l[:, :, rows].detach(),
                                                            k_all[:, :, keys], v_all[:, :, keys])  # (1, H, n_c, d)
                total = total + (o_c - target).abs().sum() / numel
                continue
            # mask_mode "zero": the M - m_r zeroed keys have logit 0 and value 0; one zero "sink" key
            # with an additive bias log(M - m_r) carries exactly their softmax mass.
            with torch.no_grad():
                q_c = q_l[:, :, rows].detach()  # (1, H, n_c, d)
                k_r, v_r = k_all[:, :, keys], v_all[:, :, keys]  # (1, H, m_r, d)
                sink = m - n_keys
                if sink > 0:
                    k_r = torch.cat([k_r, k_r.new_zeros(1, heads, 1, d)], dim=2)  # (1, H, m_r + 1, d)
                    v_r = torch.cat([v_r, v_r.new_zeros(1, heads, 1, d)], dim=2)
                    bias = k_r.new_zeros(1, 1, 1, k_r.shape[2])
                    bias[..., -1] = math.log(sink)
                else:
                    bias = None
                target = F.scaled_dot_product_attention(temperature * q_c, k_r, v_r, attn_mask=bias)  # (1, H, n_c, d)
                outside = (n - n_rows) * (v_all[:, :, keys].sum(dim=2) / m).abs().sum()  # rows with Q = 0
            total = total + ((o_c - target).abs().sum() + outside) / numel
    return total


def _regional_style_loss_naive(q, out, k_ref, v_ref, content_masks, style_masks, pairs, temperature):
    """The official formula, full-size and zero-multiplied (kept as the reference of the tests)."""
    total = q[0].new_zeros((), dtype=torch.float32)
    for layer in range(len(q)):
        for c, j, r in pairs:
            m_c = content_masks[layer][c].float()[None, None, :, None]  # (1, 1, N, 1)
            m_s = style_masks[j][layer][r].float()[None, None, :, None]  # (1, 1, M, 1)
            q_m, o_m = q[layer].float() * m_c, out[layer].float() * m_c
            k_m, v_m = k_ref[j][layer].float() * m_s, v_ref[j][layer].float() * m_s
            target = F.scaled_dot_product_attention(temperature * q_m, k_m, v_m)
            total = total + F.l1_loss(o_m, target.detach())
    return total

"""Stage-3 losses (paper 4.2) on exact toy tensors: no model needed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stylegallery.engines.diffusion.latents import latent_preview, remove_style
from stylegallery.engines.diffusion.losses import (
    _regional_style_loss_naive,
    content_loss,
    region_masks,
    regional_style_loss,
)


HEADS, DIM = 2, 4


def _labels(h: int, w: int) -> torch.Tensor:
    """Three regions on an (h, w) grid; region 2 is a single cell at the bottom-right corner."""
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, w // 2:] = 1
    labels[-1, -1] = 2
    return labels


def _problem(seed: int = 0, requires_grad: bool = False):
    """Two layers (8x12 and 4x6 tokens) of a content latent, and two style images of other sizes."""
    g = torch.Generator().manual_seed(seed)
    content_grids = [(8, 12), (4, 6)]
    style_grids = [[(8, 8), (4, 4)], [(6, 10), (3, 5)]]
    content = _labels(8, 12)
    styles = [_labels(8, 8), _labels(6, 10)]
    q = [torch.randn(1, HEADS, h * w, DIM, generator=g) for h, w in content_grids]
    out = [torch.randn(1, HEADS, h * w, DIM, generator=g, requires_grad=requires_grad) for h, w in content_grids]
    k = [[torch.randn(1, HEADS, h * w, DIM, generator=g) for h, w in grids] for grids in style_grids]
    v = [[torch.randn(1, HEADS, h * w, DIM, generator=g) for h, w in grids] for grids in style_grids]
    cm = [region_masks(content, grid, 3) for grid in content_grids]
    sm = [[region_masks(lab, grid, 3) for grid in grids] for lab, grids in zip(styles, style_grids)]
    pairs = [(0, 0, 1), (1, 1, 0), (2, 1, 2)]
    return q, out, k, v, cm, sm, pairs


def test_region_masks_follow_nearest_resize_on_a_non_square_grid():
    labels = _labels(8, 12)
    masks = region_masks(labels, (4, 6), 3)
    assert masks.shape == (3, 24) and masks.dtype == torch.bool
    expected = F.interpolate(labels[None, None].float(), size=(4, 6), mode="nearest")[0, 0].long().reshape(-1)
    for r in range(3):
        torch.testing.assert_close(masks[r], expected == r)
    assert masks.sum(dim=0).eq(1).all()  # a partition of the tokens
    assert masks[2].sum() == 0  # the one-cell region vanishes at the coarse grid
    assert masks[:, :6].reshape(3, 6)[1].tolist() == [False] * 3 + [True] * 3  # left/right halves kept


def test_gathered_loss_equals_the_naive_zero_multiplied_formula_and_its_gradient():
    q, out, k, v, cm, sm, pairs = _problem(requires_grad=True)
    fast = regional_style_loss(q, out, k, v, cm, sm, pairs, 1.5, "zero")
    (grad_fast,) = torch.autograd.grad(fast, out[0])
    naive = _regional_style_loss_naive(q, out, k, v, cm, sm, pairs, 1.5)
    (grad_naive,) = torch.autograd.grad(naive, out[0])
    assert naive.item() > 0.1
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_fast, grad_naive, rtol=1e-5, atol=1e-8)


def test_gathered_loss_equals_naive_when_a_style_region_covers_every_key():
    q, out, k, v, cm, sm, _ = _problem(seed=3)
    full = [[torch.ones_like(m[:1]) for m in layers] for layers in sm]  # style region 0 = all keys: no sink
    pairs = [(0, 0, 0), (1, 1, 0)]
    torch.testing.assert_close(regional_style_loss(q, out, k, v, cm, full, pairs, 1.5, "zero"),
                               _regional_style_loss_naive(q, out, k, v, cm, full, pairs, 1.5), rtol=1e-5, atol=1e-6)


def test_loss_is_zero_when_the_output_equals_its_target():
    q, _, k, v, _, sm, _ = _problem(seed=1)
    whole = [torch.ones(1, t.shape[2], dtype=torch.bool) for t in q]  # one content region covering all tokens
    m_s = [sm[0][layer][1].float()[None, None, :, None] for layer in range(2)]
    target = [F.scaled_dot_product_attention(1.5 * q[layer], k[0][layer] * m_s[layer], v[0][layer] * m_s[layer])
              for layer in range(2)]
    loss = regional_style_loss(q, target, k, v, whole, sm, [(0, 0, 1)], 1.5, "zero")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    other = [t + 0.1 for t in target]
    assert regional_style_loss(q, other, k, v, whole, sm, [(0, 0, 1)], 1.5, "zero").item() > 0.05


def test_exclude_mode_matches_a_boolean_attention_mask_and_is_zero_on_its_target():
    q, out, k, v, cm, sm, _ = _problem(seed=2)
    pairs = [(0, 0, 1)]
    rows, keys = cm[0][0], sm[0][0][1]
    target = F.scaled_dot_product_attention(1.5 * q[0][:, :, rows], k[0][0], v[0][0], attn_mask=keys[None, :])
    expected = (out[0][:, :, rows] - target).abs().sum() / out[0].numel()
    one_layer = regional_style_loss(q[:1], out[:1], [k[0][:1]], [v[0][:1]], cm[:1], [sm[0][:1]], pairs, 1.5,
                                    "exclude")
    torch.testing.assert_close(one_layer, expected)
    on_target = out[0].clone()
    on_target[:, :, rows] = target
    assert regional_style_loss([q[0]], [on_target], [k[0][:1]], [v[0][:1]], cm[:1], [sm[0][:1]], pairs, 1.5,
                               "exclude").item() == pytest.approx(0.0, abs=1e-6)


def test_exclude_mode_has_no_nan_when_a_region_vanishes_on_the_coarse_grid():
    q, out, k, v, cm, sm, pairs = _problem(seed=4, requires_grad=True)
    assert cm[1][2].sum() == 0 and sm[1][1][2].sum() == 0  # region 2 is absent at the 4x6 / 3x5 layers
    loss = regional_style_loss(q, out, k, v, cm, sm, pairs, 1.5, "exclude")
    grads = torch.autograd.grad(loss, out)
    assert torch.isfinite(loss) and loss.item() > 0
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0][:, :, cm[0][2]].abs().sum() > 0  # the one-cell region still pulls at the fine layer


def test_loss_rejects_pairs_that_name_missing_regions_or_styles():
    q, out, k, v, cm, sm, _ = _problem()
    with pytest.raises(ValueError, match="style image 5"):
        regional_style_loss(q, out, k, v, cm, sm, [(0, 5, 0)], 1.5, "zero")
    with pytest.raises(ValueError, match="no mask row"):
        regional_style_loss(q, out, k, v, cm, sm, [(7, 0, 0)], 1.5, "zero")
    with pytest.raises(ValueError, match="mask_mode"):
        regional_style_loss(q, out, k, v, cm, sm, [(0, 0, 0)], 1.5, "soft")  # type: ignore[arg-type]


def test_content_loss_is_the_sum_over_layers_of_the_l1_mean():
    g = torch.Generator().manual_seed(0)
    q = [torch.randn(1, 2, 6, 4, generator=g), torch.randn(1, 2, 24, 4, generator=g)]
    ref = [t + 0.5 for t in q]
    assert content_loss(q, ref).item() == pytest.approx(1.0, rel=1e-6)
    assert content_loss(q, q).item() == 0.0


def test_remove_style_z_scores_the_channels_of_each_pixel():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 5, 7, generator=g) * 3 + 2
    out = remove_style(z)
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(1, 5, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=1), torch.ones(1, 5, 7), atol=1e-5, rtol=0)


def test_latent_preview_is_an_rgb_image_of_the_working_size():
    preview = latent_preview(torch.zeros(1, 4, 8, 12), (64, 96))
    assert preview.shape == (64, 96, 3)
    torch.testing.assert_close(preview, torch.full((64, 96, 3), 0.5))  # zero latent -> mid grey

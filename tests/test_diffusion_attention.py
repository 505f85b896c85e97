"""Attention processors on the tiny SD 1.5-layout UNet: identity, restore, selection, recording, batching."""

from __future__ import annotations

import pytest
import torch

from stylegallery.engines.diffusion.attention import (
    AttentionState,
    RecordAttnProcessor,
    recording,
    select_layers,
    token_grid,
)
from tests.fixtures import one_thread, tiny_engine


LAYERS = ("up_blocks.2.", "up_blocks.3.")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def unet():
    return tiny_engine().sd.unet


@pytest.fixture(scope="module")
def embedding():
    return tiny_engine().text_embedding


def _latent(seed: int, h: int = 8, w: int = 12, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(seed))


def _run(unet, z, embedding, t: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return unet(z, t, encoder_hidden_states=embedding.expand(z.shape[0], -1, -1)).sample


def test_installed_processors_switched_off_give_the_original_output(unet, embedding):
    z = _latent(0)
    original = _run(unet, z, embedding)
    state = AttentionState(mode="off", latent_hw=(8, 12))
    with recording(unet, LAYERS, state) as layers:
        assert len(layers) == 6
        assert all(isinstance(unet.attn_processors[f"{n}.processor"], RecordAttnProcessor) for n in layers)
        switched_off = _run(unet, z, embedding)
        assert state.records == {}
        state.mode = "record"
        recorded = _run(unet, z, embedding)
    torch.testing.assert_close(switched_off, original, rtol=0, atol=0)
    torch.testing.assert_close(recorded, original, rtol=0, atol=0)  # recording never changes the output


def test_removal_restores_the_exact_processor_objects_and_outputs(unet, embedding):
    before = dict(unet.attn_processors)
    z = _latent(1)
    original = _run(unet, z, embedding)
    state = AttentionState(mode="record", latent_hw=(8, 12))
    with pytest.raises(RuntimeError, match="boom"):
        with recording(unet, LAYERS, state):
            _run(unet, z, embedding)
            assert state.records
            raise RuntimeError("boom")
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[name] is before[name] for name in before)
    assert state.mode == "off" and state.records == {}
    torch.testing.assert_close(_run(unet, z, embedding), original, rtol=0, atol=0)


def test_a_pattern_matching_no_layer_raises_and_cross_attention_is_never_chosen(unet):
    before = dict(unet.attn_processors)
    with pytest.raises(ValueError, match="match no self-attention layer"):
        with recording(unet, ("up_blocks.9.",), AttentionState()):
            pass
    assert all(unet.attn_processors[name] is before[name] for name in before)
    chosen = select_layers(list(before), LAYERS)
    assert chosen == [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (2, 3) for a in range(3)]
    assert select_layers(list(before), ("mid_block",)) == ["mid_block.attentions.0.transformer_blocks.0.attn1"]


def test_records_carry_the_non_square_token_grid_of_each_level(unet, embedding):
    state = AttentionState(mode="record", latent_hw=(8, 12))
    with recording(unet, LAYERS, state) as layers:
        _run(unet, _latent(2), embedding)
        records = {name: state.records[name] for name in layers}
    for name, rec in records.items():
        expected = (4, 6) if name.startswith("up_blocks.2.") else (8, 12)
        assert rec.grid == expected
        heads = 8
        assert rec.q.shape == (1, heads, expected[0] * expected[1], rec.q.shape[-1])
        assert rec.out.shape == rec.q.shape == rec.k.shape == rec.v.shape
        assert not rec.q.requires_grad


def test_grad_mode_keeps_the_graph_to_the_latent(unet, embedding):
    z = _latent(3).requires_grad_(True)
    state = AttentionState(mode="grad", latent_hw=(8, 12))
    with recording(unet, LAYERS, state) as layers:
        unet(z, 500, encoder_hidden_states=embedding)
        loss = sum(state.records[name].out.abs().mean() for name in layers)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_token_grid_follows_the_ceil_halving_of_the_unet():
    assert token_grid((43, 64), 43 * 64) == (43, 64)
    assert token_grid((43, 64), 22 * 32) == (22, 32)
    assert token_grid((43, 64), 11 * 16) == (11, 16)
    with pytest.raises(ValueError, match="match no UNet level"):
        token_grid((8, 12), 50)


def test_one_batched_reference_call_gives_the_keys_and_values_of_separate_calls(unet, embedding):
    a, b = _latent(4), _latent(5)
    state = AttentionState(mode="record", latent_hw=(8, 12))
    with recording(unet, LAYERS, state) as layers:
        _run(unet, torch.cat([a, b]), embedding, t=301)
        batched = dict(state.records)
        separate = []
        for z in (a, b):
            state.clear()
            _run(unet, z, embedding, t=301)
            separate.append(dict(state.records))
    for name in layers:
        for index in range(2):
            for field in ("q", "k", "v"):
                torch.testing.assert_close(getattr(batched[name], field)[index:index + 1],
                                           getattr(separate[index][name], field), rtol=1e-5, atol=1e-5)

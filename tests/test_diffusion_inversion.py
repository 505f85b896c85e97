"""DDIM inversion with F_mix capture (paper 2.2) and the stage-3 timestep lists (4.2), on the tiny UNet."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from stylegallery.engines.diffusion.inversion import ddim_invert, ddim_step_forward, inversion_timesteps
from stylegallery.engines.diffusion.models import stage3_timesteps
from tests.fixtures import one_thread, time_weights, tiny_engine


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


def _scheduler(engine) -> DDIMScheduler:
    return DDIMScheduler.from_config(engine.sd.scheduler.config)


def test_fifteen_inversion_steps_visit_1_67_to_925(engine):
    assert inversion_timesteps(_scheduler(engine), 15) == list(range(1, 926, 66))


def test_stage3_timesteps_of_each_scheduler(engine):
    config = engine.sd.scheduler.config
    ddim = stage3_timesteps(config, "ddim", 150)
    assert ddim == [float(t) for t in range(895, 0, -6)]
    for kind in ("lcm", "euler_trailing"):
        steps = stage3_timesteps(config, kind, 28)
        assert len(steps) == 28 and all(a > b for a, b in zip(steps, steps[1:])) and steps[0] >= 900
    with pytest.raises(ValueError, match="scheduler"):
        stage3_timesteps(config, "pndm", 10)


def test_the_inversion_step_is_undone_by_the_deterministic_ddim_step():
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(1, 4, 3, 5, generator=g), torch.randn(1, 4, 3, 5, generator=g)
    a_prev, a_t = torch.tensor(0.9), torch.tensor(0.6)
    forward = ddim_step_forward(z, eps, a_prev, a_t)
    x0 = (forward - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # DDIM (eta 0) back from t to t_prev
    torch.testing.assert_close(a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, z, rtol=1e-5, atol=1e-5)


def test_accumulated_f_mix_and_c15_equal_a_step_by_step_reference(engine):
    unet, emb, alphas = engine.sd.unet, engine.text_embedding, engine.alphas_cumprod
    z0 = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    steps = inversion_timesteps(_scheduler(engine), 5)
    weights = list(time_weights(5))
    result = ddim_invert(unet, z0, emb, alphas, steps, weights)
    assert not unet.up_blocks[2]._forward_hooks  # the hook is gone

    # Reference: keep every map, evaluate the UNet at (z, t_i), then weight.
    maps, z = [], z0
    with torch.no_grad():
        for t in steps:
            up = {}
            handle = unet.up_blocks[2].register_forward_hook(lambda m, i, o: up.setdefault("x", o))
            eps = unet(z, t, encoder_hidden_states=emb).sample
            handle.remove()
            maps.append(up["x"])
            a_t, a_prev = alphas[t], alphas[max(0, t - 1000 // 5)]
            z = (z - (1 - a_prev).sqrt() * eps) * a_t.sqrt() / a_prev.sqrt() + (1 - a_t).sqrt() * eps
    f_mix = sum(w * f for w, f in zip(weights, maps))
    assert result.f_mix.shape == (1, 32, 8, 12)  # up_blocks[2] of the tiny UNet: 32 channels, latent grid
    torch.testing.assert_close(result.f_mix, f_mix, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.latent, z, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(result.latent, z0)


def test_the_hook_is_removed_when_the_unet_fails(engine):
    unet = engine.sd.unet
    bad = torch.zeros(1, 3, 8, 8)  # wrong channel count
    with pytest.raises(RuntimeError):
        ddim_invert(unet, bad, engine.text_embedding, engine.alphas_cumprod, [1, 67], [0.5, 0.5])
    assert not unet.up_blocks[2]._forward_hooks
    with pytest.raises(ValueError, match="2 time weights given for 3 inversion steps"):
        ddim_invert(unet, bad, engine.text_embedding, engine.alphas_cumprod, [1, 67, 133], [0.5, 0.5])

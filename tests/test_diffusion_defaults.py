"""Every default of stage 3 and of each preset, pinned to the paper / official values (research/paper.md 4,
research/code.md 2.4: demo.py and demo_accelerate.py), and the loop's structure on the tiny models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stylegallery.config import (
    DEFAULT_DEPTH_MODEL,
    DEFAULT_DINO_MODEL,
    DEFAULT_SD_MODEL,
    LORA_PRESETS,
    PRESETS,
    DiffusionSettings,
    preset,
)
from stylegallery.engines.diffusion import engine as engine_module
from stylegallery.engines.diffusion.attention import select_layers
from stylegallery.engines.diffusion.models import stage3_timesteps
from stylegallery.types import Match
from tests.fixtures import one_thread, random_image, time_weights, tiny_engine, tiny_settings


SIX_LAYERS = [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (2, 3) for a in range(3)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


def test_stage3_defaults_are_the_official_demo_values():
    d = DiffusionSettings()
    assert (d.lr, d.content_weight, d.temperature, d.steps, d.iters) == (0.05, 0.26, 1.5, 150, 1)
    assert (d.inversion_steps, d.scheduler, d.mask_mode) == (15, "ddim", "zero")
    assert d.layers == ("up_blocks.2.", "up_blocks.3.")
    assert d.dtype == "float32" and d.device == "cpu"  # the library default; only the doors pick the GPU
    assert preset("paper").diffusion == d


def test_default_models():
    assert DEFAULT_SD_MODEL == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert DEFAULT_DINO_MODEL == "facebook/dinov2-base"
    assert DEFAULT_DEPTH_MODEL == "depth-anything/Depth-Anything-V2-Small-hf"  # Apache-2.0; Large is CC-BY-NC
    assert DiffusionSettings().depth_model == DEFAULT_DEPTH_MODEL


@pytest.mark.parametrize(("name", "expected"), [
    ("paper", (150, 1, 0.05, 0.26, "ddim")),
    ("fast", (28, 3, 0.25, 0.33, "lcm")),  # demo_accelerate.py mode "lcm"
    ("hyper", (28, 3, 0.15, 0.38, "euler_trailing")),  # demo_accelerate.py mode "hyper"
])
def test_each_preset_is_its_official_configuration(name, expected):
    d = preset(name).diffusion
    assert (d.steps, d.iters, d.lr, d.content_weight, d.scheduler) == expected
    assert (d.temperature, d.layers, d.inversion_steps) == (1.5, ("up_blocks.2.", "up_blocks.3."), 15)
    assert preset(name).preset == name


def test_presets_listed_and_the_lora_ones():
    assert PRESETS == ("paper", "fast", "hyper")
    assert LORA_PRESETS == ("fast", "hyper")
    with pytest.raises(ValueError, match="preset"):
        preset("turbo")  # type: ignore[arg-type]


def test_official_timestep_lists():
    config = tiny_engine().sd.scheduler.config  # the SD 1.5 DDIM config (leading, steps_offset 1)
    ddim = stage3_timesteps(config, "ddim", 150)
    assert (len(ddim), ddim[0], ddim[-1], ddim[0] - ddim[1]) == (150, 895.0, 1.0, 6.0)
    # EulerDiscreteScheduler.from_config(..., timestep_spacing="trailing").set_timesteps(28): the official hyper mode
    euler = stage3_timesteps(config, "euler_trailing", 28)
    assert len(euler) == 28 and euler[:3] == [999.0, 963.0, 928.0] and euler[-1] == 35.0
    # LCMScheduler.from_config(...).set_timesteps(28): original_inference_steps 50
    lcm = stage3_timesteps(config, "lcm", 28)
    assert len(lcm) == 28 and lcm[:3] == [999.0, 979.0, 939.0] and lcm[-1] == 39.0


def test_loss_layers_are_the_six_self_attention_layers_of_up_blocks_2_and_3():
    unet = tiny_engine().sd.unet
    assert select_layers(list(unet.attn_processors), DiffusionSettings().layers) == SIX_LAYERS


# ---- the loop on the tiny models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images():
    engine = tiny_engine()
    content = engine.analyze(random_image(64, 64, seed=0), tiny_settings(), time_weights())
    style = engine.analyze(random_image(64, 64, seed=1), tiny_settings(), time_weights())
    return content, style


def _halves(h: int = 8, w: int = 8) -> np.ndarray:
    labels = np.zeros((h, w), np.int32)
    labels[:, w // 2:] = 1
    return labels


MATCHES = [Match(0, 0, 1, 1.0, {}), Match(1, 0, 0, 1.0, {})]


class _Recorder:
    """Wraps the engine's losses and GradScaler to see what the loop builds (the maths stays the product's)."""

    def __init__(self, monkeypatch):
        self.style, self.content, self.scaled, self.optimisers = [], [], [], []
        style_fn, content_fn = engine_module.regional_style_loss, engine_module.content_loss
        real_scaler, real_adam = torch.amp.GradScaler, torch.optim.Adam
        rec = self

        def style_loss(*args, **kwargs):
            value = style_fn(*args, **kwargs)
            rec.style.append(value.detach().clone())
            return value

        def content_loss(*args, **kwargs):
            value = content_fn(*args, **kwargs)
            rec.content.append(value.detach().clone())
            return value

        class Scaler(real_scaler):
            def scale(self, outputs):
                rec.scaled.append(outputs.detach().clone())
                return super().scale(outputs)

        class Adam(real_adam):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                rec.optimisers.append(self)

        monkeypatch.setattr(engine_module, "regional_style_loss", style_loss)
        monkeypatch.setattr(engine_module, "content_loss", content_loss)
        monkeypatch.setattr(torch.amp, "GradScaler", Scaler)
        monkeypatch.setattr(torch.optim, "Adam", Adam)


def test_one_adam_over_all_timesteps_and_the_loss_assembly(images, monkeypatch):
    content, style = images
    rec = _Recorder(monkeypatch)
    settings = tiny_settings(steps=3, iters=2, preview_every=10)
    steps = list(tiny_engine().transfer(content, _halves(), [style], [_halves()], MATCHES, settings))
    assert steps[-1].final
    # one optimiser for the whole run (4.2), stepped steps x iters times, at the preset's lr
    assert len(rec.optimisers) == 1
    optimiser = rec.optimisers[0]
    assert optimiser.param_groups[0]["lr"] == 0.05
    (state,) = optimiser.state.values()
    assert int(state["step"]) == 3 * 2
    # loss = L_RSL + content_weight * L_GCL, once per Adam step
    assert len(rec.scaled) == len(rec.style) == len(rec.content) == 6
    for loss, s, c in zip(rec.scaled, rec.style, rec.content):
        torch.testing.assert_close(loss, s + 0.26 * c)
        assert s > 0 and c >= 0


def test_hyper_preset_runs_28_euler_trailing_steps_with_its_lr_and_weight(images, monkeypatch):
    content, style = images
    rec = _Recorder(monkeypatch)
    engine = tiny_engine()
    engine.reset_stats()
    settings = dataclasses.replace(tiny_settings("hyper", steps=2, preview_every=10))
    list(engine.transfer(content, _halves(), [style], [_halves()], MATCHES, settings))
    assert rec.optimisers[0].param_groups[0]["lr"] == 0.15
    for loss, s, c in zip(rec.scaled, rec.style, rec.content):
        torch.testing.assert_close(loss, s + 0.38 * c)
    assert engine.stats["unet_backward_transfer"] == 2 * 3
    (note,) = engine.notes(settings)
    assert "preset 'hyper' runs without a LoRA" in note and "Hyper-SD" in note


def _fp16_support() -> str | None:
    """Why float16 autocast + GradScaler cannot run on this CPU torch, or None when it can."""
    try:
        layer = torch.nn.Linear(4, 4)
        x = torch.randn(2, 4, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.float16):
            y = layer(x)
        if y.dtype != torch.float16:
            return f"torch {torch.__version__} CPU autocast gives {y.dtype}, not float16"
        scaler = torch.amp.GradScaler("cpu")
        scaler.scale(y.float().sum()).backward()
        scaler.step(torch.optim.SGD([x], lr=0.1))
        scaler.update()
    except (RuntimeError, TypeError, AttributeError) as exc:
        return f"torch {torch.__version__} cannot run float16 autocast + GradScaler('cpu'): {exc}"
    return None


@pytest.mark.skipif(_fp16_support() is not None, reason=str(_fp16_support()))
@pytest.mark.parametrize("resident", ["float32", "dtype"])
def test_float16_step_with_grad_scaler_keeps_a_float32_latent(images, monkeypatch, resident):
    """The CUDA default (float16 + GradScaler), here on CPU: with the UNet kept in float32 under autocast, and with
    the UNet resident in float16 (what CUDA does by default): the scaler scales, the latent stays float32."""
    from stylegallery.engines.diffusion import DiffusionEngine
    from tests.fixtures import tiny_paths

    content, style = images
    rec = _Recorder(monkeypatch)
    paths = tiny_paths()
    engine = DiffusionEngine(str(paths.sd), str(paths.dino), None, dtype="float16", resident=resident)
    expected = torch.float16 if resident == "dtype" else torch.float32
    assert engine.sd.unet.dtype == expected
    assert engine.stats[f"unet_weight_bytes_{str(expected).removeprefix('torch.')}"] > 0
    steps = list(engine.transfer(content, _halves(), [style], [_halves()], MATCHES,
                                 tiny_settings(steps=2, preview_every=10)))
    assert steps[-1].image.dtype == np.float32 and np.isfinite(steps[-1].image).all()
    assert engine.stats["unet_backward_transfer"] == 2
    assert len(rec.scaled) == 2 and all(torch.isfinite(x) for x in rec.scaled)
    assert engine.stats["grad_scale"] > 1  # the scaler was on (init 65536, halved on an overflow step)


# ---- GPU cost: no per-step host syncs, the target attention outside autograd -----------------------------


def test_the_loop_adds_no_host_sync_after_its_first_step(images, monkeypatch):
    """.nonzero(), .item(), .tolist() and .cpu() wait for the device: the region indices are built at step 1 and
    reused, so steps 2.. call none of them (float32: no GradScaler check either). Adam's own `.item()` on its step
    counter is left out: that counter is a CPU tensor (non-capturable Adam), so it never waits on a GPU."""
    import traceback

    content, style = images
    calls = {"n": 0}
    for name in ("nonzero", "item", "tolist", "cpu"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            caller = traceback.extract_stack(limit=2)[0].filename.replace("\\", "/")
            calls["n"] += "torch/optim/" not in caller
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def run(steps: int) -> int:
        calls["n"] = 0
        list(tiny_engine().transfer(content, _halves(), [style], [_halves()], MATCHES,
                                    tiny_settings(steps=steps, preview_every=100)))
        return calls["n"]

    assert run(1) == run(3)


def test_the_target_attention_runs_without_autograd(monkeypatch):
    from stylegallery.engines.diffusion import losses

    grad_modes = []
    real = losses.F.scaled_dot_product_attention

    def sdpa(*args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(losses.F, "scaled_dot_product_attention", sdpa)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 16, 4, generator=g, requires_grad=True)
    out = torch.randn(1, 2, 16, 4, generator=g, requires_grad=True)
    k, v = torch.randn(1, 2, 16, 4, generator=g), torch.randn(1, 2, 16, 4, generator=g)
    labels = torch.from_numpy(_halves(4, 4)).long()
    masks = losses.region_masks(labels, (4, 4), 2)
    for mode in ("zero", "exclude"):
        loss = losses.regional_style_loss([q], [out], [[k]], [[v]], [masks], [[masks]], [(0, 0, 1)], 1.5, mode)
        loss.backward()
    assert grad_modes == [False, False] and out.grad.abs().sum() > 0 and q.grad is None

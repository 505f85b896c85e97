"""The DiffusionEngine end to end on tiny random models: analyze (2.2, 3.2b) and transfer (4.2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stylegallery.config import DiffusionSettings, MatchSettings
from stylegallery.engines.diffusion import DiffusionEngine
from stylegallery.engines.diffusion.attention import AttentionState, recording
from stylegallery.engines.diffusion.engine import depth_input_size
from stylegallery.engines.diffusion.latents import remove_style
from stylegallery.engines.diffusion.losses import region_masks, regional_style_loss
from stylegallery.errors import Cancelled, InputError
from stylegallery.types import Match
from tests.fixtures import one_thread, random_image, time_weights, tiny_engine, tiny_paths, tiny_settings


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def engine() -> DiffusionEngine:
    return tiny_engine()


@pytest.fixture(scope="module")
def content(engine):
    return engine.analyze(random_image(64, 96, seed=0), tiny_settings(), time_weights())


@pytest.fixture(scope="module")
def style(engine):
    return engine.analyze(random_image(64, 96, seed=1), tiny_settings(), time_weights())


def _halves(h: int, w: int) -> np.ndarray:
    labels = np.zeros((h, w), np.int32)
    labels[:, w // 2:] = 1
    return labels


MATCHES = [Match(0, 0, 1, 1.0, {}), Match(1, 0, 0, 1.0, {})]


def test_analyze_gives_latent_grid_features_on_a_non_square_image(content):
    assert content.cluster_features.shape == (8, 12, 32)  # F_mix: up_blocks[2] channels on the 8x12 grid
    assert content.merge_features.shape == (8, 12, 4)  # z0
    assert content.depth.shape == (8, 12) and content.depth.min() == 0.0 and content.depth.max() == 1.0
    assert content.tokens.shape == (11, 16, 32)  # 16 tokens on the long side, aspect kept
    for array in (content.cluster_features, content.merge_features, content.depth, content.tokens):
        assert array.dtype == np.float32 and np.isfinite(array).all()
    assert content.payload["z0"].shape == content.payload["c15"].shape == (1, 4, 8, 12)
    np.testing.assert_allclose(content.merge_features, content.payload["z0"][0].permute(1, 2, 0).numpy())


def test_depth_input_size_is_dpts_keep_aspect_resize_with_at_least_one_patch_per_side():
    from transformers.models.dpt.image_processing_pil_dpt import get_resize_output_image_size

    for height, width in [(64, 96), (512, 512), (344, 512), (512, 336), (2048, 1024), (40, 1000)]:
        dpt = get_resize_output_image_size(np.zeros((height, width)), (518, 518), True, 14)
        assert depth_input_size(height, width, (518, 518), 14) == (dpt.height, dpt.width)
    for height, width, target in [(8, 512, 126), (8, 2048, 518)]:  # DPT's own rounding gives a 0 px side here
        assert get_resize_output_image_size(np.zeros((height, width)), (target, target), True, 14).height == 0
        assert depth_input_size(height, width, (target, target), 14) == (14, target)
    assert depth_input_size(512, 8, (126, 126), 14) == (126, 14)
    assert depth_input_size(64, 96, (126, 126), 14, keep_aspect=False) == (126, 126)
    with pytest.raises(ValueError, match="every size must be positive"):
        depth_input_size(0, 96, (126, 126), 14)


def test_an_extreme_aspect_ratio_goes_through_the_depth_model(engine):
    from stylegallery.config import ImageSettings
    from stylegallery.images import load

    image = load(random_image(32, 2048, seed=7), ImageSettings())  # the loader's smallest side at 2048 long
    assert image.shape == (8, 512, 3)
    analysis = engine.analyze(image, tiny_settings(), time_weights())
    assert analysis.depth.shape == analysis.grid_shape == (1, 64) and np.isfinite(analysis.depth).all()


def test_analyze_twice_gives_identical_output(engine, content):
    again = engine.analyze(random_image(64, 96, seed=0), tiny_settings(), time_weights())
    for name in ("cluster_features", "merge_features", "depth", "tokens"):
        np.testing.assert_array_equal(getattr(again, name), getattr(content, name))
    torch.testing.assert_close(again.payload["c15"], content.payload["c15"], rtol=0, atol=0)


def test_center_crop_tokens_and_no_depth(engine):
    settings = tiny_settings(dino_input="center_crop")
    settings = dataclasses.replace(settings, regions=dataclasses.replace(settings.regions, use_depth=False))
    analysis = engine.analyze(random_image(64, 96, seed=2), settings, time_weights())
    assert analysis.tokens.shape == (16, 16, 32)  # resize 256 / crop 224 -> 16x16 patches of 14 px
    assert analysis.depth is None
    assert engine.analysis_key(settings) != engine.analysis_key(tiny_settings())


def test_analysis_key_follows_the_analysis_settings_only(engine):
    base = engine.analysis_key(tiny_settings())
    assert engine.analysis_key(tiny_settings(steps=3, lr=0.5, mask_mode="exclude")) == base  # stage 3 only
    assert engine.analysis_key(tiny_settings(inversion_steps=10)) != base
    assert engine.analysis_key(tiny_settings(dino_grid=8)) != base
    assert str(tiny_paths().sd) in base


def test_engine_choices_for_matching_and_time_steps(engine):
    resolved = engine.resolve_matching(MatchSettings())
    assert (resolved.statistics, resolved.assignment) == ("random_transformer", "argmax")
    kept = engine.resolve_matching(MatchSettings(statistics="moments", assignment="balanced"))
    assert (kept.statistics, kept.assignment) == ("moments", "balanced")
    assert engine.time_steps(tiny_settings(inversion_steps=7)) == 7


def test_analyze_rejects_bad_time_weights_and_images(engine):
    with pytest.raises(ValueError, match="one weight per inversion step"):
        engine.analyze(random_image(64, 64, seed=0), tiny_settings(), time_weights(10))
    with pytest.raises(InputError, match="multiples of 8"):
        engine.analyze(random_image(60, 64, seed=0), tiny_settings(), time_weights())


def test_transfer_yields_previews_in_order_then_one_final_image(engine, content, style):
    engine.reset_stats()
    settings = tiny_settings(steps=7, iters=2, preview_every=3)
    steps = list(engine.transfer(content, _halves(8, 12), [style], [_halves(8, 12)], MATCHES, settings))
    assert [(s.step, s.total, s.final) for s in steps] == [(3, 7, False), (6, 7, False), (7, 7, True)]
    for s in steps:
        assert s.image.shape == (64, 96, 3) and s.image.dtype == np.float32
        assert np.isfinite(s.image).all() and s.image.min() >= 0 and s.image.max() <= 1
    # One batched reference call plus `iters` forward/backward passes per timestep.
    assert engine.stats["unet_forward_transfer"] == 7 * (1 + 2)
    assert engine.stats["unet_backward_transfer"] == 7 * 2
    assert engine.stats["vae_decode"] == 1
    assert engine.notes(settings) == ()
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in engine.sd.unet.attn_processors.values())


def test_with_style_fit_own_styles_of_another_size_get_their_own_reference_call(engine, content):
    square = engine.analyze(random_image(64, 64, seed=3), tiny_settings(), time_weights())
    unused = engine.analyze(random_image(64, 96, seed=4), tiny_settings(), time_weights())
    engine.reset_stats()
    matches = [Match(0, 0, 0, 1.0, {}), Match(1, 0, 1, 1.0, {})]
    steps = list(engine.transfer(content, _halves(8, 12), [square, unused], [_halves(8, 8), _halves(8, 12)],
                                 matches, tiny_settings(steps=3, preview_every=10, style_fit="own")))
    assert [s.final for s in steps] == [True]
    assert engine.stats["unet_forward_transfer"] == 3 * (2 + 1)  # content batch, square-style batch, z
    assert engine.stats["vae_encode"] == 0  # styles keep their own latents
    assert np.isfinite(steps[-1].image).all()


def test_by_default_styles_of_other_shapes_share_one_reference_call_per_step(engine, content):
    # A non-square content (64x96) with square styles of two other sizes: one reference call per step.
    small = engine.analyze(random_image(48, 48, seed=5), tiny_settings(), time_weights())
    large = engine.analyze(random_image(80, 80, seed=6), tiny_settings(), time_weights())
    engine.reset_stats()
    matches = [Match(0, 0, 1, 1.0, {}), Match(1, 1, 0, 1.0, {})]
    steps = list(engine.transfer(content, _halves(8, 12), [small, large], [_halves(6, 6), _halves(10, 10)],
                                 matches, tiny_settings(steps=3, iters=2, preview_every=10)))
    assert engine.stats["unet_forward_transfer"] == 3 * (1 + 2)  # one batched reference call, then `iters` on z
    assert engine.stats["unet_backward_transfer"] == 3 * 2
    assert engine.stats["vae_encode"] == 2  # each resized style encoded once per transfer, not per step
    assert steps[-1].final and steps[-1].image.shape == (64, 96, 3) and np.isfinite(steps[-1].image).all()


def test_fit_style_resizes_pixels_and_nearest_resizes_labels(engine, content):
    labels = torch.from_numpy(_halves(6, 6)).long()
    z0, fitted = engine._fit_style(random_image(48, 48, seed=5), labels, (64, 96), (8, 12))
    assert z0.shape == content.payload["z0"].shape == (1, 4, 8, 12)
    assert fitted.dtype == torch.int64 and fitted.shape == (8, 12)
    assert (fitted[:, :6] == 0).all() and (fitted[:, 6:] == 1).all()  # the left/right halves stay halves
    with pytest.raises(ValueError, match="style_fit='squash' is invalid"):
        DiffusionSettings(style_fit="squash")  # type: ignore[arg-type]


def test_transfer_raises_cancelled_when_asked_and_restores_the_unet(engine, content, style):
    before = dict(engine.sd.unet.attn_processors)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    engine.reset_stats()
    run = engine.transfer(content, _halves(8, 12), [style], [_halves(8, 12)], MATCHES,
                          tiny_settings(steps=10, preview_every=1), should_stop)
    assert next(run).step == 1
    assert next(run).step == 2
    with pytest.raises(Cancelled, match="step 3 of 10"):
        next(run)
    assert engine.stats["unet_backward_transfer"] == 2
    assert all(engine.sd.unet.attn_processors[name] is before[name] for name in before)


@pytest.mark.parametrize("stop_after", [0, 1, 7, 15])
def test_analysis_stops_within_one_unet_call_of_a_stop(engine, stop_after):
    """Stage 1 inverts each image in 15 UNet calls: a stop is honoured before the next call, not after the image."""
    unet_calls = []
    handle = engine.sd.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    engine.reset_stats()
    try:
        with pytest.raises(Cancelled, match="analysis cancelled"):
            engine.analyze(random_image(64, 64, seed=7), tiny_settings(), time_weights(),
                           should_stop=lambda: len(unet_calls) >= stop_after)
    finally:
        handle.remove()
    assert len(unet_calls) == stop_after  # no UNet call after the stop
    assert engine.stats["depth_calls"] == engine.stats["dino_calls"] == 0
    assert not engine.sd.unet.up_blocks[2]._forward_hooks  # the feature-capture hook is gone


def test_a_pipeline_run_stopped_in_stage_1_ends_at_the_next_unet_call(engine):
    from stylegallery.pipeline import Pipeline

    pipe = Pipeline(cache_bytes=0)
    pipe._engine_for = lambda plan: (engine, "test", ())  # the tiny engine, already loaded
    unet_calls = []
    handle = engine.sd.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    settings = dataclasses.replace(tiny_settings(), image=dataclasses.replace(tiny_settings().image, size=64))
    try:
        with pytest.raises(Cancelled, match="inversion step 4 of 15"):
            list(pipe.run(random_image(64, 64, seed=8), [random_image(64, 64, seed=9)], settings,
                          should_stop=lambda: len(unet_calls) >= 3))
    finally:
        handle.remove()
    assert len(unet_calls) == 3


def test_regional_loss_gradient_reaches_the_latent(engine, content, style):
    unet, emb = engine.sd.unet, engine.text_embedding
    state = AttentionState()
    with recording(unet, ("up_blocks.2.", "up_blocks.3."), state) as layers, torch.no_grad():
        state.mode, state.latent_hw = "record", (8, 12)
        unet(style.payload["z0"], 601, encoder_hidden_states=emb)
        ref = [state.records[name] for name in layers]
    z = remove_style(content.payload["c15"]).requires_grad_(True)
    with recording(unet, ("up_blocks.2.", "up_blocks.3."), state) as layers:
        state.mode, state.latent_hw = "grad", (8, 12)
        unet(z, 601, encoder_hidden_states=emb)
        rec = [state.records[name] for name in layers]
        labels = torch.from_numpy(_halves(8, 12))
        masks = [region_masks(labels, r.grid, 2) for r in rec]
        loss = regional_style_loss([r.q for r in rec], [r.out for r in rec], [[r.k for r in ref]],
                                   [[r.v for r in ref]], masks, [masks], [(0, 0, 1), (1, 0, 0)], 1.5, "zero")
    (grad,) = torch.autograd.grad(loss, z)
    assert loss.item() > 0 and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_fast_preset_without_lora_runs_the_lcm_schedule_and_says_so(engine, content, style):
    engine.reset_stats()
    settings = tiny_settings("fast", steps=2, iters=1, preview_every=5)
    steps = list(engine.transfer(content, _halves(8, 12), [style], [_halves(8, 12)], MATCHES, settings))
    assert steps[-1].final and np.isfinite(steps[-1].image).all()
    notes = engine.notes(settings)
    assert len(notes) == 1 and "preset 'fast' runs without a LoRA" in notes[0] and "--lora" in notes[0]
    assert engine.stats["unet_forward_transfer"] == 2 * 2


def test_with_nothing_to_optimise_the_result_is_the_decoded_start_latent(engine, content):
    settings = tiny_settings(steps=2, content_weight=0.0, preview_every=5)
    steps = list(engine.transfer(content, _halves(8, 12), [], [], [], settings))
    expected = engine._decode(remove_style(content.payload["c15"]))
    np.testing.assert_allclose(steps[-1].image, expected, atol=1e-6)


def test_transfer_checks_label_maps_and_matches(engine, content, style):
    settings = tiny_settings(steps=1)
    with pytest.raises(InputError, match="expected the analysis grid"):
        engine.transfer(content, _halves(8, 8), [style], [_halves(8, 12)], MATCHES, settings)
    with pytest.raises(InputError, match="style image 3"):
        engine.transfer(content, _halves(8, 12), [style], [_halves(8, 12)], [Match(0, 3, 0, 1.0, {})], settings)
    with pytest.raises(InputError, match="not in the label maps"):
        engine.transfer(content, _halves(8, 12), [style], [_halves(8, 12)], [Match(0, 0, 5, 1.0, {})], settings)


def test_bfloat16_autocast_transfer_keeps_a_float32_latent(content, style):
    paths = tiny_paths()
    engine = DiffusionEngine(str(paths.sd), str(paths.dino), None, dtype="bfloat16")
    assert engine.depth is None
    steps = list(engine.transfer(content, _halves(8, 12), [style], [_halves(8, 12)], MATCHES,
                                 tiny_settings(steps=2, preview_every=5)))
    assert steps[-1].image.dtype == np.float32 and np.isfinite(steps[-1].image).all()
    assert engine.stats["unet_backward_transfer"] == 2


def test_depth_input_size_official_rule_is_infer_images_lower_bound():
    # Depth-Anything-V2 infer_image: Resize(518, 518, keep_aspect_ratio=True, ensure_multiple_of=14,
    # resize_method="lower_bound"): both sides >= 518, the short side at 518
    assert depth_input_size(512, 512, (518, 518), 14, rule="lower_bound") == (518, 518)
    assert depth_input_size(344, 512, (518, 518), 14, rule="lower_bound") == (518, 770)
    assert depth_input_size(1024, 2048, (518, 518), 14, rule="lower_bound") == (518, 1036)
    # the DPT processor's rule scales as little as possible: here the long side goes to 518 instead
    assert depth_input_size(344, 512, (518, 518), 14) == (350, 518)


def test_depth_resize_is_part_of_the_analysis_key(engine):
    a = engine.analysis_key(tiny_settings())
    assert a != engine.analysis_key(tiny_settings(depth_resize="dpt"))

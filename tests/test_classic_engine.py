"""The classic engine's stage 3 on planted images: hand-made labels and matches, known right answers."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from stylegallery.config import ClassicSettings, Settings
from stylegallery.engines.classic import ClassicEngine, features
from stylegallery.engines.classic import faces as faces_mod
from stylegallery.engines.classic.engine import weight_map
from stylegallery.errors import Cancelled, InputError
from stylegallery.types import Match


H, W = 64, 96  # non-square content
STRIPE_PERIOD = 8

FAST = ClassicSettings(scales=2, patch_sizes=(9, 5), iterations=2, irls_steps=2, content_weight=0.2,
                       denoise_sigma_s=2.0)


def _settings(seed: int = 7, **classic: object) -> Settings:
    import dataclasses

    return Settings(engine="classic", seed=seed, classic=dataclasses.replace(FAST, **classic))


def _content() -> np.ndarray:
    """A smooth grey gradient with mild noise; left half = region 0, right half = region 1."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    grey = 0.35 + 0.3 * (0.5 * yy + 0.5 * xx)
    img = np.repeat(grey[..., None], 3, axis=-1) + rng.normal(0, 0.02, (H, W, 3))
    return np.clip(img, 0, 1).astype(np.float32)


def _flat_red() -> np.ndarray:
    rng = np.random.default_rng(1)
    img = np.array([0.8, 0.15, 0.1]) + rng.normal(0, 0.04, (64, 64, 3))
    return np.clip(img, 0, 1).astype(np.float32)


def _stripes() -> np.ndarray:
    """Vertical blue / yellow bars, STRIPE_PERIOD px per period."""
    xx = np.arange(64)
    on = ((xx // (STRIPE_PERIOD // 2)) % 2 == 0)[None, :, None]
    img = np.where(on, np.array([0.1, 0.2, 0.9]), np.array([0.95, 0.9, 0.1]))
    return np.broadcast_to(img, (64, 64, 3)).astype(np.float32).copy()


def _analyses(engine: ClassicEngine, settings: Settings):
    tw = np.ones(1)
    content = engine.analyze(_content(), settings, tw)
    styles = [engine.analyze(_flat_red(), settings, tw), engine.analyze(_stripes(), settings, tw)]
    gh, gw = content.grid_shape
    labels = np.zeros((gh, gw), np.int32)
    labels[:, gw // 2:] = 1
    style_labels = [np.zeros(s.grid_shape, np.int32) for s in styles]
    matches = [Match(0, 0, 0, 1.0, {}), Match(1, 1, 0, 1.0, {})]
    return content, labels, styles, style_labels, matches


def _run(engine: ClassicEngine | None = None, settings: Settings | None = None, **kw):
    engine = engine or ClassicEngine(face_detector=None)
    settings = settings or _settings()
    content, labels, styles, style_labels, matches = _analyses(engine, settings)
    kw.setdefault("matches", matches)
    return list(engine.transfer(content, labels, styles, style_labels, kw["matches"], settings,
                                kw.get("should_stop", lambda: False)))


def _stripe_energy(img: np.ndarray) -> float:
    """Mean power of the luminance's horizontal spectrum at the stripe frequency (+-1 bin), per px."""
    lum = img.mean(axis=-1)
    lum = lum - lum.mean(axis=1, keepdims=True)
    spec = np.abs(np.fft.rfft(lum, axis=1)) ** 2 / lum.shape[1]  # (h, w/2+1)
    k = lum.shape[1] // STRIPE_PERIOD
    return float(spec[:, k - 1:k + 2].sum(axis=1).mean())


def test_each_region_takes_its_matched_style():
    steps = _run()
    out = steps[-1].image
    left, right = out[:, 8:W // 2 - 8], out[:, W // 2 + 8:W - 8]
    # left half: the flat red style's colour, no stripes
    assert np.allclose(left.reshape(-1, 3).mean(0), [0.8, 0.15, 0.1], atol=0.12)
    # right half: blue/yellow bars at the stripe period
    assert _stripe_energy(right) > 0.5 * _stripe_energy(_stripes()[:, :32])
    assert _stripe_energy(right) > 20 * _stripe_energy(left)
    blue = right[..., 2] > right[..., 0]
    assert 0.2 < blue.mean() < 0.8  # both stripe colours present


def test_swapped_matches_swap_the_looks():
    matches = [Match(0, 1, 0, 1.0, {}), Match(1, 0, 0, 1.0, {})]
    out = _run(matches=matches)[-1].image
    left, right = out[:, 8:W // 2 - 8], out[:, W // 2 + 8:W - 8]
    assert _stripe_energy(left) > 20 * _stripe_energy(right)
    assert right[..., 0].mean() > right[..., 2].mean() + 0.3


def test_previews_in_order_final_last_at_working_size():
    settings = _settings()
    steps = _run(settings=settings)
    assert [s.step for s in steps] == list(range(1, settings.classic.scales + 2))
    assert all(s.total == len(steps) for s in steps)
    assert [s.final for s in steps] == [False] * (len(steps) - 1) + [True]
    for s in steps:
        assert s.image.shape == (H, W, 3)  # aspect ratio kept
        assert s.image.dtype == np.float32
        assert np.isfinite(s.image).all() and s.image.min() >= 0 and s.image.max() <= 1


def test_deterministic_for_a_seed():
    a = _run(settings=_settings(seed=3))[-1].image
    b = _run(settings=_settings(seed=3))[-1].image
    c = _run(settings=_settings(seed=4))[-1].image
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - c).mean() > 1e-3


def test_content_weight_trades_content_for_style():
    """The one knob: a larger content weight keeps the output closer to the content's structure."""
    content = _content()
    low = _run(settings=_settings(content_weight=0.0))[-1].image
    high = _run(settings=_settings(content_weight=8.0))[-1].image
    right = slice(W // 2 + 8, W - 8)

    def corr(a, b):
        return np.corrcoef(a[:, right].mean(-1).ravel(), b[:, right].mean(-1).ravel())[0, 1]

    assert _stripe_energy(high[:, right]) < _stripe_energy(low[:, right])
    assert corr(high, content) > corr(low, content)


def test_should_stop_raises_cancelled():
    calls = {"n": 0}

    def stop_on_third() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    with pytest.raises(Cancelled):
        _run(should_stop=stop_on_third)
    assert calls["n"] == 3


def test_unmatched_region_draws_from_all_styles():
    out = _run(matches=[Match(0, 0, 0, 1.0, {})])[-1].image  # region 1 has no match
    assert out.shape == (H, W, 3) and np.isfinite(out).all()


def test_bad_matches_are_refused():
    with pytest.raises(InputError, match="style image 5"):
        _run(matches=[Match(0, 5, 0, 1.0, {})])
    with pytest.raises(InputError, match="region 3"):
        _run(matches=[Match(0, 0, 3, 1.0, {})])


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a.mean(-1), b.mean(-1), data_range=1.0))


def test_face_boost_keeps_the_face_structure():
    """A detected face (here a planted box from a stub detector) keeps more structure than the background."""
    rng = np.random.default_rng(5)
    content = np.clip(0.5 + 0.35 * np.sign(np.sin(np.arange(W) / 2.0))[None, :, None]
                      * np.sign(np.sin(np.arange(H) / 3.0))[:, None, None] + rng.normal(0, 0.02, (H, W, 3)), 0, 1)
    content = content.astype(np.float32)
    box = (56, 16, 28, 32)  # x, y, w, h inside the right half
    settings = _settings(content_weight=0.3, face_boost=6.0)

    def run(detector):
        engine = ClassicEngine(face_detector=detector)
        tw = np.ones(1)
        ca = engine.analyze(content, settings, tw)
        styles = [engine.analyze(_stripes(), settings, tw)]
        labels = np.zeros(ca.grid_shape, np.int32)
        steps = list(engine.transfer(ca, labels, styles, [np.zeros(styles[0].grid_shape, np.int32)],
                                     [Match(0, 0, 0, 1.0, {})], settings))
        return steps[-1].image

    x, y, w, h = box
    face = (slice(y + 4, y + h - 4), slice(x + 4, x + w - 4))
    background = (slice(4, H - 4), slice(4, 40))
    boosted = run(lambda img: [box])
    plain = run(None)
    assert _ssim(boosted[face], content[face]) > _ssim(boosted[background], content[background]) + 0.1
    assert _ssim(boosted[face], content[face]) > _ssim(plain[face], content[face]) + 0.1


def test_regions_keep_their_light_and_dark_order():
    """A light and a dark region, both matched to dark style regions, stay apart in lightness (colour_luminance)."""
    content = np.full((H, W, 3), 0.9, np.float32)
    content[:, W // 2:] = 0.1
    labels = np.zeros((H // 8, W // 8), np.int32)
    labels[:, labels.shape[1] // 2:] = 1
    dark = np.clip(np.random.default_rng(2).normal(0.2, 0.05, (48, 48, 3)), 0, 1).astype(np.float32)
    darker = np.clip(np.random.default_rng(3).normal(0.12, 0.05, (48, 48, 3)), 0, 1).astype(np.float32)

    def run(share):
        engine = ClassicEngine(face_detector=None)
        settings = _settings(colour_luminance=share)
        tw = np.ones(1)
        ca = engine.analyze(content, settings, tw)
        sa = [engine.analyze(dark, settings, tw), engine.analyze(darker, settings, tw)]
        zeros = [np.zeros(a.grid_shape, np.int32) for a in sa]
        out = list(engine.transfer(ca, labels, sa, zeros, [Match(0, 0, 0, 1.0, {}), Match(1, 1, 0, 1.0, {})],
                                   settings))[-1].image
        return out[:, : W // 2 - 8].mean() - out[:, W // 2 + 8:].mean()

    assert run(0.25) > 0.3  # the light half stays clearly lighter
    assert run(1.0) < 0.15  # a full lightness match makes both halves dark


def test_a_detected_face_keeps_its_colours():
    """Faces keep their own chroma: a skin-toned face region matched to a blue style stays skin-toned."""
    content = np.full((H, W, 3), (0.85, 0.65, 0.55), np.float32)  # one skin-toned region
    blue = np.clip(np.full((48, 48, 3), (0.1, 0.2, 0.8), np.float32)
                   + np.random.default_rng(1).normal(0, 0.05, (48, 48, 3)), 0, 1).astype(np.float32)
    box = (40, 12, 32, 36)
    settings = _settings(content_weight=0.5, face_boost=2.0)

    def run(detector):
        engine = ClassicEngine(face_detector=detector)
        tw = np.ones(1)
        ca = engine.analyze(content, settings, tw)
        sa = engine.analyze(blue, settings, tw)
        steps = list(engine.transfer(ca, np.zeros(ca.grid_shape, np.int32), [sa], [np.zeros(sa.grid_shape, np.int32)],
                                     [Match(0, 0, 0, 1.0, {})], settings))
        return steps[-1].image

    x, y, w, h = box
    centre = (slice(y + 10, y + h - 10), slice(x + 8, x + w - 8))
    protected, plain = run(lambda img: [box]), run(None)
    skin_ab = features.rgb_to_lab(content)[0, 0, 1:]

    def chroma(img):
        return features.rgb_to_lab(np.ascontiguousarray(img[centre])).reshape(-1, 3)[:, 1:].mean(0)

    assert np.abs(chroma(protected) - skin_ab).max() < 4  # Lab units: the face keeps its skin tone
    assert np.abs(chroma(plain) - skin_ab).max() > 20  # without a face, the region turns blue


def test_faces_are_detected_once_per_content_analysis():
    calls = []

    def detector(img):
        calls.append(1)
        return []

    engine = ClassicEngine(face_detector=detector)
    settings = _settings()
    tw = np.ones(1)
    ca = engine.analyze(_content(), settings, tw)
    sa = engine.analyze(_stripes(), settings, tw)
    for _ in range(2):  # e.g. Generate, then Regenerate with other matches
        list(engine.transfer(ca, np.zeros(ca.grid_shape, np.int32), [sa], [np.zeros(sa.grid_shape, np.int32)],
                             [Match(0, 0, 0, 1.0, {})], settings))
    assert len(calls) == 1


def test_weight_map_rises_on_faces():
    img = _content()
    w0 = weight_map(img, 1.0, 2.0, [])
    w1 = weight_map(img, 1.0, 2.0, [(40, 20, 20, 20)])
    assert w1[30, 50] > w0[30, 50] + 1.5
    np.testing.assert_allclose(w1[:, :20], w0[:, :20])
    assert np.all(weight_map(img, 0.0, 2.0, [(40, 20, 20, 20)]) == 0)


def test_default_face_detector_is_optional(caplog):
    faces_mod.default_detector.cache_clear()
    with caplog.at_level(logging.WARNING):
        detector = faces_mod.default_detector()
    if detector is None:
        assert "face boost skipped" in caplog.text
    else:  # this OpenCV has the Haar cascade: it runs and finds nothing in a gradient
        assert detector(_content()) == []
    faces_mod.default_detector.cache_clear()


def test_engine_imports_no_torch():
    """The classic path (engine, a pipeline run, CLI, bench, evaluate) imports no torch/diffusers/transformers."""
    code = ("import sys; import numpy as np; import stylegallery.engines.classic, stylegallery.evaluate; "
            "import stylegallery.bench, stylegallery.cli; from stylegallery import Pipeline, Settings; "
            "rng = np.random.default_rng(0); img = (rng.uniform(0, 1, (64, 80, 3)) * 255).astype(np.uint8); "
            "s = Settings(engine='classic', image=Settings().image.__class__(size=64)); "
            "Pipeline()(img, [img[::-1]], s); "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_detected_face_keeps_more_structure_than_background(gallery_dev):
    """With the real Haar detector (when this OpenCV ships it) on a portrait: the face keeps more structure."""
    faces_mod.default_detector.cache_clear()
    detector = faces_mod.default_detector()
    if detector is None:
        pytest.skip("this OpenCV build has no Haar cascade")
    from stylegallery import images
    from stylegallery.config import ImageSettings

    settings = _settings(content_weight=1.0, face_boost=2.0)
    settings = settings.__class__(**{**settings.__dict__, "image": ImageSettings(size=192)})
    content = images.load(gallery_dev / "style" / "leonardo_mona_lisa.png", settings.image)
    boxes = detector(content)
    if not boxes:
        pytest.skip("no face detected in the portrait at this size")
    engine = ClassicEngine()
    tw = np.ones(1)
    ca = engine.analyze(content, settings, tw)
    styles = [engine.analyze(_stripes(), settings, tw)]
    out = list(engine.transfer(ca, np.zeros(ca.grid_shape, np.int32), styles,
                               [np.zeros(styles[0].grid_shape, np.int32)], [Match(0, 0, 0, 1.0, {})], settings))[-1]
    x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
    face = (slice(y + h // 5, y + h - h // 5), slice(x + w // 5, x + w - w // 5))
    mask = np.ones(content.shape[:2], bool)
    mask[max(0, y - h // 2):y + 2 * h, max(0, x - w // 2):x + w + w // 2] = False
    ys, xs = np.nonzero(mask)
    bg = (slice(ys.min(), ys.min() + h), slice(xs.min(), xs.min() + w))
    assert _ssim(out.image[face], content[face]) > _ssim(out.image[bg], content[bg])


@pytest.mark.parametrize("preset_name", ["paper", "fast"])
def test_presets_run_on_small_and_thin_images(preset_name):
    """Patch sizes that do not fit a scale (of the content or of a thin style) are skipped, not an error."""
    from stylegallery.config import preset

    settings = preset(preset_name, engine="classic")
    engine = ClassicEngine(face_detector=None)
    tw = np.ones(1)
    content = engine.analyze(_content()[:40], settings, tw)
    thin = engine.analyze(np.ascontiguousarray(_stripes()[:24]), settings, tw)
    steps = list(engine.transfer(content, np.zeros(content.grid_shape, np.int32), [thin],
                                 [np.zeros(thin.grid_shape, np.int32)], [Match(0, 0, 0, 1.0, {})], settings))
    assert steps[-1].final and steps[-1].image.shape == (40, W, 3)
    assert np.isfinite(steps[-1].image).all()

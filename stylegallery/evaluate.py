"""Weight-free quality metrics; the classic engine against simple references (research/classic.md 6).

Content structure (output vs content):
    ssim     -> SSIM on luminance (skimage.metrics.structural_similarity, data_range 1)
    grad_r   -> Pearson r of the Sobel gradient magnitudes after a sigma=1 blur ("gradR", classic.md 6)
Style fidelity per matched region pair (content region r of the output vs the style region matched to r),
averaged over the content regions weighted by their area:
    sw_lab   -> sliced Wasserstein-1 distance in CIE Lab, 64 random projections (fixed seed), 256 quantiles
    patch_nn -> mean distance from output 7x7 patches to their nearest style patch of the matched region, in a
                24-dim PCA fitted on the style patches, RMS per patch element in RGB [0, 1] units (Simakov et al.)
Lower is better for both style metrics. No metric uses learned weights.

`evaluate` runs, for every content x style set: the engine asked for (classic by default, through
stylegallery.pipeline.Pipeline), and the classic engine's public references (stylegallery.engines.classic):
(a) "colour" (global_colour_reference): the content colour-matched (Lab quantiles) to the POOLED pixels of all styles,
(b) "one-region" (one_region_reference): the classic engine with a single content region drawing from the POOLED
patches of all styles, and (c) "region-colour" (colour_reference): the classic engine's own per-region colour transfer
C~ exactly as its stage 3 starts (lightness anchored), without any texture synthesis. All are scored against the SAME
region map and matches (those of the engine's run), so SW-Lab favours the classic run and region-colour by construction
(they match exactly those colour distributions): patch-NN against region-colour is the measure of what the texture
synthesis adds. The command line (`python -m stylegallery eval`) is in stylegallery/cli.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stylegallery.types import Match


SW_PROJECTIONS = 64
SW_QUANTILES = 256
PATCH = 7
PATCH_PCA = 24
MAX_PATCHES = 3000
SEED = 0


# ---------------------------------------------------------------------------------------------
# Content structure
# ---------------------------------------------------------------------------------------------


def ssim_luminance(output: np.ndarray, content: np.ndarray) -> float:
    """SSIM of the luminances of two (H, W, 3) RGB images in [0, 1]."""
    from skimage.metrics import structural_similarity

    _check_pair(output, content)
    return float(structural_similarity(_luminance(output), _luminance(content), data_range=1.0))


def gradient_correlation(output: np.ndarray, content: np.ndarray) -> float:
    """Pearson r of the Sobel gradient magnitudes (sigma=1 blur first) of two (H, W, 3) images; 0 if one is flat."""
    _check_pair(output, content)
    a, b = _grad_mag(output).ravel(), _grad_mag(content).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Style fidelity
# ---------------------------------------------------------------------------------------------


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, projections: int = SW_PROJECTIONS, seed: int = SEED) -> float:
    """Sliced Wasserstein-1 distance between two point sets (N, d) and (M, d), compared through SW_QUANTILES
    quantiles along `projections` random unit directions (fixed seed)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) == 0 or len(b) == 0:
        raise ValueError(f"point sets have shapes {a.shape} and {b.shape}: expected non-empty (N, d) and (M, d)")
    return _sliced_wasserstein(a.astype(np.float64), b.astype(np.float64), projections, seed)


def _sliced_wasserstein(a: np.ndarray, b: np.ndarray, projections: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(a.shape[1], projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)  # (d, P) unit directions
    levels = (np.arange(SW_QUANTILES) + 0.5) / SW_QUANTILES
    qa = np.quantile(a @ dirs, levels, axis=0)  # (Q, P)
    qb = np.quantile(b @ dirs, levels, axis=0)
    return float(np.abs(qa - qb).mean())


def patch_nn_distance(output: np.ndarray, style: np.ndarray, output_mask: np.ndarray | None = None,
                      style_mask: np.ndarray | None = None, seed: int = SEED) -> float:
    """Mean distance from the 7x7 patches of `output` (centres in output_mask) to their nearest patch of `style`
    (centres in style_mask), in a 24-dim PCA of the style patches, as RMS per patch element (RGB in [0, 1])."""
    rng = np.random.default_rng(seed)
    q = _patches(output, output_mask, MAX_PATCHES, rng)  # (N, 147)
    s = _patches(style, style_mask, 2 * MAX_PATCHES, rng)  # (M, 147)
    mean = s.mean(axis=0)
    cov = (s - mean).T @ (s - mean)  # (147, 147)
    _evals, evecs = np.linalg.eigh(cov)
    basis = evecs[:, ::-1][:, :PATCH_PCA]  # (147, 24)
    qp, sp = (q - mean) @ basis, (s - mean) @ basis
    s_sq = (sp * sp).sum(axis=1)
    best = np.empty(len(qp))
    for start in range(0, len(qp), 1024):
        chunk = qp[start:start + 1024]
        d2 = (chunk * chunk).sum(axis=1)[:, None] + s_sq[None, :] - 2.0 * chunk @ sp.T
        best[start:start + 1024] = np.maximum(d2.min(axis=1), 0.0)
    return float(np.sqrt(best / q.shape[1]).mean())


def style_fidelity(
    output: np.ndarray,
    content_labels: np.ndarray,
    styles: Sequence[np.ndarray],
    style_labels: Sequence[np.ndarray],
    matches: Sequence[Match],
) -> dict[str, float]:
    """sw_lab and patch_nn of each content region against its matched style region, area-weighted means.

    content_labels / style_labels may be on the feature grid; they are upsampled (nearest) to the images.
    """
    labels_px = _upsample(content_labels, output.shape[:2])
    styles_px = [_upsample(lab, img.shape[:2]) for img, lab in zip(styles, style_labels)]
    out_lab = _lab(output)
    style_labs = [_lab(s) for s in styles]
    sw, pnn, area = [], [], []
    for m in matches:
        region = labels_px == m.content_region
        if not region.any():
            continue
        s_region = styles_px[m.style_image] == m.style_region
        rng = np.random.default_rng(SEED)
        a = _subsample(out_lab[region], 20_000, rng)
        b = _subsample(style_labs[m.style_image][s_region], 20_000, rng)
        sw.append(_sliced_wasserstein(a, b, SW_PROJECTIONS, SEED))
        pnn.append(patch_nn_distance(output, styles[m.style_image], region, s_region))
        area.append(region.sum())
    if not area:
        raise ValueError("no matched content region has pixels: pass the matches of these labels")
    wts = np.asarray(area, np.float64) / np.sum(area)
    return {"sw_lab": float(np.dot(wts, sw)), "patch_nn": float(np.dot(wts, pnn))}


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    content: str
    styles: str
    method: str  # an engine's name, "colour", "one-region", "region-colour", "global-neural" or "content"
    ssim: float
    grad_r: float
    sw_lab: float
    patch_nn: float
    seconds: float
    gram: float = math.nan  # the predictor's regional Gram distance (NaN where the neural engine is not installed)
    vec: float = math.nan  # the regional style-vector distance (likewise)


def neural_fidelity(engine: Any, output: np.ndarray, content_labels: np.ndarray, styles: Sequence[np.ndarray],
                    style_labels: Sequence[np.ndarray], matches: Sequence[Match], settings: Any) -> dict[str, float]:
    """Per matched region pair, area-weighted: the relative Frobenius distance between the Gram matrices of the neural
    engine's predictor features (stride 8, 192 channels) of the output region and of its matched style region (the
    paper's regional Gram metric with this network in place of VGG-19), and the L2 distance of their style vectors
    (the predictor's own descriptor of a region's style). `engine` is a NeuralEngine; labels on any grid."""
    feats = [engine.style_features(img) for img in (output, *styles)]  # (h8, w8, 192) each
    masks_out = _cell_masks(content_labels, output.shape[:2], feats[0].shape[:2])
    masks_style = [_cell_masks(lab, img.shape[:2], f.shape[:2])
                   for lab, img, f in zip(style_labels, styles, feats[1:])]
    analyses = [engine.analyze(img, settings, np.ones(1)) for img in (output, *styles)]
    vectors = [engine.region_statistics(a, _upsample(lab, a.grid_shape))
               for a, lab in zip(analyses, (content_labels, *style_labels))]  # (K, 100) each
    gram, vec, area = [], [], []
    for m in matches:
        mo = masks_out.get(m.content_region)
        ms = masks_style[m.style_image].get(m.style_region)
        if mo is None or ms is None:
            continue
        g_out, g_style = _gram(feats[0][mo]), _gram(feats[1 + m.style_image][ms])
        gram.append(float(np.linalg.norm(g_out - g_style) / (np.linalg.norm(g_style) + 1e-8)))
        vec.append(float(np.linalg.norm(vectors[0][m.content_region] - vectors[1 + m.style_image][m.style_region])))
        area.append(int(mo.sum()))
    if not area:
        return {"gram": math.nan, "vec": math.nan}
    wts = np.asarray(area, np.float64) / np.sum(area)
    return {"gram": float(np.dot(wts, gram)), "vec": float(np.dot(wts, vec))}


def evaluate(contents: Sequence[Any], style_sets: Sequence[Sequence[Any]], settings: Any = None,
             pipeline: Any = None, names: tuple[Sequence[str], Sequence[str]] | None = None,
             versus: Sequence[Any] = ()) -> list[Row]:
    """Score an engine, the engines `versus` and the references for every content x style set (module docstring).

    contents / style sets: anything Pipeline accepts (paths, arrays...); settings: a front-desk Plan or Settings
    (default: the classic engine's); versus: more Plans or Settings, run on the same images; pipeline: a
    stylegallery.pipeline.Pipeline to reuse (built if None). Every method is scored on the first run's region map
    and matches; the references are the classic engine's public ones and, where the neural engine is installed, its
    plain global use of the networks.
    """
    import time

    from stylegallery.config import Settings
    from stylegallery.engines.classic import colour_reference, global_colour_reference, one_region_reference
    from stylegallery.errors import EngineUnavailable, ModelLoadError
    from stylegallery.pipeline import Pipeline
    from stylegallery.request import Plan

    settings = settings if settings is not None else Settings(engine="classic")
    plain = settings.settings if isinstance(settings, Plan) else settings
    pipe = pipeline or Pipeline()
    try:
        neural = pipe.engine("neural", plain)
    except (EngineUnavailable, ModelLoadError):
        neural = None  # no neural measures and no global-neural reference: the table shows "-"
    rows: list[Row] = []
    for ci, content in enumerate(contents):
        for si, styles in enumerate(style_sets):
            c_name = names[0][ci] if names else f"content{ci}"
            s_name = names[1][si] if names else f"styles{si}"
            t0 = time.perf_counter()
            result = pipe(content, list(styles), settings)
            methods = [(result.engine, result.image, time.perf_counter() - t0)]
            c_img, s_imgs = result.content_image, result.style_images
            for other in versus:
                t0 = time.perf_counter()
                run = pipe(content, list(styles), other)
                methods.append((run.engine, run.image, time.perf_counter() - t0))
            references = [
                ("colour", lambda: global_colour_reference(c_img, s_imgs, SEED)),
                ("one-region", lambda: one_region_reference(c_img, s_imgs, plain)),
                ("region-colour", lambda: colour_reference(c_img, result.content_labels, s_imgs, result.style_labels,
                                                           result.matches, plain)),
            ]
            if neural is not None:
                references.append(("global-neural", lambda: neural.global_stylise(c_img, s_imgs)))
            for method, make in references:
                t0 = time.perf_counter()
                image = make()
                methods.append((method, image, time.perf_counter() - t0))
            methods.append(("content", c_img, 0.0))
            for method, img, secs in methods:
                rows.append(_score(c_name, s_name, method, img, secs, c_img, s_imgs, result.content_labels,
                                   result.style_labels, result.matches, neural, plain))
    return rows


def evaluate_manifest(manifest: str | Path, pipeline: Any = None) -> list[Row]:
    """Score the finished jobs of a batch (`python -m stylegallery batch`): each job's result against its content
    and its matched style regions, with the region maps and matches the batch saved, the same metrics as `evaluate`.
    `manifest`: the batch's manifest.jsonl or its folder. Raises InputError for a manifest without finished jobs or
    a job whose files are gone."""
    from stylegallery import images
    from stylegallery.batch import MANIFEST, read_manifest, read_records
    from stylegallery.errors import EngineUnavailable, InputError, ModelLoadError
    from stylegallery.pipeline import Pipeline
    from stylegallery.request import Request, plan

    path = Path(manifest)
    folder = path if path.is_dir() else path.parent
    if path.is_dir() and not (folder / MANIFEST).is_file() or not path.exists():
        raise InputError(f"{str(path)!r} is not a batch's manifest or folder: give DIR/{MANIFEST} of a batch run")
    # the manifest with the parts an interrupted run left beside it, or exactly the file given
    found = read_manifest(folder) if path.is_dir() or path.name == MANIFEST else read_records(path)
    records = [r for r in found.values() if r.get("status") == "ok"]
    if not records:
        raise InputError(f"{str(path)!r} holds no finished job of a batch: give DIR/{MANIFEST} of a batch run, "
                         "or run or resume the batch first")
    pipe = pipeline or Pipeline()
    rows: list[Row] = []
    for record in sorted(records, key=lambda r: r.get("index", 0)):
        job = record["id"]
        fields = {k: _tuples(v) for k, v in record.get("request", {}).items() if k in Request.__dataclass_fields__}
        settings = plan(dataclasses.replace(Request(**fields), engine=record["engine"])).settings
        files = [folder / record["output"], folder / record["regions"]]
        for file in files:
            if not file.is_file():
                raise InputError(f"job {job}: {str(file)!r} is missing; re-run the batch to write it again")
        c_img = images.load(record["content"], settings.image, name=f"job {job}'s content image")
        s_imgs = [images.load(s, settings.image, name=f"job {job}'s style image {i + 1}")
                  for i, s in enumerate(record["styles"])]
        output = images.to_rgb(str(files[0]), name=f"job {job}'s result").astype(np.float32) / 255.0
        with np.load(files[1]) as saved:
            labels = saved["content_labels"]
            style_labels = [saved[f"style_labels_{i}"] for i in range(len(s_imgs))]
        matches = [Match(m["content_region"], m["style_image"], m["style_region"], m["score"], m["terms"],
                         m.get("source", "auto")) for m in record["matches"]]
        try:
            neural = pipe.engine("neural", settings)
        except (EngineUnavailable, ModelLoadError):
            neural = None
        names = "+".join(Path(s).stem.split("_")[-1] for s in record["styles"])
        rows.append(_score(job, names, record["engine"], output, float(record.get("seconds", math.nan)), c_img,
                           s_imgs, labels, style_labels, matches, neural, settings))
    return rows


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples a Request holds (region_strengths: [[2, 0.3]] -> ((2, 0.3),))."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _score(c_name: str, s_name: str, method: str, img: np.ndarray, secs: float, c_img: np.ndarray,
           s_imgs: Sequence[np.ndarray], content_labels: np.ndarray, style_labels: Sequence[np.ndarray],
           matches: Sequence[Match], neural: Any, settings: Any) -> Row:
    """One row: `img` scored against the content and the matched style regions at the working size."""
    img = _at(img, c_img.shape[:2])  # an engine may paint at the photo's own size: score at the working size
    fid = style_fidelity(img, content_labels, s_imgs, style_labels, matches)
    deep = {} if neural is None else neural_fidelity(neural, img, content_labels, s_imgs, style_labels, matches,
                                                     settings)
    return Row(c_name, s_name, method, ssim_luminance(img, c_img), gradient_correlation(img, c_img), fid["sw_lab"],
               fid["patch_nn"], secs, deep.get("gram", math.nan), deep.get("vec", math.nan))


def format_table(rows: Sequence[Row]) -> str:
    """One line per row, then (for several content x style pairs) the mean of each method over the pairs."""
    width = max([14, *(len(r.content) for r in rows)])  # names in full (a batch's job ids can be long)
    head = (f"{'content':<{width}} {'styles':<28} {'method':<13} {'SSIM':>6} {'gradR':>6} {'SW-Lab':>7} "
            f"{'patch-NN':>9} {'Gram':>6} {'vec':>6} {'s':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(_format_row(r.content, r.styles, r, width))
    pairs = {(r.content, r.styles) for r in rows}
    if len(pairs) > 1:
        lines.append("-" * len(head))
        for method in dict.fromkeys(r.method for r in rows):
            of = [r for r in rows if r.method == method]
            mean = Row("", "", method, *(float(np.mean([getattr(r, f) for r in of]))
                                         for f in ("ssim", "grad_r", "sw_lab", "patch_nn", "seconds", "gram", "vec")))
            lines.append(_format_row("mean", f"{len(of)} pairs", mean, width))
    return "\n".join(lines)


def _format_row(content: str, styles: str, r: Row, width: int = 14) -> str:
    deep = " ".join("     -" if math.isnan(v) else f"{v:6.3f}" for v in (r.gram, r.vec))
    return (f"{content[:width]:<{width}} {styles[:28]:<28} {r.method:<13} {r.ssim:6.3f} {r.grad_r:6.3f} "
            f"{r.sw_lab:7.2f} {r.patch_nn:9.4f} {deep} {r.seconds:6.2f}")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"images have shapes {a.shape} and {b.shape}: expected two (H, W, 3) images of one size")


def _luminance(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2GRAY)


def _grad_mag(img: np.ndarray) -> np.ndarray:
    lum = cv2.GaussianBlur(_luminance(img), (0, 0), 1.0)
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy).astype(np.float64)


def _lab(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2Lab)


def _upsample(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(np.asarray(labels, np.int32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _at(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(shape):
        return image
    return cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (shape[1], shape[0]),
                      interpolation=cv2.INTER_AREA)


def _cell_masks(labels: np.ndarray, image_shape: tuple[int, int], cells: tuple[int, int]) -> dict[int, np.ndarray]:
    """Region -> (h, w) bool mask of the feature cells mostly inside it (the cells of its largest share where
    none is), for the regions present."""
    px = _upsample(labels, image_shape)
    out = {}
    for region in np.unique(px):
        share = cv2.resize((px == region).astype(np.float32), (cells[1], cells[0]), interpolation=cv2.INTER_AREA)
        mask = share > 0.5
        out[int(region)] = mask if mask.any() else share >= share.max()
    return out


def _gram(x: np.ndarray) -> np.ndarray:
    """(N, C) features -> (C, C) Gram matrix normalised by N."""
    x = x.astype(np.float64)
    return x.T @ x / max(1, len(x))


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def _patches(img: np.ndarray, mask: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to n random 7x7 patches (N, 147) whose centres lie in mask (all centres if None; nearest ones if the mask
    holds no valid centre)."""
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(np.ascontiguousarray(img, dtype=np.float32), (PATCH, PATCH), axis=(0, 1))
    hh, ww = win.shape[:2]  # (h-6, w-6, 3, 7, 7)
    half = PATCH // 2
    valid = np.ones((hh, ww), bool) if mask is None else mask[half:half + hh, half:half + ww]
    ys, xs = np.nonzero(valid)
    if ys.size == 0:  # region thinner than a patch: take the centres nearest to it
        ys, xs = np.nonzero(mask)
        ys, xs = np.clip(ys - half, 0, hh - 1), np.clip(xs - half, 0, ww - 1)
    if ys.size > n:
        sel = rng.choice(ys.size, n, replace=False)
        ys, xs = ys[sel], xs[sel]
    return win[ys, xs].reshape(ys.size, -1).astype(np.float64)  # (N, 3*7*7)



"""The weight-free engine: hand-made features for stages 1-2, region-restricted texture optimisation for stage 3.

Notation (code -> paper / research/classic.md):
    analyze            -> the feature extraction of stage 1 (paper 2.1), with features.py instead of UNet features
    content_weight     -> the one content-vs-style knob: scales the fusion weight map W (classic.md 2.2 step 0)
    weight_map         -> W = content_weight * (EDGE_FLOOR + edges + face_boost * faces)
    low_weight         -> V = content_weight * LOW_BAND, the weight of the content's low band in the fusion
    refine_labels      -> the grid labels snapped to the image's edges (edges.snap_labels, a guided filter)
    transfer           -> stage 3 (classic.md 5), synthesis.synthesize
    depth              -> None: no weight-free depth cue is reliable on paintings, so stage 1 skips the depth split

Faces (when this OpenCV has the Haar cascade) raise W by face_boost; the detector can be injected for tests.

This package imports only numpy, OpenCV and the standard library (no torch, no diffusers, no transformers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import ClassVar

import cv2
import numpy as np

from stylegallery import images
from stylegallery.config import MatchSettings, RegionSettings, Settings
from stylegallery.engines.base import Engine
from stylegallery.engines.classic import edges, faces, features, synthesis
from stylegallery.errors import InputError
from stylegallery.types import Analysis, Match, TransferStep


FEATURE_VERSION = 3  # bump when features.py changes what analyze returns (invalidates cached analyses)
EDGE_FLOOR = 0.1  # share of the content weight that flat areas keep, so large-scale shading survives
EDGE_SIGMA = 3.0  # px blur of the edge map at a 512 px working size
LOW_BAND = 0.5  # V / content_weight: the content's light-and-colour layout (blur of LOW_SIGMA px) kept everywhere
LOW_SIGMA = 6.0  # px at a 512 px working size


class ClassicEngine(Engine):
    name: ClassVar[str] = "classic"
    parallel_analysis: ClassVar[bool] = True  # analyze keeps no state

    def __init__(self, face_detector: Callable[[np.ndarray], list[faces.Box]] | None | str = "default") -> None:
        # "default": OpenCV's Haar cascade when this OpenCV has it; None: no face boost; or any image -> boxes.
        self._face_detector = face_detector

    # -- stages 1-2: features -------------------------------------------------------------------------------------
    def analysis_key(self, settings: Settings) -> Hashable:
        return ("classic", FEATURE_VERSION, settings.classic.grid_cell, settings.image.size, settings.image.multiple)

    def analyze(self, image: np.ndarray, settings: Settings, time_weights: np.ndarray,
                should_stop: Callable[[], bool] = lambda: False) -> Analysis:
        # quick (well under a second at 512 px): the pipeline's check before each image is enough
        _check_image(image, "image")
        g = settings.classic.grid_cell
        hh, ww = image.shape[:2]
        grid = (max(1, round(hh / g)), max(1, round(ww / g)))
        cluster, merge = features.cluster_features(image, grid)
        tokens = features.block_tokens(image, features.token_grid(image.shape))
        return Analysis(image=np.ascontiguousarray(image, dtype=np.float32), cluster_features=cluster,
                        merge_features=merge, depth=None, tokens=tokens, payload={})

    def resolve_matching(self, matching: MatchSettings) -> MatchSettings:
        return dataclasses.replace(
            matching,
            statistics="moments" if matching.statistics == "auto" else matching.statistics,
            assignment="balanced" if matching.assignment == "auto" else matching.assignment,
        )

    def resolve_regions(self, settings: Settings) -> RegionSettings:
        """Stage 1 on the hand-made features: `classic.kmeans_restarts` restarts, `classic.silhouette_sample` points
        for the silhouette, at least `classic.min_regions` clusters (never above k_max, the user's "maximum
        regions")."""
        regions, cs = settings.regions, settings.classic
        k_min = max(regions.k_min, min(cs.min_regions, regions.k_max))
        return dataclasses.replace(regions, n_init=cs.kmeans_restarts, k_min=k_min,
                                   silhouette_sample=cs.silhouette_sample)

    def refine_labels(self, image: np.ndarray, labels: np.ndarray, settings: Settings) -> np.ndarray:
        """Pixel-level region map whose boundaries follow the image's edges (guided filter, radius two cells: one
        cell left the boundary halfway between the staircase and the edge)."""
        return edges.snap_labels(labels, image, radius=2 * settings.classic.grid_cell)

    # -- stage 3 --------------------------------------------------------------------------------------------------
    def transfer(
        self,
        content: Analysis,
        content_labels: np.ndarray,
        styles: Sequence[Analysis],
        style_labels: Sequence[np.ndarray],
        matches: Sequence[Match],
        settings: Settings,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        source: np.ndarray | None = None,  # ignored: this engine paints at the working size
    ) -> Iterator[TransferStep]:
        # 1. Check inputs
        if len(styles) == 0 or len(styles) != len(style_labels):
            raise InputError(f"got {len(styles)} style analyses and {len(style_labels)} label maps: pass one of each")
        image = content.image
        _check_image(image, "content image")
        n_regions = check_labels(content_labels, "content labels")
        for i, (style, labels) in enumerate(zip(styles, style_labels)):
            _check_image(style.image, f"style image {i}")
            check_labels(labels, f"style labels {i}")
        pairing = pairing_from_matches(matches, n_regions, [int(lab.max()) + 1 for lab in style_labels])

        # 2. Upsample the label grids to pixels and build the content weight map W
        cs = settings.classic
        content_px = images.resize_labels(content_labels, image.shape[:2])
        styles_px = [images.resize_labels(lab, st.image.shape[:2]) for st, lab in zip(styles, style_labels)]
        boxes = content.payload.get("faces")
        if boxes is None:  # detected once per cached content analysis: a Regenerate skips it
            boxes = content.payload["faces"] = self._detect_faces(image)
        weight = weight_map(image, cs.content_weight, cs.face_boost, boxes)
        protect = faces.face_mask(image.shape[:2], boxes) if boxes and cs.face_boost > 0 else None

        # 3. Synthesise coarse to fine, yielding a preview after each scale, then the final image
        params = synthesis_params(settings)
        total = params.scales + 1
        rng = np.random.default_rng(settings.seed)
        last = image
        for s, x in synthesis.synthesize(image, content_px, [st.image for st in styles], styles_px, pairing,
                                         weight, params, rng, should_stop, protect):
            last = x
            yield TransferStep(step=s + 1, total=total, image=synthesis.resize(x, image.shape[:2]).astype(np.float32))
        yield TransferStep(step=total, total=total, image=np.clip(last, 0, 1).astype(np.float32), final=True)

    def _detect_faces(self, image: np.ndarray) -> list[faces.Box]:
        detector = faces.default_detector() if self._face_detector == "default" else self._face_detector
        if detector is None:
            return []
        return list(detector(image))  # type: ignore[operator]


# -- references for the evaluation (public: `stylegallery eval` scores against them) ---------------------------------


def colour_reference(content: np.ndarray, content_labels: np.ndarray, styles: Sequence[np.ndarray],
                     style_labels: Sequence[np.ndarray], matches: Sequence[Match], settings: Settings) -> np.ndarray:
    """C~ of a classic run: the content colour-matched region by region exactly as stage 3 starts (lightness anchored
    by `colour_luminance`), with no texture synthesis and no face protection. Labels on the grid or per pixel."""
    labels = images.resize_labels(content_labels, content.shape[:2])
    styles_px = [images.resize_labels(lab, img.shape[:2]) for img, lab in zip(styles, style_labels)]
    pairing = pairing_from_matches(matches, int(labels.max()) + 1, [int(lab.max()) + 1 for lab in styles_px])
    rng = np.random.default_rng(settings.seed)
    tilde, _ = synthesis.colour_matched(content, labels, styles, styles_px, pairing,
                                        settings.classic.colour_luminance, rng)
    return tilde.astype(np.float32)


def one_region_reference(content: np.ndarray, styles: Sequence[np.ndarray], settings: Settings) -> np.ndarray:
    """The classic engine with the whole content as one region and no match: it draws from every style at once."""
    engine = ClassicEngine()
    tw = np.ones(1)
    ca = engine.analyze(content, settings, tw)
    sa = [engine.analyze(s, settings, tw) for s in styles]
    steps = list(engine.transfer(ca, np.zeros(ca.grid_shape, np.int32), sa,
                                 [np.zeros(a.grid_shape, np.int32) for a in sa], [], settings))
    return steps[-1].image


def global_colour_reference(content: np.ndarray, styles: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
    """The content's Lab quantiles mapped to those of the pooled pixels of all styles (one global colour transfer)."""
    from stylegallery.engines.classic import colour

    rng = np.random.default_rng(seed)
    lab = features.rgb_to_lab(content)
    pooled = np.concatenate([features.rgb_to_lab(s).reshape(-1, 3) for s in styles])
    mapped = colour.apply_quantile_map(lab.reshape(-1, 3), colour.quantiles(lab.reshape(-1, 3), rng),
                                       colour.quantiles(pooled, rng))
    return features.lab_to_rgb(mapped.reshape(lab.shape))


def synthesis_params(settings: Settings) -> synthesis.SynthesisParams:
    cs = settings.classic
    return synthesis.SynthesisParams(
        scales=cs.scales, patch_sizes=tuple(cs.patch_sizes), iterations=cs.iterations, irls_steps=cs.irls_steps,
        robust_r=cs.robust_r, pca_dims=cs.pca_dims, init_noise=cs.init_noise, denoise_sigma_s=cs.denoise_sigma_s,
        denoise_sigma_r=cs.denoise_sigma_r, max_db=cs.max_db, low_weight=cs.content_weight * LOW_BAND,
        low_sigma=LOW_SIGMA, colour_luminance=cs.colour_luminance,
    )


def pairing_from_matches(matches: Sequence[Match], n_regions: int, style_regions: Sequence[int]) -> synthesis.Pairing:
    """Content region -> (style image, style region); regions without a match draw from all styles (None)."""
    sources: list[tuple[int, int] | None] = [None] * n_regions
    for m in matches:
        if not 0 <= m.content_region < n_regions:
            raise InputError(f"match for content region {m.content_region} but the content has {n_regions} regions: "
                             "recompute the matches for these labels")
        if not 0 <= m.style_image < len(style_regions):
            raise InputError(f"match to style image {m.style_image} but {len(style_regions)} styles were given")
        if not 0 <= m.style_region < style_regions[m.style_image]:
            raise InputError(f"match to region {m.style_region} of style {m.style_image}, which has "
                             f"{style_regions[m.style_image]} regions: recompute the matches")
        sources[m.content_region] = (m.style_image, m.style_region)
    return synthesis.Pairing(tuple(sources))


def weight_map(image: np.ndarray, content_weight: float, face_boost: float, boxes: Sequence[faces.Box]) -> np.ndarray:
    """W = content_weight * (EDGE_FLOOR + blurred normalised Sobel magnitude + face_boost * face mask), (H, W)."""
    scale = max(image.shape[:2]) / 512.0
    lum = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), EDGE_SIGMA * scale)
    edges = np.clip(mag / (np.percentile(mag, 98) + 1e-6), 0.0, 1.0)
    w = EDGE_FLOOR + edges
    if boxes and face_boost > 0:
        w = w + face_boost * faces.face_mask(image.shape[:2], list(boxes))
    return (content_weight * w).astype(np.float32)


def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InputError(f"{name} has shape {shape}: expected an (H, W, 3) float32 RGB array in [0, 1]")
    if min(image.shape[:2]) < 8:
        raise InputError(f"{name} is {image.shape[1]}x{image.shape[0]} px: expected at least 8 px per side")


def check_labels(labels: np.ndarray, name: str) -> int:
    """The number of regions K of an (h, w) label grid 0..K-1; a clear InputError for anything else."""
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.size == 0:
        raise InputError(f"{name} have shape {getattr(labels, 'shape', None)}: expected an (h, w) int label grid")
    if labels.min() < 0:
        raise InputError(f"{name} contain the negative label {int(labels.min())}: expected labels 0..K-1")
    return int(labels.max()) + 1

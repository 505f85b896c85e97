"""Plain data passed between the stages and out of the pipeline (its events and result). No logic lives here, so
every stage module can import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np


if TYPE_CHECKING:
    from stylegallery.config import Settings


@dataclass
class Analysis:
    """What an engine extracts from one image, before any stage runs (cached per image).

    Grids are channel-last float32 numpy arrays on the engine's feature grid of (h, w) cells, which
    covers the whole working image (a cell is 8x8 px for the diffusion engine: its latent grid).

    Notation (code -> paper): cluster_features -> F_mix (2.1); merge_features -> F, the VAE latent z0 (2.2);
    depth -> the depth map D (2.2); tokens -> the DINOv2 patch tokens of x_0 (3.1).
    """

    image: np.ndarray  # (H, W, 3) float32 in [0, 1], the working-size image
    cluster_features: np.ndarray  # (h, w, C) features clustered in stage 1 and aggregated in stage 2
    merge_features: np.ndarray  # (h, w, c) features whose region means decide merges (stage 1)
    depth: np.ndarray | None  # (h, w) in [0, 1], near = 1; None when depth is off
    tokens: np.ndarray  # (gh, gw, D) semantic tokens on a grid covering the whole image (stage 2)
    payload: dict[str, Any] = field(default_factory=dict)  # engine-private (latents, ...)
    # (M, H, W) bool base masks (SAM) whose map replaces k-means in stage 1 (2.2 code); None: k-means
    masks: np.ndarray | None = None

    @property
    def grid_shape(self) -> tuple[int, int]:
        return int(self.cluster_features.shape[0]), int(self.cluster_features.shape[1])

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for the byte-bounded cache."""
        total = 0
        for value in (self.image, self.cluster_features, self.merge_features, self.depth, self.tokens, self.masks,
                      *self.payload.values()):
            total += _nbytes(value)
        return total


def _nbytes(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    numel = getattr(value, "numel", None)  # torch tensors, without importing torch
    if callable(numel):
        return int(numel() * value.element_size())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 64


@dataclass(frozen=True)
class RegionDescriptor:
    """One region's descriptors for stage 2 (paper 3.2): s_r, e_r and the circle (c_r, rho_r)."""

    region: int  # label in the image's region map
    cells: int  # number of grid cells in the region
    statistical: np.ndarray  # (2C,) aggregated mean || variance (3.2a)
    semantic: np.ndarray  # (D,) mean token over the kept blocks (3.2b)
    circle: tuple[float, float, float]  # (cy, cx, r) in a unit frame: y / h and x / w (3.2c)


@dataclass(frozen=True)
class Match:
    """Content region -> the (style image, style region) it takes its look from (paper 3.2)."""

    content_region: int
    style_image: int
    style_region: int
    score: float
    terms: dict[str, float]  # "statistical", "semantic", "positional" similarities before weighting
    source: Literal["auto", "user"] = "auto"

    def to_json(self) -> dict[str, Any]:
        return {
            "content_region": self.content_region,
            "style_image": self.style_image,
            "style_region": self.style_region,
            "score": float(self.score),
            "terms": {k: float(v) for k, v in self.terms.items()},
            "source": self.source,
        }


@dataclass(frozen=True)
class TransferStep:
    """One image yielded by an engine's stage 3: previews, then the final image (final=True)."""

    step: int  # 1-based index of this step
    total: int  # number of steps
    image: np.ndarray  # (H, W, 3) float32 in [0, 1], at the content's working size (a final step: at the source's
    # size when the engine paints at the photo's own size, see Engine.transfer's `source`)
    final: bool = False


# The events of `Pipeline.run`, in order, and the result (plain data; the pipeline fills them).


@dataclass
class Result:
    # (H, W, 3) float32 in [0, 1]: the content's working size, or the photo's own size (long side capped at 2048) for
    # an engine that paints at it (Engine.uses_source: neural)
    image: np.ndarray
    content_image: np.ndarray
    style_images: list[np.ndarray]
    content_labels: np.ndarray  # (h, w) int32 region map: on the feature grid (diffusion) or per pixel (classic)
    style_labels: list[np.ndarray]
    matches: list[Match]
    timings: dict[str, float]
    engine: str
    engine_reason: str
    settings: Settings
    notes: tuple[str, ...] = ()  # one line each: a setting that this run could not honour (e.g. "fast" without LoRA)
    style_names: list[str] = field(default_factory=list)  # each style's file name (or "style N" for an array)
    content_name: str = "content"  # the content's file name (or "content" for an array)

    def to_pil(self):  # -> PIL.Image.Image
        from stylegallery import images

        return images.to_pil(self.image)

    def matches_json(self) -> dict[str, Any]:
        """The `--matches-out` document (README "Command line"): engine, regions, matches, styles, timings."""
        return {
            "engine": self.engine,
            "content": self.content_name,
            "content_regions": int(self.content_labels.max()) + 1 if self.content_labels.size else 0,
            "styles": [{"style_image": i, "file": name} for i, name in enumerate(self.style_names)],
            "matches": [m.to_json() for m in self.matches],
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
        }


@dataclass
class ContentSegmented:
    """The content's region map, sent before the style images are analysed (the app shows it at once)."""

    engine: str
    engine_reason: str
    content_image: np.ndarray
    content_labels: np.ndarray
    timings: dict[str, float]
    notes: tuple[str, ...] = ()  # as Result.notes, known before any work: show them with the engine


@dataclass
class Segmented:
    engine: str
    engine_reason: str
    content_image: np.ndarray
    content_labels: np.ndarray
    style_images: list[np.ndarray]
    style_labels: list[np.ndarray]
    timings: dict[str, float]
    notes: tuple[str, ...] = ()  # as Result.notes


@dataclass
class Matched:
    matches: list[Match]
    timings: dict[str, float]
    notes: tuple[str, ...] = ()  # the chosen styles that paint no region, and why (also in Result.notes)


@dataclass
class Preview:
    step: int
    total: int
    image: np.ndarray
    timings: dict[str, float]


@dataclass
class Done:
    result: Result


Event = ContentSegmented | Segmented | Matched | Preview | Done

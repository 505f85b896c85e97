"""Plain data passed between the stages. No logic lives here, so every stage module can import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


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

    @property
    def grid_shape(self) -> tuple[int, int]:
        return int(self.cluster_features.shape[0]), int(self.cluster_features.shape[1])

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for the byte-bounded cache."""
        total = 0
        for value in (self.image, self.cluster_features, self.merge_features, self.depth, self.tokens,
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

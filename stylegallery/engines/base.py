"""The small interface every engine implements. pipeline.py is its only caller."""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import ClassVar

import numpy as np

from stylegallery.config import MatchSettings, RegionSettings, Settings
from stylegallery.types import Analysis, Match, TransferStep


class Engine(abc.ABC):
    """Feature extraction for stages 1-2 and the whole of stage 3, behind one signature.

    Engines never call regions.py or matching.py: the pipeline hands them the region maps and
    matches. They read only the settings that concern them.
    """

    name: ClassVar[str]
    # True when `analyze` may run on several threads at once (the pipeline then analyses style images in parallel)
    parallel_analysis: ClassVar[bool] = False
    # True when `transfer` can paint at the content photo's own size (the pipeline then passes `source`)
    uses_source: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """Build the engine (load its models) for `settings`; the pipeline keeps it while `load_key` is unchanged."""
        return cls()

    @classmethod
    def load_key(cls, settings: Settings) -> Hashable:
        """The settings that decide what `from_settings` loads (model locations, device, precision)."""
        return ()

    @abc.abstractmethod
    def analysis_key(self, settings: Settings) -> Hashable:
        """The settings (and model identities) that change `analyze`'s result; part of the cache key."""

    @abc.abstractmethod
    def analyze(self, image: np.ndarray, settings: Settings, time_weights: np.ndarray,
                should_stop: Callable[[], bool] = lambda: False) -> Analysis:
        """Extract features of one working-size image, (H, W, 3) float32 in [0, 1].

        time_weights: (T,) normalised logistic weights of F_mix (paper 2.1) for T inversion steps
        (diffusion engine); engines without a time axis ignore them. An analysis of several model calls
        raises `stylegallery.errors.Cancelled` within one call after `should_stop()` turns true; a quick
        one may ignore it (the pipeline asks before each image).
        """

    @abc.abstractmethod
    def resolve_matching(self, matching: MatchSettings) -> MatchSettings:
        """Replace the "auto" choices of the match settings with this engine's defaults."""

    def resolve_regions(self, settings: Settings) -> RegionSettings:
        """The stage-1 settings this engine's features are clustered with (by default `settings.regions`)."""
        return settings.regions

    def style_size(self, settings: Settings) -> int | None:
        """The long side (px) at which style images are analysed and segmented, when smaller than the working size;
        None: at the working size (the paper). Their region maps are still given at the working size."""
        return None

    def refine_labels(self, image: np.ndarray, labels: np.ndarray, settings: Settings) -> np.ndarray:
        """The region map stage 3 paints and the user sees, from the stage-1 grid labels of `image`.

        By default the grid itself (the paper's masks live on the latent grid). Must keep every label of `labels`
        and add none: the matches refer to them.
        """
        return labels

    def region_statistics(self, analysis: Analysis, labels: np.ndarray) -> np.ndarray | None:
        """(K, d) statistical descriptors s_r of the regions 0..K-1 of `labels` (the stage-1 grid labels of
        `analysis`), replacing matching's moments of the clustered features (paper 3.2a); None keeps those."""
        return None

    @abc.abstractmethod
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
        """Stage 3. Yields previews in order, then exactly one final step at the content's working size.

        source: the content photo at its own resolution (long side capped at 2048), (H, W, 3) float32 in [0, 1],
        passed when the engine `uses_source`; an engine that paints at that size returns its final image at
        source's size, others ignore it.
        Raises `stylegallery.errors.Cancelled` within one step after `should_stop()` turns true.
        """

    def notes(self, settings: Settings) -> tuple[str, ...]:
        """One line per setting this engine will not honour as asked (nothing is ignored silently)."""
        return ()

    def time_steps(self, settings: Settings) -> int:
        """T, the number of inversion steps whose features make F_mix (1 for engines without a time axis)."""
        return 1

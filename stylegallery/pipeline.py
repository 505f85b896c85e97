"""The StyleGallery pipeline: the one place that composes the three stages.

    images.load -> Engine.analyze -> regions.segment -> matching.match -> Engine.transfer -> Result

`Pipeline` is built once per process. It keeps the loaded engines and a byte-bounded LRU cache of
per-image work (analyses, region maps, region descriptors), keyed by a hash of the pixels and the
settings that affect that work, so a second run with the same images, or with only stage-3 settings
or overrides changed, does no stage-1/2 work.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stylegallery import images, matching, regions
from stylegallery.config import MatchSettings, RegionSettings, Settings, parse_bytes
from stylegallery.engines import ENGINES
from stylegallery.engines.base import Engine
from stylegallery.errors import Cancelled, EngineUnavailable, InputError, ModelLoadError
from stylegallery.request import Plan, plan_settings
from stylegallery.threads import one_thread
from stylegallery.types import (  # the events and result, re-exported: `from stylegallery.pipeline import Done`
    Analysis,
    ContentSegmented,
    Done,
    Event,
    Match,
    Matched,
    Preview,
    RegionDescriptor,
    Result,
    Segmented,
)


__all__ = ["ByteLRU", "ContentSegmented", "Done", "Event", "Matched", "Pipeline", "Preview", "Result", "Segmented"]

logger = logging.getLogger(__name__)

MAX_STYLES = 16
MAX_SOURCE_SIDE = 2048  # px: the long side of the content photo handed to engines that paint at its own size
LOAD_RETRY_SECONDS = 300.0  # a failed engine load is not retried for the same model settings within this time
# The analysis cache's default bound, unless STYLEGALLERY_CACHE_BYTES says otherwise (e.g. "512MB", "2GiB"). The
# served app must stay under 1 GB resident on a small Space: it starts at ~270 MB, and a run's own working memory
# and the allocator's retained pages add ~300-450 MB at 512 px, which leaves ~128 MB for the cache (1.5 GB took the
# app to 2 GB by run 150; 256 MB to 818 MB at run 100 at 512 px with a 984 MB peak, too close; README "Hosting").
DEFAULT_CACHE_BYTES = 128_000_000

# ---------------------------------------------------------------------------------------------
# The byte-bounded cache
# ---------------------------------------------------------------------------------------------


@dataclass
class CacheStats:
    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    evictions: int = 0


class ByteLRU:
    """A least-recently-used cache bounded by the summed size of its values in bytes."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache size {max_bytes} is invalid: expected bytes >= 0")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.stats = CacheStats()
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, kind: str, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get((kind, key))
            if item is None:
                self.stats.misses[kind] = self.stats.misses.get(kind, 0) + 1
                return None
            self._items.move_to_end((kind, key))
            self.stats.hits[kind] = self.stats.hits.get(kind, 0) + 1
            return item[0]

    def put(self, kind: str, key: Hashable, value: Any, nbytes: int) -> None:
        with self._lock:
            full_key = (kind, key)
            if full_key in self._items:
                self.bytes -= self._items.pop(full_key)[1]
            if nbytes > self.max_bytes:
                return  # larger than the whole cache: do not keep it
            self._items[full_key] = (value, nbytes)
            self.bytes += nbytes
            while self.bytes > self.max_bytes and self._items:
                _, (_, size) = self._items.popitem(last=False)
                self.bytes -= size
                self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


class Pipeline:
    """StyleGallery, built once and reused: `run` streams events, `__call__` returns the `Result`."""

    def __init__(self, cache_bytes: int | None = None, load_retry_seconds: float = LOAD_RETRY_SECONDS) -> None:
        self.cache = ByteLRU(cache_bytes_from_env() if cache_bytes is None else cache_bytes)
        self.load_retry_seconds = load_retry_seconds
        self.clock: Callable[[], float] = time.monotonic  # of the remembered load failures
        self._engines: dict[Hashable, Engine] = {}
        self._failed_loads: dict[Hashable, tuple[float, ModelLoadError | EngineUnavailable]] = {}
        self._engine_lock = threading.Lock()
        self._aggregators: dict[Hashable, Any] = {}

    def __call__(
        self,
        content: images.ImageSource,
        styles: Sequence[images.ImageSource],
        settings: Settings | Plan | None = None,
        overrides: Mapping[int, tuple[int, int] | None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        content_mask: images.ImageSource | None = None,
    ) -> Result:
        for event in self.run(content, styles, settings, overrides, should_stop, content_mask):
            if isinstance(event, Done):
                return event.result
        raise RuntimeError("the pipeline ended without a result")  # unreachable: run always ends with Done

    def run(
        self,
        content: images.ImageSource,
        styles: Sequence[images.ImageSource],
        settings: Settings | Plan | None = None,
        overrides: Mapping[int, tuple[int, int] | None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        content_mask: images.ImageSource | None = None,
    ) -> Iterator[Event]:
        """Run the three stages; yields `ContentSegmented`, `Segmented`, `Matched`, `Preview`s, `Done` in order.

        `settings`: a `Plan` from the front desk (`stylegallery.request.plan`), or `Settings` (planned here:
        `auto` picks the engine, with its fallbacks). `content_mask`: a label mask (images.load_label_mask) whose
        regions replace stage 1 for the content."""
        stop = should_stop or (lambda: False)
        timings: dict[str, float] = {}
        start = time.perf_counter()

        # 1. Check inputs
        run_plan = settings if isinstance(settings, Plan) else plan_settings(settings or Settings())
        settings = run_plan.settings
        styles = _check_inputs(content, styles, settings, overrides)

        # 2. Build the engine that paints (or the first fallback that loads)
        engine, engine_reason, fallback_notes = self._engine_for(run_plan)
        match_settings = engine.resolve_matching(settings.matching)
        notes = fallback_notes + tuple(engine.notes(settings))

        # 3. Load every image first, so a bad style fails before any work
        content_rgb = images.to_rgb(content, settings.image, name="content image")  # (h0, w0, 3) uint8, decoded once
        content_image = images.fit(content_rgb, settings.image)
        style_rgbs = [images.to_rgb(s, settings.image, name=f"style image {i + 1}") for i, s in enumerate(styles)]
        style_images = [images.fit(rgb, settings.image) for rgb in style_rgbs]  # what the user sees
        side = engine.style_size(settings)  # what stages 1-2 see: the same, or smaller where the engine says so
        style_inputs = style_images if side is None else [
            images.fit(rgb, dataclasses.replace(settings.image, size=side)) for rgb in style_rgbs]
        del style_rgbs
        user_mask = None if content_mask is None else images.load_label_mask(content_mask, settings.image)
        if user_mask is not None:  # refuse a mask of another aspect before any analysis work
            regions.labels_from_mask(user_mask, (1, 1), content_image.shape[:2])
        time_weights = regions.logistic_time_weights(
            engine.time_steps(settings), settings.regions.time_slope, settings.regions.time_inflection
        )
        analysis_key = (engine.name, engine.analysis_key(settings))
        region_settings = engine.resolve_regions(settings)
        region_key = dataclasses.astuple(region_settings)
        mask_key = region_key if user_mask is None else ("user mask", user_mask.shape, hash(user_mask.tobytes()))
        keys = [images.pixel_hash(img) for img in (content_image, *style_inputs)]

        def analyse_and_segment(img: np.ndarray, key: str, shown_on: np.ndarray | None = None,
                                mask: np.ndarray | None = None
                                ) -> tuple[Analysis, np.ndarray, np.ndarray, float, float]:
            """(analysis, grid labels for matching, the region map stage 3 paints and the user sees, times);
            `shown_on`: the image the region map is given for (default `img`, the one analysed)."""
            _raise_if(stop)
            t0 = time.perf_counter()
            analysis = self._analyze(engine, img, (key, analysis_key), settings, time_weights, stop)
            t1 = time.perf_counter()
            if mask is None:
                grid, shown = self._segment(engine, analysis, (key, analysis_key, region_key), settings,
                                            region_settings)
            else:  # the user's regions replace stage 1 (the official label masks)
                grid = regions.labels_from_mask(mask, analysis.grid_shape, img.shape[:2])
                shown = engine.refine_labels(analysis.image, grid, settings)
            if shown_on is not None and shown_on.shape != img.shape:  # made at the analysed size (edge snapping at
                # a quarter of the cost), given at the size shown: the map scaled as the image is
                size = [round(n * big / small) for n, big, small in zip(shown.shape, shown_on.shape, img.shape)]
                shown = images.resize_labels(shown, (size[0], size[1]))
            return analysis, grid, shown, t1 - t0, time.perf_counter() - t1

        # 4. Analyse and segment the content (stage 1): its region map can be shown at once
        content_analysis, content_grid, content_labels, t_analyze, t_segment = analyse_and_segment(
            content_image, keys[0], mask=user_mask)
        timings["analyze"], timings["segment"] = t_analyze, t_segment
        yield ContentSegmented(engine.name, engine_reason, content_image, content_labels, dict(timings), notes)

        # 4b. The same for every style image (on two threads where the engine allows it); stage times stay
        # wall-clock: the threads' summed times are scaled to the elapsed time
        t0 = time.perf_counter()
        style_work = self._map_styles(engine, analyse_and_segment, style_inputs, keys[1:], style_images)
        wall = time.perf_counter() - t0
        summed = sum(w[3] + w[4] for w in style_work)
        scale = wall / summed if summed > 0 else 0.0
        timings["analyze"] += scale * sum(w[3] for w in style_work)
        timings["segment"] += scale * sum(w[4] for w in style_work)
        analyses = [content_analysis, *(w[0] for w in style_work)]
        style_labels = [w[2] for w in style_work]
        grids = [content_grid, *(w[1] for w in style_work)]
        yield Segmented(engine.name, engine_reason, content_image, content_labels, style_images, style_labels,
                        dict(timings), notes)

        # 5. Match content regions to the pooled style regions (stage 2)
        t0 = time.perf_counter()
        match_key = (match_settings.statistics, match_settings.block_size, match_settings.block_min_pixels,
                     match_settings.single_block, match_settings.seed)
        descriptors = [
            self._describe(analysis, lab, (key, analysis_key, mask_key if i == 0 else region_key, match_key),
                           match_settings, str(getattr(engine, "device", "cpu")), engine)
            for i, (analysis, lab, key) in enumerate(zip(analyses, grids, keys))
        ]
        matches = matching.match(descriptors[0], descriptors[1:], match_settings, overrides=overrides)
        timings["match"] = time.perf_counter() - t0
        style_names = [_source_name(s, f"style {i + 1}") for i, s in enumerate(styles)]
        unused = _unused_style_notes(matches, style_names, match_settings.assignment, len(descriptors[0]),
                                     bool(overrides and any(v is not None for v in overrides.values())))
        notes += unused
        yield Matched(list(matches), dict(timings), unused)

        # 6. Transfer the style region by region (stage 3)
        t0 = time.perf_counter()
        final: np.ndarray | None = None
        paint_at = {"source": _source_image(content_rgb, settings)} if engine.uses_source else {}  # the photo's size
        for step in engine.transfer(analyses[0], content_labels, analyses[1:], style_labels, matches, settings, stop,
                                    **paint_at):
            if step.final:
                final = step.image
            else:
                yield Preview(step.step, step.total, step.image, dict(timings, transfer=time.perf_counter() - t0))
        if final is None:
            raise RuntimeError(f"the {engine.name} engine ended without a final image")
        timings["transfer"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - start
        yield Done(Result(final, content_image, style_images, content_labels, style_labels, list(matches),
                          timings, engine.name, engine_reason, settings, notes,
                          style_names=style_names, content_name=_source_name(content, "content")))

    @staticmethod
    def _map_styles(engine: Engine, work: Callable, style_inputs: list[np.ndarray], keys: list[str],
                    shown_on: list[np.ndarray]) -> list:
        """`work(input, key, shown_on)` on every style image: on two threads when the engine's analysis is
        thread-safe and cores allow."""
        workers = min(len(style_inputs), os.cpu_count() or 1, 2)
        if not engine.parallel_analysis or workers < 2:
            return [work(img, key, shown) for img, key, shown in zip(style_inputs, keys, shown_on)]
        # One BLAS/OpenMP thread per worker; set here, around the pool, because the limit is process-wide and
        # nested set/restore calls from two threads would otherwise leave it wrong after the run.
        with one_thread(), ThreadPoolExecutor(workers, thread_name_prefix="sg-style") as pool:
            return list(pool.map(work, style_inputs, keys, shown_on))

    # -- engines ---------------------------------------------------------------------------------

    def resolve_engine(self, settings: Settings) -> tuple[str, str]:
        """Which engine `settings` paints with here, and why, without loading any model (the front desk decides)."""
        run_plan = plan_settings(settings)
        return run_plan.engine, run_plan.reason

    def _engine_for(self, run_plan: Plan) -> tuple[Engine, str, tuple[str, ...]]:
        """(the engine, why it paints, notes): the plan's engine, else the first of its fallbacks that loads."""
        try:
            return self.engine(run_plan.engine, run_plan.settings), run_plan.reason, ()
        except (ModelLoadError, EngineUnavailable) as exc:
            if not run_plan.fallbacks:
                raise
            failure = f"the {run_plan.engine} engine could not be loaded ({_one_line(exc)})"
            logger.warning("%s; trying %s", failure, ", ".join(run_plan.fallbacks))
        for name in run_plan.fallbacks:
            try:
                engine = self.engine(name, run_plan.settings)
            except (ModelLoadError, EngineUnavailable) as exc:
                failure += f"; the {name} engine could not be loaded either ({_one_line(exc)})"
                continue
            return engine, failure, (f"{failure}, so the {name} engine painted instead",)
        raise EngineUnavailable(failure)

    def engine(self, name: str, settings: Settings) -> Engine:
        """The engine `name`, built once per set of model locations and kept (one instance per engine: a new set of
        models replaces the previous one in memory).

        A load that failed (ModelLoadError, EngineUnavailable) is remembered for `load_retry_seconds`: asking again
        for the same model settings re-raises it at once instead of retrying a slow load on every run.
        """
        if name not in ENGINES:
            raise InputError(f"engine {name!r} is unknown; choose one of {', '.join(ENGINES)} or auto")
        with self._engine_lock:
            cls = _engine_class(name)
            key: Hashable = (name, cls.load_key(settings))
            engine = self._engines.get(key)
            if engine is None:
                engine = self._build_or_recall_failure(key, cls, settings)
                for other in [k for k in self._engines if k[0] == name]:
                    del self._engines[other]
                self._engines[key] = engine
            return engine

    def _build_or_recall_failure(self, key: Hashable, cls: type[Engine], settings: Settings) -> Engine:
        now = self.clock()
        for old in [k for k, (when, _) in self._failed_loads.items() if now - when >= self.load_retry_seconds]:
            del self._failed_loads[old]
        if key in self._failed_loads:
            when, exc = self._failed_loads[key]
            raise type(exc)(f"{exc} (this load failed {now - when:.0f} s ago; it is retried "
                            f"{self.load_retry_seconds - (now - when):.0f} s from now, or at once with other model "
                            "settings)")
        try:
            engine = cls.from_settings(settings)
        except (ModelLoadError, EngineUnavailable) as exc:
            self._failed_loads[key] = (self.clock(), exc)
            raise
        return engine

    # -- cached stage work -----------------------------------------------------------------------

    def _analyze(self, engine: Engine, image: np.ndarray, key: Hashable, settings: Settings,
                 time_weights: np.ndarray, stop: Callable[[], bool]) -> Analysis:
        analysis = self.cache.get("analysis", key)
        if analysis is None:
            analysis = engine.analyze(image, settings, time_weights, should_stop=stop)
            self.cache.put("analysis", key, analysis, analysis.nbytes)
        return analysis

    def _segment(self, engine: Engine, analysis: Analysis, key: Hashable, settings: Settings,
                 region_settings: RegionSettings) -> tuple[np.ndarray, np.ndarray]:
        """(stage-1 labels on the feature grid, the engine's refined region map of the image), cached together."""
        cached = self.cache.get("segment", key)
        if cached is None:
            if analysis.masks is None:
                grid = regions.segment(analysis.cluster_features, analysis.merge_features, analysis.depth,
                                       region_settings)
            else:  # the engine's base masks (SAM) replace k-means (the official SAM path)
                base = regions.sam_label_map(list(analysis.masks), analysis.grid_shape)
                grid = regions.segment_from_base(base, analysis.merge_features, region_settings)
            shown = engine.refine_labels(analysis.image, grid, settings)
            cached = (grid, shown)
            self.cache.put("segment", key, cached, grid.nbytes + (shown.nbytes if shown is not grid else 0))
        return cached

    def _describe(self, analysis: Analysis, labels: np.ndarray, key: Hashable,
                  match_settings: MatchSettings, device: str = "cpu",
                  engine: Engine | None = None) -> list[RegionDescriptor]:
        descriptors = self.cache.get("describe", key)
        if descriptors is None:
            statistical = engine.region_statistics(analysis, labels) if engine is not None else None
            aggregator = None
            if statistical is None and match_settings.statistics == "random_transformer":  # built once, then reused
                agg_key = (analysis.cluster_features.shape[-1], match_settings.seed, device)
                aggregator = self._aggregators.get(agg_key)
                if aggregator is None:
                    aggregator = matching.RandomAggregator(agg_key[0], agg_key[1], device=device)
                    self._aggregators[agg_key] = aggregator
            descriptors = matching.describe_regions(labels, analysis.cluster_features, analysis.tokens, match_settings,
                                                    aggregator=aggregator, statistical=statistical)
            size = sum(d.statistical.nbytes + d.semantic.nbytes + 64 for d in descriptors)
            self.cache.put("describe", key, descriptors, size)
        return descriptors


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def cache_bytes_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """The cache bound: $STYLEGALLERY_CACHE_BYTES ("1500000000", "1.5GB", "512MB", "2GiB"), else the default."""
    text = environ.get("STYLEGALLERY_CACHE_BYTES", "").strip()
    return parse_bytes(text, "STYLEGALLERY_CACHE_BYTES") if text else DEFAULT_CACHE_BYTES


def _engine_class(name: str) -> type[Engine]:
    """The Engine class of registry entry `name`, imported on first use (the CPU engines never import torch)."""
    module_name, _, class_name = ENGINES[name].target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(
            f"the {name} engine needs packages that are not installed ({exc.name}); "
            "run `pip install -r requirements.txt` or choose another engine"
        ) from None
    return getattr(module, class_name)


def _unused_style_notes(matches: Sequence[Match], style_names: Sequence[str], assignment: str, n_regions: int,
                        overridden: bool) -> tuple[str, ...]:
    """One note per chosen style that paints no region, saying why and what to do."""
    notes = []
    for j in matching.unused_styles(matches, len(style_names)):
        if n_regions < len(style_names):
            why = (f"the content has {n_regions} region{'s' if n_regions != 1 else ''} for {len(style_names)} styles; "
                   "raise the maximum regions or reassign a region to it")
        elif assignment == "argmax":
            why = ("no content region matched it best under the paper's argmax assignment; choose the balanced "
                   "assignment or reassign a region to it")
        elif overridden:
            why = "your region choices leave no region for it; reassign a region to it"
        else:
            why = "no region could take it; reassign a region to it"
        notes.append(f"style {j + 1} ({style_names[j]}) was not used: {why}")
    return tuple(notes)


def _source_name(source: object, default: str) -> str:
    """The file name of an image given by path, else `default` (arrays, PIL images, bytes)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return default


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _source_image(rgb: np.ndarray, settings: Settings) -> np.ndarray:
    """The content photo (h0, w0, 3) uint8 at its own size, long side capped at MAX_SOURCE_SIDE, (H, W, 3) float32 in
    [0, 1] (square when the settings squash every image, as the working image is)."""
    long_side = min(MAX_SOURCE_SIDE, max(rgb.shape[:2]))
    height, width = images.working_size(rgb.shape[0], rgb.shape[1], long_side, 1, settings.image.aspect)
    return images.resize(rgb, height, width)


def _check_inputs(
    content: object,
    styles: Sequence[images.ImageSource],
    settings: Settings,
    overrides: Mapping[int, tuple[int, int] | None] | None,
) -> list[images.ImageSource]:
    if content is None:
        raise InputError("no content image given; pass one image to restyle")
    if isinstance(styles, (str, bytes, os.PathLike, np.ndarray)) or not isinstance(styles, Sequence):
        styles = [styles]  # type: ignore[list-item]
    styles = list(styles)
    if not styles:
        raise InputError("no style image given; pass at least one style image")
    if len(styles) > MAX_STYLES:
        raise InputError(f"{len(styles)} style images given; use at most {MAX_STYLES}")
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise InputError("overrides must map a content region to (style image, style region) or None")
        for region, target in overrides.items():
            if not isinstance(region, (int, np.integer)) or region < 0:
                raise InputError(f"override key {region!r} is not a content region number (0, 1, ...)")
            if target is not None and (not isinstance(target, (tuple, list)) or len(target) != 2):
                raise InputError(
                    f"override for region {region} is {target!r}; give (style image, style region) or None"
                )
    return styles


def _raise_if(stop: Callable[[], bool]) -> None:
    if stop():
        raise Cancelled("the run was cancelled")

"""The pipeline object: event order, the byte-bounded cache, overrides, cancellation (engine-agnostic, fake engine)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from stylegallery import pipeline as pl
from stylegallery.config import MatchSettings, Settings
from stylegallery.engines.base import Engine
from stylegallery.errors import Cancelled, InputError
from stylegallery.types import Analysis, TransferStep


class FakeEngine(Engine):
    """Planted features: cells are clustered by their colour, tokens are the colour too; transfer paints matches."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def analysis_key(self, settings: Settings) -> tuple:
        return (settings.image.size,)

    def analyze(self, image: np.ndarray, settings: Settings, time_weights: np.ndarray,
                should_stop=lambda: False) -> Analysis:
        self.calls["analyze"] += 1
        h, w = image.shape[0] // 8, image.shape[1] // 8
        cells = image[: h * 8, : w * 8].reshape(h, 8, w, 8, 3).mean(axis=(1, 3)).astype(np.float32)  # (h, w, 3)
        rng = np.random.default_rng(0)
        features = np.concatenate([cells, rng.normal(0, 0.01, (h, w, 1)).astype(np.float32)], -1)  # (h, w, 4)
        return Analysis(image=image, cluster_features=features * 10, merge_features=cells * 10, depth=None,
                        tokens=cells.copy())

    def resolve_matching(self, matching: MatchSettings) -> MatchSettings:
        return dataclasses.replace(
            matching,
            statistics="moments" if matching.statistics == "auto" else matching.statistics,
            assignment="argmax" if matching.assignment == "auto" else matching.assignment,
        )

    def transfer(self, content, content_labels, styles, style_labels, matches, settings, should_stop=lambda: False):
        self.calls["transfer"] += 1
        out = np.zeros_like(content.image)
        for i in range(3):
            if should_stop():
                raise Cancelled("stopped")
            yield TransferStep(i + 1, 3, out + i / 3)
        yield TransferStep(3, 3, np.clip(content.image * 0.5 + 0.25, 0, 1), final=True)


def _two_region_image(h: int = 64, w: int = 96, left=(1.0, 0.1, 0.1), right=(0.1, 0.1, 1.0)) -> np.ndarray:
    img = np.empty((h, w, 3), np.float32)
    img[:, : w // 2] = left
    img[:, w // 2:] = right
    return (img * 255).astype(np.uint8)


@pytest.fixture()
def fake_pipe(monkeypatch: pytest.MonkeyPatch) -> tuple[pl.Pipeline, FakeEngine]:
    engine = FakeEngine()
    pipe = pl.Pipeline(cache_bytes=50_000_000)
    monkeypatch.setattr(pipe, "_engine_for", lambda plan: (engine, "test engine", ()))
    return pipe, engine


SMALL = Settings(engine="classic", image=dataclasses.replace(Settings().image, size=96),
                 regions=dataclasses.replace(Settings().regions, min_region_cells=4, use_depth=False))


def test_events_come_in_order_and_result_is_complete(fake_pipe) -> None:
    pipe, _ = fake_pipe
    content = _two_region_image()
    styles = [_two_region_image(left=(0.1, 0.9, 0.1), right=(0.9, 0.9, 0.1)), _two_region_image(80, 80)]
    events = list(pipe.run(content, styles, SMALL))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ContentSegmented", "Segmented", "Matched", "Preview", "Preview", "Preview", "Done"]
    assert (events[0].content_labels == events[1].content_labels).all()
    seg, matched, done = events[1], events[2], events[-1]
    assert seg.content_labels.shape == (8, 12) and len(seg.style_labels) == 2
    assert int(seg.content_labels.max()) + 1 == 2  # two planted regions
    assert [m.content_region for m in matched.matches] == [0, 1]
    result = done.result
    assert result.image.shape == (64, 96, 3)  # the content's aspect ratio
    assert set(result.timings) >= {"analyze", "segment", "match", "transfer", "total"}
    doc = result.matches_json()
    assert doc["engine"] == "fake" and doc["content_regions"] == 2
    assert set(doc["matches"][0]) >= {"content_region", "style_image", "style_region", "score", "terms"}
    assert set(doc["matches"][0]["terms"]) == {"statistical", "semantic", "positional"}


def test_engine_notes_reach_the_events_and_the_result(fake_pipe, monkeypatch) -> None:
    pipe, engine = fake_pipe
    content, styles = _two_region_image(), [_two_region_image(left=(0.2, 0.8, 0.2))]
    assert pipe(content, styles, SMALL).notes == ()
    monkeypatch.setattr(engine, "notes", lambda settings: (f"size {settings.image.size} was not honoured",))
    events = list(pipe.run(content, styles, SMALL))
    expected = ("size 96 was not honoured",)
    assert events[0].notes == events[1].notes == events[-1].result.notes == expected  # ContentSegmented, Segmented


def test_planted_colours_match_the_same_colour_in_the_pool(fake_pipe) -> None:
    pipe, _ = fake_pipe
    content = _two_region_image(left=(1.0, 0.1, 0.1), right=(0.1, 0.1, 1.0))
    style_a = _two_region_image(left=(0.1, 1.0, 0.1), right=(1.0, 0.1, 0.1))  # red is region 1 of style 0
    style_b = _two_region_image(left=(0.1, 0.1, 1.0), right=(1.0, 1.0, 0.1))  # blue is region 0 of style 1
    result = pipe(content, [style_a, style_b], SMALL)
    by_region = {m.content_region: m for m in result.matches}
    left_label = int(result.content_labels[0, 0])
    right_label = int(result.content_labels[0, -1])
    assert (by_region[left_label].style_image, by_region[left_label].style_region) == (
        0, int(result.style_labels[0][0, -1]))
    assert (by_region[right_label].style_image, by_region[right_label].style_region) == (
        1, int(result.style_labels[1][0, 0]))


def test_second_run_hits_the_cache(fake_pipe) -> None:
    pipe, engine = fake_pipe
    content, styles = _two_region_image(), [_two_region_image(left=(0.2, 0.8, 0.2))]
    pipe(content, styles, SMALL)
    assert engine.calls["analyze"] == 2
    misses = dict(pipe.cache.stats.misses)
    pipe(content, styles, SMALL)
    assert engine.calls["analyze"] == 2  # no new analysis
    assert pipe.cache.stats.misses == misses  # no new segmentation or descriptors either
    assert pipe.cache.stats.hits["analysis"] == 2
    assert pipe.cache.stats.hits["segment"] == 2 and pipe.cache.stats.hits["describe"] == 2
    # A stage-3-only change (seed) and an override rerun only the transfer
    pipe(content, styles, dataclasses.replace(SMALL, seed=7), overrides={0: (0, 1)})
    assert engine.calls["analyze"] == 2 and engine.calls["transfer"] == 3
    assert pipe.cache.stats.misses == misses
    # A region setting change re-segments from the cached analyses
    pipe(content, styles, dataclasses.replace(SMALL, regions=dataclasses.replace(SMALL.regions, k_max=3)))
    assert engine.calls["analyze"] == 2
    assert pipe.cache.stats.misses["segment"] == misses["segment"] + 2


def test_overrides_are_applied_and_marked(fake_pipe) -> None:
    pipe, _ = fake_pipe
    content, styles = _two_region_image(), [_two_region_image(left=(0.2, 0.8, 0.2))]
    result = pipe(content, styles, SMALL, overrides={0: (0, 1), 1: None})
    first = result.matches[0]
    assert (first.style_image, first.style_region, first.source) == (0, 1, "user")
    assert result.matches[1].source == "auto"
    with pytest.raises(InputError, match="style image"):
        pipe(content, styles, SMALL, overrides={0: (3, 0)})
    with pytest.raises(InputError):
        pipe(content, styles, SMALL, overrides={0: "style 1"})


def test_cache_is_bounded_in_bytes_and_evicts_least_recent() -> None:
    cache = pl.ByteLRU(max_bytes=100)
    cache.put("a", 1, "x", 40)
    cache.put("a", 2, "y", 40)
    assert cache.get("a", 1) == "x"  # 1 is now the most recent
    cache.put("a", 3, "z", 40)  # evicts 2
    assert cache.get("a", 2) is None and cache.get("a", 1) == "x" and cache.get("a", 3) == "z"
    assert cache.bytes == 80 and cache.stats.evictions == 1
    cache.put("a", 4, "huge", 1000)  # larger than the cache: not kept, nothing evicted
    assert cache.get("a", 4) is None and cache.bytes == 80


def test_cancellation_stops_the_run(fake_pipe) -> None:
    pipe, engine = fake_pipe
    calls = {"in_transfer": 0}

    def stop_after_previews() -> bool:  # true from the second check inside stage 3 on
        if engine.calls["transfer"]:
            calls["in_transfer"] += 1
        return calls["in_transfer"] >= 2

    with pytest.raises(Cancelled):
        kinds = []
        for event in pipe.run(_two_region_image(), [_two_region_image()], SMALL, should_stop=stop_after_previews):
            kinds.append(type(event).__name__)
    assert kinds.count("Preview") == 1 and "Done" not in kinds


@pytest.mark.parametrize(
    ("styles", "pattern"),
    [([], "no style image"), ([b"not an image"], "style image 1"), ([np.zeros((4, 4, 3), np.uint8)], "too small")],
)
def test_bad_inputs(fake_pipe, styles, pattern) -> None:
    pipe, _ = fake_pipe
    with pytest.raises(InputError, match=pattern):
        list(pipe.run(_two_region_image(), styles, SMALL))
    with pytest.raises(InputError, match="content image"):
        list(pipe.run(b"", [_two_region_image()], SMALL))


def test_auto_engine_is_a_cpu_engine_without_a_gpu() -> None:
    from stylegallery.request import detect_machine

    name, reason = pl.Pipeline().resolve_engine(Settings(engine="auto"))
    if detect_machine().gpu:
        pytest.skip("this machine has a GPU")
    assert name != "diffusion" and "diffusion engine" in reason


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(InputError, match="unknown"):
        pl.Pipeline().engine("quantum", Settings())


def test_a_failed_model_load_is_remembered_until_it_is_due_or_the_models_change(monkeypatch) -> None:
    """The app falls back to classic at once instead of re-trying a slow failing load on every run."""
    from stylegallery.engines.diffusion import DiffusionEngine
    from stylegallery.errors import ModelLoadError
    from stylegallery.request import Plan

    loads: list[str] = []

    class Failing(DiffusionEngine):
        @classmethod
        def from_settings(cls, settings):
            loads.append("diffusion")
            raise ModelLoadError(f"sd_model {settings.diffusion.sd_model!r} could not be loaded: fix it")

    class Fake(FakeEngine):
        @classmethod
        def from_settings(cls, settings):
            loads.append("classic")
            return cls()

    monkeypatch.setattr(pl, "_engine_class", lambda name: Failing if name == "diffusion" else Fake)
    pipe = pl.Pipeline(load_retry_seconds=60)
    now = [1000.0]
    pipe.clock = lambda: now[0]
    auto = Plan(dataclasses.replace(SMALL, engine="auto"), "diffusion", "GPU found: test", ("classic",))

    first = pipe._engine_for(auto)
    assert loads == ["diffusion", "classic"]
    assert "the diffusion engine could not be loaded (sd_model" in first[1]
    assert first[2] == (f"{first[1]}, so the classic engine painted instead",)  # a note the page and CLI show
    now[0] += 30
    engine, reason, _ = pipe._engine_for(auto)
    assert loads == ["diffusion", "classic"]  # no second load attempt: classic at once
    assert engine is first[0] and "this load failed 30 s ago; it is retried 30 s from now" in reason
    with pytest.raises(ModelLoadError, match="could not be loaded: fix it \\(this load failed 30 s ago"):
        pipe.engine("diffusion", auto.settings)  # an explicit diffusion run gets the same error without a load
    assert loads == ["diffusion", "classic"]

    other = dataclasses.replace(auto, settings=dataclasses.replace(
        auto.settings, diffusion=dataclasses.replace(auto.settings.diffusion, sd_model="/other/sd")))
    pipe._engine_for(other)  # other model settings: tried at once
    assert loads == ["diffusion", "classic", "diffusion"]
    now[0] += 31  # the first failure is due again
    pipe._engine_for(auto)
    assert loads == ["diffusion", "classic", "diffusion", "diffusion"]


def test_engine_resolves_its_region_settings(fake_pipe, monkeypatch) -> None:
    """The pipeline segments with the engine's resolved stage-1 settings and keys its cache on them."""
    pipe, engine = fake_pipe
    seen = []
    original = pl.regions.segment

    def spy(features, merge_features, depth, settings):
        seen.append(settings.n_init)
        return original(features, merge_features, depth, settings)

    monkeypatch.setattr(pl.regions, "segment", spy)
    monkeypatch.setattr(engine, "resolve_regions", lambda s: dataclasses.replace(s.regions, n_init=2), raising=False)
    pipe(_two_region_image(), [_two_region_image(left=(0.2, 0.8, 0.2))], SMALL)
    assert seen == [2, 2]


def test_classic_engine_clusters_with_its_own_restarts() -> None:
    from stylegallery.engines.classic import ClassicEngine

    resolved = ClassicEngine().resolve_regions(dataclasses.replace(SMALL, classic=dataclasses.replace(
        SMALL.classic, kmeans_restarts=5)))
    assert resolved.n_init == 5 and resolved.k_max == SMALL.regions.k_max


def test_a_style_that_paints_no_region_is_named_in_the_notes(fake_pipe) -> None:
    pipe, _ = fake_pipe
    content = _two_region_image()
    styles = [_two_region_image(), _two_region_image(left=(0.1, 0.9, 0.1), right=(0.9, 0.9, 0.1))]
    events = list(pipe.run(content, styles, SMALL))  # the fake engine resolves "auto" to the paper's argmax
    matched = next(e for e in events if isinstance(e, pl.Matched))
    assert {m.style_image for m in matched.matches} == {0}
    note = ("style 2 (style 2) was not used: no content region matched it best under the paper's argmax assignment; "
            "choose the balanced assignment or reassign a region to it")
    assert matched.notes == (note,) and note in events[-1].result.notes
    balanced = dataclasses.replace(SMALL, matching=dataclasses.replace(SMALL.matching, assignment="balanced"))
    events = list(pipe.run(content, styles, balanced))
    assert {m.style_image for m in events[-1].result.matches} == {0, 1} and events[-1].result.notes == ()

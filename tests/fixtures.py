"""The tests' shared pieces, in one place (tests/conftest.py turns some into fixtures): the repository's pictures, a
free port, the app served in this process or as `python app.py`, a fake pipeline, and the diffusion engine's tiny
random models and engine (torch is imported only by those).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.load_test import AppServer, free_port
from stylegallery.errors import ModelLoadError
from stylegallery.pipeline import ContentSegmented, Done, Matched, Preview, Result, Segmented
from stylegallery.types import Match


__all__ = ["CONTENT", "GALLERY", "REPO", "STYLES", "AppServer", "FakePipeline", "free_port", "served"]

REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "gallery"
CONTENT = GALLERY / "content" / "chelsea.jpg"  # 451 x 300: not square
STYLES = [GALLERY / "style" / "starry-swirls.png", GALLERY / "style" / "rose-window.png"]


@contextlib.contextmanager
def served(demo, queue_size: int = 16, **launch: object) -> Iterator[str]:
    """`demo` queued as the app queues it and served in this process on a free 127.0.0.1 port; yields its URL."""
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


class FakePipeline:
    """Yields the real event types on tiny arrays; `fail` engines raise ModelLoadError, `error` is raised mid-run."""

    def __init__(self, fail: tuple[str, ...] = (), error: Exception | None = None) -> None:
        self.fail, self.error, self.runs = fail, error, []
        self.notes: tuple[str, ...] = ()  # on ContentSegmented and Segmented; Result.notes adds `late_notes`
        self.late_notes: tuple[str, ...] = ()

    def run(self, content, styles, settings, overrides=None, should_stop=None):
        """As Pipeline.run: a front-desk Plan (or Settings, planned), its engine or the first fallback that loads."""
        from stylegallery.request import Plan, plan_settings

        run_plan = settings if isinstance(settings, Plan) else plan_settings(settings)
        settings, name, reason, notes = run_plan.settings, run_plan.engine, run_plan.reason, self.notes
        if name in self.fail:
            if not run_plan.fallbacks:
                raise ModelLoadError(f"{name} models are not available here")
            reason = f"the {name} engine could not be loaded ({name} models are not available here)"
            name = run_plan.fallbacks[0]
            notes = (f"{reason}, so the {name} engine painted instead", *notes)
        self.runs.append({"content": content, "styles": styles, "settings": settings, "overrides": overrides,
                          "engine": name})
        image = np.random.default_rng(0).uniform(0, 1, (48, 64, 3)).astype(np.float32)  # (H, W, 3)
        labels = (np.arange(8)[None, :].repeat(6, 0) >= 4).astype(np.int32)  # (h, w) = (6, 8), two regions
        timings = {"analyze": 0.1, "segment": 0.2}
        yield ContentSegmented(name, reason, image, labels, dict(timings), notes)
        yield Segmented(name, reason, image, labels, [image] * len(styles), [labels] * len(styles), dict(timings),
                        notes)
        matches = [Match(0, 0, 0, 0.5, {"statistical": 0.1, "semantic": 0.2, "positional": 0.3}),
                   Match(1, len(styles) - 1, 1, 0.25, {"statistical": 0.1, "semantic": 0.2, "positional": 0.3},
                         source="user" if overrides else "auto")]
        timings["match"] = 0.01
        yield Matched(matches, dict(timings))
        if self.error is not None:
            raise self.error
        yield Preview(1, 2, image * 0.5, dict(timings, transfer=0.1))
        timings.update(transfer=0.3, total=0.61)
        yield Done(Result(1 - image, image, [image] * len(styles), labels, [labels] * len(styles), matches, timings,
                          name, reason, settings, notes + self.late_notes))


# ---- the diffusion engine's tiny models: saved once per process, loaded through the product's from_pretrained ----

@functools.cache
def tiny_paths():  # -> TinyModelPaths
    from stylegallery.engines.diffusion import save_tiny_models

    root = Path(tempfile.mkdtemp(prefix="stylegallery-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return save_tiny_models(root)


@functools.cache
def tiny_engine():  # -> DiffusionEngine
    from stylegallery.engines.diffusion import DiffusionEngine

    paths = tiny_paths()
    return DiffusionEngine(str(paths.sd), str(paths.dino), str(paths.depth))


def tiny_settings(preset_name: str = "paper", **diffusion: object):  # -> Settings
    from stylegallery.config import preset

    base = preset(preset_name)  # type: ignore[arg-type]
    return dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, **diffusion))


def time_weights(steps: int = 15) -> np.ndarray:
    d = 1 / (1 + np.exp(5 * (np.arange(steps) / steps - 0.7)))
    return d / d.sum()


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random picture (two colour blobs), float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(2):
        cy, cx, colour = rng.random(), rng.random(), rng.random(3)
        weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * 8)[..., None]
        image += weight * colour
    return np.clip(image + 0.05 * rng.random((height, width, 3)), 0, 1).astype(np.float32)


def one_thread():
    """Generator fixture body: torch on one thread (2 shared cores thrash with OpenMP), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

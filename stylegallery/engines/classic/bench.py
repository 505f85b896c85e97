"""Speed and memory of the classic engine's whole 3-stage run, per stage (figures, never asserts).

    python -m stylegallery.engines.classic.bench --sizes 256,512,1024 --styles 1,3,5 --repeats 3

For each working size (long side) and number of style images it runs analyze (every image), regions.segment
(every image), matching.match and the engine's transfer `--repeats` times, in process and without caches, and
prints the median wall time of each stage and the peak resident memory sampled during those runs. Images come from
the dev gallery (../shared/gallery-dev or $STYLEGALLERY_DEV_GALLERY) when present, else from synthetic textures.
This module is a benchmark, not the engine: it may import regions.py and matching.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stylegallery import matching, regions
from stylegallery.config import ImageSettings, Settings
from stylegallery.engines.classic import ClassicEngine


STAGES = ("analyze", "segment", "match", "transfer", "total")
DEV_CONTENT = "kodim07.png"
DEV_STYLES = ("vangogh_starry_night.jpg", "hokusai_great_wave.png", "picabia_udnie.png", "munch_the_scream.jpg",
              "monet_regatta_at_sainte_adresse.png")


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakRss:
    """Resident memory sampled every 5 ms in a thread; `peak` is the max seen."""

    def __init__(self) -> None:
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _gallery() -> Path | None:
    here = Path(__file__).resolve().parents[3]
    for cand in (os.environ.get("STYLEGALLERY_DEV_GALLERY"), here.parent / "shared" / "gallery-dev"):
        if cand and (Path(cand) / "content").is_dir():
            return Path(cand)
    return None


def _synthetic(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hh, ww = (size * 2 // 3) // 8 * 8, size
    yy, xx = np.mgrid[0:hh, 0:ww] / size
    freq = rng.uniform(5, 30, 3)
    img = np.stack([0.5 + 0.4 * np.sin(f * (xx + yy * (i + 1)) * np.pi) for i, f in enumerate(freq)], -1)
    return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)


def load_images(size: int, n_styles: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Content and n_styles style images at the working size (long side `size`)."""
    gallery = _gallery()
    if gallery is None:
        return _synthetic(size, 0), [_synthetic(size, i + 1) for i in range(n_styles)]
    from stylegallery import images

    img_settings = ImageSettings(size=size)
    content = images.load(gallery / "content" / DEV_CONTENT, img_settings)
    styles = [images.load(gallery / "style" / DEV_STYLES[i % len(DEV_STYLES)], img_settings) for i in range(n_styles)]
    return content, styles


def run_once(engine: ClassicEngine, content: np.ndarray, styles: Sequence[np.ndarray],
             settings: Settings) -> dict[str, float]:
    """Wall time per stage of one uncached 3-stage run."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    analyses = [engine.analyze(img, settings, np.ones(1)) for img in (content, *styles)]
    t1 = time.perf_counter()
    labels = [regions.segment(a.cluster_features, a.merge_features, a.depth, settings.regions) for a in analyses]
    t2 = time.perf_counter()
    ms = engine.resolve_matching(settings.matching)
    descs = [matching.describe_regions(lab, a.cluster_features, a.tokens, ms) for lab, a in zip(labels, analyses)]
    matches = matching.match(descs[0], descs[1:], ms)
    t3 = time.perf_counter()
    for _ in engine.transfer(analyses[0], labels[0], analyses[1:], labels[1:], matches, settings):
        pass
    t4 = time.perf_counter()
    times.update(analyze=t1 - t0, segment=t2 - t1, match=t3 - t2, transfer=t4 - t3, total=t4 - t0)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stylegallery.engines.classic.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,512,1024", help="working sizes (long side px), comma-separated")
    parser.add_argument("--styles", default="1,3,5", help="numbers of style images, comma-separated (1..5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; medians are printed")
    parser.add_argument("--preset", choices=("paper", "fast"), default="paper")
    args = parser.parse_args(argv)
    from stylegallery.config import preset

    engine = ClassicEngine()
    print(f"{'size':>5} {'styles':>6} " + " ".join(f"{s:>9}" for s in STAGES) + f" {'peak RSS':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        for n in (int(s) for s in args.styles.split(",")):
            content, styles = load_images(size, n)
            settings = preset(args.preset, engine="classic", image=ImageSettings(size=size))
            runs = []
            with _PeakRss() as peak:
                for _ in range(args.repeats):
                    runs.append(run_once(engine, content, styles, settings))
            med = {s: statistics.median(r[s] for r in runs) for s in STAGES}
            print(f"{size:>5} {n:>6} " + " ".join(f"{med[s]:>8.2f}s" for s in STAGES)
                  + f" {peak.peak / 2**20:>8.0f}MB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

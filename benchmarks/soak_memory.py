"""Memory soak: N sequential runs with different images through one Pipeline; resident memory must level off.

The pipeline's cache is bounded in bytes (least recently used evicted), so after the cache fills, RSS
should stay flat. Prints RSS and the cache's bytes every few runs, then the start/end figures.

    python benchmarks/soak_memory.py --runs 100 --cache-mb 64 --size 256
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from stylegallery.bench import rss_bytes  # noqa: E402
from stylegallery.config import preset  # noqa: E402
from stylegallery.pipeline import Pipeline  # noqa: E402


def procedural_image(seed: int, h: int, w: int) -> np.ndarray:
    """A different image per seed: a few coloured blobs and stripes (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.zeros((h, w, 3), np.float32) + rng.uniform(0, 1, 3)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.4) * min(h, w)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image[inside] = rng.uniform(0, 1, 3)
    freq = rng.uniform(0.05, 0.3)
    image += 0.15 * np.sin(freq * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)))[..., None]
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--cache-mb", type=float, default=64.0, help="the pipeline's cache bound")
    parser.add_argument("--size", type=int, default=256, help="working long side")
    parser.add_argument("--styles", type=int, default=2)
    parser.add_argument("--every", type=int, default=10, help="print every this many runs")
    args = parser.parse_args(argv)

    settings = preset("paper", engine="classic")
    settings = dataclasses.replace(settings, image=dataclasses.replace(settings.image, size=args.size))
    pipe = Pipeline(cache_bytes=int(args.cache_mb * 2**20))
    curve: list[float] = []
    print(f"{'run':>4} {'rss_MB':>8} {'cache_MB':>9} {'cache_items':>11} {'evictions':>9}")
    for run in range(args.runs):
        h, w = 160 + 16 * (run % 5), 224 - 16 * (run % 3)
        content = procedural_image(10_000 + run, h, w)
        styles = [procedural_image(20_000 + run * 7 + j, 192, 192) for j in range(args.styles)]
        pipe(content, styles, settings)
        gc.collect()
        curve.append(rss_bytes() / 2**20)
        if (run + 1) % args.every == 0 or run == 0:
            print(f"{run + 1:>4} {curve[-1]:>8.1f} {pipe.cache.bytes / 2**20:>9.1f} {len(pipe.cache):>11} "
                  f"{pipe.cache.stats.evictions:>9}", flush=True)
    tenth = max(1, len(curve) // 10)
    print(f"# RSS after run 1: {curve[0]:.1f} MB; "
          f"median of the first tenth: {statistics.median(curve[:tenth]):.1f} MB; "
          f"median of the last tenth: {statistics.median(curve[-tenth:]):.1f} MB; max {max(curve):.1f} MB; "
          f"cache bound {args.cache_mb:.0f} MB, held {pipe.cache.bytes / 2**20:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

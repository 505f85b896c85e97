"""Memory soak: N sequential runs, each with different images; resident memory must level off at the cache bound.

    python benchmarks/soak_memory.py --runs 100 --size 256 --cache-mb 64          # the library (one Pipeline)
    python benchmarks/soak_memory.py --runs 100 --size 256 --cache-mb 64 --app    # `python app.py` via gradio_client
    python benchmarks/soak_memory.py --runs 100 --size 512 --app --engine neural  # the CPU default engine

Every run restyles a new content with new styles: random crops and recolourings of the gallery images, each
with its own pixel hash (checked), so every run misses the cache and adds to it; the caches are bounded in
bytes (least recently used evicted), so once they are full the resident memory (RSS) should stop growing.
Prints RSS at run 0 (before the first run) and at 10%, 25%, 50%, 75% and 100% of the runs, then a verdict:
the growth over the second half of the runs (the least-squares trend of RSS sampled after every run)
against `--tolerance-mb`. Exit 0 when memory levelled off, 1
otherwise.

With --app, the app is started as a subprocess on a free 127.0.0.1 port (benchmarks/load_test.py's
AppServer) with STYLEGALLERY_CACHE_BYTES set to the bound; runs are submitted one after another to its
/generate endpoint (`--engine`, classic by default) and the server process's RSS is read from /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from stylegallery import images  # noqa: E402
from stylegallery.bench import rss_bytes  # noqa: E402
from stylegallery.config import ImageSettings, preset  # noqa: E402


CHECKPOINTS = (0.1, 0.25, 0.5, 0.75, 1.0)  # fractions of the runs at which RSS is printed
MB = 2**20


# ---- distinct images ----------------------------------------------------------------------------

def gallery_sources() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The gallery's content and style images as uint8 RGB arrays."""
    def read(folder: str) -> list[np.ndarray]:
        paths = sorted((REPO / "gallery" / folder).glob("*.*"))
        if not paths:
            raise SystemExit(f"no images in {REPO / 'gallery' / folder}: the soak needs the gallery")
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths]

    return read("content"), read("style")


def variant(source: np.ndarray, seed: int) -> np.ndarray:
    """A random crop (60..100% of each side) of `source`, recoloured by a random per-channel gain and offset."""
    rng = np.random.default_rng(seed)
    h, w = source.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = source[y: y + ch, x: x + cw].astype(np.float32)  # (ch, cw, 3)
    recoloured = crop * rng.uniform(0.7, 1.3, 3) + rng.uniform(-30, 30, 3)
    return np.clip(recoloured + 0.5, 0, 255).astype(np.uint8)


class DistinctImages:
    """Run i's content and styles: variants of the gallery images whose working-size pixel hashes are all new."""

    def __init__(self, size: int, n_styles: int) -> None:
        self.contents, self.styles = gallery_sources()
        self.settings = ImageSettings(size=size)
        self.n_styles = n_styles
        self.hashes: set[str] = set()
        self.retries = 0

    def _new(self, sources: list[np.ndarray], index: int, seed: int) -> np.ndarray:
        while True:
            image = variant(sources[index % len(sources)], seed)
            key = images.pixel_hash(images.load(image, self.settings))  # the pipeline's cache key of its analysis
            if key not in self.hashes:
                self.hashes.add(key)
                return image
            self.retries += 1
            seed += 1_000_003

    def run(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        content = self._new(self.contents, i, 10_000 + i)
        styles = [self._new(self.styles, i * self.n_styles + j, 20_000 + i * self.n_styles + j)
                  for j in range(self.n_styles)]
        return content, styles


# ---- the two targets ----------------------------------------------------------------------------

def library_target(args: argparse.Namespace) -> tuple[Callable[[np.ndarray, list[np.ndarray]], None],
                                                     Callable[[], float], Callable[[], str], Callable[[], None]]:
    """(run, rss_mb, cache_note, close) for one Pipeline in this process."""
    from stylegallery.pipeline import Pipeline

    settings = preset("paper", engine=args.engine)
    settings = dataclasses.replace(settings, image=dataclasses.replace(settings.image, size=args.size),
                                   regions=dataclasses.replace(settings.regions, k_max=args.k_max))
    pipe = Pipeline() if args.cache_mb is None else Pipeline(cache_bytes=int(args.cache_mb * MB))

    def run(content: np.ndarray, styles: list[np.ndarray]) -> None:
        pipe(content, styles, settings)
        gc.collect()

    def cache_note() -> str:
        return (f"cache {pipe.cache.bytes / MB:6.1f} MB in {len(pipe.cache):3d} items, "
                f"{pipe.cache.stats.evictions} evictions")

    return run, lambda: rss_bytes() / MB, cache_note, lambda: None


def app_target(args: argparse.Namespace) -> tuple[Callable[[np.ndarray, list[np.ndarray]], None],
                                                 Callable[[], float], Callable[[], str], Callable[[], None]]:
    """(run, rss_mb, cache_note, close) for `python app.py` in a subprocess, driven through gradio_client."""
    from gradio_client import Client, handle_file

    from benchmarks.load_test import AppServer, api_config, output_positions

    server = AppServer(env={} if args.cache_mb is None else {"STYLEGALLERY_CACHE_BYTES": f"{args.cache_mb:g}MiB"})
    t0 = time.monotonic()
    server.start().wait_ready()
    print(f"# app ready at {server.url} after {time.monotonic() - t0:.1f} s (pid {server.proc.pid}), "
          f"cache bound {_bound(args)}", flush=True)
    work = tempfile.TemporaryDirectory(prefix="stylegallery-soak-")
    client = Client(server.url + "/", verbose=False, download_files=str(Path(work.name) / "downloads"))
    status_at = output_positions(api_config(server.url))["status"]
    count = [0]

    def run(content: np.ndarray, styles: list[np.ndarray]) -> None:
        count[0] += 1
        paths = []
        for j, image in enumerate([content, *styles]):
            paths.append(Path(work.name) / f"run{count[0]:04d}-{j}.png")
            Image.fromarray(image).save(paths[-1])
        job = client.submit(handle_file(str(paths[0])), [{"image": handle_file(str(p)), "caption": None}
                                                         for p in paths[1:]],
                            {}, args.engine, "paper", args.size, args.k_max, 1.0,
                            preset("paper").classic.iterations, 0, False, api_name="/generate")
        outputs = job.result(timeout=args.timeout)
        if "done in" not in str(outputs[status_at]):
            raise RuntimeError(f"run {count[0]} did not finish: {str(outputs[status_at])[:300]}")
        for path in paths:
            path.unlink()

    def rss() -> float:
        memory = server.memory_mb()
        if "VmRSS" not in memory:
            raise RuntimeError(f"cannot read the server's memory (alive: {server.alive()}):\n{server.log_tail()}")
        return memory["VmRSS"]

    def close() -> None:
        client.close()
        server.stop()
        work.cleanup()

    return run, rss, lambda: f"server peak {server.memory_mb().get('VmHWM', float('nan')):7.1f} MB", close


def _bound(args: argparse.Namespace) -> str:
    if args.cache_mb is not None:
        return f"{args.cache_mb:g} MiB"
    from stylegallery.pipeline import DEFAULT_CACHE_BYTES

    return f"{DEFAULT_CACHE_BYTES / 10**6:g} MB (the default)"


# ---- the soak -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="working long side (the app allows 256..1024)")
    parser.add_argument("--styles", type=int, default=2, help="style images per run")
    parser.add_argument("--k-max", type=int, default=6, help="upper bound of regions per image")
    parser.add_argument("--cache-mb", type=float, default=None,
                        help="the pipeline's cache bound in MiB (default: the library's, DEFAULT_CACHE_BYTES)")
    parser.add_argument("--tolerance-mb", type=float, default=16.0,
                        help="largest RSS growth over the second half of the runs that counts as levelled off")
    parser.add_argument("--app", action="store_true", help="soak `python app.py` through gradio_client")
    parser.add_argument("--engine", choices=("classic", "neural"), default="classic", help="the engine of every run")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run in --app mode")
    args = parser.parse_args(argv)
    if args.runs < 4:
        parser.error(f"--runs {args.runs} is too few: use at least 4 to compare the halves")

    source = DistinctImages(args.size, args.styles)
    run, rss, cache_note, close = (app_target if args.app else library_target)(args)
    marks = sorted({max(1, round(f * args.runs)) for f in CHECKPOINTS})
    curve: list[float] = []
    try:
        start = rss()
        print(f"# {'app' if args.app else 'library'} soak: {args.runs} runs, 1 content + {args.styles} styles each "
              f"at {args.size} px, {args.engine} engine, cache bound {_bound(args)}", flush=True)
        print(f"{'run':>5} {'rss_MB':>8} {'s/run':>6}  cache")
        print(f"{0:>5} {start:8.1f} {'':>6}  {cache_note()}", flush=True)
        t0 = time.monotonic()
        for i in range(args.runs):
            content, styles = source.run(i)
            run(content, styles)
            curve.append(rss())
            if i + 1 in marks:
                print(f"{i + 1:>5} {curve[-1]:8.1f} {(time.monotonic() - t0) / (i + 1):6.2f}  {cache_note()}",
                      flush=True)
    finally:
        close()

    # The verdict: the linear trend of RSS over the second half of the runs (one sample per run; a least-squares
    # line, because single samples swing by tens of MB with the allocator's arenas and numpy's temporaries)
    half = args.runs // 2
    second = np.asarray(curve[half - 1:])  # runs half..N
    slope = float(np.polyfit(np.arange(len(second)), second, 1)[0])
    growth = slope * (len(second) - 1)
    images_used = args.runs * (1 + args.styles)
    print(f"# {images_used} images, {len(source.hashes)} distinct pixel hashes ({source.retries} redrawn); "
          f"RSS start {start:.1f} MB, after run 1 {curve[0]:.1f} MB, run {half} {curve[half - 1]:.1f} MB, "
          f"run {args.runs} {curve[-1]:.1f} MB; median of runs {half}..{args.runs} {np.median(second):.1f} MB, "
          f"max of runs 1..{half} {max(curve[:half]):.1f} MB, of runs {half}..{args.runs} {second.max():.1f} MB")
    levelled = growth <= args.tolerance_mb and len(source.hashes) == images_used
    verdict = "levelled off" if levelled else "STILL GROWING"
    print(f"# verdict: {verdict}: {growth:+.1f} MB over runs {half}..{args.runs} (linear trend; tolerance "
          f"{args.tolerance_mb:g} MB; cache bound {_bound(args)})")
    return 0 if levelled else 1


if __name__ == "__main__":
    sys.exit(main())

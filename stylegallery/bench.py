"""`python -m stylegallery bench`: speed and memory figures of the whole pipeline, per stage.

For each working size and number of style images it runs the pipeline cold (empty cache) and warm
(same images again: stages 1-2 come from the cache) `--repeats` times and prints medians of the wall
time of each stage, the UNet forward counts of stage 1 (inversion: `fwd_analyze`) and stage 3
(`fwd_transfer`) and the backward count of stage 3 (`bwd_transfer`) of the diffusion engine, the peak
resident memory of the process sampled during each run (`rss_MB`) and, on CUDA, the peak of
torch.cuda.max_memory_allocated (`cuda_MB`, "-" elsewhere). Counts are exact; times and memory are
figures, never asserts: the machines are shared and noisy, so compare medians and ratios taken side by side.

    python -m stylegallery bench --engine classic --sizes 256,512,1024 --styles 1,3,5
    python -m stylegallery bench --engine diffusion --tiny --sizes 128 --styles 1,2,3,5 --steps 10
    python -m stylegallery bench --engine diffusion --sd-model DIR --dino-model DIR --depth-model DIR \
        --device cuda --dtype auto [--preset fast --lora DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from stylegallery.cli import DTYPE_CHOICES, resolve_dtype
from stylegallery.config import Settings, preset


STAGES = ("analyze", "segment", "match", "transfer", "total")
# engine.stats counter -> bench column (diffusion engine; 0 for engines without UNet calls)
COUNTS = {"unet_forward_analyze": "fwd_analyze", "unet_forward_transfer": "fwd_transfer",
          "unet_backward_transfer": "bwd_transfer"}


class RssSampler:
    """Samples this process's resident memory every few ms in a thread; `peak` is the max since `reset`."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.peak = rss_bytes()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the lifetime maximum
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def bench_images(content: str | None, styles: Sequence[str] | None, n_max: int) -> tuple[object, list[object]]:
    """The content and up to `n_max` style images: given paths, else the shipped gallery, else scikit-image data."""
    repo = Path(__file__).resolve().parents[1]
    if content is None:
        gallery = sorted((repo / "gallery" / "content").glob("*"))
        if gallery:
            content = str(gallery[0])
    if not styles:
        styles = [str(p) for p in sorted((repo / "gallery" / "style").glob("*.png"))]
    content_image: object = content
    if content_image is None:
        from skimage import data

        content_image = data.chelsea()
    style_images: list[object] = list(styles or [])
    if len(style_images) < n_max:
        from skimage import data

        extra = [data.astronaut(), data.coffee(), data.rocket(), data.immunohistochemistry(), data.retina()]
        style_images += extra[: n_max - len(style_images)]
    return content_image, style_images[:n_max]


def main(argv: Sequence[str] | None = None) -> int:
    from stylegallery.cli import OneLineParser

    parser = OneLineParser(prog="stylegallery bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("classic", "diffusion"), default="classic")
    parser.add_argument("--preset", choices=("paper", "fast"), default="paper")
    parser.add_argument("--sizes", default="512", help="comma-separated long sides, e.g. 256,512,1024")
    parser.add_argument("--styles", default="1,2,3,5", help="comma-separated numbers of style images")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; medians are printed")
    parser.add_argument("--steps", type=int, help="diffusion optimisation steps (default: the preset's)")
    parser.add_argument("--content", help="content image (default: the first gallery photo)")
    parser.add_argument("--style-images", nargs="*", help="style images (default: the gallery's)")
    parser.add_argument("--tiny", action="store_true", help="diffusion: build tiny random models (no weights needed)")
    parser.add_argument("--sd-model")
    parser.add_argument("--dino-model")
    parser.add_argument("--depth-model")
    parser.add_argument("--lora", help="diffusion: LCM/Hyper-SD LoRA for --preset fast")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu", help="diffusion engine device")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="diffusion stage-3 UNet precision: auto is float16 on CUDA, float32 elsewhere")
    parser.add_argument("--no-warm", action="store_true", help="skip the warm-cache runs")
    args = parser.parse_args(argv)

    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        counts = [int(s) for s in args.styles.split(",")]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r} and --styles {args.styles!r} must be comma-separated whole numbers, "
                     "e.g. --sizes 256,512 --styles 1,3")
    if args.repeats < 1 or not sizes or not counts or min(counts) < 1:
        parser.error("--repeats, --sizes and --styles need positive values")

    from stylegallery.pipeline import Pipeline

    settings = preset(args.preset, engine=args.engine)
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        settings = _model_settings(settings, args, Path(tmp))
        pipe = Pipeline()
        t0 = time.perf_counter()
        engine = pipe.engine(args.engine, settings)
        load_s = time.perf_counter() - t0
        content, styles = bench_images(args.content, args.style_images, max(counts))
        model = ""
        if args.engine == "diffusion":
            d = settings.diffusion
            model = f", device {d.device}, dtype {d.dtype}, lora {d.lora or 'none'}"
        print(f"# engine {args.engine}, preset {args.preset}{model}, load {load_s:.2f} s, repeats {args.repeats} "
              f"(median), {os.cpu_count()} cpus, torch loaded: {'torch' in sys.modules}")
        header = (f"{'size':>5} {'styles':>6} {'cache':>5} | " + " ".join(f"{s:>9}" for s in STAGES)
                  + " | " + " ".join(f"{c:>12}" for c in COUNTS.values()) + f" | {'rss_MB':>8} {'cuda_MB':>8}")
        print(header)
        print("-" * len(header))
        with RssSampler() as sampler:
            for size in sizes:
                run_settings = dataclasses.replace(settings, image=dataclasses.replace(settings.image, size=size))
                for n in counts:
                    for warm in ((False,) if args.no_warm else (False, True)):
                        rows = []
                        if warm:  # the cold runs above left this set in the cache; make sure of it
                            pipe(content, styles[:n], run_settings)
                        for _ in range(args.repeats):
                            if not warm:
                                pipe.cache.clear()
                            rows.append(_one_run(pipe, engine, content, styles[:n], run_settings, sampler))
                        _print_row(size, n, "warm" if warm else "cold", rows)
    return 0


def _one_run(pipe, engine, content, styles, settings: Settings, sampler: RssSampler) -> dict[str, float]:
    before = dict(getattr(engine, "stats", {}) or {})
    cuda = _cuda_device(engine)
    if cuda is not None:
        import torch

        torch.cuda.reset_peak_memory_stats(cuda)
    sampler.reset()
    result = pipe(content, styles, settings)
    after = dict(getattr(engine, "stats", {}) or {})
    row = {stage: float(result.timings.get(stage, 0.0)) for stage in STAGES}
    for counter, column in COUNTS.items():
        row[column] = float(int(after.get(counter, 0)) - int(before.get(counter, 0)))
    row["rss_MB"] = max(sampler.peak, rss_bytes()) / 2**20
    if cuda is not None:
        row["cuda_MB"] = torch.cuda.max_memory_allocated(cuda) / 2**20
    return row


def _cuda_device(engine) -> object | None:
    """The engine's torch device when it is a CUDA device, else None (classic engine, CPU, MPS)."""
    device = getattr(engine, "device", None)
    return device if getattr(device, "type", None) == "cuda" else None


def _print_row(size: int, n: int, cache: str, rows: list[dict[str, float]]) -> None:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    cuda = f"{med['cuda_MB']:>8.0f}" if "cuda_MB" in med else f"{'-':>8}"
    print(f"{size:>5} {n:>6} {cache:>5} | " + " ".join(f"{med[s]:>9.3f}" for s in STAGES)
          + " | " + " ".join(f"{med[c]:>12.0f}" for c in COUNTS.values()) + f" | {med['rss_MB']:>8.0f} {cuda}",
          flush=True)


def _model_settings(settings: Settings, args: argparse.Namespace, tmp: Path) -> Settings:
    if args.engine != "diffusion":
        return settings
    d = settings.diffusion
    changes: dict[str, object] = {"device": args.device, "dtype": resolve_dtype(args.dtype, args.device)}
    if args.lora:
        changes["lora"] = args.lora
    if args.tiny:
        from stylegallery.engines.diffusion.tiny import save_tiny_models

        paths = save_tiny_models(tmp)
        changes.update(sd_model=str(paths.sd), dino_model=str(paths.dino), depth_model=str(paths.depth))
    for flag, field in (("sd_model", "sd_model"), ("dino_model", "dino_model"), ("depth_model", "depth_model")):
        value = getattr(args, flag)
        if value:
            changes[field] = None if value.lower() == "none" else value
    if args.steps:
        changes["steps"] = args.steps
    return dataclasses.replace(settings, diffusion=dataclasses.replace(d, **changes))


if __name__ == "__main__":
    sys.exit(main())

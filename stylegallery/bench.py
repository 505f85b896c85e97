"""`python -m stylegallery bench`: speed and memory figures of the whole pipeline, per stage.

For each working size and number of style images it runs the pipeline cold (empty cache) and warm
(same images again: stages 1-2 come from the cache) `--repeats` times and prints medians of the wall
time of each stage, the UNet forward counts of stage 1 (inversion: `fwd_analyze`) and stage 3
(`fwd_transfer`) and the backward count of stage 3 (`bwd_transfer`) of the diffusion engine, the peak
resident memory of the process sampled during each run (`rss_MB`), the long side of the result (`out_px`: the
neural engine paints at the photo's own size, so give `--photo-size` to compare engines on the same output size)
and, on CUDA, the peak of
torch.cuda.max_memory_allocated (`cuda_MB`, "-" elsewhere), the host syncs per stage-3 step on CUDA (`syncs/step`)
and, above the table, the engine's resident weights by dtype. Counts are exact; times and memory are
figures, never asserts: the machines are shared and noisy, so compare medians and ratios taken side by side.

    python -m stylegallery bench --engine classic --sizes 256,512,1024 --styles 1,3,5
    python -m stylegallery bench --engine neural --versus classic --sizes 512 --styles 3 --repeats 5 --photo-size 512
    python -m stylegallery bench --engine diffusion --tiny --sizes 128 --styles 1,2,3,5 --steps 10
    python -m stylegallery bench --engine diffusion --sd-model DIR --dino-model DIR --depth-model DIR \
        --device cuda --dtype auto [--preset fast --lora DIR]
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stylegallery.config import Settings
from stylegallery.engines import ENGINES
from stylegallery.errors import InputError
from stylegallery.request import Plan, Request, choose_engine, detect_machine, plan


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
    """The content and up to `n_max` style images: given paths, else the shipped gallery's astronaut and rendered
    styles, else scikit-image data."""
    repo = Path(__file__).resolve().parents[1]
    if content is None:  # the astronaut (512x512): the figures in the README are of it
        astronaut = repo / "gallery" / "content" / "astronaut.jpg"
        if astronaut.is_file():
            content = str(astronaut)
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


def compare(requests: Sequence[Request], sizes: Sequence[int], counts: Sequence[int], repeats: int = 3,
            content: str | None = None, style_images: Sequence[str] | None = None, tiny: bool = False,
            warm: bool = True, out: Callable[[str], None] = print, random_weights: str | None = None,
            photo_size: int | None = None) -> None:
    """`bench` for each request in turn, in one process on the same images, then the first engine's speed-up over
    each other one (ratios of median total seconds, cold and warm): figures taken side by side."""
    totals = []
    for i, request in enumerate(requests):
        if i:
            out("")
        totals.append(bench(request, sizes, counts, repeats, content, style_images, tiny, warm, out, random_weights,
                            photo_size))
    first = totals[0]
    for other, request in zip(totals[1:], requests[1:]):
        out("")
        out(f"# speed-up of {requests[0].engine} over {request.engine} (median total s, side by side)")
        for key in first:
            if key in other and first[key] > 0:
                size, n, cache = key
                out(f"{size:>5} {n:>6} {cache:>5} | {first[key]:>7.3f} s vs {other[key]:>7.3f} s = "
                    f"{other[key] / first[key]:.1f}x")


def bench(request: Request, sizes: Sequence[int], counts: Sequence[int], repeats: int = 3,
          content: str | None = None, style_images: Sequence[str] | None = None, tiny: bool = False,
          warm: bool = True, out: Callable[[str], None] = print,
          random_weights: str | None = None, photo_size: int | None = None) -> dict[tuple[int, int, str], float]:
    """Print the figures of `request` at every working size x number of styles (module docstring); return the median
    total seconds per (size, styles, "cold" | "warm").

    tiny: the engine's tiny random stand-in models (its registry entry's `tiny_models`) instead of real weights;
    random_weights: a folder for its models at their real sizes with random weights (`random_models`; built there
    once): the real costs where no weights can be fetched. photo_size: the content photo resized (area) to this long
    side once, before the runs, as if the photo had that size (the output size of engines that paint at the photo's
    own size); default: the photo as it is, decoded in every run.
    """
    totals: dict[tuple[int, int, str], float] = {}
    from stylegallery.pipeline import Pipeline

    if repeats < 1 or not sizes or not counts or min(counts) < 1 or min(sizes) < 1:
        raise InputError("repeats, sizes and style counts must be positive whole numbers")
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        if tiny:
            request = dataclasses.replace(request, **_stand_in_models(request, "tiny_models", Path(tmp)))
        elif random_weights:
            request = dataclasses.replace(request, **_stand_in_models(request, "random_models", Path(random_weights)))
        run_plan = plan(request)
        pipe = Pipeline()
        t0 = time.perf_counter()
        engine = pipe.engine(run_plan.engine, run_plan.settings)
        load_s = time.perf_counter() - t0
        content_image, styles = bench_images(content, style_images, max(counts))
        if photo_size is not None:
            content_image = _photo_at(content_image, photo_size)
        spec = ENGINES[run_plan.engine]
        own = getattr(run_plan.settings, spec.settings)
        models = "".join(f", {knob} {getattr(own, spec.knobs[knob]) or 'none'}" for knob in ("device", "dtype", "lora")
                         if knob in spec.knobs)
        out(f"# engine {run_plan.engine}, preset {request.preset}{models}, load {load_s:.2f} s, repeats {repeats} "
            f"(median), {os.cpu_count()} cpus, torch loaded: {'torch' in sys.modules}")
        resident = _resident_weights(engine)
        if resident:
            out(f"# resident weights: {resident}")
        if _cuda_device(engine) is not None and hasattr(engine, "count_host_syncs"):
            engine.count_host_syncs = True  # host syncs of the stage-3 loop, per step (CUDA's sync debug mode)
        header = (f"{'size':>5} {'styles':>6} {'cache':>5} | " + " ".join(f"{s:>9}" for s in STAGES)
                  + " | " + " ".join(f"{c:>12}" for c in COUNTS.values()) + f" | {'rss_MB':>8} {'cuda_MB':>8}"
                  + f" {'syncs/step':>10} {'out_px':>6}")
        out(header)
        out("-" * len(header))
        with RssSampler() as sampler:
            for size in sizes:
                run_settings = dataclasses.replace(run_plan, settings=_with_size(run_plan.settings, size))
                for n in counts:
                    for is_warm in ((False, True) if warm else (False,)):
                        rows = []
                        if is_warm:  # the cold runs above left this set in the cache; make sure of it
                            pipe(content_image, styles[:n], run_settings)
                        for _ in range(repeats):
                            if not is_warm:
                                pipe.cache.clear()
                            rows.append(_one_run(pipe, engine, content_image, styles[:n], run_settings, sampler))
                        out(_format_row(size, n, "warm" if is_warm else "cold", rows))
                        totals[(size, n, "warm" if is_warm else "cold")] = statistics.median(r["total"] for r in rows)
    return totals


def _stand_in_models(request: Request, kind: str, folder: Path) -> dict[str, str]:
    """The model knobs of the random stand-ins (`kind`: "tiny_models" or "random_models" of the registry) of the
    engine `request` paints with, saved under `folder`."""
    name, _, _ = choose_engine(request.engine, detect_machine())
    target = getattr(ENGINES[name], kind)
    if not target:
        flag = "--tiny" if kind == "tiny_models" else "--random-weights"
        raise InputError(f"the {name} engine has no models to stand in for: drop {flag}")
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)(folder)


def _photo_at(content: object, side: int) -> object:
    """The content photo as an (H, W, 3) uint8 array with a long side of `side` px (area resampling)."""
    import cv2

    from stylegallery import images

    if side < 8:
        raise InputError(f"--photo-size {side} is too small: give a long side of at least 8 px")
    rgb = images.to_rgb(content, name="content image")
    hh, ww = rgb.shape[:2]
    scale = side / max(hh, ww)
    size = (max(1, round(ww * scale)), max(1, round(hh * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _with_size(settings: Settings, size: int) -> Settings:
    try:
        return dataclasses.replace(settings, image=dataclasses.replace(settings.image, size=size))
    except ValueError as exc:
        raise InputError(f"--sizes: {exc}") from None


def _one_run(pipe, engine, content, styles, settings: Plan, sampler: RssSampler) -> dict[str, float]:
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
    row["out_px"] = float(max(result.image.shape[:2]))
    if cuda is not None:
        row["cuda_MB"] = torch.cuda.max_memory_allocated(cuda) / 2**20
    steps = int(after.get("transfer_steps", 0)) - int(before.get("transfer_steps", 0))
    if getattr(engine, "count_host_syncs", False) and steps > 0:
        row["syncs"] = (int(after.get("host_syncs_transfer", 0)) - int(before.get("host_syncs_transfer", 0))) / steps
    return row


def _resident_weights(engine) -> str:
    """The engine's resident weights by dtype (its stats' weight_bytes_<dtype>, unet_weight_bytes_<dtype>), in GB."""
    stats = dict(getattr(engine, "stats", {}) or {})
    parts = [f"{key.replace('_weight_bytes_', ' ').replace('weight_bytes_', 'all models ')} {value / 1e9:.2f} GB"
             for key, value in sorted(stats.items()) if "weight_bytes_" in key]
    return ", ".join(parts)


def _cuda_device(engine) -> object | None:
    """The engine's torch device when it is a CUDA device, else None (classic engine, CPU, MPS)."""
    device = getattr(engine, "device", None)
    return device if getattr(device, "type", None) == "cuda" else None


def _format_row(size: int, n: int, cache: str, rows: list[dict[str, float]]) -> str:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    cuda = f"{med['cuda_MB']:>8.0f}" if "cuda_MB" in med else f"{'-':>8}"
    syncs = f"{med['syncs']:>10.1f}" if "syncs" in med else f"{'-':>10}"
    return (f"{size:>5} {n:>6} {cache:>5} | " + " ".join(f"{med[s]:>9.3f}" for s in STAGES)
            + " | " + " ".join(f"{med[c]:>12.0f}" for c in COUNTS.values()) + f" | {med['rss_MB']:>8.0f} {cuda}"
            + f" {syncs} {med['out_px']:>6.0f}")

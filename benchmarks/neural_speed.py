"""Speed and memory of the neural engine beside the classic engine, in process, through `Pipeline`.

One content photo and three paintings from ../shared/gallery-dev at the 512 px working size:
- load: building the neural engine (reading, checking and editing the ONNX files, three onnxruntime sessions);
- cold: a run with the engine loaded and the analysis cache empty (stages 1-3 on all four images);
- warm: the same run again (stages 1-2 cached, stage 3 runs);
- 2048: the photo upscaled to 2048 px on its long side, output at that size (stroke size 768);
then the same cold/warm runs on the classic engine. Medians of --repeats runs; peak RSS of the process after the
neural runs (before classic starts).

    python benchmarks/neural_speed.py [--repeats 5] [--no-classic] [--blend passes|map]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEV = REPO.parent / "shared" / "gallery-dev"
CONTENT = "content/kodim16.png"
STYLES = ["style/vangogh_starry_night.jpg", "style/hokusai_great_wave.png",
          "style/turner_shipwreck_of_the_minotaur.jpg"]


def _median_run(pipe, content, styles, settings, repeats: int, clear: bool) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        if clear:
            pipe.cache.clear()
        t0 = time.perf_counter()
        result = pipe(content, styles, settings)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-classic", action="store_true")
    parser.add_argument("--blend", choices=["passes", "map"], default="passes", help="NeuralSettings.blend")
    args = parser.parse_args()

    import cv2

    from stylegallery.config import NeuralSettings, Settings
    from stylegallery.pipeline import Pipeline

    content = str(DEV / CONTENT)
    styles = [str(DEV / s) for s in STYLES]
    pipe = Pipeline()
    neural = Settings(engine="neural", neural=NeuralSettings(blend=args.blend))
    t0 = time.perf_counter()
    pipe.engine("neural", neural)
    load = time.perf_counter() - t0
    cold, result = _median_run(pipe, content, styles, neural, args.repeats, clear=True)
    warm, _ = _median_run(pipe, content, styles, neural, args.repeats, clear=False)
    with tempfile.TemporaryDirectory() as tmp:
        big = cv2.imread(content)
        scale = 2048 / max(big.shape[:2])
        size = (round(big.shape[1] * scale), round(big.shape[0] * scale))
        big = cv2.resize(big, size, interpolation=cv2.INTER_CUBIC)
        path = str(Path(tmp) / "big.png")
        cv2.imwrite(path, big)
        full, big_result = _median_run(pipe, path, styles, neural, args.repeats, clear=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"neural ({args.blend}): load {load:.2f} s; 512 px, 3 styles: cold {cold:.2f} s, warm {warm:.2f} s "
          f"(stages of the last run: {', '.join(f'{k} {v:.2f}' for k, v in result.timings.items())}); "
          f"2048 px output {big_result.image.shape[1]}x{big_result.image.shape[0]}: {full:.2f} s (stages 1-2 cached "
          "after the first run); "
          f"peak RSS {rss:.0f} MB")
    if not args.no_classic:
        classic = Settings(engine="classic")
        pipe.engine("classic", classic)
        c_cold, _ = _median_run(pipe, content, styles, classic, args.repeats, clear=True)
        c_warm, _ = _median_run(pipe, content, styles, classic, args.repeats, clear=False)
        print(f"classic: 512 px, 3 styles: cold {c_cold:.2f} s, warm {c_warm:.2f} s; "
              f"neural is {c_cold / cold:.1f}x faster cold, {c_warm / warm:.1f}x warm")
    load_avg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"medians of {args.repeats} runs; load average {load_avg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

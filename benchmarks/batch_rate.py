"""Jobs per minute of `python -m stylegallery batch` with 1 and 2 processes, per engine, and the analysis-cache hit
rate on a batch that reuses its styles.

    python -m benchmarks.batch_rate --photos ../shared/gallery-dev/content --styles A.jpg B.png C.jpg \
        --engines neural classic --processes 1 2 --size 512 [--repeats 3]

Each configuration runs the whole batch (every photo of the folder with the same styles) from an empty output folder,
as a user would type it (one process: `python -m stylegallery batch`; N processes: torchrun, which starts N here,
where `accelerate launch --cpu` starts one: research/scale.md). Printed per configuration, medians over the repeats:
the wall time of the command (start-up, model loads and every job), jobs per minute on it, jobs per minute on the
batch's own clock (from its summary line: the jobs only), and the analysis cache's hits (the styles analysed once per
process). Figures, not asserts: the machines are shared; compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.load_test import free_port


REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"(\d+) done, (\d+) already done, (\d+) failed of (\d+) jobs in ([\d.]+) s; "
                     r"analysis cache (\d+)/(\d+) hits")


def run_once(photos: Path, styles: list[str], engine: str, processes: int, size: int, out: Path) -> dict[str, float]:
    """One batch from an empty folder; the summed figures of its processes' summary lines."""
    shutil.rmtree(out, ignore_errors=True)
    batch = ["-m", "stylegallery", "batch", str(photos), "--styles", *styles, "--out", str(out), "--engine", engine,
             "--size", str(size)]
    if processes == 1:
        command = [sys.executable, *batch]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                   str(free_port()), *batch]
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    found = SUMMARY.findall(proc.stderr)
    if proc.returncode != 0 or len(found) != processes:
        raise SystemExit(f"error: the batch failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    done = sum(int(f[0]) for f in found)
    seconds = max(float(f[4]) for f in found)  # the processes run side by side: the slowest one's clock
    hits, asked = sum(int(f[5]) for f in found), sum(int(f[6]) for f in found)
    return {"jobs": done, "wall": wall, "per_min_wall": done / wall * 60, "per_min_jobs": done / seconds * 60,
            "hits": hits, "asked": asked}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True, help="a folder of photos (each one job)")
    parser.add_argument("--styles", nargs="+", required=True, help="the style images of every job")
    parser.add_argument("--engines", nargs="+", default=["neural", "classic"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    photos = Path(args.photos)
    print(f"# {len(list(photos.iterdir()))} files in {photos}, {len(args.styles)} styles, {args.size} px, "
          f"{os.cpu_count()} cpus, medians of {args.repeats}")
    print(f"{'engine':<8} {'procs':>5} | {'jobs':>4} {'wall_s':>7} {'jobs/min':>9} {'jobs/min(jobs only)':>20} | "
          f"{'cache hits':>12}")
    with tempfile.TemporaryDirectory(prefix="sg-batch-rate-") as tmp:
        for engine in args.engines:
            for n in args.processes:
                runs = [run_once(photos, args.styles, engine, n, args.size, Path(tmp) / "out")
                        for _ in range(args.repeats)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(f"{engine:<8} {n:>5} | {med['jobs']:>4.0f} {med['wall']:>7.1f} {med['per_min_wall']:>9.1f} "
                      f"{med['per_min_jobs']:>20.1f} | {med['hits']:>4.0f}/{med['asked']:<3.0f} "
                      f"{med['hits'] / max(med['asked'], 1):>4.0%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

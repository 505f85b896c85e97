"""`python -m stylegallery batch JOBS --out DIR`: many restylings with one pipeline, resumable, on many processes.

JOBS is a JSONL file (one job object per line), a CSV file (a header row, one job per row) or a folder of photos
(each restyled with `--styles`). A job names its `content` and `styles` (relative paths are taken from the jobs
file's folder) and may give an `id` (the name of its outputs), `overrides` ("R:S:SR" choices, as `run --override`),
a `content_mask` and any of the per-job knobs in JOB_KNOBS; the command's flags give the rest. For each job the
batch writes, into DIR, `<id>.png` (the result) and `<id>.regions.npz` (the content's and every style's region map,
for `eval --manifest`), both or neither, and appends one line to its manifest: DIR/manifest.jsonl, one JSON object
per job (its files, engine, matches, notes, timings, status and error).

Resuming: a job whose latest manifest line says "ok", for the same images (their bytes), overrides and settings, and
whose files are there, is skipped; every other job runs (failed ones again). Everything that can be known before any
work (the file's form, every job's values, outputs that would overwrite an input) is checked first (`check_jobs`).
Files are written whole (a temporary file renamed into place), so an interrupted run leaves no partial file: re-run
the same command to go on.

Many processes: started by `accelerate launch` (or torchrun) the job list is split between the processes by
accelerate (`PartialState.split_between_processes`), each job runs in exactly one process, each process writes its own
manifest part (DIR/manifest.part-<rank>.jsonl) and the main process merges the parts into manifest.jsonl once every
process is done. A later run reads parts left by an interrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylegallery.errors import Cancelled, EngineUnavailable, InputError, ModelLoadError, OverrideError
from stylegallery.request import KnobError, Request, parse_override, parse_region_strength, plan


MANIFEST = "manifest.jsonl"
PART = "manifest.part-{rank}.jsonl"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# what a job may set for itself (Request fields); models, device and engine are the batch's (one pipeline)
JOB_KNOBS = ("preset", "size", "aspect", "seed", "steps", "content_weight", "max_regions", "merge_rule", "assignment",
             "strength", "region_strengths", "keep_colours", "stroke_size", "face_boost")
JOB_FIELDS = ("id", "content", "styles", "overrides", "content_mask", *JOB_KNOBS)
_ID = re.compile(r"[^\W_][\w.+-]{0,119}")  # letters (any script), digits, "_", ".", "+", "-"; no leading "." or "_"
_INT_KNOBS = ("size", "seed", "steps", "max_regions", "stroke_size")
_FLOAT_KNOBS = ("content_weight", "strength", "face_boost")
OVERRIDE_FIX = "fix the job's overrides (numbered from 1, as the region map and its legend show)"
DEFAULT_CACHE_BYTES = 512 * 10**6  # a batch reuses style analyses across jobs: more room than the app's 128 MB


@dataclass(frozen=True)
class Job:
    """One restyling of a batch."""

    index: int  # position in the job list: the split between processes follows it
    id: str  # the stem of its output files, unique in the batch
    content: str
    styles: tuple[str, ...]
    knobs: tuple[tuple[str, Any], ...] = ()  # per-job Request fields, on top of the batch's flags
    overrides: tuple[tuple[int, int, int], ...] = ()  # (R, S, SR) numbered from 1, as `run --override`
    content_mask: str | None = None
    where: str = ""  # "jobs.jsonl line 3": for messages

    def request(self, base: Request) -> Request:
        return dataclasses.replace(base, **dict(self.knobs))

    def key(self, base: Request) -> str:
        """What the job's result depends on: its images (their paths and contents), overrides, mask and every
        setting."""
        files = [self.content, *self.styles, *([self.content_mask] if self.content_mask else [])]
        text = json.dumps([files, [_digest(f) for f in files], self.overrides, _request_fields(self.request(base))],
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Summary:
    total: int = 0  # jobs of this process
    skipped: int = 0  # finished by an earlier run
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    interrupted: bool = False  # stopped by Ctrl-C (KeyboardInterrupt) between or during jobs
    failures: list[tuple[str, str]] = field(default_factory=list)  # (job id, error)

    @property
    def hit_rate(self) -> float:
        asked = self.cache_hits + self.cache_misses
        return self.cache_hits / asked if asked else 0.0


# ---------------------------------------------------------------------------------------------
# Reading the jobs
# ---------------------------------------------------------------------------------------------


def read_jobs(source: str | os.PathLike, styles: Sequence[str] = ()) -> list[Job]:
    """The jobs of a JSONL or CSV file, or of a folder of photos with `styles` for each. Raises InputError naming
    the line for a malformed file (before any work); every job's values are checked by `check_jobs`."""
    path = Path(source)
    if path.is_dir():
        if not styles:
            raise InputError(f"{str(path)!r} is a folder of photos: give the styles to apply with --styles A.png ...")
        for style in styles:
            if not Path(style).is_file():
                raise InputError(f"--styles {style!r} is not a file; check the path")
        photos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        if not photos:
            raise InputError(f"the folder {str(path)!r} holds no photo ({', '.join(PHOTO_SUFFIXES)}); check the path")
        rows = [({"content": str(p), "styles": list(styles)}, f"{p.name}") for p in photos]
        # the photos' paths include the folder, and --styles paths are the command line's: both from the cwd
        return _jobs(rows, Path("."), derive=lambda row: Path(row["content"]).stem)
    if styles:
        raise InputError("--styles is for a folder of photos; in a jobs file give each job its own \"styles\"")
    if not path.is_file():
        raise InputError(f"{str(path)!r} is not a jobs file or a folder; check the path")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise InputError(f"{str(path)!r} must be a .jsonl or .csv jobs file, or a folder of photos")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{str(path)!r} is not UTF-8 text; save the jobs file as UTF-8") from None
    rows = _jsonl_rows(text, path.name) if suffix == ".jsonl" else _csv_rows(text, path.name)
    if not rows:
        raise InputError(f"{str(path)!r} holds no job; add one line per job")
    return _jobs(rows, path.parent, derive=_derived_id)


def _jsonl_rows(text: str, name: str) -> list[tuple[dict[str, Any], str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name} line {number} is not valid JSON ({exc.msg}); write one job object per line") \
                from None
        if not isinstance(row, dict):
            raise InputError(f"{name} line {number} is not a JSON object; write e.g. "
                             '{"content": "photo.jpg", "styles": ["a.png", "b.png"]}')
        rows.append((row, f"{name} line {number}"))
    return rows


def _csv_rows(text: str, name: str) -> list[tuple[dict[str, Any], str]]:
    """CSV cells are text: styles separated by ";", overrides by spaces, numbers and true/false as written."""
    reader = csv.DictReader(io.StringIO(text))
    header = [(f or "").strip() for f in reader.fieldnames or []]
    if "content" not in header or "styles" not in header:
        raise InputError(f"{name} line 1 must be the header naming the columns, e.g. content,styles (found "
                         f"{','.join(header)[:80]!r})")
    unknown = [f for f in header if f not in JOB_FIELDS]
    if unknown:
        raise InputError(f"{name} line 1 (the header): unknown column {unknown[0]!r}; a job may give "
                         f"{', '.join(JOB_FIELDS)}")
    reader.fieldnames = header
    rows = []
    for row in reader:
        where = f"{name} line {reader.line_num}"
        if None in row:
            raise InputError(f"{where} has more cells than the header; quote cells that hold commas")
        job: dict[str, Any] = {}
        for key, cell in row.items():
            cell = (cell or "").strip()
            if not cell:
                continue
            if key == "styles":
                job[key] = [s.strip() for s in cell.split(";") if s.strip()]
            elif key in ("overrides", "region_strengths"):
                job[key] = cell.split()
            elif key in _INT_KNOBS or key in _FLOAT_KNOBS:
                job[key] = _number(cell, key, where)
            elif key == "keep_colours":
                if cell.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise InputError(f"{where}: keep_colours {cell!r} is invalid: write true or false")
                job[key] = cell.lower() in ("true", "1", "yes")
            else:
                job[key] = cell
        if job:
            rows.append((job, where))
    return rows


def _number(cell: str, key: str, where: str) -> int | float:
    try:
        return int(cell) if key in _INT_KNOBS else float(cell)
    except ValueError:
        kind = "a whole number" if key in _INT_KNOBS else "a number"
        raise InputError(f"{where}: {key} {cell!r} is invalid: expected {kind}") from None


def _jobs(rows: list[tuple[dict[str, Any], str]], base: Path, derive: Callable[[dict[str, Any]], str]) -> list[Job]:
    jobs: list[Job] = []
    taken: dict[str, int] = {}
    explicit = {row["id"] for row, _ in rows if isinstance(row.get("id"), str)}
    for index, (row, where) in enumerate(rows):
        unknown = sorted(set(row) - set(JOB_FIELDS))
        if unknown:
            raise InputError(f"{where}: unknown field {unknown[0]!r}; a job may give {', '.join(JOB_FIELDS)}")
        content = row.get("content")
        if not isinstance(content, str) or not content:
            raise InputError(f"{where}: give the content photo as \"content\": \"photo.jpg\"")
        styles = row.get("styles")
        if isinstance(styles, str):
            styles = [styles]
        if not isinstance(styles, list) or not styles or not all(isinstance(s, str) and s for s in styles):
            raise InputError(f"{where}: give one or more style images as \"styles\": [\"a.png\", \"b.png\"]")
        mask = row.get("content_mask")
        if mask is not None and (not isinstance(mask, str) or not mask):
            raise InputError(f"{where}: content_mask must be the path of a label PNG")
        job_id = row.get("id")
        if job_id is not None:
            if not isinstance(job_id, str) or not _ID.fullmatch(job_id):
                raise InputError(f"{where}: id {job_id!r} cannot name a file: use up to 120 letters, digits, '.', "
                                 "'_', '+' or '-', starting with a letter or digit")
            if job_id in taken:
                raise InputError(f"{where}: id {job_id!r} is given twice; give each job its own id")
        else:
            stem = _safe_stem(derive(row))
            job_id, n = stem, 1
            while job_id in taken or job_id in explicit:  # the same pair twice (e.g. other settings): -2, -3, ...
                n += 1
                job_id = f"{stem}-{n}"
        taken[job_id] = index
        knobs = tuple((k, _region_strengths(row[k], where) if k == "region_strengths" else row[k])
                      for k in JOB_KNOBS if k in row)
        jobs.append(Job(index=index, id=job_id, content=_resolve(content, base), styles=tuple(_resolve(s, base)
                        for s in styles), knobs=knobs, overrides=_job_overrides(row.get("overrides"), where),
                        content_mask=None if mask is None else _resolve(mask, base), where=where))
    return jobs


def _job_overrides(value: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = ":".join(str(v) for v in item) if isinstance(item, list) else str(item)
        try:
            out.append(parse_override(text))
        except ValueError as exc:  # its message says what R:S:SR means
            raise InputError(f"{where}: override {exc}") from None
    regions = [r for r, _, _ in out]
    if len(set(regions)) != len(regions):
        raise InputError(f"{where}: overrides give a region twice; give each region once")
    return tuple(out)


def _region_strengths(value: Any, where: str) -> tuple[tuple[int, float], ...]:
    """["2:0.3", ...] or [[2, 0.3], ...] -> ((2, 0.3), ...), regions numbered from 1 (as `--region-strength`)."""
    out = []
    for item in value if isinstance(value, list) else [value]:
        text = ":".join(str(v) for v in item) if isinstance(item, list) else str(item)
        try:
            out.append(parse_region_strength(text))
        except ValueError as exc:
            raise InputError(f"{where}: region strength {exc}") from None
    return tuple(out)


def _derived_id(row: dict[str, Any]) -> str:
    styles = row["styles"] if isinstance(row["styles"], list) else [row["styles"]]
    return f"{Path(row['content']).stem}__{'+'.join(Path(s).stem for s in styles)}"


def _safe_stem(text: str) -> str:
    stem = re.sub(r"[^\w.+-]+", "_", text).strip("._-+") or "job"
    return stem[:120]


def _resolve(path: str, base: Path) -> str:
    """An absolute path (the manifest and the resume key then mean the same file from any working folder)."""
    p = Path(path).expanduser()
    return os.path.abspath(p if p.is_absolute() else base / p)


def _digest(path: str) -> str:
    """The sha256 of a file's bytes ("missing" when it cannot be read: the job then fails with the reason)."""
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return _digest_of(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:  # a style shared by many jobs is read once
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]
    except OSError:
        return "missing"


def _request_fields(request: Request) -> dict[str, Any]:
    return {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}


def check_jobs(jobs: Sequence[Job], base: Request, out_dir: str | os.PathLike,
               jobs_file: str | os.PathLike | None = None) -> None:
    """Everything about the jobs that can be known before any work: every job's settings plan (a value of the wrong
    type or out of range names its line), and no output would overwrite an input image or the jobs file. Raises
    InputError naming the line."""
    inputs: dict[str, str] = {}
    for job in jobs:
        for what, path in [("content photo", job.content), *((f"style image {i + 1}", st)
                                                             for i, st in enumerate(job.styles))]:
            inputs.setdefault(os.path.realpath(path), f"the {what} of {job.where}")
    if jobs_file is not None and Path(jobs_file).is_file():
        inputs[os.path.realpath(jobs_file)] = "the jobs file"
    folder = Path(out_dir)
    for job in jobs:
        try:
            plan(job.request(base))
        except KnobError as exc:
            raise InputError(f"{job.where}: {exc.knob} {exc.detail}") from None
        except InputError as exc:
            raise InputError(f"{job.where}: {exc}") from None
        for name in (f"{job.id}.png", f"{job.id}.regions.npz"):
            hit = inputs.get(os.path.realpath(folder / name))
            if hit is not None:
                raise InputError(f"{job.where}: its output {str(folder / name)!r} is {hit}: writing it would "
                                 "destroy an input; choose another --out (or another id)")


# ---------------------------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------------------------


def read_manifest(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The latest record of every job id in DIR/manifest.jsonl and the parts an interrupted run left (a line cut
    short by a crash is skipped)."""
    folder = Path(folder)
    latest: dict[str, dict[str, Any]] = {}
    for path in [folder / MANIFEST, *sorted(folder.glob(PART.format(rank="*")))]:
        if path.is_file():
            latest.update(read_records(path))
    return latest


def read_records(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The latest record of every job id in one manifest file (lines that are not whole records are skipped)."""
    latest: dict[str, dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str) and "status" in record:
            latest[record["id"]] = record
    return latest


def merge_manifest(folder: str | os.PathLike) -> Path:
    """Rewrite DIR/manifest.jsonl with one line per job (the latest), in job order, and remove the parts."""
    folder = Path(folder)
    records = sorted(read_manifest(folder).values(), key=lambda r: (r.get("index", 0), r["id"]))
    parts = sorted(folder.glob(PART.format(rank="*")))
    from stylegallery.images import write_files_atomic

    if records or (folder / MANIFEST).exists():  # no job ended yet (Ctrl-C during the first): no empty manifest
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        write_files_atomic([(folder / MANIFEST, lambda handle: handle.write(text))])
    for part in parts:
        part.unlink(missing_ok=True)
    return folder / MANIFEST


def is_finished(job: Job, key: str, record: dict[str, Any] | None, folder: Path) -> bool:
    return (record is not None and record.get("status") == "ok" and record.get("key") == key
            and all((folder / record.get(name, "")).is_file() for name in ("output", "regions")))


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the batch's processes (accelerate's PartialState when launched by it)."""

    index: int = 0
    count: int = 1
    local_count: int = 1
    split: Callable[[list[int]], list[int]] = lambda items: items
    wait: Callable[[], None] = lambda: None

    @property
    def main(self) -> bool:
        return self.index == 0


def detect_processes(environ: Mapping[str, str] = os.environ) -> Processes:
    """One process, or, when launched several (WORLD_SIZE > 1: accelerate launch, torchrun), accelerate's view."""
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world <= 1:
        return Processes()
    try:
        from accelerate import PartialState
    except ImportError:
        raise InputError(f"this batch was started as {world} processes, which needs accelerate: "
                         "`pip install accelerate`, or run one process") from None
    import torch

    # without cpu=True, processes on a machine without CUDA each think they are alone (research/scale.md); with CUDA
    # PartialState makes cuda:<local rank> the current device, which the engines' "cuda" then means: one GPU each
    state = PartialState(cpu=not torch.cuda.is_available())

    def split(items: list[int]) -> list[int]:
        with state.split_between_processes(items) as mine:
            return list(mine)

    local = int(environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    return Processes(state.process_index, state.num_processes, max(1, local), split, state.wait_for_everyone)


def run_batch(jobs: Sequence[Job], out_dir: str | os.PathLike, base: Request, *, processes: Processes | None = None,
              pipeline: Any = None, progress: Callable[[Summary, Job | None, str], None] | None = None) -> Summary:
    """Run this process's share of `jobs` (skipping finished ones) into `out_dir`; return what happened here.

    Every job is planned (its knobs on `base`) and run through one Pipeline; a job that fails is recorded with its
    one-line error and the batch goes on. KeyboardInterrupt stops after cleaning up (no partial file; the manifest
    keeps what finished; `interrupted` is set)."""
    from stylegallery.pipeline import Pipeline

    processes = processes or Processes()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(folder)
    mine = [jobs[i] for i in processes.split(list(range(len(jobs))))]
    summary = Summary(total=len(mine))
    pipe = pipeline or Pipeline(cache_bytes=_cache_bytes())
    part = folder / PART.format(rank=processes.index)
    report = progress or (lambda s, j, status: None)
    start = time.perf_counter()
    with open(part, "a", encoding="utf-8") as manifest, _only_writer(manifest, folder), \
            _threads_per_process(processes):
        _end_line(part)
        report(summary, None, "start")
        try:
            _run_jobs(pipe, mine, base, folder, processes.index, previous, manifest, summary, report, start)
        except KeyboardInterrupt:
            summary.interrupted = True
    stats = pipe.cache.stats  # the analyses (stage 1's features) of every image: a style used again is a hit
    summary.cache_hits = stats.hits.get("analysis", 0)
    summary.cache_misses = stats.misses.get("analysis", 0)
    summary.seconds = time.perf_counter() - start
    return summary


def _run_jobs(pipe: Any, jobs: Sequence[Job], base: Request, folder: Path, rank: int,
              previous: Mapping[str, dict[str, Any]], manifest: Any, summary: Summary,
              report: Callable[[Summary, Job | None, str], None], start: float) -> None:
    for job in jobs:
        key = job.key(base)
        if is_finished(job, key, previous.get(job.id), folder):
            summary.skipped += 1
            report(summary, job, "skipped")
            continue
        record = _run_job(pipe, job, key, base, folder, rank)
        manifest.write(json.dumps(record, sort_keys=True) + "\n")  # after its files: a line means they are whole
        manifest.flush()
        os.fsync(manifest.fileno())
        if record["status"] == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            summary.failures.append((job.id, record["error"]))
        summary.seconds = time.perf_counter() - start
        report(summary, job, record["status"])


@contextlib.contextmanager
def _only_writer(part: Any, folder: Path) -> Iterator[None]:
    """This process alone appends to its manifest part (an advisory lock on it, where the system has them): a second
    batch into the same folder is refused rather than interleaving its lines with this one's."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    try:
        fcntl.flock(part, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise InputError(f"another batch is writing to {str(folder)!r}; wait for it to finish or choose another "
                         "--out") from None
    try:
        yield
    finally:
        fcntl.flock(part, fcntl.LOCK_UN)


def _end_line(path: Path) -> None:
    """A part cut short mid-line by a crash gets its line ended, so the next record starts on a line of its own."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def finish(out_dir: str | os.PathLike, processes: Processes) -> Path | None:
    """Once every process is done, the main one merges the manifest parts; returns the manifest (main) or None."""
    processes.wait()
    if not processes.main:
        return None
    return merge_manifest(out_dir)


def _run_job(pipe: Any, job: Job, key: str, base: Request, folder: Path, rank: int) -> dict[str, Any]:
    from stylegallery import images

    record: dict[str, Any] = {"id": job.id, "index": job.index, "key": key, "content": job.content,
                              "styles": list(job.styles), "overrides": [list(o) for o in job.overrides],
                              "content_mask": job.content_mask, "settings": dict(job.knobs), "process": rank}
    t0 = time.perf_counter()
    try:
        record["request"] = _request_fields(job.request(base))
        run_plan = plan(job.request(base))
        record["engine_asked"] = run_plan.engine
        overrides = {r - 1: (s - 1, sr - 1) for r, s, sr in job.overrides}
        result = pipe(job.content, list(job.styles), run_plan, overrides or None, content_mask=job.content_mask)
        image_bytes = _png(result.to_pil())
        arrays = {"content_labels": result.content_labels,
                  **{f"style_labels_{i}": lab for i, lab in enumerate(result.style_labels)}}
        regions_bytes = _npz(arrays)
        output, regions = f"{job.id}.png", f"{job.id}.regions.npz"
        images.write_files_atomic([(folder / output, lambda h: h.write(image_bytes)),
                                   (folder / regions, lambda h: h.write(regions_bytes))])
    except KnobError as exc:
        return _failed(record, f"{exc.knob} {exc.detail}", t0, folder)
    except OverrideError as exc:
        return _failed(record, exc.numbered_from_one(OVERRIDE_FIX, "The override"), t0, folder)
    except (InputError, ModelLoadError, EngineUnavailable, ValueError, OSError, Cancelled) as exc:
        return _failed(record, _one_line(exc), t0, folder)
    except MemoryError:
        return _failed(record, "out of memory; try a smaller size or fewer style images", t0, folder)
    doc = result.matches_json()
    record.update(status="ok", error=None, output=output, regions=regions, engine=result.engine,
                  engine_reason=result.engine_reason, notes=list(result.notes), matches=doc["matches"],
                  content_regions=doc["content_regions"], style_names=list(result.style_names),
                  size=[int(result.image.shape[1]), int(result.image.shape[0])], timings=doc["timings"],
                  seconds=round(time.perf_counter() - t0, 3), finished=_now())
    return record


def _failed(record: dict[str, Any], error: str, t0: float, folder: Path) -> dict[str, Any]:
    """The failed job's record; results an earlier run left under its id go (the folder says what the manifest
    says: this job has no result)."""
    for name in (f"{record['id']}.png", f"{record['id']}.regions.npz"):
        (folder / name).unlink(missing_ok=True)
    record.update(status="error", error=" ".join(error.split()), seconds=round(time.perf_counter() - t0, 3),
                  finished=_now())
    return record


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _npz(arrays: Mapping[str, Any]) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v, dtype=np.int32) for k, v in arrays.items()})
    return buffer.getvalue()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc).strip() or type(exc).__name__).split())


def _cache_bytes() -> int:
    from stylegallery.config import parse_bytes

    text = os.environ.get("STYLEGALLERY_CACHE_BYTES", "").strip()
    return parse_bytes(text, "STYLEGALLERY_CACHE_BYTES") if text else DEFAULT_CACHE_BYTES


@contextlib.contextmanager
def _threads_per_process(processes: Processes) -> Iterator[None]:
    """Several processes on one machine share its cores: each one's BLAS/OpenMP pools and the neural engine's
    onnxruntime sessions (through OMP_NUM_THREADS, read when they are built) get cores / local processes."""
    if processes.local_count <= 1:
        yield
        return
    threads = max(1, (os.cpu_count() or 1) // processes.local_count)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(os.environ["OMP_NUM_THREADS"])):
        yield


# ---------------------------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------------------------


class ProgressBar:
    """`[####......] 12/40 jobs  1 failed  3.2 jobs/min  ETA 8m45s  kodim02__starry` on stderr: one line updated in
    place on a terminal, a line per job elsewhere (logs). Rate and ETA count the jobs run here, not skipped ones."""

    WIDTH = 20

    def __init__(self, stream: Any = None, prefix: str = "") -> None:
        self.stream = stream or sys.stderr
        # several processes share one terminal: a line each per job rather than lines overwriting each other
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and not prefix
        self.prefix = prefix

    def __call__(self, summary: Summary, job: Job | None, status: str) -> None:
        done = summary.ok + summary.failed + summary.skipped
        ran = summary.ok + summary.failed
        left = summary.total - done
        rate = ran / summary.seconds * 60 if ran and summary.seconds > 0 else 0.0
        eta = f"ETA {_duration(left / rate * 60)}" if rate > 0 and left else ("done" if not left else "ETA -")
        filled = round(self.WIDTH * done / summary.total) if summary.total else self.WIDTH
        parts = [f"{self.prefix}[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{summary.total} "
                 f"job{'' if summary.total == 1 else 's'}"]
        if summary.skipped:
            parts.append(f"{summary.skipped} already done")
        if summary.failed:
            parts.append(f"{summary.failed} failed")
        parts += [f"{rate:.1f} jobs/min", eta]
        if job is not None:
            parts.append(f"{job.id}{'' if status in ('ok', 'skipped') else ': ' + status}")
        line = "  ".join(parts)
        if self.tty:
            end = "\n" if not left and status != "start" else ""
            print(f"\r{line}\x1b[K", file=self.stream, end=end, flush=True)
        elif status not in ("start", "skipped"):  # a log gets a line per job run (skipped ones are counted)
            print(line, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"

"""`python -m stylegallery run|batch|bench|eval ...`: the command line (contract in the README, "Command line").

Every subcommand's parser lives here; each turns its flags into a `stylegallery.request.Request` (the front desk).

Exit 0 on success; exit 2 with one line `error: <what is wrong and how to fix it>` on stderr and no
output file left behind on bad input or an unusable model location.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stylegallery import request
from stylegallery.config import PRESETS
from stylegallery.engines import AUTO_ORDER, ENGINES
from stylegallery.errors import Cancelled, EngineUnavailable, InputError, ModelLoadError, OverrideError
from stylegallery.request import (
    ASPECTS,
    ASSIGNMENTS,
    DEVICES,
    DTYPES,
    RESIDENTS,
    KnobError,
    Plan,
    Request,
    engine_names,
    plan,
)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
OVERRIDE_FIX = "give R:S:SR with those numbers (numbered from 1, as the region map and its legend show)"
OUTPUT_FLAGS = {"output": "-o", "mask": "--mask-out", "flat_mask": "--flat-mask-out", "figure": "--figure-out",
                "matches": "--matches-out"}


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI contract's errors: one line `error: ...` on stderr and exit 2."""

    def error(self, message: str, command: str | None = None) -> None:  # argparse prints the whole usage by default
        # a subcommand's parser is "stylegallery run"; the top level's reports flags no subcommand took (`command`)
        command = command or " ".join(self.prog.split()[1:])
        self.exit(2, f"error: {message} (see `python -m stylegallery {command + ' ' if command else ''}--help`)\n")

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}", getattr(parsed, "command", None))
        return parsed


def _add_request_flags(parser: argparse.ArgumentParser, engines: tuple[str, ...], default_engine: str) -> None:
    """The flags every command that runs the pipeline shares: what a person can ask (stylegallery.request.Request)."""
    parser.add_argument("--engine", choices=engines, default=default_engine,
                        help="; ".join(f"{name}: {spec.summary}" for name, spec in ENGINES.items())
                        + "; auto: the first of " + ", ".join(AUTO_ORDER) + " that can run here")
    parser.add_argument("--preset", choices=PRESETS, default="paper")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of stage 3 (default 42)")
    parser.add_argument("--steps", type=int, metavar="N",
                        help="the painting engine's steps: " + "; ".join(
                            f"{name}: {spec.steps_means}" for name, spec in ENGINES.items() if "steps" in spec.knobs))
    parser.add_argument("--content-weight", type=float, metavar="W",
                        help="content vs style, as a multiple of the preset's value (1, the default, keeps it; "
                             "higher keeps more of the photo)")
    parser.add_argument("--max-regions", type=int, metavar="K", help="upper bound of regions per image (default 10)")
    parser.add_argument("--merge-rule", choices=("official", "union_find"),
                        help="stage 1's cluster merge: the official map (default) or a transitive union-find")
    parser.add_argument("--assignment", choices=ASSIGNMENTS,
                        help="stage 2: argmax (the paper: each region takes its best style region), balanced (spread "
                             "over style regions and images), auto (default: the engine's choice)")
    parser.add_argument("--strength", type=float, metavar="S",
                        help="share of each matched style in its region, 0 (the photo's own style, still painted) "
                             "to 1 (default), where the engine mixes styles (neural)")
    parser.add_argument("--region-strength", action="append", type=parse_region_strength, metavar="R:S",
                        help="the strength of one content region, numbered from 1 as on the page and in the figures "
                             "(e.g. 2:0.3 paints region R2 mostly in the photo's own style); repeatable (neural)")
    parser.add_argument("--keep-colours", action="store_true", default=None,
                        help="keep the photo's colours under the painted strokes (neural)")
    parser.add_argument("--stroke-size", type=int, metavar="PX",
                        help="long side at which the engine paints; its strokes scale with it (neural, default 768)")
    parser.add_argument("--face-boost", type=float, metavar="F",
                        help="extra content weight on detected faces, where the engine protects them (0: off)")
    parser.add_argument("--sd-model", metavar="ID_OR_DIR", help="Stable Diffusion 1.5 hub id or local folder")
    parser.add_argument("--dino-model", metavar="ID_OR_DIR", help="DINOv2 hub id or local folder")
    parser.add_argument("--depth-model", metavar="ID_OR_DIR|none", help="Depth-Anything-V2 hub id or folder, or none")
    parser.add_argument("--lora", metavar="ID_OR_DIR", help="LCM LoRA for --preset fast (diffusion engine)")
    parser.add_argument("--sam-model", metavar="ID_OR_DIR",
                        help="SAM hub id or folder: its masks replace k-means in stage 1 (diffusion engine)")
    parser.add_argument("--resident", choices=RESIDENTS,
                        help="where the diffusion UNet weights live: dtype (stored in --dtype), float32 (cast at "
                             "every forward), auto (default: dtype on CUDA, float32 elsewhere)")
    parser.add_argument("--device", choices=DEVICES, help="default: the GPU when there is one, else the CPU")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="diffusion stage-3 UNet precision: auto (default) is float16 on CUDA, float32 elsewhere")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="stylegallery", description="Region-aware style transfer from several style images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = sub.add_parser("run", help="restyle CONTENT with one or more STYLE images")
    run.add_argument("content", metavar="CONTENT", help="the photo to restyle")
    run.add_argument("styles", metavar="STYLE", nargs="+", help="one or more style images")
    run.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the result")
    _add_request_flags(run, engine_names(), "auto")
    run.add_argument("--size", type=int, metavar="PX", help="long side of the working image (default 512)")
    run.add_argument("--aspect", choices=ASPECTS,
                     help="keep the aspect ratio (default), or square: resize every image to PX x PX as the "
                          "official code does (the result is square too)")
    run.add_argument("--override", action="append", default=[], metavar="R:S:SR", type=parse_override,
                     help="paint content region R like region SR of style S, numbered from 1 as on the page and in "
                          "the figures (e.g. 2:1:3); repeatable")
    run.add_argument("--content-mask", metavar="PNG",
                     help="a label PNG whose regions replace stage 1 for the content (one grey level or palette "
                          "index per region), as the official label masks")
    run.add_argument("--mask-out", metavar="PNG",
                     help="write the labelled region map at the result's size: the photo under the regions' colours, "
                          "their numbers and a legend")
    run.add_argument("--flat-mask-out", metavar="PNG", help="write the region map as flat colours (one per region)")
    run.add_argument("--matches-out", metavar="JSON", help="write the region matches as JSON")
    run.add_argument("--figure-out", metavar="PNG", help="write a talk panel: a slide (1920x1080, or 1440x1080 with "
                                                        "--figure-aspect 4:3)")
    run.add_argument("--figure-aspect", choices=("16:9", "4:3"), default="16:9", help="the talk panel's shape")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    batch = sub.add_parser("batch", help="restyle many photos: a JSONL/CSV jobs file or a folder of photos",
                           description="Run a JSONL or CSV file of jobs, or a folder of photos with --styles, through "
                                       "one pipeline into DIR: <id>.png, <id>.regions.npz and DIR/manifest.jsonl. "
                                       "Re-running the same command skips finished jobs. Launched by `accelerate "
                                       "launch` or torchrun, the jobs are split between the processes (see "
                                       "stylegallery/batch.py).")
    batch.add_argument("jobs", metavar="JOBS", help="a .jsonl or .csv jobs file, or a folder of photos")
    batch.add_argument("--out", required=True, metavar="DIR", help="folder for the results and the manifest")
    batch.add_argument("--styles", nargs="+", metavar="STYLE", help="style images for every photo of a folder")
    _add_request_flags(batch, engine_names(), "auto")
    batch.add_argument("--size", type=int, metavar="PX", help="long side of the working image (default 512)")
    batch.add_argument("--aspect", choices=ASPECTS, help="keep the aspect ratio (default), or square")
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")

    bench = sub.add_parser("bench", help="print speed and memory figures of the pipeline",
                           description="Speed and memory figures of the whole pipeline, per stage, cold and warm "
                                       "cache (medians; see stylegallery/bench.py).")
    _add_request_flags(bench, engine_names(), "auto")
    bench.add_argument("--sizes", default="512", type=_whole_list, help="comma-separated long sides, e.g. 256,512")
    bench.add_argument("--styles", default="1,2,3,5", type=_whole_list, help="comma-separated numbers of styles")
    bench.add_argument("--repeats", type=_positive, default=3, help="runs per configuration; medians are printed")
    bench.add_argument("--content", help="content image (default: the first gallery photo)")
    bench.add_argument("--style-images", nargs="*", help="style images (default: the gallery's)")
    bench.add_argument("--tiny", action="store_true", help="tiny random stand-ins of the engine's models (no weights)")
    bench.add_argument("--random-weights", metavar="DIR",
                       help="the engine's models at their real sizes with random weights, built in DIR once (no "
                            "download): real speed and memory where no weights can be fetched")
    bench.add_argument("--photo-size", type=_positive, metavar="PX",
                       help="resize the content photo to this long side once, before the runs (engines that paint "
                            "at the photo's own size then give results of this size; default: the photo as it is)")
    bench.add_argument("--no-warm", action="store_true", help="skip the warm-cache runs")
    bench.add_argument("--versus", action="append", default=[], choices=tuple(ENGINES), metavar="ENGINE",
                       help="also bench this engine in the same process on the same images, and print the speed-up "
                            "(repeatable)")

    ev = sub.add_parser("eval", help="score an engine against simple references with weight-free metrics",
                        description="Weight-free quality metrics of an engine against simple references (see "
                                    "stylegallery/evaluate.py).")
    ev.add_argument("contents", nargs="*", help="content images")
    ev.add_argument("--styles", nargs="+", action="append",
                    help="style images of one style set; repeat --styles for more sets")
    ev.add_argument("--manifest", metavar="JSONL",
                    help="score a batch's results instead (its manifest.jsonl or folder; see `batch`)")
    _add_request_flags(ev, engine_names(), "auto")
    ev.add_argument("--versus", action="append", default=[], choices=tuple(ENGINES), metavar="ENGINE",
                    help="also score this engine on the same images and regions (repeatable)")
    ev.add_argument("--size", type=int, default=512, help="working size, long side px")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return {"run": _run, "batch": _batch, "bench": _bench, "eval": _eval}[args.command](args)
    except KnobError as exc:  # named as its flag: --max-regions, not max regions
        print(f"error: {flag_of(exc.knob)} {_one_line(exc.detail)}", file=sys.stderr)
        return 2
    except OverrideError as exc:  # in the numbers the user typed (R1, style 1, region 1)
        print(f"error: {_one_line(exc.numbered_from_one(OVERRIDE_FIX, 'The override'))}", file=sys.stderr)
        return 2
    except (InputError, ModelLoadError, EngineUnavailable, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system refuses (too long, no permission, ...): name it, shortened
        name = str(exc.filename) if exc.filename is not None else ""
        shown = name if len(name) <= 80 else f"{name[:40]}...{name[-30:]}"
        what = f"the path {shown!r}" if name else "a file"
        print(f"error: {what} cannot be used ({exc.strerror or type(exc).__name__}); use a shorter or different path",
              file=sys.stderr)
        return 2
    except Cancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; try a smaller --size or fewer style images", file=sys.stderr)
        return 1


def flag_of(knob: str) -> str:
    """The flag of a Request knob: --max-regions for max_regions (a repeatable flag is singular)."""
    return "--region-strength" if knob == "region_strengths" else f"--{knob.replace('_', '-')}"


def request_from_args(args: argparse.Namespace) -> Request:
    """CLI flags -> the front desk's Request (one meaning per knob, as on the page)."""
    return Request(
        engine=args.engine, preset=args.preset, size=getattr(args, "size", None), aspect=getattr(args, "aspect", None),
        seed=args.seed, max_regions=args.max_regions, merge_rule=args.merge_rule, assignment=args.assignment,
        steps=args.steps,
        content_weight=args.content_weight, face_boost=args.face_boost, strength=args.strength,
        region_strengths=tuple(args.region_strength) if args.region_strength else None,
        keep_colours=args.keep_colours, stroke_size=args.stroke_size, sd_model=args.sd_model,
        dino_model=args.dino_model, depth_model=args.depth_model, lora=args.lora, sam_model=args.sam_model,
        resident=args.resident, device=args.device, dtype=args.dtype,
    )


def _flag_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A front-desk parser as an argparse type: its ValueError's words become the flag's error (argparse would
    otherwise print only "invalid value")."""
    def flag_type(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    flag_type.__name__ = parse.__name__
    return flag_type


parse_override = _flag_type(request.parse_override)  # "2:1:3" -> (2, 1, 3)
parse_region_strength = _flag_type(request.parse_region_strength)  # "2:0.3" -> (2, 0.3)


def _overrides(args: argparse.Namespace) -> dict[int, tuple[int, int]]:
    """The --override choices as the library's 0-based {content region: (style image, style region)}."""
    chosen: dict[int, tuple[int, int]] = {}
    for region, style, style_region in args.override:
        if region - 1 in chosen:
            raise InputError(f"--override gives region R{region} twice; give each region once")
        chosen[region - 1] = (style - 1, style_region - 1)
    return chosen


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _whole_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated whole numbers, e.g. 256,512") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} needs positive whole numbers, e.g. 256,512")
    return values


def _batch(args: argparse.Namespace) -> int:
    from stylegallery import batch

    # 1. Read every job and check the flags before any work (a malformed jobs file writes nothing)
    jobs = batch.read_jobs(args.jobs, args.styles or ())
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {args.out!r} is a file; give a folder")
    if Path(args.jobs).is_dir() and out.resolve() == Path(args.jobs).resolve():
        raise InputError("--out is the folder of photos: the results would join them; choose another folder")
    base = request_from_args(args)
    first = plan(base)  # the batch's engine and why, from its flags
    batch.check_jobs(jobs, base, out, args.jobs)
    processes = batch.detect_processes()
    if processes.main:
        print(f"note: engine {first.engine} ({first.reason}); {_count(len(jobs), 'job')}"
              + (f" over {processes.count} processes" if processes.count > 1 else ""), file=sys.stderr, flush=True)
        _say_ignored(first, quiet=False)

    # 2. Run this process's share; every process's manifest part is merged once all are done
    prefix = f"process {processes.index + 1}/{processes.count}: " if processes.count > 1 else ""
    bar = None if args.quiet else batch.ProgressBar(prefix=prefix)
    summary = batch.run_batch(jobs, out, base, processes=processes, progress=bar)
    for job_id, error in summary.failures:
        print(f"error: {prefix}job {job_id}: {error}", file=sys.stderr, flush=True)
    if summary.interrupted:
        if processes.count == 1:
            batch.merge_manifest(out)
        done = summary.ok + summary.skipped
        print(f"error: {prefix}interrupted after {done} of {_count(summary.total, 'job')}; no partial file was left: "
              "re-run the same command to go on (finished jobs are skipped)", file=sys.stderr, flush=True)
        return 130
    manifest = batch.finish(out, processes)
    if not args.quiet:
        asked = summary.cache_hits + summary.cache_misses
        print(f"{prefix}{summary.ok} done, {summary.skipped} already done, {summary.failed} failed of "
              f"{_count(summary.total, 'job')} in {summary.seconds:.1f} s; analysis cache {summary.cache_hits}/"
              f"{asked} hits ({summary.hit_rate:.0%})" + (f"; manifest {manifest}" if manifest else ""),
              file=sys.stderr, flush=True)
    return 1 if summary.failed else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _bench(args: argparse.Namespace) -> int:
    import dataclasses

    from stylegallery.bench import compare

    first = request_from_args(args)
    others = [dataclasses.replace(first, engine=name, steps=None) for name in args.versus]
    compare([first, *others], args.sizes, args.styles, args.repeats, args.content, args.style_images,
            tiny=args.tiny, warm=not args.no_warm, out=lambda line: print(line, flush=True),
            random_weights=args.random_weights, photo_size=args.photo_size)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from stylegallery.evaluate import evaluate, evaluate_manifest, format_table

    if args.manifest:
        if args.contents or args.styles or args.versus:
            raise InputError("--manifest scores a batch's own results: drop the content images, --styles and --versus")
        print(format_table(evaluate_manifest(args.manifest)))
        return 0
    if not args.contents or not args.styles:
        raise InputError("give content images and --styles, or --manifest of a batch (see `python -m stylegallery "
                         "eval --help`)")

    for path in (*args.contents, *(s for style_set in args.styles for s in style_set)):
        if not Path(path).is_file():
            raise InputError(f"{path!r} is not a file; check the path")
    import dataclasses

    first = request_from_args(args)
    run_plan = plan(first)
    _say_ignored(run_plan, quiet=False)
    versus = [plan(dataclasses.replace(first, engine=name, steps=None)) for name in args.versus]
    names = ([Path(c).stem for c in args.contents],
             ["+".join(Path(s).stem.split("_")[-1] for s in style_set) for style_set in args.styles])
    print(format_table(evaluate(args.contents, args.styles, run_plan, names=names, versus=versus)))
    return 0


def _say_ignored(run_plan: Plan, quiet: bool) -> None:
    """Knobs given that the painting engine does not take: a note each (shown even with --quiet)."""
    for knob in run_plan.ignored:
        print(f"note: {flag_of(knob)} does not apply to the {run_plan.engine} engine; it was ignored",
              file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    # 1. Check every path before any work, so bad input fails fast and writes nothing
    outputs = _check_outputs(args)
    for path in (args.content, *args.styles):
        if not Path(path).is_file():
            raise InputError(f"{path!r} is not a file; check the path")
    _check_outputs_spare_inputs(outputs, args.content, args.styles)

    from stylegallery import images, viz
    from stylegallery.pipeline import ContentSegmented, Done, Matched, Pipeline, Preview, Segmented

    run_plan = plan(request_from_args(args))
    engine_name, reason = run_plan.engine, run_plan.reason
    overrides = _overrides(args)
    pipe = Pipeline()
    log = _Progress(quiet=args.quiet)
    if args.engine == "auto" and args.quiet:  # which engine auto picked, and why, is said even with --quiet
        print(f"note: engine {engine_name} ({reason})", file=sys.stderr, flush=True)
    _say_ignored(run_plan, args.quiet)
    log(f"engine: {engine_name} ({reason})")

    # 2. Run, printing progress from the events (and the engines' INFO logs: the diffusion inversion steps)
    result = None
    with _engine_progress(log):
        for event in pipe.run(args.content, args.styles, run_plan, overrides or None, content_mask=args.content_mask):
            if isinstance(event, ContentSegmented):
                for note in event.notes:  # settings this run does not honour: shown even with --quiet
                    print(f"note: {_one_line(note)}", file=sys.stderr, flush=True)
                log(f"stage 1: content {int(event.content_labels.max()) + 1} regions "
                    f"({event.timings['analyze'] + event.timings['segment']:.1f} s); analysing the style images")
            elif isinstance(event, Segmented):
                if event.engine != engine_name:
                    log(f"engine: {event.engine} ({event.engine_reason})")
                sizes = ", ".join(str(int(lab.max()) + 1) for lab in event.style_labels)
                log(f"stage 1: content {int(event.content_labels.max()) + 1} regions; styles {sizes} regions "
                    f"({event.timings['analyze'] + event.timings['segment']:.1f} s)")
            elif isinstance(event, Matched):
                for note in event.notes:  # a chosen style that paints nothing: shown even with --quiet
                    print(f"note: {_one_line(note)}", file=sys.stderr, flush=True)
                pairs = ", ".join(f"R{m.content_region + 1}->S{m.style_image + 1}.R{m.style_region + 1}"
                                  for m in event.matches)
                log(f"stage 2: {pairs} ({event.timings['match']:.1f} s)")
            elif isinstance(event, Preview):
                log(f"stage 3: step {event.step}/{event.total}", transient=True)
            elif isinstance(event, Done):
                result = event.result
    assert result is not None
    log(f"stage 3: done ({result.timings['transfer']:.1f} s); total {result.timings['total']:.1f} s")

    # 3. Render everything in memory, then write all files or none (a failure leaves the user's files as they were)
    out_image = result.to_pil()
    rendered: list[tuple[Path, bytes]] = [(outputs["output"], _encode(out_image, outputs["output"]))]
    regions_title = ENGINES[result.engine].regions_title if result.engine in ENGINES else "Regions"
    if "mask" in outputs:  # the photo (at the result's size) under its regions, numbered, with a legend
        photo = images.resize(images.to_uint8(result.content_image), out_image.height, out_image.width)
        rendered.append((outputs["mask"], _encode(viz.region_overlay(photo, result.content_labels), outputs["mask"])))
    if "flat_mask" in outputs:
        color = viz.labels_to_color(viz.upsample_labels(result.content_labels, out_image.height, out_image.width))
        rendered.append((outputs["flat_mask"], _encode(images.to_pil(color), outputs["flat_mask"])))
    if "figure" in outputs:
        rendered.append((outputs["figure"], _encode(viz.panel(result, args.figure_aspect, region_title=regions_title),
                                                    outputs["figure"])))
    if "matches" in outputs:
        rendered.append((outputs["matches"], (json.dumps(result.matches_json(), indent=2) + "\n").encode()))
    images.write_files_atomic([(path, lambda handle, data=data: handle.write(data)) for path, data in rendered])
    log(f"wrote {', '.join(str(p) for p, _ in rendered)}")
    return 0


def _check_outputs(args: argparse.Namespace) -> dict[str, Path]:
    outputs = {"output": Path(args.output)}
    for key, value in (("mask", args.mask_out), ("flat_mask", args.flat_mask_out), ("figure", args.figure_out),
                       ("matches", args.matches_out)):
        if value:
            outputs[key] = Path(value)
    for key, path in outputs.items():
        suffixes = (".json",) if key == "matches" else IMAGE_SUFFIXES
        if path.suffix.lower() not in suffixes:
            raise InputError(f"output {str(path)!r} must end in {' or '.join(suffixes)}")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise InputError(f"output folder {str(folder)!r} does not exist; create it first")
        if path.is_dir():
            raise InputError(f"output {str(path)!r} is a folder; give a file name")
        if not os.access(folder, os.W_OK):
            raise InputError(f"output folder {str(folder)!r} is not writable; choose another location")
    if len(set(outputs.values())) != len(outputs):
        raise InputError("two outputs share one path; give each output its own file")
    return outputs


def _check_outputs_spare_inputs(outputs: dict[str, Path], content: str, styles: Sequence[str]) -> None:
    """No output may be one of the input images (the same file by any path): writing it would destroy the input."""
    inputs = [("the content image", content), *((f"style image {i + 1}", s) for i, s in enumerate(styles))]
    for key, out in outputs.items():
        if not out.exists():
            continue
        for what, path in inputs:
            if os.path.samefile(out, path):
                raise InputError(f"{OUTPUT_FLAGS[key]} {str(out)!r} is {what} {path!r}: writing it would overwrite "
                                 "your input; choose another output path")


def _encode(image, path: Path) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    fmt = Image.registered_extensions()[path.suffix.lower()]
    image.save(buffer, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


@contextlib.contextmanager
def _engine_progress(log: _Progress) -> Iterator[None]:
    """Show the engines' INFO log records (e.g. each diffusion inversion step) as transient progress lines."""

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # warnings stay on screen; progress overwrites itself
            log(record.getMessage(), transient=record.levelno < logging.WARNING)

    engines = logging.getLogger("stylegallery.engines")
    handler, level = Handler(logging.INFO), engines.level
    engines.addHandler(handler)
    engines.setLevel(logging.INFO)
    try:
        yield
    finally:
        engines.removeHandler(handler)
        engines.setLevel(level)


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, message: str, transient: bool = False) -> None:
        if self.quiet:
            return
        line = f"[{time.perf_counter() - self.start:6.1f}s] {message}"
        if self.tty:  # previews overwrite each other on a terminal
            print(f"\r{line}\x1b[K", file=sys.stderr, end="" if transient else "\n", flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

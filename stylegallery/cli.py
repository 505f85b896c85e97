"""`python -m stylegallery run|eval|bench ...`: the command line (contract in DESIGN.md).

Exit 0 on success; exit 2 with one line `error: <what is wrong and how to fix it>` on stderr and no
output file left behind on bad input or an unusable model location.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from stylegallery.config import ENGINES, PRESETS, Settings, preset
from stylegallery.errors import Cancelled, EngineUnavailable, InputError, ModelLoadError


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
OUTPUT_FLAGS = {"output": "-o", "mask": "--mask-out", "figure": "--figure-out", "matches": "--matches-out"}


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI contract's errors: one line `error: ...` on stderr and exit 2."""

    def error(self, message: str) -> None:  # argparse prints the whole usage by default
        self.exit(2, f"error: {message} (see `python -m stylegallery {self.prog.split()[-1]} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="stylegallery", description="Region-aware style transfer from several style images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = sub.add_parser("run", help="restyle CONTENT with one or more STYLE images")
    run.add_argument("content", metavar="CONTENT", help="the photo to restyle")
    run.add_argument("styles", metavar="STYLE", nargs="+", help="one or more style images")
    run.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the result")
    run.add_argument("--engine", choices=ENGINES, default="auto",
                     help="diffusion (the paper's method, needs weights), classic (weight-free, CPU), auto (default)")
    run.add_argument("--preset", choices=PRESETS, default="paper")
    run.add_argument("--size", type=int, metavar="PX", help="long side of the working image (default 512)")
    run.add_argument("--aspect", choices=("keep", "square"),
                     help="keep the aspect ratio (default), or square: resize every image to PX x PX as the "
                          "official code does (the result is square too)")
    run.add_argument("--seed", type=int, metavar="N", help="seed of stage 3 (default 42)")
    run.add_argument("--steps", type=int, metavar="N",
                     help="diffusion: optimisation timesteps (default 150); classic: iterations per patch size (2)")
    run.add_argument("--content-weight", type=float, metavar="W",
                     help="content vs style: diffusion lambda_c (default 0.26); classic fusion weight (default 1.0)")
    run.add_argument("--max-regions", type=int, metavar="K", help="upper bound of regions per image (default 10)")
    run.add_argument("--assignment", choices=("auto", "argmax", "balanced"),
                     help="stage 2: argmax (the paper: each region takes its best style region), balanced (spread "
                          "over style regions and images), auto (default: diffusion argmax, classic balanced)")
    run.add_argument("--face-boost", type=float, metavar="F",
                     help="classic: extra content weight on detected faces (default 2.0; 0 turns face protection off)")
    run.add_argument("--mask-out", metavar="PNG", help="write the content region map as a colour PNG")
    run.add_argument("--matches-out", metavar="JSON", help="write the region matches as JSON")
    run.add_argument("--figure-out", metavar="PNG", help="write a talk-ready panel")
    run.add_argument("--sd-model", metavar="ID_OR_DIR", help="Stable Diffusion 1.5 hub id or local folder")
    run.add_argument("--dino-model", metavar="ID_OR_DIR", help="DINOv2 hub id or local folder")
    run.add_argument("--depth-model", metavar="ID_OR_DIR|none", help="Depth-Anything-V2 hub id or folder, or none")
    run.add_argument("--lora", metavar="ID_OR_DIR", help="LCM LoRA for --preset fast (diffusion engine)")
    run.add_argument("--device", choices=("cpu", "cuda", "mps"), help="diffusion engine device (default cpu)")
    run.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                     help="diffusion stage-3 UNet precision: auto (default) is float16 on CUDA, float32 elsewhere")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    ev = sub.add_parser("eval", help="score the classic engine against simple references with weight-free metrics")
    ev.add_argument("args", nargs=argparse.REMAINDER, help="see `python -m stylegallery eval --help`")
    bench = sub.add_parser("bench", help="print speed and memory figures of the pipeline")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="see `python -m stylegallery bench --help`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("eval", "bench"):  # these own their arguments
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (InputError, ModelLoadError, EngineUnavailable, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
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


def settings_from_args(args: argparse.Namespace, engine_name: str | None = None) -> Settings:
    """Turn CLI flags into Settings. Stage-3 flags (--steps, --content-weight) go to `engine_name`'s settings."""
    settings = preset(args.preset, engine=args.engine)
    if args.seed is not None:
        settings = dataclasses.replace(settings, seed=args.seed)
    if args.size is not None:
        settings = dataclasses.replace(settings, image=dataclasses.replace(settings.image, size=args.size))
    if args.aspect is not None:
        settings = dataclasses.replace(settings, image=dataclasses.replace(settings.image, aspect=args.aspect))
    if args.max_regions is not None:
        settings = dataclasses.replace(settings, regions=dataclasses.replace(settings.regions, k_max=args.max_regions))
    if args.assignment is not None:
        settings = dataclasses.replace(settings, matching=dataclasses.replace(settings.matching,
                                                                              assignment=args.assignment))
    d = settings.diffusion
    changes: dict[str, object] = {}
    if args.sd_model:
        changes["sd_model"] = args.sd_model
    if args.dino_model:
        changes["dino_model"] = args.dino_model
    if args.depth_model:
        changes["depth_model"] = None if args.depth_model.lower() == "none" else args.depth_model
    if args.lora:
        changes["lora"] = args.lora
    if args.device:
        changes["device"] = args.device
    engine_name = engine_name or args.engine
    changes["dtype"] = resolve_dtype(args.dtype, _device(args.device, args.engine, engine_name))
    if engine_name in ("diffusion", "auto"):
        if args.steps is not None:
            changes["steps"] = args.steps
        if args.content_weight is not None:
            changes["content_weight"] = args.content_weight
    settings = dataclasses.replace(settings, diffusion=dataclasses.replace(d, **changes))
    if engine_name == "classic":
        c: dict[str, object] = {}
        if args.steps is not None:
            c["iterations"] = args.steps
        if args.content_weight is not None:
            c["content_weight"] = args.content_weight
        if args.face_boost is not None:
            c["face_boost"] = args.face_boost
        try:
            settings = dataclasses.replace(settings, classic=dataclasses.replace(settings.classic, **c))
        except ValueError as exc:  # name the flag, not the field: --steps means iterations on this engine
            flag = {"iterations": "--steps", "content_weight": "--content-weight", "face_boost": "--face-boost"}
            field = next((f for f in c if str(exc).startswith(f"{f}=")), None)
            if field is None:
                raise
            expected = str(exc).split(": expected ")[-1]
            expected += " iterations per patch size" if field == "iterations" else ""
            where = "; the classic engine runs here (no GPU)" if args.engine == "auto" else ""
            raise InputError(f"{flag[field]} {c[field]} is out of range for the classic engine ({expected}){where}") \
                from None
    if args.depth_model and args.depth_model.lower() == "none":
        settings = dataclasses.replace(settings, regions=dataclasses.replace(settings.regions, use_depth=False))
    return settings


def resolve_dtype(dtype: str, device: str) -> str:
    """The UNet dtype of a `--dtype` value on `device`: "auto" is float16 on CUDA and float32 elsewhere.

    Only the command line picks half precision; the library's default stays float32 (STYLE.md).
    """
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype={dtype!r} is invalid: expected one of {', '.join(DTYPE_CHOICES)}")
    if dtype == "auto":
        return "float16" if device.startswith("cuda") else "float32"
    return dtype


def _device(flag: str | None, engine: str, engine_name: str) -> str:
    """The device the diffusion engine will run on: the flag, else the GPU that auto found, else the CPU."""
    if flag:
        return flag
    if engine == "auto" and engine_name == "diffusion":  # the pipeline moves auto runs to the GPU it found
        import torch

        return "cuda" if torch.cuda.is_available() else "mps"
    return "cpu"


def _run(args: argparse.Namespace) -> int:
    # 1. Check every path before any work, so bad input fails fast and writes nothing
    outputs = _check_outputs(args)
    for path in (args.content, *args.styles):
        if not Path(path).is_file():
            raise InputError(f"{path!r} is not a file; check the path")
    _check_outputs_spare_inputs(outputs, args.content, args.styles)

    from stylegallery import images, viz
    from stylegallery.pipeline import ContentSegmented, Done, Matched, Pipeline, Preview, Segmented

    pipe = Pipeline()
    engine_name, reason = pipe.resolve_engine(settings_from_args(args))
    settings = settings_from_args(args, engine_name)
    log = _Progress(quiet=args.quiet)
    if args.engine == "auto" and args.quiet:  # which engine auto picked, and why, is said even with --quiet
        print(f"note: engine {engine_name} ({reason})", file=sys.stderr, flush=True)
    log(f"engine: {engine_name} ({reason})")

    # 2. Run, printing progress from the events (and the engines' INFO logs: the diffusion inversion steps)
    result = None
    with _engine_progress(log):
        for event in pipe.run(args.content, args.styles, settings):
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
    if "mask" in outputs:
        color = viz.labels_to_color(viz.upsample_labels(result.content_labels, out_image.height, out_image.width))
        rendered.append((outputs["mask"], _encode(images.to_pil(color), outputs["mask"])))
    if "figure" in outputs:
        rendered.append((outputs["figure"], _encode(viz.panel(result), outputs["figure"])))
    if "matches" in outputs:
        rendered.append((outputs["matches"], (json.dumps(result.matches_json(), indent=2) + "\n").encode()))
    images.write_files_atomic([(path, lambda handle, data=data: handle.write(data)) for path, data in rendered])
    log(f"wrote {', '.join(str(p) for p, _ in rendered)}")
    return 0


def _check_outputs(args: argparse.Namespace) -> dict[str, Path]:
    outputs = {"output": Path(args.output)}
    for key, value in (("mask", args.mask_out), ("figure", args.figure_out), ("matches", args.matches_out)):
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


def _delegate(command: str, argv: list[str]) -> int:
    try:
        if command == "eval":
            from stylegallery.evaluate import main as sub_main
        else:
            from stylegallery.bench import main as sub_main
        return int(sub_main(argv) or 0)
    except (InputError, ModelLoadError, EngineUnavailable, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


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

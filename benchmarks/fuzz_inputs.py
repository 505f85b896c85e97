"""Mutation fuzz of the image loader: N mutated image files of every format Pillow writes here through `images.load`.

    python benchmarks/fuzz_inputs.py --cases 2000 [--seed 0] [--save-escapes DIR]

Each case takes a valid seed file (several modes per format the loader opens: RGB, RGBA, palette with transparency,
16-bit, CMYK, progressive, animated, multi-page, EXIF orientation; and one file of each other format Pillow writes
here, ICO, DDS, BLP, SPIDER, EPS and the rest, which the loader must refuse whatever their name) and applies 1-8
random mutations (bit flips,
truncation, inserted or deleted bytes, another format's header, a header field set to a huge value, a
duplicated block). Every case must end in an image or a clear `InputError` (one line, under 400
characters); anything else escaping `load` is counted and shown. Prints the count of cases, results,
clear errors, unclear errors and escaped exceptions per format (and how many results came with a Pillow
warning); exit 0 only when none escaped and every
error was clear. (tests/test_hostile_input.py runs a small hypothesis version of this in the test suite.)
"""

from __future__ import annotations

import argparse
import collections
import io
import random
import signal
import sys
import time
import warnings
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from stylegallery import images  # noqa: E402
from stylegallery.config import ImageSettings  # noqa: E402
from stylegallery.errors import InputError  # noqa: E402


CASE_SECONDS = 20  # a case that takes longer counts as hung


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def seed_files() -> dict[str, list[bytes]]:
    """Valid files of every format, in several modes each."""
    rng = np.random.default_rng(1)
    pixels = (rng.uniform(0, 1, (48, 64, 3)) * 255).astype(np.uint8)  # (H, W, 3)
    rgb = Image.fromarray(pixels)
    rgba = Image.fromarray(np.dstack([pixels, (rng.uniform(0, 1, (48, 64)) * 255).astype(np.uint8)]))
    palette = rgb.convert("P")
    grey16 = Image.fromarray((rng.uniform(0, 1, (48, 64)) * 65535).astype(np.uint16))
    frames = [palette, Image.fromarray(pixels[::-1]).convert("P")]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    return {
        "PNG": [_encode(rgb, "PNG"), _encode(rgba, "PNG"), _encode(palette, "PNG", transparency=0),
                _encode(grey16, "PNG")],
        "JPEG": [_encode(rgb, "JPEG"), _encode(rgb, "JPEG", progressive=True), _encode(rgb.convert("CMYK"), "JPEG"),
                 _encode(rgb, "JPEG", exif=exif.tobytes())],
        "WEBP": [_encode(rgb, "WEBP"), _encode(rgba, "WEBP", lossless=True),
                 _encode(rgb, "WEBP", save_all=True, append_images=[Image.fromarray(pixels[::-1])])],
        "GIF": [_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), _encode(palette, "GIF")],
        "TIFF": [_encode(rgb, "TIFF"), _encode(rgb, "TIFF", compression="tiff_lzw"), _encode(grey16, "TIFF"),
                 _encode(rgb, "TIFF", save_all=True, append_images=[rgba])],
        "BMP": [_encode(rgb, "BMP"), _encode(palette, "BMP")],
        **other_formats(rgb),
    }


def other_formats(rgb: Image.Image) -> dict[str, list[bytes]]:
    """One file of each format Pillow can write here and the loader does not open (the allow-list refuses them)."""
    out = {}
    for fmt, image in (("ICO", rgb), ("DDS", rgb.convert("RGBA")), ("BLP", rgb.convert("P")),
                       ("SPIDER", rgb.convert("F")), ("PCX", rgb), ("TGA", rgb), ("PPM", rgb), ("SGI", rgb),
                       ("IM", rgb), ("EPS", rgb), ("ICNS", rgb.resize((64, 64))), ("JPEG2000", rgb), ("QOI", rgb),
                       ("XBM", rgb.convert("1")), ("MSP", rgb.convert("1"))):
        try:
            out[fmt] = [_encode(image, fmt)]
        except (OSError, KeyError, ValueError):  # a writer this Pillow lacks
            continue
    return out


def mutate(data: bytes, rng: random.Random, seeds: dict[str, list[bytes]]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.choice(["flip", "flip", "truncate", "insert", "delete", "splice_header", "huge_field", "duplicate"])
        pos = rng.randrange(max(1, len(out)))
        if op == "flip" and out:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == "delete":
            del out[pos: pos + rng.randint(1, 64)]
        elif op == "splice_header":  # another format's header on this body
            other = rng.choice(rng.choice(list(seeds.values())))
            out[:16] = other[:16]
        elif op == "huge_field" and len(out) >= 4:  # a size or offset field set to a huge value
            pos = min(pos, len(out) - 4)
            out[pos: pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x01\x86\xa0"])
        elif op == "duplicate":
            end = min(len(out), pos + rng.randint(1, 256))
            out[end:end] = out[pos:end]
    return bytes(out)


class Hung(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001 (signal handler signature)
    raise Hung()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="working size of the loaded images")
    parser.add_argument("--save-escapes", metavar="DIR", help="write the files whose exception escaped here")
    args = parser.parse_args(argv)

    seeds = seed_files()
    rng = random.Random(args.seed)
    settings = ImageSettings(size=args.size)
    tally: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    errors: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    warned = 0
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    for case in range(args.cases):
        fmt = rng.choice(list(seeds))
        data = mutate(rng.choice(seeds[fmt]), rng, seeds)
        if hasattr(signal, "SIGALRM"):
            signal.alarm(CASE_SECONDS)
        try:
            with warnings.catch_warnings(record=True) as caught:  # Pillow's "Corrupt EXIF data" and the like
                warnings.simplefilter("always")
                out = images.load(data, settings)
            warned += bool(caught)
            ok = out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3 and bool(np.isfinite(out).all()) \
                and out.min() >= 0 and out.max() <= 1
            kind = "result" if ok else "bad result"
        except InputError as exc:
            message = str(exc)
            kind = "clear error" if message and "\n" not in message and len(message) < 400 else "unclear error"
            errors[" ".join(message.removeprefix("image ").split()[:5])] += 1  # its kind: "is damaged or truncated ("
            detail = message
        except Hung:
            kind, detail = "hung", f"over {CASE_SECONDS} s"
        except Exception as exc:  # noqa: BLE001 (what the fuzz is looking for)
            kind, detail = "escaped", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        finally:
            if hasattr(signal, "SIGALRM"):
                signal.alarm(0)
        tally[fmt][kind] += 1
        if kind not in ("result", "clear error"):
            detail = "" if kind == "bad result" else detail
            problems.append(f"case {case} ({fmt}, {len(data)} bytes): {kind}: {detail}")
            if args.save_escapes:
                folder = Path(args.save_escapes)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"case-{case:05d}.{fmt.lower()}").write_bytes(data)
    elapsed = time.perf_counter() - start

    kinds = ["result", "clear error", "unclear error", "bad result", "escaped", "hung"]
    print(f"{'format':<8} {'cases':>6} " + " ".join(f"{k:>13}" for k in kinds))
    total: collections.Counter[str] = collections.Counter()
    for fmt in seeds:
        total.update(tally[fmt])
        print(f"{fmt:<8} {sum(tally[fmt].values()):>6} " + " ".join(f"{tally[fmt][k]:>13}" for k in kinds))
    print(f"{'all':<8} {sum(total.values()):>6} " + " ".join(f"{total[k]:>13}" for k in kinds))
    print("# most common clear errors: " + "; ".join(f"{n} x '{e}...'" for e, n in errors.most_common(6)))
    for line in problems[:20]:
        print(f"PROBLEM {line}")
    failed = sum(total[k] for k in kinds[2:])
    print(f"# {args.cases} cases in {elapsed:.1f} s (seed {args.seed}): {total['result']} results, "
          f"{total['clear error']} clear errors, {total['unclear error']} unclear errors, {total['bad result']} bad "
          f"results, {total['escaped']} escaped exceptions, {total['hung']} hung; {warned} results came with a "
          "Pillow warning")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

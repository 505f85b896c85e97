"""Hostile and broken input through the loader and the CLI: every case ends in a result or a clear InputError.

The fuzz cases are counted by hypothesis; `FUZZ_EXAMPLES` raises their number for a longer soak.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylegallery import cli, images
from stylegallery.config import ImageSettings
from stylegallery.errors import InputError


FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF")


def _seed_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(1)
    pixels = (rng.uniform(0, 1, (48, 64, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "GIF":
        frames = [image.convert("P"), Image.fromarray(pixels[::-1]).convert("P")]
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = {fmt: _seed_bytes(fmt) for fmt in FORMATS}


@st.composite
def mutated_image_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(FORMATS))])
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice_header"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos: pos + draw(st.integers(1, 64))]
        elif op == "splice_header":  # a valid header of another format in front of this body
            other = SEEDS[draw(st.sampled_from(FORMATS))]
            data[:16] = other[:16]
    return bytes(data)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_image_bytes())
def test_fuzzed_bytes_give_an_image_or_a_clear_error(data: bytes) -> None:
    try:
        out = images.load(data, ImageSettings(size=64))
    except InputError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 400
        return
    assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


@settings(max_examples=max(20, FUZZ_EXAMPLES // 5), deadline=None)
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        images.load(data, ImageSettings(size=64))
    except InputError:
        pass


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def test_png_bomb_with_huge_declared_size_is_refused() -> None:
    # A PNG header declaring 100000 x 100000 px with almost no data.
    ihdr = (100_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) \
        + _png_chunk(b"IEND", b"")
    with pytest.raises(InputError, match="above the limit|decompression bomb"):
        images.load(data)


@pytest.mark.parametrize("orientation", [0, 2, 3, 4, 5, 7, 8, 9, 255])
def test_odd_exif_orientations_load(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, format="JPEG", exif=exif.tobytes())
    out = images.to_rgb(buffer.getvalue())
    assert sorted(out.shape[:2]) == [48, 64]


def test_garbage_exif_block_loads() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + os.urandom(300))
    out = images.to_rgb(buffer.getvalue())
    assert out.shape == (48, 64, 3)


def test_one_pixel_image_is_refused_clearly() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    with pytest.raises(InputError, match="too small"):
        images.load(buffer.getvalue())


@pytest.mark.parametrize("name", ["fötö 图像 ✓.png", "we'ird \"quotes\" $HOME;rm -rf.png", "-starts-with-dash.png"])
def test_cli_with_odd_file_names(tmp_path, capsys, name: str) -> None:
    pytest.importorskip("stylegallery.engines.classic")
    rng = np.random.default_rng(0)
    content = tmp_path / name
    Image.fromarray((rng.uniform(0, 1, (64, 80, 3)) * 255).astype(np.uint8)).save(content, format="PNG")
    style = tmp_path / "style.png"
    Image.fromarray((rng.uniform(0, 1, (64, 64, 3)) * 255).astype(np.uint8)).save(style)
    out = tmp_path / f"out {name}"
    code = cli.main(["run", "--engine", "classic", "--size", "64", "-o", str(out), "--", str(content), str(style)])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (64, 48)  # 80x64 at long side 64 (rounded to multiples of 8)


# Names a user may give: non-ASCII, quotes, shell characters, path separators, a newline, an RTL override.
NAME_ALPHABET = list("abcXYZ019 -_.'\"$;*?:\\/\néü图像✓🎨\u202e")
TEMPORARY = re.compile(r"^\..*\.(tmp|old)$")  # images.write_files_atomic's temporary and kept files


@st.composite
def relative_name(draw: st.DrawFn, suffixes: tuple[str, ...]) -> str:
    """A file name of random characters; "/" makes subfolders ("..", "." and empty parts are dropped)."""
    text = draw(st.text(alphabet=st.sampled_from(NAME_ALPHABET), min_size=1, max_size=12))
    parts = [p for p in text.split("/") if p not in ("", ".", "..")] or ["x"]
    return "/".join(parts) + draw(st.sampled_from(suffixes))


@settings(max_examples=max(8, FUZZ_EXAMPLES // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=st.one_of(mutated_image_bytes(), st.sampled_from(list(SEEDS.values()))),
       style=st.one_of(st.sampled_from(list(SEEDS.values())), mutated_image_bytes()),
       content_name=relative_name((".png", ".jpg", "", ".webp")),
       style_name=relative_name((".gif", ".tiff", "")),
       out_name=relative_name((".png", ".png", ".jpg", ".webp", ".txt", "")),
       make_out_folder=st.booleans())
def test_cli_fuzz_ends_in_an_output_or_one_error_line_and_leaves_nothing_else(
        content: bytes, style: bytes, content_name: str, style_name: str, out_name: str,
        make_out_folder: bool) -> None:
    """cli.main on mutated image files under odd names: exit 0 with the output, or exit 2 with one `error:` line and
    no output; never a traceback, a changed input or a temporary file."""
    pytest.importorskip("stylegallery.engines.classic")
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in", Path(tmp) / "out"
        content_path, style_path = inputs / "c" / content_name, inputs / "s" / style_name
        for path, data in ((content_path, content), (style_path, style)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        out = outputs / out_name
        (out.parent if make_out_folder else outputs).mkdir(parents=True, exist_ok=True)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = cli.main(["run", str(content_path), str(style_path), "-o", str(out), "--engine", "classic",
                                 "--size", "64", "--max-regions", "3", "-q"])
            except SystemExit as exc:  # argparse's own errors
                code = exc.code
        lines = err.getvalue().splitlines()
        event(f"exit {code}")
        if code == 0:
            assert lines == [] and out.is_file() and Image.open(out).size[0] > 0
        else:
            assert code == 2, err.getvalue()
            assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
            assert not out.exists()
        assert content_path.read_bytes() == content and style_path.read_bytes() == style
        left = [p.name for p in Path(tmp).rglob("*") if TEMPORARY.match(p.name)]
        assert left == []


def test_cli_refuses_an_output_path_through_a_file(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["run", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(blocker / "out.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "does not exist" in err


def _other_formats() -> dict[str, bytes]:
    """Files of formats Pillow writes here but the loader does not open (each may arrive renamed as .png)."""
    rgb = Image.new("RGB", (48, 40), (200, 30, 60))
    out = {}
    for fmt, image, params in (("ICO", rgb, {}), ("PCX", rgb, {}), ("TGA", rgb, {}), ("PPM", rgb, {}),
                               ("SGI", rgb, {}), ("IM", rgb, {}), ("DDS", rgb.convert("RGBA"), {}),
                               ("BLP", rgb.convert("P"), {}), ("SPIDER", rgb.convert("F"), {}),
                               ("EPS", rgb, {}), ("ICNS", rgb.resize((64, 64)), {})):
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt, **params)
        except (OSError, KeyError, ValueError):  # a writer this Pillow lacks
            continue
        out[fmt] = buffer.getvalue()
    return out


@pytest.mark.parametrize(("fmt", "data"), sorted(_other_formats().items()))
def test_formats_outside_the_allow_list_are_refused_before_their_plugin_runs(fmt, data, tmp_path) -> None:
    assert Image.open(io.BytesIO(data)).format  # Pillow itself would open it
    refused = r"is not an image in a supported format \(PNG, JPEG, WebP, GIF, TIFF or BMP\); convert it"
    with pytest.raises(InputError, match=refused):
        images.load(data)
    renamed = tmp_path / "photo.png"
    renamed.write_bytes(data)
    with pytest.raises(InputError, match="is not an image in a supported format"):
        images.load(renamed)


def test_an_ico_wrapping_a_huge_png_is_refused_without_decoding_it() -> None:
    """Pillow decodes an ICO's frames when it opens one: a 13000x13000 PNG inside cost +607 MB before refusal."""
    import resource

    side = 13_000
    row = b"\0" + b"\0" * (3 * side)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])) \
        + _png_chunk(b"IDAT", zlib.compressobj(9).compress(row * 64) + b"") + _png_chunk(b"IEND", b"")
    header = (0).to_bytes(2, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    entry = bytes([0, 0, 0, 0]) + (1).to_bytes(2, "little") + (32).to_bytes(2, "little") \
        + len(png).to_bytes(4, "little") + (6 + 16).to_bytes(4, "little")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="is not an image in a supported format"):
        images.load(header + entry + png)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: nothing was decoded


def test_the_fuzzer_finds_no_escape_over_every_format_it_writes() -> None:
    """benchmarks/fuzz_inputs.py, bounded: mutated files of the six formats the loader opens and of every other
    format Pillow writes here (renamed ones included), each an image or one clear line."""
    from benchmarks import fuzz_inputs as fuzz

    assert {"ICO", "DDS", "BLP", "SPIDER", "EPS"} <= set(fuzz.seed_files())
    assert fuzz.main(["--cases", "3000", "--seed", "7"]) == 0

"""Hostile and broken input through the loader and the CLI: every case ends in a result or a clear InputError.

The fuzz cases are counted by hypothesis; `FUZZ_EXAMPLES` raises their number for a longer soak.
"""

from __future__ import annotations

import io
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
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


def test_cli_refuses_an_output_path_through_a_file(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["run", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(blocker / "out.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "does not exist" in err

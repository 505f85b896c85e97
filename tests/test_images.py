"""Loading and validation of user images (issue 2, item 2)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from stylegallery import images
from stylegallery.config import ImageSettings
from stylegallery.errors import InputError


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _gradient(w: int = 120, h: int = 80) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8))


def test_working_size_keeps_aspect_and_multiples() -> None:
    assert images.working_size(300, 451, 512, 8) == (344, 512)  # 340.6 rounds to 344
    assert images.working_size(512, 512, 256, 8) == (256, 256)
    h, w = images.working_size(1000, 250, 512, 8)
    assert h == 512 and w % 8 == 0 and abs(w / h - 0.25) < 0.02
    assert images.working_size(20000, 40, 512, 8) == (512, 8)  # never a zero side


def test_square_aspect_is_the_official_squash() -> None:
    assert images.working_size(300, 451, 512, 8, "square") == (512, 512)
    assert images.working_size(20000, 40, 110, 8, "square") == (112, 112)  # 110 rounds to a multiple of 8
    assert images.working_size(300, 451, 512, 8, "keep") == images.working_size(300, 451, 512, 8)
    with pytest.raises(ValueError, match="aspect='wide' is invalid"):
        images.working_size(300, 451, 512, 8, "wide")
    with pytest.raises(ValueError, match="aspect='wide' is invalid"):
        ImageSettings(aspect="wide")  # type: ignore[arg-type]
    out = images.load(_gradient(120, 80), ImageSettings(size=64, aspect="square"))
    assert out.shape == (64, 64, 3)
    left, right = out[:, :4].mean(axis=(0, 1)), out[:, -4:].mean(axis=(0, 1))  # the whole width is kept, squashed
    assert left[0] < 0.1 and right[0] > 0.9


def test_load_path_bytes_pil_array_agree(tmp_path) -> None:
    pil = _gradient()
    path = tmp_path / "g.png"
    pil.save(path)
    settings = ImageSettings(size=64)
    from_path = images.load(path, settings)
    from_str = images.load(str(path), settings)
    from_bytes = images.load(path.read_bytes(), settings)
    from_pil = images.load(pil, settings)
    from_array = images.load(np.asarray(pil), settings)
    from_float = images.load(np.asarray(pil).astype(np.float32) / 255, settings)
    assert from_path.shape == (40, 64, 3) and from_path.dtype == np.float32
    for other in (from_str, from_bytes, from_pil, from_array, from_float):
        np.testing.assert_allclose(other, from_path, atol=1 / 255)
    assert 0.0 <= from_path.min() and from_path.max() <= 1.0


def test_16_bit_pngs_scale_by_their_bit_depth_not_by_their_data() -> None:
    import cv2

    dark = np.full((40, 48), 200, np.uint16)  # 200 of 65535: nearly black, though under 255
    dark[:, :8] = 0
    data = _png_bytes(Image.fromarray(dark))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = images.to_rgb(data)
    assert out.shape == (40, 48, 3) and out.max() == 1  # 200 / 65535 * 255 = 0.78 -> 1, not 200
    bright = np.full((40, 48), 65535, np.uint16)
    assert images.to_rgb(_png_bytes(Image.fromarray(bright))).min() == 255
    rgb16 = np.zeros((40, 48, 3), np.uint16)
    rgb16[..., 2] = 200  # the same dark value in a 16-bit RGB PNG (OpenCV writes BGR: channel 2 is red)
    rgb16[..., 0] = 50000
    ok, encoded = cv2.imencode(".png", rgb16)
    assert ok
    out = images.to_rgb(encoded.tobytes())
    assert (out[..., 0] <= 1).all() and (out[..., 1] == 0).all() and (np.abs(out[..., 2].astype(int) - 195) <= 1).all()


def test_32_bit_integer_images_outside_16_bit_are_refused() -> None:
    wide = Image.fromarray(np.full((40, 48), 70000, np.int32))
    assert wide.mode == "I"
    with pytest.raises(InputError, match="outside 16-bit 0..65535"):
        images.to_rgb(wide)
    assert images.to_rgb(Image.fromarray(np.full((40, 48), 65535, np.int32))).min() == 255  # "I" reads as 16-bit


def test_exif_orientation_is_applied() -> None:
    pil = _gradient(120, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = _png_bytes(pil, "JPEG", exif=exif.tobytes(), quality=95)
    out = images.to_rgb(data)
    assert out.shape == (120, 80, 3)  # portrait after orientation


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1", "YCbCr"])
def test_modes_convert_to_rgb(mode: str) -> None:
    pil = _gradient()
    if mode == "I;16":
        grey = (np.asarray(pil.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        src = Image.fromarray(grey, mode="I;16")
        data = _png_bytes(src)
    elif mode == "CMYK":
        data = _png_bytes(pil.convert("CMYK"), "JPEG")
    elif mode == "YCbCr":
        data = _png_bytes(pil.convert("YCbCr"), "JPEG")
    else:
        data = _png_bytes(pil.convert(mode))
    out = images.to_rgb(data)
    assert out.shape == (80, 120, 3) and out.dtype == np.uint8
    if mode == "I;16":  # 16-bit range is mapped, not clipped: the gradient survives
        assert out.max() > 200 and out.min() < 60


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 20:, 3] = 255  # left half transparent
    out = images.to_rgb(_png_bytes(Image.fromarray(rgba, "RGBA")))
    assert (out[:, :20] == 255).all()
    assert (out[:, 20:] == (255, 0, 0)).all()


def test_animated_gif_takes_first_frame() -> None:
    frames = [Image.new("RGB", (48, 48), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = images.to_rgb(buffer.getvalue())
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|damaged"),
    ],
)
def test_bad_bytes_raise_input_error(data: bytes, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        images.load(data)


def test_truncated_file_raises(tmp_path) -> None:
    data = _png_bytes(_gradient(300, 200), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        images.load(path)


def test_zero_byte_and_missing_files(tmp_path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        images.load(empty)
    with pytest.raises(InputError, match="does not exist"):
        images.load(tmp_path / "nope.png")
    with pytest.raises(InputError, match="folder"):
        images.load(tmp_path)


def test_too_small_and_too_large() -> None:
    with pytest.raises(InputError, match="too small"):
        images.load(_png_bytes(Image.new("RGB", (31, 200))))
    with pytest.raises(InputError, match="too small"):
        images.load(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(InputError, match="above the limit"):
        images.load(_png_bytes(Image.new("RGB", (400, 300))), ImageSettings(max_input_pixels=100_000))


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 20000 x 20000 PNG of one colour compresses to a few hundred KB but would decode to 1.2 GB.
    bomb = _png_bytes(Image.new("L", (20000, 20000)), optimize=True)
    assert len(bomb) < 2_000_000
    with pytest.raises(InputError, match="above the limit|decompression bomb"):
        images.load(bomb)


def test_wide_image_is_accepted_and_kept_wide() -> None:
    out = images.load(np.zeros((40, 20000, 3), np.uint8), ImageSettings(size=512))
    assert out.shape[1] == 512 and out.shape[0] == 8


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
        (np.full((64, 64, 3), np.inf, np.float64), "NaN or infinite"),
        (np.full((64, 64, 3), 3.0, np.float32), r"in \[0, 1\]"),
        (np.zeros((64, 64, 5), np.uint8), "shape"),
        (np.zeros((64,), np.uint8), "shape"),
        (np.full((64, 64, 3), 300, np.int32), "outside 0..255"),
        (np.zeros((64, 64, 3), np.complex64), "dtype"),
    ],
)
def test_bad_arrays(array: np.ndarray, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        images.load(array)


def test_unsupported_type() -> None:
    with pytest.raises(InputError, match="unsupported type"):
        images.load(12345)  # type: ignore[arg-type]


def test_messages_are_one_line(tmp_path) -> None:
    for bad in (b"", b"garbage", tmp_path / "missing.png", np.full((4, 4, 3), np.nan)):
        with pytest.raises(InputError) as info:
            images.load(bad)
        assert "\n" not in str(info.value)


def test_pixel_hash_depends_on_pixels_only() -> None:
    a = images.load(_gradient(), ImageSettings(size=64))
    b = images.load(_png_bytes(_gradient()), ImageSettings(size=64))
    c = a.copy()
    c[0, 0, 0] = 1 - c[0, 0, 0]
    assert images.pixel_hash(a) == images.pixel_hash(b) != images.pixel_hash(c)


def test_write_atomic_leaves_no_partial_file(tmp_path) -> None:
    target = tmp_path / "out.png"

    def failing(handle) -> None:
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="No space left"):
        images.write_atomic(target, failing)
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    images.save_atomic(_gradient(), target)
    assert Image.open(target).size == (120, 80)
    assert os.listdir(tmp_path) == ["out.png"]

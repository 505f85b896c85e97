"""Loading and validating user images.

Every image enters through `load`: a path, bytes, a PIL image or an array becomes an RGB float32
array in [0, 1] at the working size (long side `ImageSettings.size`, aspect ratio kept unless
`ImageSettings.aspect` is "square", sides rounded to `ImageSettings.multiple`). Anything unusable
raises `InputError` with a one-line message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from stylegallery.config import ImageSettings
from stylegallery.errors import InputError


ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias)

# A truncated file must fail loudly, never load half an image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The only formats the loader opens (Pillow opens 40-odd: some decode whole frames when opened, as ICO does, or
# hand the file to another program, as EPS does to Ghostscript). Anything else, renamed or not, is refused before
# Pillow's plugin for it runs; the size is checked from the header before any pixel is decoded.
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
FORMATS_WORDS = "PNG, JPEG, WebP, GIF, TIFF or BMP"


def load(src: ImageSource, settings: ImageSettings | None = None, *, name: str = "image") -> np.ndarray:
    """Validate `src` and return it as (H, W, 3) float32 RGB in [0, 1] at the working size."""
    settings = settings or ImageSettings()
    return fit(to_rgb(src, settings, name=name), settings)


def fit(rgb: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """A decoded (h0, w0, 3) uint8 image at the working size of `settings`, float32 in [0, 1]."""
    height, width = working_size(rgb.shape[0], rgb.shape[1], settings.size, settings.multiple, settings.aspect)
    return resize(rgb, height, width)


def to_rgb(src: ImageSource, settings: ImageSettings | None = None, *, name: str = "image") -> np.ndarray:
    """Decode and validate `src` at its own size: (h, w, 3) uint8 RGB, EXIF orientation applied."""
    settings = settings or ImageSettings()
    if isinstance(src, np.ndarray):
        rgb = _array_to_rgb(src, name)
    else:
        image = _open(src, settings, name)
        rgb = _pil_to_rgb(image, name)
    height, width = rgb.shape[:2]
    if min(height, width) < settings.min_side:
        raise InputError(
            f"{name} is {width}x{height} px: too small, each side must be at least {settings.min_side} px; "
            "use a larger image"
        )
    if height * width > settings.max_input_pixels:
        raise InputError(
            f"{name} is {width}x{height} px: above the limit of {settings.max_input_pixels:,} pixels; "
            "downscale it before uploading"
        )
    return rgb


def working_size(height: int, width: int, long_side: int, multiple: int = 8,
                 aspect: str = "keep") -> tuple[int, int]:
    """(H, W) with the long side at `long_side`, each side a positive multiple of `multiple`.

    aspect "keep" keeps the aspect ratio; "square" gives long_side x long_side whatever the input (the
    official code's 512x512 squash, paper 2.2).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size {width}x{height} is invalid: both sides must be positive")
    if aspect not in ("keep", "square"):
        raise ValueError(f"aspect={aspect!r} is invalid: expected 'keep' or 'square'")
    if aspect == "square":
        height = width = max(height, width)
    scale = long_side / max(height, width)

    def _round(side: int) -> int:
        return max(multiple, int(round(side * scale / multiple)) * multiple)

    return _round(height), _round(width)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w) label map at (H, W) by nearest neighbour, int32 (a region thinner than the step can vanish)."""
    import cv2  # deferred: keeps `import stylegallery` light

    return cv2.resize(np.asarray(labels, dtype=np.int32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (h, w, 3) uint8 or float to (height, width, 3) float32 in [0, 1] (area down, bicubic up)."""
    import cv2  # deferred: keeps `import stylegallery` light

    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    shrinking = height * width < rgb.shape[0] * rgb.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    if (height, width) != rgb.shape[:2]:
        rgb = cv2.resize(rgb, (width, height), interpolation=interpolation)
    return rgb.astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8."""
    return np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(image) if image.dtype != np.uint8 else image, mode="RGB")


def pixel_hash(image: np.ndarray) -> str:
    """A content hash of a working-size image (the cache key of its analysis)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(to_uint8(image) if image.dtype != np.uint8 else image).tobytes())
    return digest.hexdigest()


def save_atomic(image: Image.Image, path: str | os.PathLike, **save_kwargs: object) -> None:
    """Write `image` to `path` through a temporary file and a rename: no partial file is ever left."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"output file {str(path)!r} has an unknown extension; use .png, .jpg or .webp")
    write_atomic(path, lambda handle: image.save(handle, format=fmt, **save_kwargs))


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(handle)` on a temporary file next to `path`, then rename it over `path`; clean up on any error."""
    write_files_atomic([(path, write)])


def write_files_atomic(files: Sequence[tuple[str | os.PathLike, Callable[[BinaryIO], object]]]) -> None:
    """Write every file or none: `write(handle)` fills a temporary file next to each path; only once all are written
    (and synced) are they renamed into place. A failure leaves the files that existed before untouched (a file
    already replaced is restored from a hard link kept until the end) and no new or temporary file behind.
    New files get the umask's mode (0o666 & ~umask); a replaced file keeps its permission bits."""
    targets = [Path(p) for p, _ in files]
    for path in targets:
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise InputError(f"output folder {str(folder)!r} does not exist; create it or choose another path")
    temps: list[str] = []
    backups: list[tuple[Path, str | None]] = []  # (path, its previous file kept as a link, or None if it was new)
    path = targets[0] if targets else Path(".")
    try:
        # 1. Every file to its temporary file: nothing the user has is touched yet
        for path, (_, write) in zip(targets, files):
            temps.append(_write_temporary(path, write))
        # 2. Rename them all into place, keeping each replaced file until every rename succeeded
        for path, temp in zip(targets, temps):
            backups.append((path, _keep_previous(path)))
            os.replace(temp, path)
    except BaseException as exc:
        failed = path
        for temp in temps:
            _unlink_quietly(temp)  # the ones already renamed are gone: no-op
        for done, previous in reversed(backups):
            try:
                if previous is None:
                    done.unlink(missing_ok=True)
                else:
                    os.replace(previous, done)
            except OSError:  # cannot undo: say what is left where, rather than lose a file silently
                left = "remove it" if previous is None else f"its previous content is in {previous!r}"
                raise InputError(f"cannot write {str(failed)!r} and could not undo {str(done)!r}; {left}") from None
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise InputError(f"cannot write {str(failed)!r}: {reason}; free some space or choose another "
                             "location") from None
        raise
    for _, previous in backups:
        if previous is not None:
            _unlink_quietly(previous)


def _write_temporary(path: Path, write: Callable[[BinaryIO], object]) -> str:
    """`write` into a new temporary file next to `path`, synced, with the mode `path` will have; its name."""
    import tempfile

    folder = path.parent if str(path.parent) else Path(".")
    try:
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_umask()
    except OSError:
        mode = 0o666 & ~_umask()
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)  # mkstemp makes it 0o600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _unlink_quietly(name)
        raise
    return name


def _keep_previous(path: Path) -> str | None:
    """A hard link to the file at `path` (to put it back if a later output fails), or None when there is none."""
    if not os.path.lexists(path):
        return None
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{os.urandom(4).hex()}.old")
        try:
            os.link(path, name, follow_symlinks=False)
            return name
        except FileExistsError:
            continue
        except OSError as exc:  # no hard links here (some network or FAT file systems): keep a copy
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            import shutil

            shutil.copy2(path, name, follow_symlinks=False)
            return name
    raise FileExistsError(errno.EEXIST, "no free name for a backup file", str(path))


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unlink_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _open(src: ImageSource, settings: ImageSettings, name: str) -> Image.Image:
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise InputError(f"{name} is empty (0 bytes); choose a PNG, JPEG or WebP file")
        handle: object = io.BytesIO(bytes(src))
        label = name
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        label = f"{name} {str(path)!r}"
        if not path.exists():
            raise InputError(f"{label} does not exist; check the path")
        if path.is_dir():
            raise InputError(f"{label} is a folder, not an image file")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(f"{label} cannot be read: {exc.strerror}") from None
        if size == 0:
            raise InputError(f"{label} is empty (0 bytes); choose a PNG, JPEG or WebP file")
        handle = path
    else:
        raise InputError(
            f"{name} has unsupported type {type(src).__name__}; pass a path, bytes, a PIL image or an array"
        )
    try:
        with warnings.catch_warnings():
            # Pillow's bomb check warns at half the limit and raises at the full one: make both an error.
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data" and the like: noise, not errors
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(handle, formats=FORMATS)  # type: ignore[arg-type]
            if image.width * image.height > settings.max_input_pixels:
                raise InputError(
                    f"{label} is {image.width}x{image.height} px: above the limit of {settings.max_input_pixels:,} "
                    "pixels; downscale it before uploading"
                )
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{label} is too large to decode safely (decompression bomb); downscale it") from None
    except UnidentifiedImageError:
        raise InputError(f"{label} is not an image in a supported format ({FORMATS_WORDS}); convert it to one of "
                         "those") from None
    except MemoryError:
        raise InputError(f"{label} needs more memory to decode than this machine has; downscale it") from None
    except Exception as exc:  # noqa: BLE001 - a decoder's error on a hostile file is the file's fault, said in one line
        detail = " ".join(str(exc).split())[:120] if str(exc) else type(exc).__name__
        raise InputError(f"{label} is damaged or truncated ({detail}); re-export or re-download it") from None
    return image


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    # An animated or multi-page file is read at its first frame, the one `_open` loaded (asking for `n_frames`
    # would walk every frame of a GIF first).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            image = ImageOps.exif_transpose(image) or image
    except Exception:  # odd or broken EXIF must not lose the image: keep it unrotated
        pass
    mode = image.mode
    try:
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba).convert("RGB")
        elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            # The mode says the depth, never the data: "I;16*" is 16-bit, and Pillow decodes 16-bit PGM (and
            # older Pillow 16-bit PNG) as "I" scaled to 0..65535, so "I" is read as 16-bit too.
            array = np.asarray(image, dtype=np.float64)
            if mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
                raise InputError(f"{name} is a 32-bit integer image with values in [{array.min():.0f}, "
                                 f"{array.max():.0f}], outside 16-bit 0..65535; convert it to an 8- or 16-bit image")
            grey = np.clip(array / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        elif mode == "F":
            array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
            grey = np.clip(array * (255.0 if array.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        elif mode != "RGB":
            image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
        rgb = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"{name} uses an unsupported colour mode {mode!r} ({exc}); convert it to RGB") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"{name} decoded to shape {rgb.shape}; convert it to an RGB image")
    return np.ascontiguousarray(rgb)


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"{name} array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{name} array contains NaN or infinite values; replace them before passing the array")
        lo, hi = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{name} float array has values in [{lo:.3g}, {hi:.3g}]; float images must be in [0, 1] "
                "(divide uint8 data by 255)"
            )
        array = np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.integer) and array.size and (array.min() < 0 or array.max() > 255):
            raise InputError(f"{name} {array.dtype} array has values outside 0..255; pass uint8 or float in [0, 1]")
        if not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"{name} array has dtype {array.dtype}; pass uint8 or float in [0, 1]")
        array = array.astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(array)


def load_label_mask(src: ImageSource, settings: ImageSettings | None = None, *, name: str = "content mask",
                    max_regions: int = 64) -> np.ndarray:
    """A user label mask, the official `<name>_json/label.png`: (H, W) int32 labels 0..K-1 at the file's own size.

    Each distinct value is one region: the palette index of a "P" PNG (labelme's label.png), the grey level of an
    L/I/1 image, the colour of an RGB(A) image (alpha ignored), or the values of a 2-D integer array (an (H, W, 3)
    array is read as colours). Labels follow the sorted values, so value 0 (labelme's background) is label 0.
    Raises InputError for an unreadable file, too few pixels, or more than `max_regions` distinct values (a JPEG
    or a resampled image: lossy compression and smoothing invent values between the regions).
    """
    settings = settings or ImageSettings()
    if isinstance(src, np.ndarray):
        values = np.asarray(src)
        if values.ndim == 3 and values.shape[2] in (3, 4):
            values = _colour_codes(values[..., :3])
        elif values.ndim != 2:
            raise InputError(f"{name} has shape {values.shape}: expected an (H, W) label array or (H, W, 3) colours")
        if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_)):
            if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
                raise InputError(f"{name} holds non-integer values: pass integer labels, one value per region")
        values = values.astype(np.int64)
    else:
        image = _open(src, settings, name)
        if image.mode == "P" or image.mode in ("L", "1", "I", "I;16", "I;16B", "I;16L"):
            values = np.asarray(image).astype(np.int64)
        else:
            values = _colour_codes(np.asarray(image.convert("RGB")))
    height, width = values.shape
    if min(height, width) < 1 or height * width > settings.max_input_pixels:
        raise InputError(f"{name} is {width}x{height} px: expected at least 1x1 and at most "
                         f"{settings.max_input_pixels:,} pixels")
    distinct, labels = np.unique(values, return_inverse=True)
    if len(distinct) > max_regions:
        raise InputError(f"{name} holds {len(distinct)} distinct values: a label mask has one exact value per region "
                         f"(at most {max_regions}); save it as a PNG with flat colours or a palette (a JPEG's "
                         "compression or a smooth resize invents values between regions)")
    return labels.reshape(height, width).astype(np.int32)


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # (H, W) one integer per colour

"""What app.py needs to serve the library to strangers, kept out of the widget wiring (no gradio import here).

- `FileGate`: the only files a client may name are the uploads the server's upload route stored and the
  gallery's images, named by their exact paths; anything else (a path on the server, a data: URL, another
  address) is refused before a byte of it is read.
- `blocked_beside`: what gradio must never serve from the app's own folder.
- `RunPictures`: every picture the page shows, written by the app itself as a whole file or not at all (a full
  disk leaves no truncated PNG behind and is reported as such), in a per-session folder that gradio serves as is.
- `BodyCap`: ASGI middleware refusing any request whose body is larger than a total (gradio caps each file only).
- `limit_malloc_arenas`: glibc's MALLOC_ARENA_MAX for the serving process, so its memory levels off.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from stylegallery.errors import InputError


class Refused(InputError):
    """A client named a file it may not use. The message is one line for the page and never shows a server path."""


M_ARENA_MAX = -8  # glibc's mallopt parameter behind the MALLOC_ARENA_MAX environment variable


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc's malloc use at most `arenas` arenas from now on, as MALLOC_ARENA_MAX does; call it before the
    server starts its threads. glibc gives each thread that allocates its own arena (up to 8 per core), and memory
    freed in one is kept for reuse there: under gradio's worker threads a server's resident memory kept rising run
    after run (benchmarks/soak_memory.py --app). True when the limit was set; False where MALLOC_ARENA_MAX is
    already set (glibc read it at start-up) or the C library has no mallopt (not glibc: nothing to do)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return mallopt(M_ARENA_MAX, arenas) == 1


FILE_ROUTE = "/gradio_api/file="  # how the server itself addresses the files it hands out


@dataclass(frozen=True)
class Named:
    """A file a client may use: where to read it, and its name on the page."""

    path: Path
    name: str


class FileGate:
    """Checks every file path a client sends (what it names, never what it contains).

    `uploads()` returns the server's record of the paths its upload route stored (exact strings, as handed to
    the uploader). `gallery` maps every exact path a client can hold for a gallery image (the original, or the
    server's cached copy of it) to that image's (original path, title). A path is accepted when it is in one of
    the two; an upload must also still be a regular file inside `upload_dir` (no symlink out of it).
    """

    def __init__(self, upload_dir: str | os.PathLike, uploads: Callable[[], Container[str]],
                 gallery: Mapping[str, tuple[Path, str]]) -> None:
        self.upload_dir = Path(upload_dir).resolve()
        self.uploads = uploads
        self.gallery = dict(gallery)

    def check(self, path: object, url: object, what: str) -> Named:
        """The file named by a client's (path, url), or `Refused`. `what` names the slot ("The content image")."""
        _check_url(path, url, what)
        if not isinstance(path, str) or not path:
            raise Refused(f"{what} names no uploaded file: upload an image (gradio_client: handle_file(path)).")
        if path in self.gallery:
            original, title = self.gallery[path]
            return Named(original, title)
        if path not in self.uploads():
            raise Refused(f"{what} was named by a path on the server instead of uploaded: upload the file itself.")
        stored = Path(path)
        if stored.is_symlink() or not stored.resolve().is_relative_to(self.upload_dir):
            raise Refused(f"{what} was named by a path on the server instead of uploaded: upload the file itself.")
        if not stored.is_file():
            raise Refused(f"{what} is no longer on the server (uploads are kept for an hour): upload it again.")
        return Named(stored, stored.name)


def _check_url(path: object, url: object, what: str) -> None:
    """A url is only ever the server's own address of `path` (what its file route and uploads hand out)."""
    if url is None or url == "":
        return
    if not isinstance(url, str):
        raise Refused(f"{what} has a malformed url: send the uploaded file's path only.")
    if url[:5].lower() == "data:":
        raise Refused(f"{what} was sent inline as a data: URL, which this app does not read: upload the file "
                      "itself (gradio_client: handle_file(path)).")
    _, found, rest = url.partition(FILE_ROUTE)
    if not found or path not in (rest, urllib.parse.unquote(rest)):
        raise Refused(f"{what} names an address, not a file uploaded to this server: upload the file itself.")


def blocked_beside(folder: str | os.PathLike, served: list[str | os.PathLike]) -> list[str]:
    """Every entry of `folder` that neither holds nor lies inside a `served` folder: the app's code, tests and
    settings, for gradio's `blocked_paths` (gradio would otherwise copy and serve any file under its working
    directory that an event returned)."""
    served_paths = [Path(p).resolve() for p in served]
    blocked = []
    for entry in sorted(Path(folder).resolve().iterdir()):
        if not any(entry == s or entry in s.parents or s in entry.parents for s in served_paths):
            blocked.append(str(entry))
    return blocked


class CannotSave(Exception):
    """A picture could not be written (`disk_full`: no space or quota left); nothing of it was left behind."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.disk_full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        self.reason = error.strerror or type(error).__name__


def save_picture(picture: Image.Image, path: Path) -> Path:
    """`picture` as a PNG at `path`, through a temporary file in the same folder and a rename: a reader never sees
    half a file, and a failed write leaves nothing. No fsync: these are pictures for the page and its downloads,
    to be redrawn by another run, not outputs that must survive a power cut."""
    try:
        fd, part = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise CannotSave(exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            picture.save(handle, format="PNG", compress_level=1)  # fast: the page waits for it
        os.replace(part, path)
    except OSError as exc:
        _remove(Path(part))
        raise CannotSave(exc) from None
    except BaseException:
        _remove(Path(part))
        raise
    return path


class RunPictures:
    """The pictures of one run, as PNG files in its session's folder under `root` (inside gradio's cache, so that
    gradio serves them without copying them).

    Starting a run removes the session's earlier pictures, and the folders of sessions idle for `max_age` seconds.
    """

    def __init__(self, root: str | os.PathLike, session: str, max_age: float = 3600.0) -> None:
        root = Path(root)
        if root.is_dir():
            for old in root.iterdir():
                try:
                    if old.name == session or time.time() - old.stat().st_mtime > max_age:
                        shutil.rmtree(old, ignore_errors=True)
                except OSError:  # removed meanwhile by another run
                    pass
        self.folder = root / session
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CannotSave(exc) from None
        self.stem = f"stylegallery-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def save(self, pictures: Mapping[str, Image.Image]) -> dict[str, str]:
        """{key: picture} -> {key: path of its PNG}: all of them, or none (CannotSave)."""
        written: dict[str, str] = {}
        try:
            for key, picture in pictures.items():
                written[key] = str(save_picture(picture, self.folder / f"{self.stem}-{key}.png"))
        except BaseException:
            for path in written.values():
                _remove(Path(path))
            raise
        return written


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}  # as gradio's max_file_size


def parse_size(text: str, name: str) -> int:
    """"15mb" -> 15728640 (units b, kb, mb, gb, powers of 1024, as gradio's max_file_size); `name` for the error."""
    number = text.strip().lower().rstrip("bkmg")
    unit = text.strip().lower()[len(number):] or "b"
    if not number.isdigit() or unit not in UNITS or int(number) == 0:
        raise ValueError(f"{name}={text!r} is not a size: use e.g. 15mb, 500kb or 1gb")
    return int(number) * UNITS[unit]


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _TooLarge(Exception):
    pass


class BodyCap:
    """ASGI middleware: a request whose body holds more than `limit` bytes is answered 413 with `message`.

    By its Content-Length before the app sees it; a body sent without one is counted as it arrives, and refused
    when it passes the limit (the app has not answered yet: it is still reading it). Nothing of the body is kept.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int, message: str) -> None:
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.strip().isdigit() and int(length) > self.limit:
            await self._drain(receive)
            await self._refuse(send)
            return
        received, answered = 0, False

        async def counting() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def watching(message: dict[str, Any]) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, watching)
        except _TooLarge:
            if not answered:
                await self._drain(receive)
                await self._refuse(send)

    async def _drain(self, receive: Receive) -> None:
        """Read (and drop) the rest of the body, up to 8 x the limit: a client still sending it would otherwise
        meet a closed connection instead of the answer."""
        drained = 0
        while drained <= 8 * self.limit:
            message = await receive()
            drained += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    async def _refuse(self, send: Send) -> None:
        body = self.message.encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode("ascii")), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

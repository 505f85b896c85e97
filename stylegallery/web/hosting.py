"""Hosting the page for strangers: its limits, its per-session files and its server set-up (no widget wiring; gradio
is imported only by the functions that need it).

- `env_int` and `ENV_ERRORS`: whole-number STYLEGALLERY_* settings; bad values are collected so that `python app.py`
  stops with one line before serving.
- `upload_cap` and `request_cap`: the byte caps per uploaded file (gradio's max_file_size, given in bytes) and per
  request (`BodyCap`), read with the library's one byte-size parser (`stylegallery.config.parse_bytes`: MB = 10^6).
- `BodyCap`: ASGI middleware refusing any request whose body is larger than a total (gradio caps each file only).
- `RunPictures`: every picture the page shows, written by the app itself as a whole file or not at all (a full
  disk leaves no truncated PNG behind and is reported as such), in a per-session folder that gradio serves as is.
- `Stops`: the Stop button's record per session, which stops a run at its next step or before it leaves the queue.
- `blocked_beside`: what gradio must never serve from the app's own folder; `theme`: the page's look.
- `limit_malloc_arenas`: glibc's MALLOC_ARENA_MAX for the serving process, so its memory levels off.
- `warm_up`: one tiny run before serving; `zero_gpu`: the GPU decorator on Hugging Face ZeroGPU Spaces.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.middleware import Middleware

from stylegallery.config import parse_bytes


ENV_ERRORS: list[str] = []  # bad STYLEGALLERY_* values: `python app.py` stops with them before serving


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """A whole-number setting from the environment; a bad value is recorded (the default is used meanwhile)."""
    text = os.environ.get(name, str(default)).strip()
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        ENV_ERRORS.append(f"{name}={text!r} is invalid: expected a whole number >= {minimum}")
        return default
    return value


def upload_cap(text: str, name: str) -> int:
    """A byte cap from a STYLEGALLERY_* setting: "15MB" -> 15000000 (KB/MB/GB are powers of 10, KiB/MiB/GiB powers
    of 2, as everywhere in StyleGallery; gradio's own max_file_size parser would read "15mb" as 15 x 2^20, so the app
    hands gradio the byte count). `name` labels the value in the ValueError."""
    cap = parse_bytes(text, name)
    if cap < 1:
        raise ValueError(f"{name}={text!r} is invalid: expected a byte count above 0, such as 15MB")
    return cap


EVENT_BODY_CAP = 64_000  # bytes: an event's inputs are file references, numbers and a small override table


def request_cap(max_request: str, max_upload: str, event_cap: int = EVENT_BODY_CAP) -> Middleware:
    """gradio caps each uploaded file (max_file_size), not a request: one upload of many files is capped here, and
    every other request (an event's inputs: file references, numbers, the override table) at `event_cap` bytes."""
    limit = upload_cap(max_request, "STYLEGALLERY_MAX_REQUEST")
    per_file = upload_cap(max_upload, "STYLEGALLERY_MAX_UPLOAD")
    message = (f"This upload is too large: at most {limit / 10**6:g} MB per upload and {per_file / 10**6:g} MB per "
               "file. Upload fewer or smaller images at once.")
    return Middleware(BodyCap, limit=limit, message=message, event_limit=event_cap)


def session(request: Any) -> str:
    """The browser tab's (or gradio_client's) session of a gr.Request, safe as a folder name."""
    return re.sub(r"[^A-Za-z0-9_-]", "", getattr(request, "session_hash", None) or "") or "anonymous"


class Stops:
    """When each session last pressed Stop (time.monotonic): its runs submitted before then stop. Presses older than
    `max_age` seconds (longer than any wait in the queue) are forgotten."""

    def __init__(self, max_age: float = 3600.0) -> None:
        self.max_age, self.pressed = max_age, {}

    def press(self, session: str) -> None:
        now = time.monotonic()
        for other, at in list(self.pressed.items()):
            if now - at > self.max_age:
                self.pressed.pop(other, None)
        self.pressed[session] = now

    def since(self, session: str, moment: float) -> bool:
        """Whether `session` pressed Stop at or after `moment`."""
        return self.pressed.get(session, -math.inf) >= moment


def run_work(size: float, n_styles: int, steps: float) -> float:
    """A run's work in arbitrary units: pixels of the working size (long side squared) x images x steps."""
    return float(size) ** 2 * (1 + n_styles) * max(1.0, float(steps or 1))


class RunCosts:
    """Seconds per unit of `run_work` of each engine's recent runs on this server (a running mean), for an estimate
    of a run's time before it starts; none before an engine's first run here."""

    def __init__(self, weight: float = 0.3) -> None:
        self.weight, self.rate = weight, {}

    def record(self, engine: str, work: float, seconds: float) -> None:
        rate = seconds / max(work, 1.0)
        old = self.rate.get(engine)
        self.rate[engine] = rate if old is None else (1 - self.weight) * old + self.weight * rate

    def estimate(self, engine: str, work: float, shown_from: float = 10.0) -> str:
        """"; about 2 min (from this server's last runs)" for the status line when the run should take longer than
        `shown_from` seconds, else ""."""
        rate = self.rate.get(engine)
        if rate is None or rate * work < shown_from:
            return ""
        seconds = rate * work
        said = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
        return f"; about {said} by this server's last runs"


def pictures_root() -> Path:
    """Where runs put their pictures: inside gradio's cache, which it serves from without copying."""
    from stylegallery.web import compat  # imports gradio: not at import time, so that this module loads without it

    return Path(compat.upload_folder()) / "stylegallery-runs"


def zero_gpu(seconds: int) -> Callable[[Callable], Callable]:
    """ZeroGPU's `spaces.GPU(duration=seconds)` on Hugging Face Spaces; where `spaces` is not installed, a decorator
    that changes nothing."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=seconds)


def warm_up(pipe: Any, plan: Any) -> None:
    """One tiny run of `pipe` (a stylegallery.Pipeline) with `plan` (the page's, at a tiny size) before serving: the
    engine's models are loaded and the first visitor's run pays no first-use costs (lazy imports of scikit-learn and
    OpenCV's face cascade, about 0.8 s). Its analyses are dropped from the cache."""
    import numpy as np

    rng = np.random.default_rng(0)
    tiny = [rng.uniform(0, 1, (64, 96 - 16 * i, 3)).astype(np.float32) for i in range(2)]
    pipe(tiny[0], [tiny[1]], plan)
    pipe.cache.clear()


def launch_kwargs(assets: Path, folders: list[Path], max_upload: str, max_request: str) -> dict:
    """Everything gradio's `launch` needs besides host and port: theme, CSS and script from `assets`, the only
    folders the server may read (`assets` and the gallery's `folders`), the upload caps, and the app's own files it
    must never serve (gradio serves files under its working directory that an event returns)."""
    return {"theme": theme(), "css_paths": [assets / "style.css"], "js": (assets / "chosen.js").read_text(),
            "allowed_paths": [str(assets), *map(str, folders)],
            "max_file_size": upload_cap(max_upload, "STYLEGALLERY_MAX_UPLOAD"),
            "blocked_paths": blocked_beside(assets.parent, [assets, *folders]),
            "app_kwargs": {"middleware": [request_cap(max_request, max_upload)]},  # and events' bodies
            "favicon_path": assets / "favicon.png", "footer_links": ["api", "gradio"]}


def theme() -> Any:
    """The page's gradio theme, with the bundled fonts (no font is fetched from the network)."""
    import gradio as gr

    fonts = [gr.themes.LocalFont("Source Sans Pro"), gr.themes.LocalFont("Lora"), "sans-serif"]
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate", font=fonts).set(
        button_primary_background_fill="*primary_600", button_primary_background_fill_hover="*primary_700",
        button_primary_text_color="white")


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
    """The pictures of one run, as PNG files in a folder of their own under its session's folder under `root` (inside
    gradio's cache, so that gradio serves them without copying them).

    The session's earlier runs keep their pictures until this run's result is saved (`save(..., done=True)`): a
    client that submitted twice can still fetch the first result while the second run paints. Starting a run
    removes the folders of sessions idle for `max_age` seconds.
    """

    def __init__(self, root: str | os.PathLike, session: str, max_age: float = 3600.0) -> None:
        root = Path(root)
        if root.is_dir():
            for old in root.iterdir():
                try:
                    if old.name != session and time.time() - old.stat().st_mtime > max_age:
                        shutil.rmtree(old, ignore_errors=True)
                except OSError:  # removed meanwhile by another run
                    pass
        self.stem = f"stylegallery-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.session_folder = root / session
        self.folder = self.session_folder / self.stem
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.utime(self.session_folder)  # the session is active: its folder is not idle
        except OSError as exc:
            raise CannotSave(exc) from None

    def save(self, pictures: Mapping[str, Image.Image], done: bool = False) -> dict[str, str]:
        """{key: picture} -> {key: path of its PNG}: all of them, or none (CannotSave). `done`: these are the run's
        result, so the session's earlier runs' pictures go now."""
        written: dict[str, str] = {}
        try:
            for key, picture in pictures.items():
                written[key] = str(save_picture(picture, self.folder / f"{self.stem}-{key}.png"))
        except BaseException:
            for path in written.values():
                _remove(Path(path))
            raise
        if done:
            for earlier in self.session_folder.iterdir():
                if earlier != self.folder:
                    shutil.rmtree(earlier, ignore_errors=True)
        return written


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _TooLarge(Exception):
    pass


UPLOAD_ROUTE = "/gradio_api/upload"  # the only route whose body may be large (gradio's multipart upload)
CLOSED_ROUTES = ("/gradio_api/deep_link",)  # writes a session's whole state to a folder nothing cleans
URL_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, ftp:, data:, file: ...


def file_urls(payload: Any) -> list[str]:
    """The `path`s of gradio FileData in a decoded JSON payload that are URLs (gradio would download them)."""
    found: list[str] = []
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str) and URL_SCHEME.match(path) and not re.match(r"^[A-Za-z]:[\\/]", path):
                found.append(path)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class BodyCap:
    """ASGI middleware for every HTTP request, before gradio sees it:

    - the upload route's body may hold `limit` bytes, every other request's `event_limit` bytes; a larger one is
      answered 413 (by its Content-Length before the app sees it; a body sent without one is counted as it arrives,
      and refused when it passes the limit). Nothing of the body is kept;
    - an event's body (JSON) naming a file by a URL (`{"path": "http://...", "meta": {"_type": "gradio.FileData"}}`)
      is answered 400 before gradio downloads it;
    - gradio's deep-link route is answered 404.
    Every refusal is one worded line of plain text.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int, message: str,
                 event_limit: int | None = None) -> None:
        self.app, self.limit, self.message = app, limit, message
        self.event_limit = limit if event_limit is None else event_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.rstrip("/").endswith(CLOSED_ROUTES):
            await _answer(send, 404, "Deep links are turned off on this server.")
            return
        if path.rstrip("/").endswith(UPLOAD_ROUTE):
            limit, message = self.limit, self.message
        else:
            limit = self.event_limit
            message = (f"This request is too large: at most {limit / 1000:g} kB outside an upload (an event sends "
                       "file references, settings and a small table of region choices).")
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.strip().isdigit() and int(length) > limit:
            await self._drain(receive, limit)
            await _answer(send, 413, message)
            return
        if limit == self.event_limit and scope.get("method") == "POST":
            await self._event(scope, receive, send, limit, message)
            return
        received, answered = 0, False

        async def counting() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
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
                await self._drain(receive, limit)
                await _answer(send, 413, message)

    async def _event(self, scope: Scope, receive: Receive, send: Send, limit: int, message: str) -> None:
        """A small body, read whole (at most `limit` bytes) and checked for URL file paths, then handed on."""
        chunks, size = [], 0
        while True:
            part = await receive()
            if part["type"] != "http.request":  # the client left
                return
            chunks.append(part.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._drain(receive, limit)
                await _answer(send, 413, message)
                return
            if not part.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            import json

            urls = file_urls(json.loads(body)) if body.strip()[:1] in (b"{", b"[") else []
        except (ValueError, RecursionError):
            urls = []  # not JSON: gradio answers it
        if urls:
            await _answer(send, 400, "Files are taken from uploads and the gallery only, not from URLs: upload "
                                     "the image instead.")
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, limit: int) -> None:
        """Read (and drop) the rest of the body, up to 8 x the limit: a client still sending it would otherwise
        meet a closed connection instead of the answer."""
        drained = 0
        while drained <= 8 * limit:
            message = await receive()
            drained += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                return


async def _answer(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode("ascii")), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def guarded_protocol(max_connections: int, header_timeout: float, body_timeout: float) -> type:
    """uvicorn's h11 HTTP protocol with what a slow or idle client may hold bounded: at most `max_connections` open
    connections (a new one beyond them is closed at once, before it reads anything), a request's headers complete
    within `header_timeout` seconds of the connection, and its body within `body_timeout` seconds of its
    headers; a connection past either is closed (a kept-alive connection's next request has uvicorn's keep-alive
    timeout, which it cancels only when the headers are complete). uvicorn's keep-alive timeout and header-size bound
    are set with it (app.py, through compat.serve_with)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Guarded(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._deadline: Any = None
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._wait_for("headers", header_timeout)

        def _wait_for(self, what: str, seconds: float) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._waiting = what
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self._deadline is None or self.transport.is_closing():
                return
            cycle = self.cycle
            if self._waiting == "headers" and cycle is not None and not cycle.response_complete:
                if cycle.more_body:
                    self._wait_for("body", body_timeout)
                else:
                    self._deadline.cancel()
                    self._deadline = None
            elif self._waiting == "body" and (cycle is None or not cycle.more_body):
                self._deadline.cancel()
                self._deadline = None

        def handle_websocket_upgrade(self, event: Any) -> None:
            if self._deadline is not None:  # the connection is the websocket's now
                self._deadline.cancel()
                self._deadline = None
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

    return Guarded

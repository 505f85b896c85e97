"""What app.py needs to serve the library to strangers, kept out of the widget wiring (no gradio import here).

- `FileGate`: the only files a client may name are the uploads the server's upload route stored and the
  gallery's images, named by their exact paths; anything else (a path on the server, a data: URL, another
  address) is refused before a byte of it is read.
- `blocked_beside`: what gradio must never serve from the app's own folder.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path

from stylegallery.errors import InputError


class Refused(InputError):
    """A client named a file it may not use. The message is one line for the page and never shows a server path."""


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

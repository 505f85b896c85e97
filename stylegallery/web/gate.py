"""The file gate: the only files a client may name are its own uploads and the gallery's images.

- `FileGate`: the uploads the server's upload route stored and the gallery's images, named by their exact paths;
  anything else (a path on the server, a data: URL, another address) is `Refused` before a byte of it is read.
- `file_gate`: the gate of a page, over its gallery and the server's record of uploads.
- `guard_content`, `guard_styles`: the page's two file widgets, made to pass every payload through the gate and to
  answer a malformed or unreadable one with a clear page error.
- `described`, `named_as_uploaded`: what a client sent, said without echoing it or naming a server path.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from stylegallery.errors import InputError
from stylegallery.gallery import GalleryItem
from stylegallery.web import compat


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


def file_gate(items: list[GalleryItem], uploads: Callable[[], Container[str]]) -> FileGate:
    """The files a client may name: its uploads (`uploads()`, the server's record) and the gallery's images, by the
    exact paths the page holds for them (the original, or the copy gradio serves it from)."""
    gallery = {}
    for item in items:
        held = (item.path, item.title)
        gallery[str(item.path)] = gallery[compat.served_copy(item.path)] = held
    return FileGate(compat.upload_folder(), uploads, gallery)


class _Payload:
    """A widget's data model that answers a payload of the wrong shape with a clear page error (gradio's own answer
    is an empty "error: None"); everything else is the model's."""

    def __init__(self, model: Any, message: str) -> None:
        self.model, self.message = model, message

    def model_validate(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.model.model_validate(value, *args, **kwargs)
        except ValueError:  # pydantic's ValidationError
            raise compat.refusal(f"{self.message}, not {described(value)}.") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def guard_content(widget: gr.Image, gate: FileGate) -> gr.Image:
    """Only an upload or a gallery image reaches the content widget's decoder, and unreadable ones end in a clear
    page error (gradio's own message for them is generic).

    Wraps the instance's preprocess: a gr.Image subclass would make gradio write a .pyi stub next to its module.
    """
    preprocess = widget.preprocess
    compat.wrap_data_model(widget, lambda model: _Payload(model, 'The content image must be an uploaded file, '
                                                          '{"path": <the path the upload route returned>} '
                                                          "(gradio_client: handle_file(path))"))

    def checked(payload: Any) -> Any:
        if payload is None:
            return None
        try:
            named = gate.check(payload.path, payload.url, "The content image")
        except Refused as exc:
            raise compat.refusal(str(exc)) from None
        payload = payload.model_copy(update={"path": str(named.path), "url": None})
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:  # Pillow raises many types on hostile files
            reason = named_as_uploaded(str(exc), [payload.path])
            reason = " ".join(reason.split())[:200] or type(exc).__name__
            raise compat.refusal(f"The content image cannot be read ({reason}); upload a PNG, JPEG or WebP "
                                 "image.") from None

    widget.preprocess = checked
    return widget


def guard_styles(widget: gr.Gallery, gate: FileGate) -> gr.Gallery:
    """Only uploads and gallery images enter (and are sent back out of) the chosen-styles gallery: gradio's gallery
    checks only a name's extension, and would copy and serve any server file an event returns."""
    preprocess = widget.preprocess
    compat.wrap_data_model(widget, lambda model: _Payload(model, 'The styles must be a list of uploaded files, '
                                                          '[{"image": {"path": <the path the upload route '
                                                          'returned>}}] (gradio_client: [{"image": '
                                                          "handle_file(path)}])"))

    def checked(payload: Any) -> list[tuple[str, str]] | None:
        if payload is None or not payload.root:
            return None
        named = []
        for i, element in enumerate(payload.root):
            image = getattr(element, "image", None)
            try:
                if image is None:
                    raise Refused(f"Style image {i + 1} is not an image: upload a PNG, JPEG or WebP image.")
                named.append(gate.check(image.path, image.url, f"Style image {i + 1}"))
            except Refused as exc:
                raise compat.refusal(str(exc)) from None
        for element, name in zip(payload.root, named):
            element.image = element.image.model_copy(update={"path": str(name.path), "url": None})
        preprocess(payload)  # gradio's own checks (the file type)
        return [(str(name.path), name.name) for name in named]

    widget.preprocess = checked
    return widget


def guard_number(widget: gr.Slider | gr.Number, label: str, optional: bool = False) -> gr.Slider | gr.Number:
    """A number widget whose payloads that are not finite numbers in its range (NaN, text, null from a client that
    skips the page) are one worded line, not gradio's unworded failure. `optional`: null (an emptied box) passes."""
    preprocess = widget.preprocess
    low, high = getattr(widget, "minimum", None), getattr(widget, "maximum", None)
    shown = [str(int(v)) if float(v).is_integer() else f"{v:g}" for v in (low, high) if v is not None]
    bounds = f" from {shown[0]} to {shown[1]}" if len(shown) == 2 else ""

    def checked(payload: Any) -> Any:
        if payload is None and optional:
            return preprocess(payload)
        number = isinstance(payload, (int, float)) and not isinstance(payload, bool)
        if not number or payload != payload or payload in (float("inf"), float("-inf")):
            raise compat.refusal(f"Invalid setting: {label} must be a number{bounds} (got {described(payload)}).")
        if (low is not None and payload < low) or (high is not None and payload > high):
            raise compat.refusal(f"Invalid setting: {label} must be a number{bounds} on this server "
                                 f"(got {payload:g}).")
        return preprocess(payload)

    widget.preprocess = checked
    return widget


def described(value: object) -> str:
    """What a client sent, by its JSON kind: "a string", "a list of 3 items"."""
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, float) and value != value:
        return "NaN"
    kinds = {bool: "true or false", str: "a string", int: "a number", float: "a number", dict: "an object"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), "null")


def named_as_uploaded(message: str, paths: list[str]) -> str:
    """A library message with the server's copy of each upload ('/tmp/gradio/<hash>/cat.png') named by its file
    name ('cat.png'), the name the user knows it by (gradio keeps the uploaded file's name)."""
    for path in sorted(set(paths), key=len, reverse=True):
        message = message.replace(path, Path(path).name)
    return message

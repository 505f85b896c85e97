"""The one module that reaches into gradio's private structures (written against gradio 6.31).

gradio has no public way to ask these things, so each shim reads gradio's internals, and raises a RuntimeError that
names the attribute and the installed gradio version when one it relies on is gone (never a silent no-op: a gradio
upgrade that moves them must be noticed). tests/test_web_compat.py runs every shim against the installed gradio,
inside a real request where the shim needs one. `check()` verifies the attributes that exist outside a request, so
`python app.py` can refuse to start on a gradio that lacks them.

- `upload_folder()`: where gradio stores uploads and its cache (gradio.utils.get_upload_folder).
- `served_copy(path)`: where gradio's postprocess puts its copy of a file an event returns.
- `uploaded_paths(demo)`: the server's record of the paths its upload route stored (Blocks.upload_file_set).
- `wrap_data_model(widget, wrap)`: replace the pydantic model gradio validates a widget's payload with.
- `queued_at()`: when the running event joined gradio's queue.
- `forget_stale_copies(request)`: drop the session's stale copies of components that gradio never drops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import gradio as gr


_MISSING = object()


def _gone(what: str) -> RuntimeError:
    return RuntimeError(f"gradio {gr.__version__} has no {what}, which stylegallery/web/compat.py relies on "
                        "(written for gradio 6.31): pin gradio==6.31.* or update that module")


def _attr(owner: Any, name: str, where: str) -> Any:
    """`owner.name`, or the RuntimeError naming `where.name` and the installed gradio version."""
    value = getattr(owner, name, _MISSING)
    if value is _MISSING:
        raise _gone(f"{where}.{name}")
    return value


def _module_attr(module: str, name: str) -> Any:
    import importlib

    try:
        found = importlib.import_module(module)
    except ImportError:
        raise _gone(f"module {module}") from None
    return _attr(found, name, module)


def _local_context() -> Any:
    """gradio.context.LocalContext, whose context variables hold the running request's Blocks and event id."""
    context = _module_attr("gradio.context", "LocalContext")
    for name in ("blocks", "event_id"):
        _attr(context, name, "gradio.context.LocalContext")
    return context


def check() -> None:
    """Raise the RuntimeError of the first private gradio attribute this module relies on that is gone (those that
    exist outside a request; the per-request ones are checked by the shims as they run)."""
    _module_attr("gradio.utils", "get_upload_folder")
    _module_attr("gradio.processing_utils", "hash_file")
    _module_attr("gradio_client.utils", "strip_invalid_filename_characters")
    _local_context()
    _module_attr("gradio.queueing", "Queue")
    _module_attr("gradio.state_holder", "SessionState")
    with gr.Blocks() as demo:
        image = gr.Image()
    _attr(demo, "upload_file_set", "gradio.Blocks")
    _attr(_attr(image, "data_model", "gradio.Image"), "model_validate", "gradio.Image.data_model")


def upload_folder() -> str:
    """The folder gradio stores uploads in and serves its cached copies from ($GRADIO_TEMP_DIR or /tmp/gradio)."""
    return _module_attr("gradio.utils", "get_upload_folder")()


def served_copy(path: Path) -> str:
    """Where gradio's postprocess puts its copy of a file the app returns (processing_utils.save_file_to_cache)."""
    hash_file = _module_attr("gradio.processing_utils", "hash_file")
    clean = _module_attr("gradio_client.utils", "strip_invalid_filename_characters")
    folder = Path(upload_folder()) / hash_file(path)
    return os.path.abspath(folder / clean(path.name))


def uploaded_paths(demo: gr.Blocks) -> Callable[[], Container[str]]:
    """A function giving the paths gradio's upload route stored for `demo` (exact strings, as handed out)."""
    _attr(demo, "upload_file_set", "gradio.Blocks")
    return lambda: _attr(demo, "upload_file_set", "gradio.Blocks")


def wrap_data_model(widget: gr.components.Component, wrap: Callable[[Any], Any]) -> None:
    """Make `widget` validate its payloads with `wrap(its data model)` (gradio calls data_model.model_validate)."""
    model = _attr(widget, "data_model", f"gradio.{type(widget).__name__}")
    _attr(model, "model_validate", f"gradio.{type(widget).__name__}.data_model")
    widget.data_model = wrap(model)


def queued_at() -> float:
    """When the running event joined gradio's queue (time.monotonic, as gradio's queue), so that a Stop pressed while
    it waited stops it; now, when no queued event is running (a direct call, outside a request)."""
    context = _local_context()
    app = context.blocks.get(None)
    event_id = context.event_id.get(None)
    if app is None or event_id is None:
        return time.monotonic()
    events = _attr(_attr(app, "_queue", "gradio.Blocks"), "event_ids_to_events", "gradio.queueing.Queue")
    event = events.get(event_id)
    if event is None:  # not a queued event
        return time.monotonic()
    return _attr(event, "enqueue_time", "gradio.queueing.Event")


def forget_stale_copies(request: gr.Request) -> None:
    """Drop the session's stale copies of components, which gradio 6.31 never drops itself.

    An update that changes a property (gr.update(), and gr.skip(), which is one) makes gradio put a new copy of the
    component, with an id of its own, into the session's state under the component's id; when that copy later
    takes a plain value or serves as an input, gradio files it, and its config, once more under the copy's own id,
    where nothing looks them up again. A run's updates skip the pictures already shown, so each run left ~9 such
    entries and a long session's memory grew by ~0.3 MB per run. Entries under ids that are none of the app's
    components are those copies: they go; the copies in use stay under their components' ids. Nothing happens
    outside a request (tests/test_web_compat.py and tests/test_app.py check what a session keeps).
    """
    app = _local_context().blocks.get(None)
    session = getattr(request, "session_hash", None)
    if app is None or session is None:
        return
    components = _attr(app, "blocks", "gradio.Blocks")
    holder = _attr(app, "state_holder", "gradio.Blocks")
    if session not in holder:
        return
    state = holder[session]
    blocks = _attr(_attr(state, "blocks_config", "gradio.state_holder.SessionState"), "blocks",
                   "gradio.blocks.BlocksConfig")
    for kept in (blocks, _attr(state, "config_values", "gradio.state_holder.SessionState")):
        if kept is not components:
            for key in [key for key in list(kept) if key not in components]:
                kept.pop(key, None)

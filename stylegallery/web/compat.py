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
- `drop_failed_uploads()`: an upload refused or abandoned mid-way leaves none of the temporary files gradio's
  multipart parser wrote (gradio removes them only on its own parse errors).
- `limit_runs(demo, fn, max_size, busy)`: at most one event of `fn` per session running or queued, and at most
  `max_size` of them waiting; the page's other events are never counted (gradio's max_size counts every event).
- `word_path_refusals(message)`: gradio's refusal of a file path no upload produced is `message`, not `error: null`.
- `refusal(message)`: the gr.Error for a payload refused while gradio reads the inputs: one line in the log, not
  the traceback gradio prints for it.
- `serve_with(protocol, **settings)`: the uvicorn settings (and HTTP protocol class) gradio's launch does not pass.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import gradio as gr


_MISSING = object()
LOG = logging.getLogger("stylegallery.web")


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
    _attr(_module_attr("gradio.route_utils", "GradioMultiPartParser"), "parse", "gradio.route_utils.Parser")
    _attr(_module_attr("gradio.queueing", "Queue"), "push", "gradio.queueing.Queue")
    _module_attr("gradio.http_server", "Server")
    _module_attr("gradio.processing_utils", "async_move_files_to_cache")
    _module_attr("gradio.exceptions", "InvalidPathError")
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


def drop_failed_uploads() -> None:
    """Make gradio's multipart parser remove the temporary files it wrote when a parse ends in any exception (the
    request cap's refusal mid-body, a client that disconnects), not only in its own MultiPartException. Idempotent."""
    parser = _module_attr("gradio.route_utils", "GradioMultiPartParser")
    parse = _attr(parser, "parse", "gradio.route_utils.GradioMultiPartParser")
    if getattr(parse, "_stylegallery", False):
        return

    async def parse_or_drop(self: Any) -> Any:
        try:
            return await parse(self)
        except BaseException:
            for handle in _attr(self, "_files_to_close_on_error", "gradio.route_utils.GradioMultiPartParser"):
                try:
                    handle.close()
                    Path(handle.name).unlink(missing_ok=True)
                except OSError:
                    pass
            raise

    parse_or_drop._stylegallery = True  # type: ignore[attr-defined]
    parser.parse = parse_or_drop


def limit_runs(demo: gr.Blocks, fn: Callable, max_size: int, busy: str) -> None:
    """Queue rules for the events that call `fn` (the runs): a session with one of them running or queued gets
    `busy` (HTTP 400, which the page shows) for another; when `max_size` of them wait, gradio's "Queue is full" (503).
    Other events (Stop, the page's own clicks) are not counted; call `demo.queue(max_size=None)` so that gradio's
    own count, which counts every event, refuses nothing. Call after `demo.queue(...)`."""
    queue = _attr(demo, "_queue", "gradio.Blocks")
    push = _attr(queue, "push", "gradio.queueing.Queue")
    pending = _attr(queue, "pending_event_ids_session", "gradio.queueing.Queue")
    events = _attr(queue, "event_ids_to_events", "gradio.queueing.Queue")
    waiting = _attr(queue, "event_queue_per_concurrency_id", "gradio.queueing.Queue")
    fns = _attr(demo, "fns", "gradio.Blocks")

    def is_run(block_fn: Any) -> bool:
        target = _attr(block_fn, "fn", "gradio.block_function.BlockFunction")
        return target is fn or getattr(target, "__wrapped__", None) is fn

    async def push_one_per_session(body: Any, request: Any, username: Any) -> tuple:
        index = getattr(body, "fn_index", None)
        block_fn = fns.get(index) if isinstance(fns, dict) else None
        if block_fn is not None and is_run(block_fn):
            session = getattr(body, "session_hash", None)
            mine = [events.get(i) for i in list(pending.get(session, ()))] if session else []
            if any(e is not None and is_run(e.fn) for e in mine):
                return False, busy, "error"
            queued = sum(1 for q in list(waiting.values()) for e in list(q.queue) if is_run(e.fn))
            if queued >= max_size:
                return False, f"Queue is full. Max size is {max_size} and size is {queued}.", "queue_full"
        return await push(body, request, username)

    queue.push = push_one_per_session


def serve_with(protocol: type | None = None, **settings: Any) -> None:
    """Give the uvicorn server gradio's launch starts `settings` (uvicorn.Config attributes such as
    timeout_keep_alive, h11_max_incomplete_event_size, limit_concurrency) and, when given, `protocol` as its HTTP
    protocol class: gradio.http_server.start_server builds its uvicorn.Config without them."""
    import gradio.http_server as http_server

    server = _module_attr("gradio.http_server", "Server")
    base = getattr(server, "_stylegallery_base", server)

    class Limited(base):  # type: ignore[misc, valid-type]
        _stylegallery_base = base

        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
            for name, value in settings.items():
                _attr(config, name, "uvicorn.Config")
                setattr(config, name, value)
            if protocol is not None:
                config.http = protocol
            super().__init__(config, *args, **kwargs)

    http_server.Server = Limited


def refusal(message: str) -> gr.Error:
    """A payload refused before the run (a client's mistake or a forged request): the message on the page, one line
    in the server's log, no traceback (gradio prints one for a gr.Error raised while it reads the inputs)."""
    LOG.warning("request refused: %s", " ".join(message.split()))
    return gr.Error(message, print_exception=False)


def word_path_refusals(message: str) -> None:
    """gradio refuses an event's file path that no upload produced (such as a gallery picture named by its original
    path, the way gradio_client's handle_file sends a local file) with an InvalidPathError, which the page and API
    show as `error: null`; make it the gr.Error `message`. Idempotent."""
    import gradio.processing_utils as processing_utils

    move = _module_attr("gradio.processing_utils", "async_move_files_to_cache")
    refused = _module_attr("gradio.exceptions", "InvalidPathError")
    if getattr(move, "_stylegallery", False):
        return

    async def move_or_word(*args: Any, **kwargs: Any) -> Any:
        try:
            return await move(*args, **kwargs)
        except refused:
            raise refusal(message) from None

    move_or_word._stylegallery = True  # type: ignore[attr-defined]
    processing_utils.async_move_files_to_cache = move_or_word

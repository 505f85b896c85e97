"""stylegallery/web/compat.py against the installed gradio: every shim works inside a real request to a tiny
gr.Blocks served by this test, and fails loudly (naming the attribute and gradio's version) when what it reads is
gone."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pytest
from gradio.context import LocalContext

from stylegallery.web import compat
from tests.fixtures import STYLES, served


class _Recording:
    """A data model that records the payloads gradio validates with it."""

    def __init__(self, model) -> None:
        self.model, self.seen = model, []

    def model_validate(self, value, *args, **kwargs):
        self.seen.append(value)
        return self.model.model_validate(value, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A Blocks with one queued event that runs the shims; (client, demo, what the event saw, the image widget)."""
    from gradio_client import Client

    seen: dict = {}
    cache = tmp_path_factory.mktemp("gradio-cache")

    def run(path: str, picture: str | None, request: gr.Request) -> str:
        seen.update(started=time.monotonic(), queued_at=compat.queued_at(), upload=path, picture=picture,
                    uploads=set(compat.uploaded_paths(demo)()), folder=compat.upload_folder())
        compat.forget_stale_copies(request)
        return str(STYLES[0])  # a server file: gradio's postprocess copies it into its cache (served_copy)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(cache))
        with gr.Blocks() as demo:
            upload, image, out = gr.File(type="filepath"), gr.Image(type="filepath"), gr.File()
            compat.wrap_data_model(image, _Recording)
            gr.Button().click(run, [upload, image], out, api_name="probe")
        with served(demo, allowed_paths=[str(STYLES[0].parent)]) as url:
            client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
            try:
                yield client, demo, seen, image, cache
            finally:
                client.close()


def _call(client, path: Path = STYLES[1]):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), handle_file(str(path)), api_name="/probe")


def test_check_passes_on_the_installed_gradio():
    compat.check()


def test_the_shims_read_gradio_inside_a_request(probe):
    client, demo, seen, image, cache = probe
    submitted = time.monotonic()
    _call(client)
    assert submitted <= seen["queued_at"] <= seen["started"]  # the time the event joined the queue, not now
    assert Path(seen["folder"]) == cache
    assert seen["upload"] in seen["uploads"]  # what the upload route stored, by the exact path handed out
    assert Path(seen["upload"]).resolve().is_relative_to(cache.resolve())
    assert image.data_model.seen and seen["picture"]  # gradio validated the payload with the wrapped model
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(cache))
        copy = Path(compat.served_copy(STYLES[0]))
    assert copy.is_file() and copy.read_bytes() == STYLES[0].read_bytes()  # where gradio served the returned file


def test_stale_copies_of_components_are_dropped_and_the_components_kept(probe):
    client, demo, seen, image, cache = probe
    _call(client)
    state = demo.state_holder[client.session_hash]
    kept = set(state.blocks_config.blocks)
    stale = max(demo.blocks) + 1000
    state.blocks_config.blocks[stale] = object()  # what a skipped-then-set component leaves behind
    state.config_values[stale] = {}
    _call(client)
    assert stale not in state.blocks_config.blocks and stale not in state.config_values
    assert set(demo.blocks) <= set(state.blocks_config.blocks) and kept <= set(state.blocks_config.blocks)


def test_outside_a_request_the_request_shims_do_nothing_harmful():
    before = time.monotonic()
    assert before <= compat.queued_at() <= time.monotonic()
    compat.forget_stale_copies(gr.Request())


# ---- each shim fails loudly when gradio lacks what it reads -------------------------------------------

def _loud(what: str) -> str:
    return rf"gradio {gr.__version__} has no {what}, which stylegallery/web/compat.py relies on"


def test_missing_module_attributes_are_named(monkeypatch):
    import gradio.processing_utils
    import gradio.utils

    monkeypatch.delattr(gradio.processing_utils, "hash_file")
    with pytest.raises(RuntimeError, match=_loud("gradio.processing_utils.hash_file")):
        compat.served_copy(STYLES[0])
    with pytest.raises(RuntimeError, match=_loud("gradio.processing_utils.hash_file")):
        compat.check()
    monkeypatch.delattr(gradio.utils, "get_upload_folder")
    with pytest.raises(RuntimeError, match=_loud("gradio.utils.get_upload_folder")):
        compat.upload_folder()


def test_a_missing_context_variable_is_named(monkeypatch):
    monkeypatch.delattr(LocalContext, "event_id")
    with pytest.raises(RuntimeError, match=_loud("gradio.context.LocalContext.event_id")):
        compat.queued_at()
    with pytest.raises(RuntimeError, match=_loud("gradio.context.LocalContext.event_id")):
        compat.check()


class _Bare:
    """A Blocks, a widget or a session state without any of gradio's attributes."""


@pytest.fixture
def in_request():
    """A request context whose Blocks is `_Bare()` (set the attributes a test needs) and whose event id is "e1"."""
    app = _Bare()
    tokens = LocalContext.blocks.set(app), LocalContext.event_id.set("e1")
    yield app
    LocalContext.blocks.reset(tokens[0])
    LocalContext.event_id.reset(tokens[1])


def test_queued_at_names_the_queue_attribute_that_is_gone(in_request):
    with pytest.raises(RuntimeError, match=_loud("gradio.Blocks._queue")):
        compat.queued_at()
    in_request._queue = _Bare()
    with pytest.raises(RuntimeError, match=_loud("gradio.queueing.Queue.event_ids_to_events")):
        compat.queued_at()
    in_request._queue.event_ids_to_events = {"e1": _Bare()}
    with pytest.raises(RuntimeError, match=_loud("gradio.queueing.Event.enqueue_time")):
        compat.queued_at()


def test_forget_stale_copies_names_the_state_attribute_that_is_gone(in_request):
    request = gr.Request(session_hash="s1")
    with pytest.raises(RuntimeError, match=_loud("gradio.Blocks.blocks")):
        compat.forget_stale_copies(request)
    in_request.blocks = {}
    with pytest.raises(RuntimeError, match=_loud("gradio.Blocks.state_holder")):
        compat.forget_stale_copies(request)
    in_request.state_holder = {"s1": _Bare()}
    with pytest.raises(RuntimeError, match=_loud("gradio.state_holder.SessionState.blocks_config")):
        compat.forget_stale_copies(request)


def test_the_widget_and_blocks_shims_name_what_is_gone():
    with pytest.raises(RuntimeError, match=_loud("gradio.Blocks.upload_file_set")):
        compat.uploaded_paths(_Bare())
    with pytest.raises(RuntimeError, match=_loud("gradio._Bare.data_model")):
        compat.wrap_data_model(_Bare(), _Recording)


def test_a_failed_multipart_parse_leaves_none_of_its_temporary_files(tmp_path, monkeypatch):
    import asyncio

    from gradio.route_utils import GradioMultiPartParser
    from starlette.datastructures import Headers

    monkeypatch.setattr(GradioMultiPartParser, "parse", GradioMultiPartParser.parse)  # restored after the test
    compat.drop_failed_uploads()
    compat.drop_failed_uploads()  # idempotent: wrapped once

    async def stream():  # a client that sends part of a file, then goes away
        yield (b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n'
               b"Content-Type: image/png\r\n\r\n" + b"\0" * 100_000)
        raise ConnectionResetError("the client left")

    parser = GradioMultiPartParser(Headers({"content-type": "multipart/form-data; boundary=b"}), stream(),
                                   max_files=10, max_fields=10, upload_dir=str(tmp_path), max_file_size=10**9)
    with pytest.raises(ConnectionResetError):
        asyncio.run(parser.parse())
    assert list(tmp_path.iterdir()) == []


def test_limit_runs_and_serve_with_find_what_they_wrap(monkeypatch):
    import gradio.http_server as http_server

    monkeypatch.setattr(http_server, "Server", http_server.Server)
    compat.serve_with(None, timeout_keep_alive=3)
    assert http_server.Server.__name__ == "Limited"

    def generate(x):
        return x

    with gr.Blocks() as demo:
        box = gr.Number()
        box.submit(generate, box, box)
    demo.queue(max_size=None)
    compat.limit_runs(demo, generate, 4, "busy")
    monkeypatch.delattr(demo._queue, "push")
    monkeypatch.setattr(type(demo._queue), "push", property(lambda self: (_ for _ in ()).throw(AttributeError)))
    with pytest.raises(RuntimeError, match=r"gradio .* has no gradio.queueing.Queue.push"):
        compat.limit_runs(demo, generate, 4, "busy")

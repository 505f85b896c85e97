"""stylegallery/web/gate.py: a client may name only its own uploads and the gallery's images, and the page's file
widgets refuse anything else before reading it."""

from __future__ import annotations

import shutil

import gradio as gr
import pytest
from PIL import Image

import app
from stylegallery.gallery import by_kind, load_gallery
from stylegallery.web import compat
from stylegallery.web.gate import FileGate, Named, Refused, described, guard_content, named_as_uploaded
from tests.fixtures import CONTENT, STYLES


def _component(demo, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def _gate(tmp_path, uploads=(), items=()):
    """A gate over the upload folder tmp_path/uploads, with `uploads` recorded as uploaded."""
    folder = tmp_path / "uploads"
    folder.mkdir(exist_ok=True)
    return FileGate(folder, lambda: set(uploads), {str(i.path): (i.path, i.title) for i in items})


def test_the_gate_takes_recorded_uploads_and_gallery_images_only(tmp_path):
    item = by_kind(load_gallery(), "style")[0]
    (tmp_path / "uploads" / "ab12").mkdir(parents=True)
    upload, planted = tmp_path / "uploads" / "ab12" / "cat.png", tmp_path / "uploads" / "ab12" / "planted.png"
    for path in (upload, planted, tmp_path / "private.png"):
        Image.new("RGB", (64, 48)).save(path)
    link = tmp_path / "uploads" / "ab12" / "link.png"
    link.symlink_to(tmp_path / "private.png")
    gate = _gate(tmp_path, uploads={str(upload), str(link), str(tmp_path / "uploads" / "gone.png")}, items=[item])
    assert gate.check(str(upload), None, "The content image") == Named(upload, "cat.png")
    assert gate.check(str(item.path), None, "Style image 1") == Named(item.path, item.title)
    url = f"http://127.0.0.1:1/gradio_api/file={str(upload).replace(' ', '%20')}"
    assert gate.check(str(upload), url, "Style image 1").path == upload  # the server's own address of the file
    refusals = {
        (str(tmp_path / "private.png"), None): "Style image 1 was named by a path on the server instead of uploaded",
        (str(planted), None): "named by a path on the server",  # in the folder, but never uploaded
        (str(tmp_path / "uploads" / ".." / "private.png"), None): "named by a path on the server",
        (str(link), None): "named by a path on the server",  # recorded, but a symlink out of the folder
        (str(tmp_path / "uploads" / "gone.png"), None): "is no longer on the server",
        (None, "data:image/png;base64,iVBORw0KGgo="): "sent inline as a data: URL",
        (str(upload), "data:image/png;base64,iVBORw0KGgo="): "sent inline as a data: URL",
        (str(upload), "http://evil.example/cat.png"): "names an address, not a file uploaded",
        (str(upload), f"http://h/gradio_api/file={planted}"): "names an address",
        ("", None): "names no uploaded file",
        (("/etc/passwd",), None): "names no uploaded file",
    }
    for (path, url), message in refusals.items():
        with pytest.raises(Refused, match=message) as info:
            gate.check(path, url, "Style image 1")
        assert str(tmp_path) not in str(info.value)  # never a server path in the page error


def test_the_file_widgets_refuse_what_the_gate_refuses_before_reading_it(tmp_path, monkeypatch):
    from gradio.components.gallery import GalleryData
    from gradio.data_classes import ImageData

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    demo = app.build_demo()
    content, styles = _component(demo, "content-image"), _component(demo, "chosen-styles")
    Image.new("RGB", (64, 48)).save(tmp_path / "private.png")
    private = str(tmp_path / "private.png")
    with pytest.raises(gr.Error, match="The content image was named by a path on the server instead of uploaded"):
        content.preprocess(ImageData(path=private))
    with pytest.raises(gr.Error, match="Style image 2 was named by a path on the server"):
        styles.preprocess(GalleryData.model_validate([{"image": {"path": str(STYLES[0])}},
                                                      {"image": {"path": private}}]))
    (tmp_path / "uploads" / "ab").mkdir(parents=True)
    upload = tmp_path / "uploads" / "ab" / "cat.png"
    shutil.copy(CONTENT, upload)
    demo.upload_file_set.add(str(upload))  # what gradio's upload route records
    assert content.preprocess(ImageData(path=str(upload))) == str(upload)
    gallery_copy = compat.served_copy(STYLES[0])  # where gradio serves a gallery pick from
    assert styles.preprocess(GalleryData.model_validate([{"image": {"path": gallery_copy}},
                                                         {"image": {"path": str(upload)}}])) == [
        (str(STYLES[0]), "Starry swirls"), (str(upload), "cat.png")]


def test_an_unreadable_content_upload_is_a_clear_page_error(tmp_path):
    from gradio.data_classes import ImageData

    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "notes.png").write_text("not a picture")
    gate = _gate(tmp_path, uploads={str(tmp_path / "uploads" / "notes.png")}, items=by_kind(load_gallery(), "content"))
    widget = guard_content(gr.Image(type="filepath", image_mode=None), gate)
    with pytest.raises(gr.Error, match="The content image cannot be read .*; upload a PNG, JPEG or WebP image"):
        widget.preprocess(ImageData(path=str(tmp_path / "uploads" / "notes.png"), orig_name="notes.png"))
    assert widget.preprocess(ImageData(path=str(CONTENT), orig_name="chelsea.jpg")) == str(CONTENT)


def test_an_unreadable_content_upload_is_named_by_its_file_name(tmp_path):
    from gradio.data_classes import ImageData

    folder = tmp_path / "uploads" / "0123abcd"
    folder.mkdir(parents=True)
    (folder / "my notes.png").write_text("not a picture")
    widget = guard_content(gr.Image(type="filepath", image_mode=None),
                               _gate(tmp_path, uploads={str(folder / "my notes.png")}))
    with pytest.raises(gr.Error) as info:
        widget.preprocess(ImageData(path=str(folder / "my notes.png"), orig_name="my notes.png"))
    assert "my notes.png" in info.value.message and str(folder) not in info.value.message


def test_what_a_client_sent_is_described_by_its_kind():
    assert [described(v) for v in ("x", 1, 2.5, True, None, {}, [1], (1, 2))] == [
        "a string", "a number", "a number", "true or false", "null", "an object", "a list of 1 item",
        "a list of 2 items"]


def test_messages_name_uploads_by_their_file_names():
    message = "cannot read '/tmp/gradio/ab/cat.png' nor '/tmp/gradio/ab/cat.png.bak'"
    assert named_as_uploaded(message, ["/tmp/gradio/ab/cat.png", "/tmp/gradio/ab/cat.png.bak"]) == (
        "cannot read 'cat.png' nor 'cat.png.bak'")

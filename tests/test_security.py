"""People probing the public app (`python app.py` in a subprocess): it serves only its gallery, assets and each
user's own uploads; hostile uploads end in a result or a clear message and the server keeps serving; uploads are
capped; models load only as safetensors and nothing runs pickle, shell or eval on user input.

The loader and the CLI on hostile files are covered by tests/test_hostile_input.py; here everything goes through
the server's routes, as a browser or a prober would send it.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import re
import shutil
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import load_test as bench


REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "gallery"
GENERIC = "has raised an exception but has not enabled verbose error reporting"  # gradio's text for a crash
META = {"_type": "gradio.FileData"}


# ---- files ------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def bomb_png(side: int) -> bytes:
    """A side x side 1-bit PNG of one colour: tiny on disk, `side**2` pixels (3 bytes each as RGB) decoded."""
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # bit depth 1, greyscale
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed pixels
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def blocks(height: int, width: int, seed: int) -> np.ndarray:
    """A 4x4 pattern of black and white blocks (uint8 RGB)."""
    pattern = np.random.default_rng(seed).permutation(np.arange(16) % 2).reshape(4, 4).astype(np.uint8) * 255
    return np.repeat(np.asarray(Image.fromarray(pattern).resize((width, height), Image.NEAREST))[..., None], 3, 2)


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


FIRST_FRAME = blocks(120, 160, seed=5)
SECOND_FRAME = blocks(120, 160, seed=7)  # another block layout: results are told apart by their edges


def _animated_gif() -> bytes:
    frames = [Image.fromarray(FIRST_FRAME).convert("P"), Image.fromarray(SECOND_FRAME).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _truncated_jpeg() -> bytes:
    data = _encode((np.random.default_rng(0).uniform(0, 1, (200, 300, 3)) * 255).astype(np.uint8), "JPEG")
    return data[: len(data) // 2]


HOSTILE = {  # name -> (file name, bytes, what must happen)
    "not-an-image": ("notes.png", b"hello, this is text, not a picture\n", "error"),
    "bomb-20000px": ("bomb.png", bomb_png(20_000), "error"),
    "truncated-jpeg": ("cut.jpg", _truncated_jpeg(), "error"),
    "one-pixel": ("dot.png", _encode(np.full((1, 1, 3), 200, np.uint8), "PNG"), "error"),
    "animated-gif": ("moving.gif", _animated_gif(), "result"),
    "odd-name": ("fötö 图像 ✓ ..%2f..%2f $HOME;rm -rf.png", _encode(blocks(96, 144, seed=7), "PNG"), "result"),
}


# ---- the server -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder outside every served path, holding a private picture."""
    folder = tmp_path_factory.mktemp("private")
    Image.fromarray(blocks(120, 180, seed=11)).save(folder / "private.png")
    return folder


@pytest.fixture(scope="module")
def gallery_copy(tmp_path_factory, outside) -> Path:
    """A copy of the shipped gallery with symlinks that point out of it."""
    copy = tmp_path_factory.mktemp("gallery") / "copy"
    shutil.copytree(GALLERY, copy)
    (copy / "link-passwd").symlink_to("/etc/passwd")
    (copy / "link-app.py").symlink_to(REPO / "app.py")
    (copy / "link-repo").symlink_to(REPO, target_is_directory=True)
    (copy / "thumbs" / "content" / "link-private.png").symlink_to(outside / "private.png")
    return copy


@pytest.fixture(scope="module")
def server(gallery_copy):
    pytest.importorskip("gradio_client")
    with bench.AppServer(galleries=(gallery_copy,)) as app:
        yield app


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    c = Client(server.url + "/", verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield c
    c.close()


@pytest.fixture(scope="module")
def generate_fn(server) -> int:
    return bench.fn_index(bench.api_config(server.url), api_name="generate")


def _args(content: object, styles: list, size: int = 256) -> list:
    return [content, styles, {}, "classic", "paper", size, 6, 1.0, 3, 0, False, 1.0, {}]


def _uploaded(server, path: Path, name: str | None = None) -> dict:
    """Upload `path` as a browser does; the FileData payload that names it."""
    status, answer = bench.upload(server.url, name or path.name, path.read_bytes())
    assert status == 200, answer
    return {"path": answer[0], "meta": META, "orig_name": name or path.name}


def _serving(server) -> bool:
    return server.alive() and bench.get(server.url + "/")[0] == 200


# ---- file routes ------------------------------------------------------------------------------------

def test_gallery_thumbnails_and_assets_are_served(server, gallery_copy):
    for path in (GALLERY / "thumbs" / "content" / "chelsea.jpg", gallery_copy / "thumbs" / "style" / "moss-grass.jpg"):
        status, body = bench.get(f"{server.url}/gradio_api/file={path}")
        assert status == 200 and body[:2] == b"\xff\xd8", path
    status, body = bench.get(f"{server.url}/gradio_api/file={REPO / 'assets' / 'style.css'}")
    assert status == 200 and body == (REPO / "assets" / "style.css").read_bytes()


PROBES = [
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=%2Fetc%2Fpasswd",
    "/gradio_api/file=/proc/self/environ",
    "/gradio_api/file=../../../../../../../etc/passwd",
    "/gradio_api/file={repo}/gallery/../app.py",
    "/gradio_api/file={repo}/gallery/%2e%2e/app.py",
    "/gradio_api/file={repo}/gallery/..%2fapp.py",
    "/gradio_api/file={repo}/gallery/thumbs/content/../../../stylegallery/pipeline.py",
    "/gradio_api/file={repo}/assets/../app.py",
    "/gradio_api/file={copy}/../../../../../../etc/passwd",
    "/gradio_api/file=app.py",
    "/gradio_api/file=./stylegallery/pipeline.py",
    "/gradio_api/file/{repo}/app.py",
    "/gradio_api/file={upload}",
    "/file={repo}/app.py",
    "/file=/etc/passwd",
    "/static/../../../../../../etc/passwd",
    "/assets/..%2f..%2f..%2f..%2fapp.py",
    "/gradio_api/file={copy}/link-passwd",
    "/gradio_api/file={copy}/link-app.py",
    "/gradio_api/file={copy}/link-repo/app.py",
    "/gradio_api/file={copy}/link-repo/stylegallery/pipeline.py",
    "/gradio_api/file={copy}/thumbs/content/link-private.png",
    "/gradio_api/file={outside}/private.png",
    "/gradio_api/file=http://127.0.0.1:{port}/config",
    "/gradio_api/proxy=http://127.0.0.1:{port}/config",
]


@pytest.mark.parametrize("probe", PROBES)
def test_paths_outside_the_gallery_assets_and_uploads_are_refused(server, gallery_copy, outside, probe):
    path = probe.format(repo=REPO, copy=gallery_copy, upload=server.upload_dir, outside=outside, port=server.port)
    status, body = bench.get(server.url + path)
    assert status in (400, 403, 404), f"{path} answered {status}"
    assert b"root:" not in body and b"import " not in body and b"\x89PNG" not in body


def test_the_repositorys_own_code_is_never_served(server):
    files = [REPO / "app.py", REPO / "pyproject.toml", *sorted((REPO / "stylegallery").rglob("*.py"))]
    served = [str(f) for f in files if bench.get(f"{server.url}/gradio_api/file={f}")[0] not in (403, 404)]
    assert len(files) > 10 and served == []


def test_uploads_are_capped_and_land_in_the_upload_folder(server):
    cap = bench.api_config(server.url)["max_file_size"]
    assert cap is not None and 1 <= cap <= 50 * 2**20  # the app sets one (STYLEGALLERY_MAX_UPLOAD, 15mb)
    status, answer = bench.upload(server.url, "big.png", b"\0" * (cap + 1))
    assert status == 413, answer
    status, answer = bench.upload(server.url, "small.png", _encode(blocks(64, 64, seed=1), "PNG"))
    assert status == 200 and Path(answer[0]).resolve().is_relative_to(server.upload_dir.resolve())
    assert _serving(server)


@pytest.mark.parametrize("chunked", [False, True], ids=["with-length", "chunked"])
def test_one_upload_request_is_capped_in_total(server, chunked):
    # gradio's max_file_size caps each file: three files just under it made one 42 MB request
    import httpx

    cap = bench.api_config(server.url)["max_file_size"]
    files = [("files", (f"part{i}.png", b"\0" * (cap - 2**20))) for i in range(3)]
    request = httpx.Request("POST", server.url + "/gradio_api/upload", files=files)
    body = request.read()
    if chunked:  # no Content-Length: counted as it arrives
        content, headers = (body[i:i + 2**20] for i in range(0, len(body), 2**20)), {}
    else:
        content, headers = body, {"content-length": str(len(body))}
    headers["content-type"] = request.headers["content-type"]
    before = sorted(server.upload_dir.glob("*/part*.png"))
    answer = httpx.post(server.url + "/gradio_api/upload", content=content, headers=headers, timeout=60)
    assert answer.status_code == 413, answer.text[:200]
    assert answer.text.startswith("This upload is too large: at most 32 MB per upload and 15 MB per file.")
    assert sorted(server.upload_dir.glob("*/part*.png")) == before  # none of the files was stored
    assert _serving(server)


@pytest.mark.parametrize("name", ["../../../../etc/evil.png", "/etc/evil.png", "a/../../b\\..\\c.png", "..",
                                  "CON.png\x00.txt"])
def test_uploaded_file_names_cannot_leave_the_upload_folder(server, name):
    status, answer = bench.upload(server.url, name, _encode(blocks(64, 64, seed=2), "PNG"))
    if status == 200:
        stored = Path(answer[0]).resolve()
        assert stored.is_relative_to(server.upload_dir.resolve()) and stored.is_file()
    else:
        assert status in (400, 422), answer
    assert not Path("/etc/evil.png").exists()


# ---- only the user's own uploads are read -------------------------------------------------------

@pytest.mark.parametrize("slot", ["content", "style"])
def test_a_server_path_sent_without_meta_is_not_read(server, generate_fn, outside, slot):
    # gradio 6.31's ImageData (gr.Image, gr.Gallery) lacks the `meta` check of FileData, so gradio itself lets
    # such a path through: app.generate must refuse every path outside the upload folder.
    secret = {"path": str(outside / "private.png")}  # what a prober sends instead of an upload
    mine = _uploaded(server, GALLERY / "style" / "rose-window.png")
    content, style = (secret, mine) if slot == "content" else (mine, secret)
    message = bench.raw_run(server.url, generate_fn, _args(content, [{"image": style, "caption": None}]))
    assert message.get("success") is False, "the server restyled a file the user never uploaded"


@pytest.mark.parametrize("slot", ["content", "style"])
def test_a_server_path_sent_with_meta_is_refused(server, generate_fn, outside, slot):
    secret = {"path": str(outside / "private.png"), "meta": META}
    mine = _uploaded(server, GALLERY / "style" / "rose-window.png")
    content, style = (secret, mine) if slot == "content" else (mine, secret)
    message = bench.raw_run(server.url, generate_fn, _args(content, [{"image": style, "caption": None}]))
    assert message.get("success") is False and _serving(server)


def test_an_upload_named_with_path_separators_is_restyled(server, generate_fn, tmp_path):
    picture = tmp_path / "picture.png"
    Image.fromarray(blocks(96, 160, seed=3)).save(picture)
    content = _uploaded(server, picture, name="../../x/..\\evil 图.png")
    style = _uploaded(server, GALLERY / "style" / "rose-window.png")
    message = bench.raw_run(server.url, generate_fn, _args(content, [{"image": style, "caption": None}]))
    assert message.get("success") is True, json.dumps(message)[:500]
    assert "done in" in message["output"]["data"][1]


# ---- no event echoes or reads a file the client did not upload ------------------------------------------
# gradio's gallery checks only a name's extension, and its postprocess copies any file under the server's working
# directory or temp directory into its cache and serves it: an event that sent a client's path back out would
# hand out the server's files. Every event that takes the content or the chosen styles must refuse such paths.

SECRET = b"SECRET-7f3a9c: not for the public\n"
FILE_EVENTS = {("chosen-styles", "upload"), ("chosen-styles", "select"), ("style-gallery-0", "select"),
               ("style-gallery-1", "select"), ("content-image", "upload"), ("generate", "click"),
               ("regenerate", "click")}
CONTENT_EVENTS = ("generate", "regenerate", "content-image")  # the events that take the content


def _file_events(config: dict) -> dict[tuple[str, str], int]:
    """(element, trigger) -> dependency id of every event whose inputs include the content or the chosen styles."""
    ids = bench.element_ids(config)
    files = {cid for cid, elem in ids.items() if elem in ("content-image", "chosen-styles")}
    found = {}
    for i, dep in enumerate(config["dependencies"]):
        if files & set(dep["inputs"]):
            for target, trigger in dep["targets"]:
                found[(ids.get(target), trigger)] = dep.get("id", i)
    return found


def _event_call(server, config: dict, event: tuple[str, str], content: object, styles: list,
                session: str | None = None) -> dict:
    """Send one file event as a browser would, with `content`/`styles` as the widgets' values."""
    fn = _file_events(config)[event]
    if event[0] in ("generate", "regenerate"):
        data = _args(content, styles)
    elif event[0] == "content-image":
        data = [content]
    else:
        data = [styles]
    event_data = {"index": 0, "value": None, "selected": True} if event[1] == "select" else None
    return bench.raw_run(server.url, fn, data, event_data=event_data, session_hash=session)


def _served_bodies(server, message: dict) -> list[bytes]:
    """The bytes of every file the answer hands out."""
    urls = re.findall(r'"url": "([^"]+)"', json.dumps(message))
    return [bench.get(url if url.startswith("http") else server.url + url)[1] for url in urls]


def _copies_of(server, data: bytes) -> list[Path]:
    return [p for p in server.upload_dir.rglob("*") if p.is_file() and data in p.read_bytes()]


@pytest.fixture(scope="module")
def secrets(server) -> dict[str, Path]:
    """Text files named like images where gradio's postprocess would copy them from: the server's temp directory
    and its working directory (the repository)."""
    folder = server.tmp_dir / "x"
    folder.mkdir(exist_ok=True)
    places = {"temp dir": folder / "notes.png", "working dir": REPO / f"secret-{uuid.uuid4().hex[:8]}.png"}
    for path in places.values():
        path.write_bytes(SECRET)
    yield places
    places["working dir"].unlink(missing_ok=True)


@pytest.fixture(scope="module")
def config(server) -> dict:
    return bench.api_config(server.url)


def test_the_file_events_are_known(config):
    assert set(_file_events(config)) == FILE_EVENTS  # a new event that takes files needs the tests below


@pytest.mark.parametrize("meta", [False, True], ids=["plain", "with-meta"])
@pytest.mark.parametrize("place", ["temp dir", "working dir"])
@pytest.mark.parametrize("event", sorted(FILE_EVENTS), ids="-".join)
def test_no_file_event_hands_out_a_server_file(server, config, secrets, event, place, meta):
    secret = {"path": str(secrets[place]), **({"meta": META} if meta else {})}
    mine = _uploaded(server, GALLERY / "style" / "rose-window.png")
    for content, styles in ((mine, [{"image": secret, "caption": None}]),
                            (secret, [{"image": mine, "caption": None}])):
        if (content is secret) != (event[0] in CONTENT_EVENTS) and event[0] not in ("generate", "regenerate"):
            continue  # only Generate takes both; the content's upload only the content
        message = _event_call(server, config, event, content, styles)
        assert message.get("success") is False, f"{event} accepted {secret['path']}: {json.dumps(message)[:300]}"
        assert all(SECRET not in body for body in _served_bodies(server, message))
        if not meta:  # with meta gradio itself refuses, with its generic message
            assert "named by a path on the server" in str(message["output"].get("error")), message
    assert _copies_of(server, SECRET) == [], "the secret was copied into the served cache"
    assert _serving(server)


@pytest.fixture(scope="module")
def someone_elses_pictures(server, generate_fn) -> list[str]:
    """Another session's finished run: the server paths of every picture handed to it (maps, previews, downloads)."""
    import httpx

    content = _uploaded(server, GALLERY / "content" / "chelsea.jpg")
    style = _uploaded(server, GALLERY / "style" / "rose-window.png")
    session = uuid.uuid4().hex[:12]
    body = {"data": _args(content, [{"image": style, "caption": None}]), "event_data": None, "fn_index": generate_fn,
            "trigger_id": None, "session_hash": session}
    assert httpx.post(server.url + "/gradio_api/queue/join", json=body, timeout=30).status_code == 200
    handed_out = []
    with httpx.stream("GET", f"{server.url}/gradio_api/queue/data?session_hash={session}", timeout=180) as stream:
        for line in stream.iter_lines():
            handed_out += re.findall(r'"path":\s*"([^"]+)"', line)
            if '"process_completed"' in line:
                assert '"success": true' in line.replace('"success":true', '"success": true'), line[:500]
                break
    pictures = sorted(set(handed_out) - {content["path"], style["path"]})
    assert len(pictures) >= 4, pictures  # region maps, match figure, result, downloads
    return pictures


@pytest.mark.parametrize("event", sorted(FILE_EVENTS), ids="-".join)
def test_no_file_event_takes_another_sessions_pictures(server, config, someone_elses_pictures, event):
    mine = _uploaded(server, GALLERY / "style" / "rose-window.png")
    for picture in someone_elses_pictures:
        theirs = {"path": picture, "meta": META}
        for content, styles in ((mine, [{"image": theirs, "caption": None}]),
                                (theirs, [{"image": mine, "caption": None}])):
            if (content is theirs) != (event[0] in CONTENT_EVENTS) and event[0] not in ("generate", "regenerate"):
                continue
            message = _event_call(server, config, event, content, styles)
            assert message.get("success") is False, f"{event} took another session's {Path(picture).name}"
            assert "named by a path on the server" in str(message["output"].get("error")), message


def test_a_file_planted_in_the_upload_folder_is_not_an_upload(server, generate_fn):
    planted = server.upload_dir / ("0" * 64) / "planted.png"  # what gradio's cache holds besides uploads
    planted.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks(64, 96, seed=4)).save(planted)
    mine = _uploaded(server, GALLERY / "style" / "rose-window.png")
    message = bench.raw_run(server.url, generate_fn, _args({"path": str(planted), "meta": META},
                                                           [{"image": mine, "caption": None}]))
    assert message.get("success") is False and "named by a path on the server" in message["output"]["error"]


def test_gallery_picks_and_uploads_still_work_in_every_file_event(server, config, tmp_path):
    session = uuid.uuid4().hex[:12]
    picked = _event_call(server, config, ("style-gallery-0", "select"), None, [], session=session)
    assert picked.get("success") is True, json.dumps(picked)[:300]
    chosen = picked["output"]["data"][0]  # the chosen styles as the page now holds them: the gallery's copy
    Image.fromarray(blocks(80, 120, seed=12)).save(tmp_path / "my style.png")
    mine = _uploaded(server, tmp_path / "my style.png")
    styles = [*chosen, {"image": mine, "caption": None}]
    for event in (("chosen-styles", "upload"), ("chosen-styles", "select")):
        message = _event_call(server, config, event, None, styles, session=session)
        assert message.get("success") is True, f"{event}: {json.dumps(message)[:300]}"
    echoed = message["output"]["data"][0]
    assert [s["caption"] for s in echoed] == ["1: my style.png"]  # select dropped the first (index 0)
    content = _uploaded(server, GALLERY / "content" / "chelsea.jpg")
    message = _event_call(server, config, ("generate", "click"), content, styles, session=session)
    assert message.get("success") is True, json.dumps(message)[:300]
    assert "done in" in message["output"]["data"][1]


def test_an_uploads_path_cannot_be_derived_from_its_bytes(server):
    # The guarantee the README states for uploads: gradio 6.31's upload route knows no session, so an upload is
    # usable by whoever holds its path; the path hides its content's plain hashes behind gradio's secret seed.
    data = _encode(blocks(64, 64, seed=9), "PNG")
    status, answer = bench.upload(server.url, "mine.png", data)
    assert status == 200
    folder = Path(answer[0]).parent.name
    assert folder not in {hashlib.new(name, data).hexdigest() for name in ("sha256", "sha1", "md5", "blake2b")}




@pytest.mark.parametrize(("event", "content", "styles", "overrides", "message"), [
    ("generate", "/etc/passwd.png", None, {}, "The content image must be an uploaded file, {\"path\": <the path the "
     "upload route returned>} (gradio_client: handle_file(path)), not a string."),
    ("generate", 42, None, {}, "The content image must be an uploaded file"),
    ("generate", None, "gallery/style/moss-grass.png", {}, "The styles must be a list of uploaded files, [{\"image\": "
     "{\"path\": <the path the upload route returned>}}] (gradio_client: [{\"image\": handle_file(path)}]), not a "
     "string."),
    ("generate", None, ["a.png", "b.png"], {}, "The styles must be a list of uploaded files"),
    ("generate", None, None, '{"2": [1, "C:\\x"]}', "Region choices are malformed: got a string, expected e.g."),
    ("upload", None, "a.png", {}, "The styles must be a list of uploaded files"),
], ids=["content-string", "content-number", "styles-string", "styles-strings", "overrides-string", "upload-string"])
def test_a_malformed_payload_gets_a_clear_message(server, config, event, content, styles, overrides, message):
    mine = _uploaded(server, GALLERY / "style" / "rose-window.png")
    content = mine if content is None else content
    styles = [{"image": mine, "caption": None}] if styles is None else styles
    if event == "generate":
        fn, data = _file_events(config)[("generate", "click")], _args(content, styles)
        data[2] = overrides
    else:
        fn, data = _file_events(config)[("chosen-styles", "upload")], [styles]
    answer = bench.raw_run(server.url, fn, data)
    error = answer.get("output", {}).get("error")
    assert answer.get("success") is False and error is not None, answer
    assert message in error and "\n" not in error and "\\\\" not in error and not error.startswith("'"), error


# ---- data: URLs ---------------------------------------------------------------------------------------
# gradio's gr.Image decodes a payload's `url` when it starts with data:, before the app sees it: a 16 KB data URL
# of a 10000 x 10000 1-bit PNG took the server from 0.6 to 1.4 GB, past the upload cap and the loader's pixel limit.

def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize(("event", "slot"), [(("generate", "click"), "content"), (("generate", "click"), "style"),
                                             (("chosen-styles", "upload"), "style")], ids=["content", "style",
                                                                                          "style-upload"])
def test_a_data_url_bomb_is_refused_before_it_is_decoded(server, config, event, slot):
    bomb = {"path": None, "url": _data_url(bomb_png(10_000)), "orig_name": "bomb.png", "meta": META}
    mine = _uploaded(server, GALLERY / "style" / "rose-window.png")
    content, styles = (bomb, [{"image": mine, "caption": None}]) if slot == "content" else (
        mine, [{"image": bomb, "caption": None}])
    files_before = sorted(server.upload_dir.rglob("*"))
    before = server.memory_mb()
    message = _event_call(server, config, event, content, styles)
    after = server.memory_mb()
    grown = {key: round(after[key] - before[key]) for key in ("VmRSS", "VmHWM")}
    assert max(grown.values()) < 200, f"the server's memory grew by {grown} MB for a {len(bomb['url'])} B data URL"
    assert sorted(server.upload_dir.rglob("*")) == files_before  # nothing decoded into gradio's cache
    assert message.get("success") is False
    assert "sent inline as a data: URL" in str(message["output"].get("error")), message
    assert _serving(server)


# ---- hostile uploads through gradio_client ------------------------------------------------------------

def _submit(client, content: Path, style: Path):
    from gradio_client import handle_file

    return client.submit(*_args(handle_file(str(content)), [{"image": handle_file(str(style)), "caption": None}]),
                         api_name="/generate")


@pytest.mark.parametrize(("name", "slot"), [pytest.param(n, s, id=f"{n}-as-{s}") for n in HOSTILE
                                           for s in ("content", "style")])
def test_hostile_upload_gives_a_result_or_a_clear_message(server, client, tmp_path, name, slot):
    # gradio opens a gr.Image upload with Pillow before the handler runs: the content widget must turn Pillow's
    # errors into a page error, or the user sees gradio's generic crash text.
    from gradio_client.exceptions import AppError

    file_name, data, expected = HOSTILE[name]
    hostile = tmp_path / file_name
    hostile.write_bytes(data)
    ordinary = GALLERY / ("style/rose-window.png" if slot == "content" else "content/chelsea.jpg")
    content, style = (hostile, ordinary) if slot == "content" else (ordinary, hostile)
    positions = bench.output_positions(bench.api_config(server.url))
    try:
        outputs = _submit(client, content, style).result(timeout=180)
    except AppError as exc:
        message = str(exc)
        assert expected == "error", f"{name} should give a result, got: {message}"
        assert GENERIC not in message, f"{name}: gradio's generic crash text instead of a clear message"
        assert "\n" not in message and 10 < len(message) < 400 and "image" in message, message
    else:
        assert expected == "result", f"{name} should be refused, got status {outputs[positions['status']]!r}"
        assert "done in" in outputs[positions["status"]]
        with Image.open(outputs[positions["result"]]) as picture:
            result = np.asarray(picture.convert("RGB"))
        if name == "animated-gif" and slot == "content":  # restyles the first frame, not the second
            first, second = bench.identify(result, [FIRST_FRAME, SECOND_FRAME])
            assert first > 0.2 and first > second
    assert _serving(server)


def test_a_bomb_under_pillows_own_limit_is_refused_without_decoding_it(server, client, tmp_path):
    # gr.Image(image_mode="RGB") would decode the whole upload (0.6 GB here) before the library's size check
    from gradio_client.exceptions import AppError

    bomb = tmp_path / "bomb12k.png"
    bomb.write_bytes(bomb_png(12_000))  # 144 Mpx: Pillow only warns (its error is at 179 Mpx); 17 KB on disk
    before = server.memory_mb()["VmHWM"]
    with pytest.raises(AppError, match="above the limit|decompression bomb"):
        _submit(client, bomb, GALLERY / "style" / "rose-window.png").result(timeout=180)
    grown = server.memory_mb()["VmHWM"] - before
    assert _serving(server)
    assert grown < 200, f"the server's peak memory grew by {grown:.0f} MB for a {bomb.stat().st_size} B upload"


# ---- static checks on the source -----------------------------------------------------------------------

SOURCES = sorted((REPO / "stylegallery").rglob("*.py")) + [REPO / "app.py"]
WEIGHTLESS = re.compile(r"(Tokenizer|Scheduler|Processor|ProcessorPil|Config)$")  # load no weights


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expression>"
    return None


def test_weights_load_only_as_safetensors_and_never_run_remote_code():
    loads, problems = 0, []
    for path in SOURCES:
        for call in _calls(path):
            name = _dotted(call.func)
            where = f"{path.relative_to(REPO)}:{call.lineno} {name}"
            if _keyword(call, "trust_remote_code") not in (None, False):
                problems.append(f"{where} passes trust_remote_code")
            if name.endswith((".from_pretrained", ".lora_state_dict", ".load_lora_weights", ".from_single_file")):
                if name.endswith(".from_pretrained") and WEIGHTLESS.search(name.rsplit(".", 1)[0]):
                    continue
                loads += 1
                if _keyword(call, "use_safetensors") is not True:
                    problems.append(f"{where} does not pass use_safetensors=True")
    assert loads >= 4 and problems == []


BANNED_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "subprocess", "pty", "joblib"}
BANNED_CALLS = {"eval", "exec", "compile", "__import__", "os.system", "os.popen", "os.execv", "os.execvp",
                "os.spawnv", "torch.load", "pickle.load", "pickle.loads", "yaml.load"}


def test_no_pickle_shell_or_eval_in_the_library_or_the_app():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                problems += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in BANNED_MODULES:
                problems.append(f"{where} imports from {node.module}")
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name in BANNED_CALLS:
                    problems.append(f"{where} calls {name}")
                if name.endswith(("np.load", "numpy.load")) and _keyword(node, "allow_pickle") not in (None, False):
                    problems.append(f"{where} calls {name} with allow_pickle")
                if _keyword(node, "shell") not in (None, False):
                    problems.append(f"{where} calls {name} with shell=True")
    assert len(SOURCES) > 10 and problems == []

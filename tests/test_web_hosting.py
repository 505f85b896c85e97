"""stylegallery/web/hosting.py: the upload caps, the per-session pictures on a full disk, Stop's record, the
settings read from the environment, the warm-up run, and glibc's malloc arenas."""

from __future__ import annotations

import errno
import io
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from stylegallery.config import parse_bytes
from stylegallery.web import hosting
from stylegallery.web.hosting import CannotSave, RunPictures


def test_the_upload_caps_read_sizes_as_the_library_does():
    # MB is 10^6 bytes everywhere in StyleGallery; gradio's own max_file_size parser reads "15mb" as 15 x 2^20, so
    # the app hands gradio the byte count and never the text.
    assert hosting.upload_cap("15MB", "X") == 15_000_000 == parse_bytes("15MB")
    assert hosting.upload_cap("15mb", "X") == 15_000_000 and hosting.upload_cap("32MiB", "X") == 32 * 2**20
    assert hosting.upload_cap("500kb", "X") == 500_000 and hosting.upload_cap("2048", "X") == 2048
    for bad in ("mb", "15 bananas", "-1mb", ""):
        with pytest.raises(ValueError, match=f"STYLEGALLERY_MAX_REQUEST={bad!r} is invalid: expected a byte count"):
            hosting.upload_cap(bad, "STYLEGALLERY_MAX_REQUEST")
    with pytest.raises(ValueError, match="STYLEGALLERY_MAX_UPLOAD='0mb' is invalid: expected a byte count above 0"):
        hosting.upload_cap("0mb", "STYLEGALLERY_MAX_UPLOAD")


def test_the_request_cap_says_both_caps_in_the_units_it_reads():
    cap = hosting.request_cap("32MB", "15MB")
    assert cap.kwargs["limit"] == 32_000_000
    assert cap.kwargs["message"].startswith("This upload is too large: at most 32 MB per upload and 15 MB per file.")
    assert "at most 1.5 MB per upload" in hosting.request_cap("1.5MB", "1MB").kwargs["message"]


def test_a_bad_whole_number_setting_is_recorded_and_the_default_used(monkeypatch):
    monkeypatch.setattr(hosting, "ENV_ERRORS", [])
    monkeypatch.setenv("STYLEGALLERY_TEST_INT", "0")
    assert hosting.env_int("STYLEGALLERY_TEST_INT", 16) == 16
    assert hosting.ENV_ERRORS == ["STYLEGALLERY_TEST_INT='0' is invalid: expected a whole number >= 1"]
    monkeypatch.setenv("STYLEGALLERY_TEST_INT", " 7 ")
    assert hosting.env_int("STYLEGALLERY_TEST_INT", 16) == 7 and len(hosting.ENV_ERRORS) == 1


def test_stop_stops_the_runs_its_session_submitted_before_it():
    stops = hosting.Stops(max_age=3600)
    before = time.monotonic()
    stops.press("tab1")
    assert stops.since("tab1", before) and not stops.since("tab1", time.monotonic())  # a later run goes ahead
    assert not stops.since("tab2", before)  # another session's runs go ahead
    stops.pressed["old"] = time.monotonic() - 7200
    stops.press("tab2")
    assert "old" not in stops.pressed  # older than any wait in the queue: forgotten


def test_a_session_is_safe_as_a_folder_name():
    class Request:
        session_hash = "../ab c/12"

    assert hosting.session(Request()) == "abc12" and hosting.session(None) == "anonymous"


def test_warm_up_runs_the_planned_engine_once_and_leaves_the_cache_empty(monkeypatch):
    from stylegallery.pipeline import Pipeline
    from stylegallery.request import Request, plan

    pipe = Pipeline()
    runs = []
    real_run = pipe.run

    def counting_run(*args, **kwargs):
        runs.append(args[2].engine)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(pipe, "run", counting_run)
    warm = plan(Request(engine="classic", preset="fast", size=64))
    hosting.warm_up(pipe, warm)
    assert runs == ["classic"] and len(pipe.cache) == 0
    assert ("classic", ()) in pipe._engines  # the engine is built and kept for the first visitor


def _partial_save(self, fp, format=None, **params):  # noqa: A002 (Pillow's signature)
    """Image.save on a full disk: half the encoded bytes reach the file, then ENOSPC."""
    buffer = io.BytesIO()
    _real_save(self, buffer, format=format or "PNG", **params)
    data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    if isinstance(fp, (str, os.PathLike)):
        with open(fp, "wb") as handle:
            handle.write(data)
    else:
        fp.write(data)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


_real_save = Image.Image.save


def test_run_pictures_on_a_full_disk_leave_no_file(monkeypatch, tmp_path):
    pictures = RunPictures(tmp_path / "runs", "session1")
    kept = pictures.save({"regions": Image.new("RGB", (32, 24), "red")})
    monkeypatch.setattr(Image.Image, "save", _partial_save)
    with pytest.raises(CannotSave) as info:
        pictures.save({"result": Image.new("RGB", (32, 24)), "panel": Image.new("RGB", (64, 24))})
    assert info.value.disk_full and info.value.reason == "No space left on device"
    assert sorted(p.name for p in pictures.folder.iterdir()) == [Path(kept["regions"]).name]


def test_a_sessions_earlier_pictures_stay_until_its_next_result_is_saved(tmp_path):
    first = RunPictures(tmp_path / "runs", "session1")
    shown = first.save({"result": Image.new("RGB", (32, 24))}, done=True)
    second = RunPictures(tmp_path / "runs", "session1")  # the next run starts ...
    second.save({"regions": Image.new("RGB", (32, 24))})  # ... and shows its regions
    assert Path(shown["result"]).is_file()  # the first result can still be fetched
    other = RunPictures(tmp_path / "runs", "session2").save({"result": Image.new("RGB", (8, 8))}, done=True)
    second.save({"result": Image.new("RGB", (32, 24))}, done=True)  # the new result exists: the old one goes
    assert not Path(shown["result"]).exists() and not first.folder.exists()
    assert [p.name for p in (tmp_path / "runs" / "session1").iterdir()] == [second.folder.name]
    assert Path(other["result"]).is_file()  # another session's pictures are not touched


def test_sessions_idle_for_longer_than_max_age_lose_their_pictures(tmp_path):
    import os

    old = RunPictures(tmp_path / "runs", "idle").save({"result": Image.new("RGB", (8, 8))}, done=True)
    os.utime(tmp_path / "runs" / "idle", (0, 0))
    RunPictures(tmp_path / "runs", "active", max_age=60)
    assert not Path(old["result"]).exists() and not (tmp_path / "runs" / "idle").exists()


_ARENAS_PROBE = """
import ctypes, sys, threading
from stylegallery.web.hosting import limit_malloc_arenas
print(limit_malloc_arenas(1) if sys.argv[1] == "cap" else "uncapped", flush=True)
def allocate():  # blocks above pymalloc's 512 bytes come from the thread's malloc arena
    blocks = [bytearray(4096) for _ in range(256)]
    barrier.wait()
barrier = threading.Barrier(4)
threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" section per arena, on stderr
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_capping_malloc_arenas_makes_threads_share_them():
    def arenas(mode: str, env: dict[str, str]) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", _ARENAS_PROBE, mode], capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip(), done.stderr.count("Arena ")

    env = {"MALLOC_ARENA_MAX": None, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    assert arenas("uncapped", env)[1] > 1  # glibc's default: threads get arenas of their own
    assert arenas("cap", env) == ("True", 1)
    assert arenas("cap", {**env, "MALLOC_ARENA_MAX": "3"})[0] == "False"  # the operator's setting stands


def _asgi(app, method: str, path: str, body: bytes, chunks: int = 1, length: bool = True) -> tuple[int, bytes, bool]:
    """(status, body, whether the inner app ran) for one request through `app` (an ASGI callable)."""
    import asyncio

    headers = [(b"content-length", str(len(body)).encode())] if length else []
    parts = [body[i::chunks] for i in range(chunks)] if chunks > 1 else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": method, "path": path, "headers": headers}, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), bool(ran)


ran: list = []


async def _inner(scope, receive, send):
    ran.append(scope["path"])
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def test_body_cap_keeps_event_bodies_small_and_uploads_large():
    from stylegallery.web.hosting import BodyCap

    cap = BodyCap(_inner, limit=1_000_000, message="upload too large", event_limit=1000)
    ran.clear()
    assert _asgi(cap, "POST", "/gradio_api/upload", b"x" * 500_000)[:2] == (200, b"500000")
    for length in (True, False):  # by Content-Length, and counted as a chunked body arrives
        ran.clear()
        status, text, inner = _asgi(cap, "POST", "/gradio_api/queue/join", b"{" + b" " * 5000 + b"}", chunks=4,
                                    length=length)
        assert status == 413 and b"at most 1 kB outside an upload" in text and not inner
    assert _asgi(cap, "POST", "/gradio_api/upload", b"x" * 1_000_001)[:2] == (413, b"upload too large")
    assert _asgi(cap, "POST", "/gradio_api/queue/join", b'{"data": [1]}')[:2] == (200, b"13")


@pytest.mark.parametrize("path", ["http://127.0.0.1:9/x.png", "https://example.org/a", " ftp://x", "file:///etc/passwd",
                                  "data:image/png;base64,AAAA"])
def test_body_cap_refuses_url_file_paths_before_the_app_sees_them(path):
    import json

    from stylegallery.web.hosting import BodyCap

    cap = BodyCap(_inner, limit=10**6, message="", event_limit=10**5)
    body = json.dumps({"data": [None, [{"image": {"path": path, "meta": {"_type": "gradio.FileData"}}}]]}).encode()
    ran.clear()
    status, text, inner = _asgi(cap, "POST", "/gradio_api/queue/join", body)
    assert status == 400 and b"not from URLs" in text and not inner
    local = json.dumps({"data": [{"path": "/tmp/gradio/abc/x.png", "meta": {"_type": "gradio.FileData"}}]}).encode()
    assert _asgi(cap, "POST", "/gradio_api/queue/join", local)[0] == 200


def test_body_cap_closes_deep_links():
    from stylegallery.web.hosting import BodyCap

    ran.clear()
    status, text, inner = _asgi(BodyCap(_inner, 10, ""), "GET", "/gradio_api/deep_link", b"")
    assert status == 404 and b"turned off" in text and not inner


def test_run_costs_estimate_from_the_engines_last_runs():
    from stylegallery.web.hosting import RunCosts, run_work

    costs = RunCosts()
    assert costs.estimate("classic", run_work(512, 2, 3)) == ""  # nothing measured yet
    costs.record("classic", run_work(256, 2, 3), 5.0)
    assert costs.estimate("classic", run_work(256, 2, 3)) == ""  # short runs get no estimate
    assert costs.estimate("classic", run_work(512, 2, 3)) == "; about 20 s by this server's last runs"
    assert costs.estimate("classic", run_work(1024, 5, 3)) == "; about 3 min by this server's last runs"
    assert costs.estimate("neural", run_work(1024, 5, 3)) == ""

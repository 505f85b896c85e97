"""Hostile-visitor probes of `python app.py` (issue 12), each bounded in count and time, all on 127.0.0.1.

    python benchmarks/probe_web.py [--overrides 12] [--override-mb 10] [--uploads 5] [--slow 200]

Starts the app (benchmarks/load_test.py's AppServer) and prints one line per probe:
- large overrides: N event requests with a ~10 MB `overrides` table and fresh session hashes; their statuses and
  the server's RSS before and after (gradio would keep each input's value in that session's state);
- refused uploads: N chunked uploads over the request cap and one that disconnects mid-body; statuses and the
  bytes left in gradio's upload folder;
- flood: one session joins 20 heavy runs; how many were accepted, and whether another session's Generate and Stop
  go through meanwhile;
- slow clients: N idle connections that never finish their headers; whether the page answers meanwhile and how
  many the server closed after its header timeout;
- deep link and URL file paths: statuses, and whether the URL was fetched.
The functions are shared with tests/test_web_abuse.py.
"""

from __future__ import annotations

import argparse
import http.server
import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import load_test as bench  # noqa: E402


META = {"_type": "gradio.FileData"}
CONTENT = REPO / "gallery" / "content" / "chelsea.jpg"


def _args(content: Any, styles: list, size: int = 256, steps: int = 2, overrides: Any = None) -> list:
    return [content, styles, overrides or {}, "classic", "paper", size, 6, 1.0, steps, 0, False, 1.0, {}]


def join(url: str, fn: int, data: list, session: str | None = None, body: bytes | None = None) -> tuple[int, str]:
    """POST /gradio_api/queue/join; (status, text)."""
    import httpx

    payload = body if body is not None else json.dumps(
        {"data": data, "event_data": None, "fn_index": fn, "trigger_id": None,
         "session_hash": session or uuid.uuid4().hex[:12]}).encode()
    try:
        answer = httpx.post(url + "/gradio_api/queue/join", content=payload,
                            headers={"content-type": "application/json"}, timeout=60)
    except httpx.HTTPError as exc:  # the server closed the connection while the body was still being sent
        return 0, type(exc).__name__
    return answer.status_code, answer.text


def uploaded(url: str, path: Path) -> dict:
    status, answer = bench.upload(url, path.name, path.read_bytes())
    if status != 200:
        raise RuntimeError(f"upload refused: {status} {answer}")
    return {"path": answer[0], "meta": META, "orig_name": path.name}


# ---- 1. large overrides --------------------------------------------------------------------------

def large_overrides(server: bench.AppServer, n: int = 12, mb: float = 10.0) -> dict[str, Any]:
    fn = bench.fn_index(bench.api_config(server.url), api_name="generate")
    table = {str(i): [1, 1] for i in range(int(mb * 10**6 / 14))}  # ~14 bytes per entry
    before = server.memory_mb().get("VmRSS", float("nan"))
    statuses = []
    for _ in range(n):
        body = json.dumps({"data": _args(None, [], overrides=table), "event_data": None, "fn_index": fn,
                           "trigger_id": None, "session_hash": uuid.uuid4().hex[:12]}).encode()
        statuses.append(join(server.url, fn, [], body=body))
    time.sleep(1.0)
    after = server.memory_mb().get("VmRSS", float("nan"))
    return {"statuses": [s for s, _ in statuses], "text": statuses[0][1], "body_mb": len(body) / 10**6,
            "rss_before": before, "rss_after": after}


# ---- 2. refused and abandoned uploads --------------------------------------------------------------

def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _chunked_upload(url: str, total: int) -> int:
    import httpx

    boundary = "sgboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():
        yield head
        sent = 0
        while sent < total:
            yield b"\0" * 2**20
            sent += 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        answer = httpx.post(url + "/gradio_api/upload", content=body(), timeout=120,
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        return answer.status_code
    except httpx.HTTPError:
        return 0


def _abandoned_upload(port: int, sent: int) -> None:
    """An upload that announces 4 x `sent` bytes, sends `sent`, then disconnects."""
    boundary = "sgboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cut.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {4 * sent}\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode() + head)
        for _ in range(sent // 2**16):
            s.sendall(b"\0" * 2**16)
        time.sleep(0.5)


def refused_uploads(server: bench.AppServer, n: int = 5, cap: int = 32_000_000) -> dict[str, Any]:
    folder = server.upload_dir
    before = _folder_bytes(folder)
    statuses = [_chunked_upload(server.url, cap + 2**20) for _ in range(n)]
    _abandoned_upload(server.port, min(cap // 2, 8 * 2**20))
    time.sleep(1.5)
    return {"statuses": statuses, "bytes_left": _folder_bytes(folder) - before}


# ---- 3. one session floods ---------------------------------------------------------------------------

def _stream_until_done(url: str, session: str, timeout: float) -> list[dict]:
    import httpx

    done = []
    with httpx.stream("GET", f"{url}/gradio_api/queue/data?session_hash={session}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    done.append(message)
                if message.get("msg") == "close_stream":
                    break
    return done


def flood(server: bench.AppServer, joins: int = 20, queue_size: int = 16,
          timeout: float = 300.0) -> dict[str, Any]:
    config = bench.api_config(server.url)
    fn, stop = bench.fn_index(config, api_name="generate"), bench.fn_index(config, elem_id="stop")
    styles = [{"image": uploaded(server.url, p), "caption": None} for p in bench.STYLES]
    heavy = _args(uploaded(server.url, CONTENT), styles, size=768, steps=20)
    flooder, other = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    answers = [join(server.url, fn, heavy, flooder) for _ in range(joins)]
    accepted = sum(1 for s, _ in answers if s == 200)
    busy = next((t for s, t in answers if s != 200), "")
    t0 = time.monotonic()
    light = _args(uploaded(server.url, CONTENT), styles[:1], size=128, steps=1)
    other_stop = join(server.url, stop, [], other)[0]  # pressed before its own run: it stops nothing of it
    other_run = join(server.url, fn, light, other)[0]
    third = [join(server.url, fn, light, uuid.uuid4().hex[:12])[0] for _ in range(queue_size)]  # fill the queue
    third_stop = join(server.url, stop, [], uuid.uuid4().hex[:12])[0]  # a Stop with the runs' queue full
    flooder_stop = join(server.url, stop, [], flooder)[0]  # stops the heavy run, so the others can start
    finished = _stream_until_done(server.url, other, timeout)
    ok = any(m.get("success") and "done in" in json.dumps(m.get("output", {})) for m in finished)
    return {"joins": joins, "accepted": accepted, "refusal": busy[:200], "other_stop": other_stop,
            "other_generate": other_run, "more_runs": third, "stop_with_queue_full": third_stop,
            "flooder_stop": flooder_stop, "other_finished": ok, "other_seconds": round(time.monotonic() - t0, 1)}


# ---- 4. slow clients ---------------------------------------------------------------------------------

def slow_clients(server: bench.AppServer, n: int = 200, wait: float = 4.0) -> dict[str, Any]:
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(s)
    try:
        t0 = time.monotonic()
        page = bench.get(server.url + "/", timeout=15)[0]
        page_seconds = time.monotonic() - t0
        time.sleep(wait)
        closed = 0
        for s in sockets:
            s.settimeout(0.05)
            try:
                closed += s.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        page_after = bench.get(server.url + "/", timeout=15)[0]
    finally:
        for s in sockets:
            s.close()
    return {"connections": n, "page_during": page, "page_seconds": page_seconds, "closed_by_server": closed,
            "page_after": page_after}


# ---- 5. deep links and URL paths ----------------------------------------------------------------------

def url_paths(server: bench.AppServer) -> dict[str, Any]:
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    lure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=lure.serve_forever, daemon=True).start()
    try:
        fn = bench.fn_index(bench.api_config(server.url), api_name="generate")
        link = f"http://127.0.0.1:{lure.server_address[1]}/lure.png"
        as_content = join(server.url, fn, _args({"path": link, "meta": META}, []))
        as_style = join(server.url, fn, _args(None, [{"image": {"path": link, "meta": META}, "caption": None}]))
        time.sleep(0.5)
    finally:
        lure.shutdown()
    deep = bench.get(f"{server.url}/gradio_api/deep_link?session_hash={uuid.uuid4().hex[:12]}")
    return {"content": as_content, "style": as_style, "fetched": len(hits), "deep_link": deep[0],
            "deep_link_text": deep[1][:200].decode(errors="replace")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overrides", type=int, default=12)
    parser.add_argument("--override-mb", type=float, default=10.0)
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--slow", type=int, default=200)
    args = parser.parse_args(argv)
    env = {"STYLEGALLERY_HEADER_TIMEOUT": "3"}
    with bench.AppServer(env=env) as server:
        print("large overrides:", large_overrides(server, args.overrides, args.override_mb), flush=True)
        print("refused uploads:", refused_uploads(server, args.uploads), flush=True)
        print("url paths:", url_paths(server), flush=True)
        print("slow clients:", slow_clients(server, args.slow), flush=True)
        print("flood:", flood(server), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

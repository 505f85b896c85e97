"""Load test: many gradio_client users submit runs at once to `python app.py`; nobody gets another user's result.

    python benchmarks/load_test.py --clients 20 --size 256 [--queue-size 16] [--timeout 600]

Starts the app as a subprocess on a free 127.0.0.1 port (its own process group, offline, with its own
temp, gradio-cache and Hugging Face folders), then N clients, each with its own content image of a
unique aspect ratio, submit to api_name "/generate" (classic engine) at the same moment. Meanwhile
another thread polls the page (GET /). Every run must either complete with ITS OWN result (the
result's size is its content's working size, and the result's luminance correlates best with its
own content among all clients' contents) or be refused with gradio's queue-full error; the page must
answer throughout. Prints completed runs, refusals, run and page latencies (median, worst) and the
server's memory; stops the server (its whole process group) at the end. Exit 0 when every property
holds, 1 otherwise.

The helpers (`AppServer`, `run_load`, `api_config`, `raw_run`, `call_direct`) are shared with
tests/test_load.py, tests/test_security.py and tests/test_faults.py.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


REPO = Path(__file__).resolve().parents[1]
STYLES = (REPO / "gallery" / "style" / "starry-swirls.png", REPO / "gallery" / "style" / "rose-window.png")
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
QUEUE_FULL = "Queue is full"  # gradio_client raises QueueError("Queue is full! Please try again.") on HTTP 503
MAX_CLIENTS = 40  # distinct content shapes available (20 heights x 2 orientations)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the server ---------------------------------------------------------------------------------

class AppServer:
    """`python app.py --port P` in its own process group, with private temp, gradio-cache and HF folders.

    `queue_size` sets STYLEGALLERY_QUEUE_SIZE; `galleries` are passed as `--gallery DIR`; `app` is the
    script to serve (default: $STYLEGALLERY_APP_SCRIPT, else the repo's app.py; a patched copy tries a fix).
    HF_HOME is an empty folder, so hub model ids are never cached and the diffusion engine cannot load.
    """

    def __init__(self, queue_size: int | None = None, galleries: tuple[str | Path, ...] = (),
                 env: dict[str, str] | None = None, app: str | Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="stylegallery-server-"))
        self.upload_dir = self.root / "gradio"  # GRADIO_TEMP_DIR: uploads and served outputs
        self.tmp_dir = self.root / "tmp"  # TMPDIR: the app's export folder lives here
        self.log_path = self.root / "server.log"
        self.env = {**os.environ, **OFFLINE_ENV, "GRADIO_TEMP_DIR": str(self.upload_dir), "TMPDIR": str(self.tmp_dir),
                    "HF_HOME": str(self.root / "hf"), "PYTHONUNBUFFERED": "1", **(env or {})}
        if queue_size is not None:
            self.env["STYLEGALLERY_QUEUE_SIZE"] = str(queue_size)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        app = app or os.environ.get("STYLEGALLERY_APP_SCRIPT") or REPO / "app.py"
        self.args = [sys.executable, str(app), "--port", str(self.port)]
        for folder in galleries:
            self.args += ["--gallery", str(folder)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> AppServer:
        for folder in (self.upload_dir, self.tmp_dir, self.root / "hf"):
            folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 180.0) -> AppServer:
        """Block until GET / answers 200; raise with the server's log when it dies or never answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc and self.proc.returncode
                raise RuntimeError(f"the app exited with code {code}:\n{self.log_tail()}")
            if get(self.url + "/", timeout=5)[0] == 200:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the app did not answer GET / within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL after 10 s, then remove the private folders."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def memory_mb(self) -> dict[str, float]:
        """The server's resident memory now (VmRSS) and its peak so far (VmHWM), in MB (Linux)."""
        out = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024
        except (OSError, AttributeError):
            pass
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> AppServer:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- raw HTTP helpers (what a browser, or a prober, sends) -------------------------------------

def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET `url` with its path sent exactly as written (no dot-segment clean-up); (status, body) or (0, b"")."""
    parts = urllib.parse.urlsplit(url)
    path = url[url.index(parts.netloc) + len(parts.netloc):] or "/"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def api_config(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(url + "/config", timeout=30).json()


def element_ids(config: dict[str, Any]) -> dict[int, str]:
    """Component id -> elem_id."""
    return {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}


def fn_index(config: dict[str, Any], *, api_name: str | None = None, elem_id: str | None = None,
             trigger: str = "click") -> int:
    """The dependency id of the endpoint named `api_name`, or of the `trigger` event of element `elem_id`."""
    by_elem = {v: k for k, v in element_ids(config).items()}
    for i, dep in enumerate(config["dependencies"]):
        if api_name is not None and dep.get("api_name") == api_name:
            return dep.get("id", i)
        if elem_id is not None and [by_elem.get(elem_id), trigger] in [list(t) for t in dep.get("targets", [])]:
            return dep.get("id", i)
    raise KeyError(f"no endpoint {api_name or elem_id!r} in the app's config")


def output_positions(config: dict[str, Any], api_name: str = "generate") -> dict[str, int]:
    """elem_id -> position in the endpoint's output tuple."""
    dep = config["dependencies"][fn_index(config, api_name=api_name)]
    ids = element_ids(config)
    return {ids.get(cid): i for i, cid in enumerate(dep["outputs"])}


def raw_run(url: str, fn: int, data: list[Any], timeout: float = 120.0, *, event_data: Any = None,
            session_hash: str | None = None) -> dict[str, Any]:
    """Join the queue with `data` (and `event_data`, e.g. a gallery click's {"index": 0}) as sent (no client-side
    upload or checks) and return the final message.

    Returns {"join_status": int, "join": body} when the join is refused, else the `process_completed`
    message ({"success": bool, "output": {...}}).
    """
    import httpx

    session = session_hash or uuid.uuid4().hex[:12]
    body = {"data": data, "event_data": event_data, "fn_index": fn, "trigger_id": None, "session_hash": session}
    joined = httpx.post(url + "/gradio_api/queue/join", json=body, timeout=30)
    if joined.status_code != 200:
        return {"join_status": joined.status_code, "join": joined.text}
    with httpx.stream("GET", f"{url}/gradio_api/queue/data?session_hash={session}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise RuntimeError("the queue stream ended without process_completed")


def call_direct(url: str, fn: int, data: list[Any], session_hash: str, trigger_id: int | None = None) -> int:
    """POST a non-queued event (as the page does for buttons with queue=False); returns the HTTP status."""
    import httpx

    body = {"fn_index": fn, "data": data, "session_hash": session_hash, "event_data": None, "trigger_id": trigger_id}
    return httpx.post(url + "/gradio_api/run/predict", json=body, timeout=30).status_code


def upload(url: str, name: str, data: bytes) -> tuple[int, Any]:
    """POST one file to the upload route under the client-chosen file `name`; (status, JSON or text)."""
    import httpx

    response = httpx.post(url + "/gradio_api/upload", files=[("files", (name, data))], timeout=60)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


# ---- the load scenario --------------------------------------------------------------------------

def client_shape(i: int) -> tuple[int, int]:
    """(height, width) of client i's content: long side 256, short side 96..248, alternating orientation."""
    if not 0 <= i < MAX_CLIENTS:
        raise ValueError(f"client {i} has no distinct content shape: use at most {MAX_CLIENTS} clients")
    short = 96 + 8 * (i // 2)
    return (short, 256) if i % 2 == 0 else (256, short)


def client_content(i: int) -> np.ndarray:
    """Client i's content (uint8): a random 4x4 pattern of dark and light blocks in its own colours."""
    height, width = client_shape(i)
    rng = np.random.default_rng(1000 + i)
    pattern = rng.permutation(np.arange(16) % 2).reshape(4, 4).astype(np.uint8)  # 8 dark, 8 light blocks
    light = np.array(Image.fromarray(pattern * 255).resize((width, height), Image.NEAREST)) > 127  # (H, W)
    dark_rgb, light_rgb = rng.uniform(0.0, 0.25, 3), rng.uniform(0.75, 1.0, 3)
    image = np.where(light[..., None], light_rgb, dark_rgb)  # (H, W, 3)
    return (image * 255 + 0.5).astype(np.uint8)


def _luminance(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    if rgb.shape[:2] != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
    return rgb.astype(np.float32).mean(axis=2)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def _edges(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Blurred gradient magnitude of the luminance: the layout of a picture's block edges, whatever their colours."""
    import cv2

    lum = _luminance(rgb, height, width)
    gx, gy = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 3.0)


def identify(result: np.ndarray, contents: list[np.ndarray]) -> list[float]:
    """Correlation of the result's edge layout with each content's (resized to the result's size).

    Edges, not luminance: the engine recolours each region from its matched style region, which may turn a dark
    block light (luminance correlation then goes negative), but the blocks' edges stay where the content has them.
    """
    height, width = result.shape[:2]
    edges = _edges(result, height, width)
    return [_correlation(edges, _edges(c, height, width)) for c in contents]


@dataclass
class Outcome:
    client: int
    kind: str  # "completed" | "refused" | "error" | "wrong"
    detail: str
    latency: float  # s from submit to result or refusal


@dataclass
class LoadReport:
    outcomes: list[Outcome]
    page_latencies: list[float] = field(default_factory=list)
    page_failures: list[str] = field(default_factory=list)
    wall: float = 0.0

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    def problems(self) -> list[str]:
        """Every broken property, one line each (empty when all hold)."""
        out = [f"client {o.client}: {o.kind}: {o.detail}" for o in self.outcomes if o.kind in ("error", "wrong")]
        out += [f"page: {f}" for f in self.page_failures]
        if not self.of("completed"):
            out.append("no run completed")
        if not self.page_latencies:
            out.append("the page was never polled")
        return out


def _submit_and_check(client: Any, i: int, content_path: Path, contents: list[np.ndarray], size: int,
                      styles: tuple[Path, ...], result_at: int, status_at: int, barrier: threading.Barrier,
                      deadline: float) -> Outcome:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    barrier.wait()
    start = time.monotonic()
    try:
        job = client.submit(handle_file(str(content_path)),
                            [{"image": handle_file(str(p)), "caption": None} for p in styles],
                            {}, "classic", "paper", size, 6, 1.0, 3, 0, False, api_name="/generate")
        outputs = job.result(timeout=max(1.0, deadline - time.monotonic()))
    except QueueError as exc:
        kind = "refused" if QUEUE_FULL in str(exc) else "error"
        return Outcome(i, kind, f"QueueError: {exc}", time.monotonic() - start)
    except AppError as exc:
        return Outcome(i, "error", f"AppError: {' '.join(str(exc).split())[:300]}", time.monotonic() - start)
    except Exception as exc:  # noqa: BLE001 (a load test records every failure, whatever its type)
        return Outcome(i, "error", f"{type(exc).__name__}: {str(exc)[:300]}", time.monotonic() - start)
    latency = time.monotonic() - start
    status, result_path = outputs[status_at], outputs[result_at]
    if not isinstance(result_path, str) or "done in" not in str(status):
        return Outcome(i, "wrong", f"no final result (status {str(status)[:200]!r})", latency)
    with Image.open(result_path) as picture:
        result = np.asarray(picture.convert("RGB"))
    height, width = client_shape(i)
    if result.shape[:2] != (height, width):
        return Outcome(i, "wrong", f"result is {result.shape[1]}x{result.shape[0]}, its content {width}x{height}",
                       latency)
    scores = identify(result, contents)
    best = int(np.argmax(scores))
    if best != i:
        return Outcome(i, "wrong", f"result looks like client {best}'s content ({scores[best]:.2f}) more than "
                                   f"its own ({scores[i]:.2f})", latency)
    others = max((s for j, s in enumerate(scores) if j != i), default=float("nan"))
    return Outcome(i, "completed", f"correlation with own content {scores[i]:.2f}, best other {others:.2f}", latency)


def _poll_page(url: str, stop: threading.Event, every: float, report: LoadReport) -> None:
    while not stop.is_set():
        start = time.monotonic()
        status, body = get(url + "/", timeout=30)
        if status == 200 and b"<html" in body.lower():
            report.page_latencies.append(time.monotonic() - start)
        else:
            report.page_failures.append(f"GET / answered {status} after {time.monotonic() - start:.1f} s")
        stop.wait(every)


def run_load(url: str, n_clients: int, workdir: Path, size: int = 256, styles: tuple[Path, ...] = STYLES,
             timeout: float = 600.0, poll_every: float = 0.25) -> LoadReport:
    """N clients, each with its own content, submit to /generate at once; every outcome is checked."""
    from gradio_client import Client

    workdir.mkdir(parents=True, exist_ok=True)
    contents = [client_content(i) for i in range(n_clients)]
    paths = []
    for i, content in enumerate(contents):
        paths.append(workdir / f"client-{i:02d}.png")
        Image.fromarray(content).save(paths[-1])
    config = api_config(url)
    positions = output_positions(config)
    result_at, status_at = positions["result"], positions["status"]
    with concurrent.futures.ThreadPoolExecutor(n_clients) as pool:
        clients = list(pool.map(lambda i: Client(url + "/", verbose=False, download_files=str(workdir / f"dl-{i}")),
                                range(n_clients)))
    report = LoadReport(outcomes=[])
    stop = threading.Event()
    poller = threading.Thread(target=_poll_page, args=(url, stop, poll_every, report), daemon=True)
    poller.start()
    barrier = threading.Barrier(n_clients)
    start = time.monotonic()
    deadline = start + timeout
    try:
        with concurrent.futures.ThreadPoolExecutor(n_clients) as pool:
            futures = [pool.submit(_submit_and_check, clients[i], i, paths[i], contents, size, styles, result_at,
                                   status_at, barrier, deadline) for i in range(n_clients)]
            report.outcomes = [f.result() for f in futures]
    finally:
        report.wall = time.monotonic() - start
        stop.set()
        poller.join(timeout=35)
        with concurrent.futures.ThreadPoolExecutor(n_clients) as pool:
            list(pool.map(lambda c: c.close(), clients))
    return report


def summary(report: LoadReport) -> str:
    def stats(values: list[float]) -> str:
        if not values:
            return "n/a"
        return f"median {statistics.median(values):.2f} s, worst {max(values):.2f} s (n={len(values)})"

    lines = [f"{o.client:>3} {o.kind:<9} {o.latency:6.1f} s  {o.detail}" for o in report.outcomes]
    refusals = {o.detail for o in report.of("refused")}
    lines += [
        f"# clients {len(report.outcomes)}: completed {len(report.of('completed'))}, refused "
        f"{len(report.of('refused'))}, errors {len(report.of('error'))}, wrong results {len(report.of('wrong'))}; "
        f"wall {report.wall:.1f} s",
        f"# run latency (submit -> own result): {stats([o.latency for o in report.of('completed')])}",
        f"# refusal latency: {stats([o.latency for o in report.of('refused')])}; message: {sorted(refusals)}",
        f"# page GET / latency during the load: {stats(report.page_latencies)}; failures {len(report.page_failures)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help=f"simultaneous users (at most {MAX_CLIENTS})")
    parser.add_argument("--size", type=int, default=256, help="working size (the app's slider allows 256..1024)")
    parser.add_argument("--queue-size", type=int, default=None, help="STYLEGALLERY_QUEUE_SIZE (default: the app's)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole load, then give up")
    parser.add_argument("--url", help="load an already running app instead of starting one")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients {args.clients} is out of range: use 1..{MAX_CLIENTS}")

    server = None if args.url else AppServer(queue_size=args.queue_size)
    try:
        if server is not None:
            t0 = time.monotonic()
            server.start().wait_ready()
            print(f"# app ready at {server.url} after {time.monotonic() - t0:.1f} s; memory {server.memory_mb()}",
                  flush=True)
        url = args.url.rstrip("/") if args.url else server.url
        with tempfile.TemporaryDirectory(prefix="stylegallery-load-") as work:
            report = run_load(url, args.clients, Path(work), size=args.size, timeout=args.timeout)
        print(summary(report))
        if server is not None:
            print(f"# server memory after the load (MB): {server.memory_mb()}; still serving: "
                  f"{get(url + '/')[0] == 200 and server.alive()}")
    finally:
        if server is not None:
            server.stop()
    problems = report.problems()
    for line in problems:
        print(f"PROBLEM {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

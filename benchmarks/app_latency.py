"""App latency through gradio_client: start-up to a served page, submit to the region map, submit to the final image.

Starts `python app.py` on a free 127.0.0.1 port (offline), runs three gallery photos with three styles each on the
classic engine at 512 px, prints the figures, and stops the server. A picture counts as on screen when the update
naming it has arrived and the picture has been fetched from its address once, as a browser does (gradio_client's
own downloads are off: they fetch every file an update names, on the client's own threads).

    python benchmarks/app_latency.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout: the library sits beside this folder
GALLERY = REPO / "gallery"
RUNS = [("astronaut.jpg", ["starry-swirls", "rose-window", "ink-mountains"]),
        ("coffee.jpg", ["watercolour-blooms", "cubist-still-life", "pop-bands"]),
        ("rocket.jpg", ["halftone-sunset", "sun-mosaic", "woodcut-sunrise"])]


def main() -> int:
    from gradio_client import Client, handle_file

    from stylegallery.config import preset

    steps = preset("paper").classic.iterations  # what a visitor gets: the Steps slider's default on the classic engine

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - t0 > 120:
                    print("error: the app did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        print(f"start-up to served page: {time.perf_counter() - t0:.2f} s")
        client = Client(url, verbose=False, download_files=False)  # pictures are fetched below, once each
        for content, styles in RUNS:
            start, region, final = time.perf_counter(), None, None
            job = client.submit(handle_file(str(GALLERY / "content" / content)),
                                [{"image": handle_file(str(GALLERY / "style" / f"{s}.png")), "caption": None}
                                 for s in styles],
                                {}, "classic", "paper", 512, 10, 1.0, steps, 42, False, api_name="/generate")
            for out in job:  # outputs in app.OUTPUTS order: 2 = region map, 3 = result, 10 = the result's download
                if region is None and _fetched(out[2]):
                    region = time.perf_counter() - start
                if isinstance(out[10], dict) and out[10].get("value") and _fetched(out[3]):
                    final = time.perf_counter() - start
            print(f"{content} + 3 styles, classic, 512 px: region map {region:.2f} s, final image {final:.2f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


def _fetched(picture: object) -> bool:
    """Fetch a picture an update names (gradio's file data: a dict with its url), as the page would; False if none."""
    if not isinstance(picture, dict) or not picture.get("url"):
        return False
    with urllib.request.urlopen(picture["url"], timeout=30) as response:
        return len(response.read()) > 0


if __name__ == "__main__":
    sys.exit(main())

"""App latency through gradio_client: start-up to a served page, submit to the region map, submit to the final image.

Starts `python app.py` on a free 127.0.0.1 port (offline), runs three gallery photos with three styles each on the
classic engine at 512 px, prints the figures, and stops the server. A picture counts as on screen when the update
naming it has arrived and the picture has been fetched from its address once, as a browser does (gradio_client's
own downloads are off: they fetch every file an update names, on the client's own threads).

    python benchmarks/app_latency.py
"""

from __future__ import annotations

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

    from benchmarks.load_test import AppServer, api_config, output_positions
    from stylegallery.config import preset

    steps = preset("paper").classic.iterations  # what a visitor gets: the Steps slider's default on the classic engine
    server = AppServer()
    t0 = time.perf_counter()
    try:
        server.start().wait_ready()
        print(f"start-up to served page: {time.perf_counter() - t0:.2f} s")
        at = output_positions(api_config(server.url))
        client = Client(server.url + "/", verbose=False, download_files=False)  # pictures are fetched below, once each
        for content, styles in RUNS:
            start, region, final = time.perf_counter(), None, None
            job = client.submit(handle_file(str(GALLERY / "content" / content)),
                                [{"image": handle_file(str(GALLERY / "style" / f"{s}.png")), "caption": None}
                                 for s in styles],
                                {}, "classic", "paper", 512, 10, 1.0, steps, 42, False, api_name="/generate")
            for out in job:
                if region is None and _fetched(out[at["region-map"]]):
                    region = time.perf_counter() - start
                download = out[at["dl-result"]]
                if isinstance(download, dict) and download.get("value") and _fetched(out[at["result"]]):
                    final = time.perf_counter() - start
            print(f"{content} + 3 styles, classic, 512 px: region map {region:.2f} s, final image {final:.2f} s")
    except RuntimeError as exc:  # the app did not start (AppServer.wait_ready says why, with its log)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    return 0


def _fetched(picture: object) -> bool:
    """Fetch a picture an update names (gradio's file data: a dict with its url), as the page would; False if none."""
    if not isinstance(picture, dict) or not picture.get("url"):
        return False
    with urllib.request.urlopen(picture["url"], timeout=30) as response:
        return len(response.read()) > 0


if __name__ == "__main__":
    sys.exit(main())

"""Faults: a run stopped by its user ends within one step and frees its memory; models that cannot load leave the
app painting with the classic engine and saying why; a full disk gives one clear error and no partial file.

Library level (Pipeline, cli.main, app functions) and through the real app (`python app.py` in a subprocess,
started when this module begins so that it boots while the library tests run).
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import gc
import importlib.util
import io
import os
import time
import tracemalloc
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import load_test as bench
from stylegallery import cli
from stylegallery.config import preset
from stylegallery.errors import Cancelled
from stylegallery.pipeline import Done, Matched, Pipeline, Preview, Result, Segmented
from stylegallery.types import Match
from tests.fixtures import served


REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "gallery"
CONTENT = GALLERY / "content" / "chelsea.jpg"
STYLES = [GALLERY / "style" / "starry-swirls.png", GALLERY / "style" / "rose-window.png"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---- the app server: started at once, waited for by the tests that need it ---------------------------

@pytest.fixture(scope="module", autouse=True)
def _booting_server():
    if importlib.util.find_spec("gradio_client") is None:
        yield None
        return
    # Diffusion on this CPU machine is allowed so that its (missing) models exercise the classic fallback.
    app_server = bench.AppServer(env={"STYLEGALLERY_ALLOW_CPU_DIFFUSION": "1",
                                      "STYLEGALLERY_SD_MODEL": "someone/not-downloaded-sd15"}).start()
    try:
        yield app_server
    finally:
        app_server.stop()


@pytest.fixture(scope="module")
def server(_booting_server):
    if _booting_server is None:
        pytest.skip("gradio_client is not installed")
    return _booting_server.wait_ready()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    c = Client(server.url + "/", verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield c
    c.close()


# ---- (a) cancellation ---------------------------------------------------------------------------------

def _classic(size: int = 128):
    s = preset("paper", engine="classic")
    return dataclasses.replace(s, image=dataclasses.replace(s.image, size=size),
                               regions=dataclasses.replace(s.regions, k_max=4))


def _run_and_stop_after_first_preview(pipe: Pipeline, content, styles, settings) -> dict[str, int]:
    """Run until stage 3's first preview, then ask to stop. Everything the run made is local to this call."""
    count = {"previews": 0, "previews_after_stop": 0, "stop_answered_true": 0, "cancelled": 0}
    stop = [False]

    def should_stop() -> bool:
        count["stop_answered_true"] += stop[0]
        return stop[0]

    try:
        for event in pipe.run(content, styles, settings, should_stop=should_stop):
            if isinstance(event, Done):
                break
            if isinstance(event, Preview):
                count["previews"] += 1
                count["previews_after_stop"] += stop[0]
                stop[0] = True  # the user presses Stop during stage 3
    except Cancelled:
        count["cancelled"] = 1
    return count


def test_classic_run_stopped_in_stage3_ends_at_the_next_check_and_frees_its_arrays():
    pipe = Pipeline(cache_bytes=0)  # keeps nothing between runs, so everything a run allocates must go
    content, styles = np.asarray(Image.open(CONTENT).convert("RGB")), [str(p) for p in STYLES]
    settings = _classic(256)  # one working image is 256 x 168 x 3 float32 = 0.5 MB
    pipe(content, styles, settings)  # warm-up: imports, the engine, lazily built detectors
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        count = _run_and_stop_after_first_preview(pipe, content, styles, settings)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == {"previews": 1, "previews_after_stop": 0, "stop_answered_true": 1, "cancelled": 1}
    assert peak - before > 4_000_000  # the run did allocate its working arrays...
    assert after - before < 200_000, f"{(after - before) / 1e6:.2f} MB still held after the cancelled run"  # ...freed


def _live_tensors() -> tuple[int, int]:
    import torch

    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecated aliases warn when gc.get_objects() touches them
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    return len(tensors), sum(t.numel() * t.element_size() for t in tensors)


def test_diffusion_run_stopped_in_stage3_ends_at_the_next_step_and_holds_no_run_tensors():
    pytest.importorskip("diffusers")
    from tests.fixtures import random_image, tiny_paths, tiny_settings

    paths = tiny_paths()
    base = tiny_settings(steps=6, preview_every=1)
    settings = dataclasses.replace(
        base, engine="diffusion", image=dataclasses.replace(base.image, size=96),
        diffusion=dataclasses.replace(base.diffusion, sd_model=str(paths.sd), dino_model=str(paths.dino),
                                      depth_model=str(paths.depth)))
    pipe = Pipeline(cache_bytes=0)
    content = (random_image(64, 96, seed=0) * 255).astype(np.uint8)
    styles = [(random_image(64, 64, seed=1) * 255).astype(np.uint8)]
    pipe(content, styles, settings)  # warm-up: models loaded, aggregator built
    before = _live_tensors()
    count = _run_and_stop_after_first_preview(pipe, content, styles, settings)
    assert count == {"previews": 1, "previews_after_stop": 0, "stop_answered_true": 1, "cancelled": 1}
    assert _live_tensors() == before  # no latent, optimiser state or attention record outlives the run
    engine = pipe.engine("diffusion", settings)
    assert all(type(p).__module__.startswith("diffusers") for p in engine.sd.unet.attn_processors.values())


def _wait_for(job, predicate, timeout: float = 120.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outputs = job.outputs()
        if any(predicate(o) for o in outputs) or job.done():
            return outputs
        time.sleep(0.05)
    raise TimeoutError("the run never reached the awaited stage")


def test_stop_button_stops_its_own_sessions_run_and_no_other(server, client):
    from gradio_client import handle_file

    config = bench.api_config(server.url)
    at = bench.output_positions(config)
    stop_fn = bench.fn_index(config, elem_id="stop")
    job = client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(p)), "caption": None} for p in STYLES],
                        {}, "classic", "paper", 512, 6, 1.0, 3, 0, False, api_name="/generate")
    _wait_for(job, lambda o: isinstance(o[at["region-map"]], str))  # stage 1 is done: the run is under way
    assert bench.call_direct(server.url, stop_fn, [], session_hash=uuid.uuid4().hex) == 200  # someone else's Stop
    outputs = _wait_for(job, lambda o: "painting, step" in str(o[at["status"]]))
    assert not job.done(), "the run ended after another session's Stop"
    seen = len(outputs)
    assert bench.call_direct(server.url, stop_fn, [], session_hash=client.session_hash) == 200  # its own Stop
    final = job.result(timeout=120)
    statuses = [str(o[at["status"]]) for o in job.outputs()]
    assert "Stopped" in str(final[at["status"]])
    assert sum("painting, step" in s for s in statuses[seen:]) <= 1  # at most the step already in flight
    assert not any("done in" in s for s in statuses)
    assert bench.get(server.url + "/")[0] == 200



def _submit(client, size: int = 256):
    from gradio_client import handle_file

    return client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(p)), "caption": None} for p in STYLES],
                         {}, "classic", "paper", size, 6, 1.0, 3, 0, False, api_name="/generate")


def test_stop_pressed_while_a_run_waits_in_the_queue_stops_it_before_it_starts(server, client, tmp_path):
    from gradio_client import Client
    from gradio_client.utils import Status

    config = bench.api_config(server.url)
    at = bench.output_positions(config)
    stop_fn = bench.fn_index(config, elem_id="stop")
    waiting = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
    try:
        first = _submit(client, size=512)  # one run at a time: B waits behind it
        _wait_for(first, lambda o: "finding regions" in str(o[at["status"]]) or isinstance(o[at["region-map"]], str))
        second = _submit(waiting)
        deadline = time.monotonic() + 30
        while second.status().code != Status.IN_QUEUE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.status().code == Status.IN_QUEUE and not first.done(), "B should wait while A runs"
        assert bench.call_direct(server.url, stop_fn, [], session_hash=waiting.session_hash) == 200  # B's Stop
        done = first.result(timeout=180)
        assert "done in" in str(done[at["status"]])  # A is not someone else's Stop
        stopped = second.result(timeout=180)
        statuses = [str(o[at["status"]]) for o in second.outputs()]
        assert "Stopped" in str(stopped[at["status"]]) and not any("done in" in s for s in statuses), statuses
        assert not any("finding regions" in s or "painting" in s for s in statuses), statuses  # never started
        assert not any(isinstance(o[at["result"]], str) for o in second.outputs())  # no result, not even a preview
        # A Stop is for the runs submitted before it: the session's next run is not stopped by it.
        again = _submit(waiting).result(timeout=180)
        assert "done in" in str(again[at["status"]])
    finally:
        waiting.close()


# ---- (b) models that cannot load ------------------------------------------------------------------------

def test_unloadable_diffusion_models_fall_back_to_classic_with_a_clear_status(server, client):
    from gradio_client import handle_file

    at = bench.output_positions(bench.api_config(server.url))
    job = client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(STYLES[0])), "caption": None}],
                        {}, "diffusion", "paper", 256, 6, 1.0, 150, 0, False, api_name="/generate")
    final = job.result(timeout=300)
    status = str(final[at["status"]])
    # the first CPU engine of auto's order that can run takes over (neural where its networks are installed)
    assert "engine (the diffusion engine could not be loaded" in status and "done in" in status
    assert "<b>diffusion</b>" not in status
    assert "sd_model" in status and "\n" not in status  # says which model and stays one line
    with Image.open(final[at["result"]]) as picture:
        with Image.open(CONTENT) as photo:  # the working size, or the photo's own size for an engine painting at it
            assert max(picture.size) in (256, max(photo.size))
    assert bench.get(server.url + "/")[0] == 200


@pytest.fixture(scope="module")
def app():
    pytest.importorskip("gradio")
    import app

    return app


@pytest.fixture
def uploads(monkeypatch, tmp_path) -> tuple[Path, Path]:
    """A content and a style image as the app receives them: inside gradio's upload folder."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    content, style = folder / CONTENT.name, folder / STYLES[0].name
    content.write_bytes(CONTENT.read_bytes())
    style.write_bytes(STYLES[0].read_bytes())
    return content, style


def test_generate_with_a_missing_model_folder_paints_with_classic(app, uploads, monkeypatch, tmp_path):
    import gradio as gr

    missing = tmp_path / "no-such-model"
    monkeypatch.setenv("STYLEGALLERY_SD_MODEL", str(missing))
    monkeypatch.setenv("STYLEGALLERY_ALLOW_CPU_DIFFUSION", "1")
    with pytest.warns(UserWarning, match="so the (neural|classic) engine painted instead"):
        outputs = list(app.generate(str(uploads[0]), [(str(uploads[1]), None)], {}, "diffusion", "paper", 256, 6,
                                    1.0, 150, 0, False, gr.Request()))
    statuses = [str(o[app.OUTPUTS.index("status")]) for o in outputs]
    assert "done in" in statuses[-1] and ("<b>neural</b>" in statuses[-1] or "<b>classic</b>" in statuses[-1])
    segmented = next(s for s in statuses if "regions found" in s)
    assert f"sd_model folder '{missing}' does not exist" in segmented


# ---- (c) a full disk ------------------------------------------------------------------------------------

@pytest.fixture
def cli_files(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.open(CONTENT).convert("RGB").resize((96, 64)).save(inputs / "content.png")
    Image.open(STYLES[0]).convert("RGB").resize((64, 64)).save(inputs / "style.png")
    out = tmp_path / "out"
    out.mkdir()
    return inputs, out


@pytest.mark.parametrize(("call", "nth"), [("replace", 1), ("replace", 3), ("fsync", 2)])
def test_cli_on_a_full_disk_exits_2_with_one_line_and_leaves_nothing(cli_files, monkeypatch, capsys, call, nth):
    inputs, out = cli_files
    real = getattr(os, call)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise ENOSPC
        return real(*args, **kwargs)

    monkeypatch.setattr(os, call, failing)
    code = cli.main(["run", str(inputs / "content.png"), str(inputs / "style.png"), "-o", str(out / "result.png"),
                     "--mask-out", str(out / "mask.png"), "--figure-out", str(out / "panel.png"),
                     "--matches-out", str(out / "matches.json"), "--engine", "classic", "--size", "64", "-q"])
    err = capsys.readouterr().err
    assert len(calls) >= nth  # the fault was hit (outputs are written one after another)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "No space left on device" in err
    assert sorted(p.name for p in out.iterdir()) == []  # no partial file, no temp file, no half of the outputs


# ---- a full disk under the running app (in this process, so that its file writes can fail) --------------

class _FullDisk:
    """The disk filling up under `folder`: once `full`, a file opened there for writing takes half of the first
    bytes written to it, then fails with ENOSPC, whoever writes it (the app, gradio, Pillow)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.full, self.hits = folder.resolve(), False, 0

    def wrap(self, real_open):
        def opening(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if self.full and any(c in mode for c in "wax+") and self._inside(file):
                self.hits += 1
                return _FillingFile(handle)
            return handle

        return opening

    def _inside(self, file) -> bool:
        try:
            name = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.fsdecode(file)
            return Path(name).resolve().is_relative_to(self.folder)
        except (OSError, TypeError, ValueError):
            return False


class _FillingFile:
    def __init__(self, handle) -> None:
        self._handle, self._written = handle, False

    def write(self, data) -> int:
        if not self._written:
            self._written = True
            self._handle.write(bytes(data)[: len(data) // 2])
            self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")  # Pillow would write to the descriptor, around write()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


STAGES = ("region map", "style maps", "match figure", "preview", "downloads")


class _FillingPipeline:
    """The pipeline's events on small arrays; the disk fills up just before the event of stage `full_at`."""

    def __init__(self, disk: _FullDisk) -> None:
        self.disk, self.full_at = disk, None

    def resolve_engine(self, settings):
        return "classic", "test"

    def run(self, content, styles, settings, overrides=None, should_stop=None):
        from stylegallery.pipeline import ContentSegmented

        rng = np.random.default_rng(0)
        image = rng.uniform(0, 1, (96, 128, 3)).astype(np.float32)  # (H, W, 3)
        labels = (np.arange(128)[None, :].repeat(96, 0) >= 64).astype(np.int32)  # (H, W): two regions
        matches = [Match(0, 0, 0, 0.5, {"statistical": 0.5}), Match(1, 0, 1, 0.4, {"statistical": 0.4})]
        timings = {"analyze": 0.1, "segment": 0.1, "match": 0.1, "transfer": 0.1, "total": 0.4}
        events = [ContentSegmented("classic", "test", image, labels, timings),
                  Segmented("classic", "test", image, labels, [image], [labels], timings),
                  Matched(matches, timings), Preview(1, 2, image * 0.5, timings),
                  Done(Result(1 - image, image, [image], labels, [labels], matches, timings, "classic", "test",
                              settings))]
        for stage, event in zip(STAGES, events):
            self.disk.full = self.disk.full or stage == self.full_at
            yield event


@pytest.fixture(scope="module")
def filling_app(app, tmp_path_factory):
    """The demo served in this process with its gradio cache on a disk that the test fills up."""
    from gradio_client import Client

    cache = tmp_path_factory.mktemp("gradio-cache")
    disk = _FullDisk(cache)
    pipe = _FillingPipeline(disk)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(cache))
        patch.setattr(app, "get_pipeline", lambda: pipe)
        with served(app.build_demo(), app.QUEUE_SIZE, **app.launch_kwargs()) as url:
            patch.setattr(io, "open", disk.wrap(io.open))
            patch.setattr(builtins, "open", disk.wrap(builtins.open))
            client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
            try:
                yield client, pipe, disk, cache
            finally:
                client.close()


def _broken_files(folder: Path) -> list[str]:
    """Files under `folder` that are left-over temporaries or pictures that do not load whole."""
    broken = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.name.startswith(".") or path.suffix in (".part", ".tmp"):
            broken.append(path.name)
        elif path.suffix.lower() in (".png", ".webp", ".jpg", ".jpeg"):
            try:
                with Image.open(path) as picture:
                    picture.load()
            except OSError:
                broken.append(path.name)
    return broken


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_in_the_app_is_a_clear_page_error_and_leaves_no_partial_file(filling_app, stage):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, pipe, disk, cache = filling_app
    pipe.full_at, disk.full, disk.hits = stage, False, 0
    try:
        job = client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(STYLES[0])), "caption": None}],
                            {}, "classic", "paper", 256, 6, 1.0, 3, 0, False, api_name="/generate")
        with pytest.raises(AppError) as info:
            job.result(timeout=120)
    finally:
        disk.full = False
    assert disk.hits >= 1  # the full disk was hit while writing this stage's pictures
    assert _broken_files(cache) == []
    message = str(info.value)
    assert "The server's disk is full, so this run's pictures could not be saved; try again later." in message
    assert "has raised an exception" not in message
    statuses = [str(o[1]) for o in job.outputs()]
    assert "Failed:" in statuses[-1] and "disk is full" in statuses[-1]
    pipe.full_at = None  # room again: the next run completes
    final = client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(STYLES[0])), "caption": None}],
                          {}, "classic", "paper", 256, 6, 1.0, 3, 0, False, api_name="/generate").result(timeout=120)
    assert "done in" in str(final[1])

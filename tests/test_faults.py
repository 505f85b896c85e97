"""Faults: a run stopped by its user ends within one step and frees its memory; models that cannot load leave the
app painting with the classic engine and saying why; a full disk gives one clear error and no partial file.

Library level (Pipeline, cli.main, app functions) and through the real app (`python app.py` in a subprocess,
started when this module begins so that it boots while the library tests run).
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import importlib.util
import io
import os
import sys
import time
import tracemalloc
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegallery import cli
from stylegallery.config import preset
from stylegallery.errors import Cancelled
from stylegallery.pipeline import Done, Matched, Pipeline, Preview, Result, Segmented
from stylegallery.types import Match


REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "gallery"
CONTENT = GALLERY / "content" / "chelsea.jpg"
STYLES = [GALLERY / "style" / "starry-swirls.png", GALLERY / "style" / "rose-window.png"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bench = _load("load_test", REPO / "benchmarks" / "load_test.py")


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
    from tests.diffusion_fixtures import random_image, tiny_paths, tiny_settings

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


# ---- (b) models that cannot load ------------------------------------------------------------------------

def test_unloadable_diffusion_models_fall_back_to_classic_with_a_clear_status(server, client):
    from gradio_client import handle_file

    at = bench.output_positions(bench.api_config(server.url))
    job = client.submit(handle_file(str(CONTENT)), [{"image": handle_file(str(STYLES[0])), "caption": None}],
                        {}, "diffusion", "paper", 256, 6, 1.0, 150, 0, False, api_name="/generate")
    final = job.result(timeout=300)
    status = str(final[at["status"]])
    assert "<b>classic</b> engine (the diffusion models could not be loaded" in status and "done in" in status
    assert "sd_model" in status and "\n" not in status  # says which model and stays one line
    with Image.open(final[at["result"]]) as picture:
        assert max(picture.size) == 256
    assert bench.get(server.url + "/")[0] == 200


@pytest.fixture(scope="module")
def app():
    pytest.importorskip("gradio")
    return _load("app", REPO / "app.py")


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

    monkeypatch.setattr(app, "EXPORT_DIR", tmp_path / "exports")
    missing = tmp_path / "no-such-model"
    monkeypatch.setenv("STYLEGALLERY_SD_MODEL", str(missing))
    monkeypatch.setenv("STYLEGALLERY_ALLOW_CPU_DIFFUSION", "1")
    with pytest.warns(UserWarning, match="classic engine paints instead"):
        outputs = list(app.generate(str(uploads[0]), [(str(uploads[1]), None)], {}, "diffusion", "paper", 256, 6,
                                    1.0, 150, 0, False, gr.Request()))
    statuses = [str(o[app.OUTPUTS.index("status")]) for o in outputs]
    assert "done in" in statuses[-1] and "<b>classic</b>" in statuses[-1]
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


class _OneRunPipeline:
    """The pipeline's events on tiny arrays, so that only the export is under test."""

    reached_done = False

    def resolve_engine(self, settings):
        return "classic", "test"

    def run(self, content, styles, settings, overrides=None, should_stop=None):
        image = np.random.default_rng(0).uniform(0, 1, (48, 64, 3)).astype(np.float32)  # (H, W, 3)
        labels = (np.arange(8)[None, :].repeat(6, 0) >= 4).astype(np.int32)  # (h, w) = (6, 8): two regions
        matches = [Match(0, 0, 0, 0.5, {"statistical": 0.5}), Match(1, 0, 1, 0.4, {"statistical": 0.4})]
        timings = {"analyze": 0.1, "segment": 0.1, "match": 0.1, "transfer": 0.1, "total": 0.4}
        yield Segmented("classic", "test", image, labels, [image], [labels], timings)
        yield Matched(matches, timings)
        self.reached_done = True
        yield Done(Result(1 - image, image, [image], labels, [labels], matches, timings, "classic", "test", settings))



def _generate_on_a_full_disk(app, uploads, monkeypatch, tmp_path) -> BaseException | None:
    import gradio as gr

    pipe = _OneRunPipeline()
    monkeypatch.setattr(app, "EXPORT_DIR", tmp_path / "exports")
    monkeypatch.setattr(app, "get_pipeline", lambda: pipe)
    monkeypatch.setattr(Image.Image, "save", _partial_save)
    content, style = uploads
    error = None
    try:
        list(app.generate(str(content), [(str(style), None)], {}, "classic", "paper", 256, 6, 1.0, 3, 0, False,
                          gr.Request()))
    except BaseException as exc:  # noqa: BLE001 (the test inspects whatever the handler raised)
        error = exc
    if not pipe.reached_done:  # the failure must come from the export, not earlier
        raise RuntimeError(f"the run stopped before the export: {error!r}")
    return error


def test_app_run_on_a_full_disk_leaves_no_partial_download(app, uploads, monkeypatch, tmp_path):
    error = _generate_on_a_full_disk(app, uploads, monkeypatch, tmp_path)
    monkeypatch.undo()
    assert error is not None  # the run cannot pretend it succeeded
    broken = []
    for path in (tmp_path / "exports").rglob("*"):
        if path.is_file():
            try:
                with Image.open(path) as picture:
                    picture.load()
            except OSError:
                broken.append(path.name)
    assert broken == []


def test_app_run_on_a_full_disk_reports_it_as_a_page_error(app, uploads, monkeypatch, tmp_path):
    import gradio as gr

    error = _generate_on_a_full_disk(app, uploads, monkeypatch, tmp_path)
    assert isinstance(error, gr.Error) and "No space left on device" in str(error), repr(error)

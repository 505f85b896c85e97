"""Shared test set-up: offline environment, markers, the dev gallery location, and the web tests' fixtures (their
helpers are in tests/fixtures.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]


def dev_gallery() -> Path | None:
    """../shared/gallery-dev (or $STYLEGALLERY_DEV_GALLERY) when present, else None."""
    candidates = [os.environ.get("STYLEGALLERY_DEV_GALLERY"), REPO.parent / "shared" / "gallery-dev"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "content").is_dir() and (Path(candidate) / "style").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def gallery_dev() -> Path:
    path = dev_gallery()
    if path is None:
        pytest.skip("../shared/gallery-dev is not present")
    return path


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """app.py on a FakePipeline, with gradio's upload folder in tmp_path holding copies of CONTENT and STYLES, on a
    machine without a GPU where `auto` paints with the classic engine."""
    import app
    from stylegallery import request
    from tests.fixtures import CONTENT, STYLES, FakePipeline

    pipe = FakePipeline()
    monkeypatch.setattr(app, "get_pipeline", lambda: pipe)
    monkeypatch.setattr(request, "detect_machine", lambda: request.Machine(None, "no GPU found"))
    monkeypatch.setattr(request, "missing_packages", lambda name: None if name in ("classic", "diffusion") else
                        f"the {name} engine's packages are not installed")
    uploads = tmp_path / "uploads"  # gradio's upload folder (and cache: the run's pictures go there too)
    uploads.mkdir()
    for path in (CONTENT, *STYLES):
        shutil.copy(path, uploads / path.name)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    return pipe


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = os.environ.get("RUN_SLOW") == "1"
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="needs RUN_SLOW=1 (real weights or minutes of work)"))
        if "gpu" in item.keywords:
            try:
                import torch

                has_cuda = torch.cuda.is_available()
            except ImportError:
                has_cuda = False
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def pytest_configure(config: pytest.Config) -> None:
    # The tiny test models gain nothing from intra-op threads, and on a shared 2-core machine torch's thread
    # pool spin-waits behind other processes (10-30x slower). Product code keeps torch's default.
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)

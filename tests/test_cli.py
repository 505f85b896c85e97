"""The command line contract (DESIGN.md): outputs, exit codes, one-line errors, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegallery import cli
from stylegallery.config import ClassicSettings
from tests.conftest import REPO


def _write_image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.float32)
    base[:, : w // 2] = rng.uniform(0, 1, 3)
    base[:, w // 2:] = rng.uniform(0, 1, 3)
    base[h // 3: 2 * h // 3, w // 4: 3 * w // 4] = rng.uniform(0, 1, 3)
    noise = rng.normal(0, 0.05, base.shape)
    Image.fromarray((np.clip(base + noise, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "content": _write_image(tmp_path / "content.png", 120, 80, 0),
        "style1": _write_image(tmp_path / "style1.png", 96, 96, 1),
        "style2": _write_image(tmp_path / "style2.png", 80, 100, 2),
    }
    (tmp_path / "out").mkdir()
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(full)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:3000])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (16, 16)).save(tiny)
    return {"missing": tmp_path / "missing.png", "empty": empty, "text": text, "truncated": truncated, "tiny": tiny}


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "tiny"])
@pytest.mark.parametrize("position", ["content", "style"])
def test_bad_images_exit_2_and_write_nothing(files, tmp_path, capsys, case, position) -> None:
    bad = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    content, style = (bad, files["style1"]) if position == "content" else (files["content"], bad)
    code, err = _run(["run", str(content), str(style), "-o", str(out_dir / "o.png"), "--engine", "classic",
                      "--size", "96", "--mask-out", str(out_dir / "m.png"), "--matches-out",
                      str(out_dir / "m.json")], capsys)
    _assert_one_line_error(code, err)
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["-o", "{out}/result.txt"], "must end in"),
        (["-o", "{tmp}/no/such/folder/o.png"], "does not exist"),
        (["-o", "{out}/o.png", "--size", "10"], "size"),
        (["-o", "{out}/o.png", "--max-regions", "1"], "--max-regions 1 is invalid: expected an integer in 2..32"),
        (["-o", "{out}/o.png", "--seed", "-1"], "--seed -1 is invalid"),
        (["-o", "{out}/o.png", "--content-weight", "-2", "--engine", "classic"], "--content-weight -2 is out of"),
        (["-o", "{out}/o.png", "--content-weight", "6"], "choose 0 to 5 (a multiple of the preset's"),
        (["-o", "{out}/o.png", "--steps", "50", "--engine", "classic"], "--steps 50 is out of range for the classic"),
        (["-o", "{out}/o.png", "--face-boost", "-1", "--engine", "classic"], "--face-boost -1 is out of range"),
        (["-o", "{out}/o.png", "--override", "2:1"], "is not R:S:SR"),
        (["-o", "{out}/o.png", "--override", "0:1:1"], "is not R:S:SR"),
        (["-o", "{out}/o.png", "--override", "9:1:1"],
         "The override for region R9 cannot be used: this run found regions R1"),
        (["-o", "{out}/o.png", "--region-strength", "0:0.5"], "is not R:S, e.g. 2:0.3"),
        (["-o", "{out}/o.png", "--region-strength", "1:0.5", "--region-strength", "1:0.2"],
         "--region-strength gives a region twice"),
        (["-o", "{out}/o.png", "--region-strength", "30:0.5", "--engine", "neural"], "names region R30, but the"),
        (["-o", "{out}/o.png", "--assignment", "greedy"], "invalid choice"),
        (["-o", "{out}/o.png", "--matches-out", "{out}/m.png"], "must end in .json"),
        (["-o", "{out}/o.png", "--mask-out", "{out}/o.png"], "share one path"),
        (["-o", "{out}/o.png", "--engine", "quantum"], "invalid choice"),
        (["-o", "{out}/o.png", "--dtype", "half"], "invalid choice"),
        (["-o", "{out}/o.png", "--no-such-flag"], "unrecognized"),
    ],
)
def test_bad_flags_exit_2_with_one_line(files, tmp_path, capsys, extra, pattern) -> None:
    out_dir = tmp_path / "out"
    argv = ["run", str(files["content"]), str(files["style1"])]
    argv += [a.format(out=out_dir, tmp=tmp_path) for a in extra]
    code, err = _run(argv, capsys)
    _assert_one_line_error(code, err)
    assert pattern in err
    if pattern in ("unrecognized", "invalid choice"):  # argparse's own errors point at the subcommand's help
        assert "(see `python -m stylegallery run --help`)" in err
    assert os.listdir(out_dir) == []


def _plan(argv: list[str]):
    from stylegallery.request import plan

    return plan(cli.request_from_args(cli.build_parser().parse_args(["run", "c.png", "s.png", "-o", "o.png", *argv])))


def test_stage_flags_reach_the_settings_of_the_engine_that_paints() -> None:
    flags = ["--assignment", "argmax", "--face-boost", "0", "--steps", "5", "--content-weight", "2"]
    classic = _plan([*flags, "--engine", "classic"]).settings
    assert classic.matching.assignment == "argmax"
    assert (classic.classic.face_boost, classic.classic.iterations, classic.classic.content_weight) == (0.0, 5, 2.0)
    diffusion = _plan([*flags, "--engine", "diffusion"])
    # content weight is a multiple of the preset's value on every engine: 2 x 0.26 here, 2 x 1.0 on classic
    assert (diffusion.settings.diffusion.steps, diffusion.settings.diffusion.content_weight) == (5, 0.52)
    assert diffusion.settings.classic.iterations == ClassicSettings().iterations  # only the painting engine's
    assert diffusion.ignored == ("face_boost",)  # the diffusion engine has no face protection


def test_a_knob_the_engine_does_not_take_is_noted(files, tmp_path, capsys) -> None:
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(tmp_path / "out" / "o.png"),
                      "--engine", "diffusion", "--face-boost", "1", "--sd-model", str(tmp_path / "none")], capsys)
    assert code == 2  # the model folder does not exist, but the note came first
    assert "note: --face-boost does not apply to the diffusion engine; it was ignored" in err


def test_sam_model_and_resident_are_diffusion_flags(files, tmp_path, capsys) -> None:
    diffusion = _plan(["--engine", "diffusion", "--sam-model", "facebook/sam-vit-base", "--resident", "float32"])
    assert (diffusion.settings.diffusion.sam_model, diffusion.settings.diffusion.resident) == (
        "facebook/sam-vit-base", "float32")
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(tmp_path / "o.png"),
                      "--engine", "classic", "--size", "64", "--steps", "1", "--sam-model", str(tmp_path / "sam"),
                      "--resident", "dtype", "-q"], capsys)
    assert code == 0, err
    assert err.splitlines() == ["note: --sam-model does not apply to the classic engine; it was ignored",
                                "note: --resident does not apply to the classic engine; it was ignored"]
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(tmp_path / "o.png"),
                      "--resident", "half"], capsys)
    _assert_one_line_error(code, err)
    assert "--resident" in err


def test_override_flags_are_page_numbers(files, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), str(files["style2"]), "-o",
                      str(out / "o.png"), "--engine", "classic", "--size", "96", "--override", "1:2:1",
                      "--matches-out", str(out / "m.json")], capsys)
    assert code == 0, err
    doc = json.loads((out / "m.json").read_text())
    first = next(m for m in doc["matches"] if m["content_region"] == 0)
    assert (first["style_image"], first["style_region"], first["source"]) == (1, 0, "user")
    assert [s["file"] for s in doc["styles"]] == [files["style1"].name, files["style2"].name]
    assert doc["content"] == files["content"].name


def test_auto_says_which_engine_runs_even_when_quiet(files, tmp_path, capsys) -> None:
    run_plan = _plan([])
    engine, reason = run_plan.engine, run_plan.reason
    if engine != "classic":
        pytest.skip(f"auto picks {engine} here")
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(tmp_path / "out" / "o.png"),
                      "--size", "96", "-q"], capsys)
    assert code == 0, err
    assert err.strip() == f"note: engine classic ({reason})"


@pytest.mark.parametrize("argv", [["eval", "c.png"], ["eval", "c.png", "--styles"], ["bench", "--sizes", "x"],
                                  ["bench", "--repeats", "0"], ["bench", "--engine", "quantum"]])
def test_eval_and_bench_bad_arguments_exit_2_with_one_line(capsys, argv) -> None:
    code, err = _run(argv, capsys)
    _assert_one_line_error(code, err)
    assert f"stylegallery {argv[0]} --help" in err


def test_classic_end_to_end_writes_every_output(files, tmp_path, capsys) -> None:
    pytest.importorskip("stylegallery.engines.classic")
    out_dir = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), str(files["style2"]),
                      "-o", str(out_dir / "result.png"), "--engine", "classic", "--size", "128",
                      "--mask-out", str(out_dir / "mask.png"), "--matches-out", str(out_dir / "matches.json"),
                      "--figure-out", str(out_dir / "panel.png"), "--seed", "3", "--flat-mask-out",
                      str(out_dir / "flat.png")], capsys)
    assert code == 0, err
    assert "engine: classic" in err and "stage 1" in err and "stage 2" in err
    result = Image.open(out_dir / "result.png")
    assert result.size == (128, 88)  # 120x80 content at long side 128, multiples of 8: aspect kept
    mask = Image.open(out_dir / "mask.png")  # the labelled map: the photo under the regions, a legend below
    assert mask.width == result.width and mask.height > result.height and mask.mode == "RGB"
    photo = np.asarray(Image.open(files["content"]).convert("RGB").resize(result.size)).astype(float)
    tinted = np.asarray(mask.convert("RGB"))[: result.height].astype(float)
    assert np.corrcoef(photo.mean(-1).ravel(), tinted.mean(-1).ravel())[0, 1] > 0.3  # the photo shows through
    doc = json.loads((out_dir / "matches.json").read_text())
    flat = np.asarray(Image.open(out_dir / "flat.png").convert("RGB"))
    assert flat.shape[:2] == (result.height, result.width)
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == doc["content_regions"]  # one flat colour per region
    assert doc["engine"] == "classic" and doc["content_regions"] >= 1
    assert len(doc["matches"]) == doc["content_regions"]
    for m in doc["matches"]:
        assert 0 <= m["content_region"] < doc["content_regions"]
        assert m["style_image"] in (0, 1)
        assert set(m["terms"]) == {"statistical", "semantic", "positional"}
        assert isinstance(m["score"], float)
    assert set(doc["timings"]) >= {"analyze", "segment", "match", "transfer", "total"}
    assert Image.open(out_dir / "panel.png").size == (1920, 1080)
    assert sorted(os.listdir(out_dir)) == ["flat.png", "mask.png", "matches.json", "panel.png", "result.png"]


def test_aspect_square_gives_the_official_square_working_size(files, tmp_path, capsys) -> None:
    pytest.importorskip("stylegallery.engines.classic")
    assert _plan([]).settings.image.aspect == "keep"
    out_dir = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out_dir / "result.png"),
                      "--engine", "classic", "--size", "64", "--aspect", "square", "--flat-mask-out",
                      str(out_dir / "mask.png")], capsys)
    assert code == 0, err
    assert Image.open(out_dir / "result.png").size == Image.open(out_dir / "mask.png").size == (64, 64)
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out_dir / "r.png"),
                      "--aspect", "round"], capsys)
    _assert_one_line_error(code, err)


def test_dtype_flag_reaches_the_settings() -> None:
    assert _plan(["--engine", "diffusion", "--device", "cpu"]).settings.diffusion.dtype == "float32"
    assert _plan(["--dtype", "bfloat16", "--engine", "diffusion"]).settings.diffusion.dtype == "bfloat16"


def test_real_entry_point_runs_as_a_module(files, tmp_path) -> None:
    """`python -m stylegallery` itself: exit 2 and one line on a bad file, without importing torch first."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "stylegallery", "run", str(tmp_path / "nope.png"),
                           str(files["style1"]), "-o", str(tmp_path / "out" / "o.png")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path / "out") == []


# ---- outputs: all or nothing, the user's files kept, the normal mode, inputs never overwritten ------------

@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_a_failure_on_the_second_output_leaves_the_existing_first_one_untouched(files, tmp_path, capsys, monkeypatch,
                                                                                 call) -> None:
    """out.png existed; the panel fails with ENOSPC while written (fsync) or while renamed into place (replace)."""
    pytest.importorskip("stylegallery.engines.classic")
    import errno

    out_dir = tmp_path / "out"
    old = (out_dir / "out.png")
    Image.new("RGB", (7, 5), (1, 2, 3)).save(old)
    before = old.read_bytes()
    real = getattr(os, call)
    seen: list[object] = []

    def failing(*args, **kwargs):
        if call == "fsync" or str(out_dir) in str(args[-1]):  # count only the writes of the outputs
            seen.append(args)
            if len(seen) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, call, failing)
    code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(old), "--figure-out",
                      str(out_dir / "panel.png"), "--engine", "classic", "--size", "64", "-q"], capsys)
    monkeypatch.undo()
    _assert_one_line_error(code, err)
    assert "No space left on device" in err and "panel.png" in err
    assert len(seen) >= 2
    assert old.read_bytes() == before  # was deleted: the CLI unlinked outputs already renamed over the user's files
    assert os.listdir(out_dir) == ["out.png"]  # no panel, no temporary or backup file


def test_outputs_get_the_umask_mode_and_a_replaced_file_keeps_its_mode(files, tmp_path, capsys) -> None:
    pytest.importorskip("stylegallery.engines.classic")
    out_dir = tmp_path / "out"
    kept = out_dir / "m.json"
    kept.write_text("{}")
    kept.chmod(0o604)
    mask = os.umask(0o027)
    try:
        code, err = _run(["run", str(files["content"]), str(files["style1"]), "-o", str(out_dir / "o.png"),
                          "--matches-out", str(kept), "--engine", "classic", "--size", "64", "-q"], capsys)
    finally:
        os.umask(mask)
    assert code == 0, err
    assert (out_dir / "o.png").stat().st_mode & 0o777 == 0o640  # 0o666 & ~0o027, was 0o600 (mkstemp's)
    assert kept.stat().st_mode & 0o777 == 0o604 and json.loads(kept.read_text())["engine"] == "classic"


@pytest.mark.parametrize(("flag", "target", "what"), [
    ("-o", "content", "the content image"),
    ("--mask-out", "style1", "style image 1"),
    ("--figure-out", "style2_via_dots", "style image 2"),
])
def test_an_output_that_is_an_input_is_refused(files, tmp_path, capsys, flag, target, what) -> None:
    paths = {"content": files["content"], "style1": files["style1"],
             "style2_via_dots": tmp_path / "out" / ".." / "style2.png"}
    before = {p: p.read_bytes() for p in files.values()}
    argv = ["run", str(files["content"]), str(files["style1"]), str(files["style2"]), "--engine", "classic",
            "--size", "64"]
    argv += [flag, str(paths[target])] if flag == "-o" else ["-o", str(tmp_path / "out" / "o.png"), flag,
                                                             str(paths[target])]
    code, err = _run(argv, capsys)
    _assert_one_line_error(code, err)
    assert f"{flag} {str(paths[target])!r} is {what}" in err and "would overwrite your input" in err
    assert {p: p.read_bytes() for p in files.values()} == before
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("where", ["content", "output", "folder"])
def test_paths_too_long_for_the_system_exit_2_with_one_line(files, tmp_path, capsys, where) -> None:
    long, out = "a" * 300, tmp_path / "out"
    argv = ["run", str(files["content"]), str(files["style1"]), "-o", str(out / "o.png")]
    if where == "content":
        argv[1] = str(tmp_path / f"{long}.png")
    elif where == "output":
        argv[4] = str(out / f"{long}.png")
    else:
        argv[4] = str(out / long / "o.png")
    code, err = _run(argv, capsys)
    _assert_one_line_error(code, err)
    assert "(File name too long); use a shorter or different path" in err
    assert os.listdir(out) == []


def test_content_mask_replaces_stage_1_and_presets_include_hyper(files, tmp_path, capsys) -> None:
    mask = np.zeros((80, 120), np.uint8)
    mask[:, 60:] = 200  # two regions: the left and right halves
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    code, err = _run(["run", str(files["content"]), str(files["style1"]), str(files["style2"]), "-o",
                      str(out / "o.png"), "--engine", "classic", "--size", "96", "--content-mask",
                      str(tmp_path / "mask.png"), "--matches-out", str(out / "m.json")], capsys)
    assert code == 0, err
    assert json.loads((out / "m.json").read_text())["content_regions"] == 2
    assert _plan(["--preset", "hyper", "--engine", "diffusion"]).settings.diffusion.scheduler == "euler_trailing"
    assert _plan(["--merge-rule", "union_find"]).settings.regions.merge_rule == "union_find"

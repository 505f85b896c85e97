"""`python -m stylegallery batch`: jobs files and folders, one pipeline, resuming, failures, Ctrl-C, many processes,
and `eval --manifest`."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegallery import batch, cli
from stylegallery.errors import InputError
from stylegallery.request import Request
from tests.fixtures import CONTENT, REPO, STYLES, free_port


FAST = ["--engine", "classic", "--preset", "fast", "--size", "64"]


def _photos(folder: Path, n: int = 3) -> list[Path]:
    """`n` small photos (the shipped cat, cropped differently) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    cat = Image.open(CONTENT).convert("RGB")
    paths = []
    for i in range(n):
        path = folder / f"photo{i}.png"
        cat.crop((20 * i, 0, 300 + 20 * i, 200)).resize((96, 64)).save(path)
        paths.append(path)
    return paths


def _jobs_file(tmp_path: Path, lines: list[dict]) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / batch.MANIFEST).read_text().splitlines()]


# ---- reading jobs ----------------------------------------------------------------------------------------------


def test_jsonl_jobs_resolve_paths_from_their_file_and_name_outputs_predictably(tmp_path) -> None:
    path = _jobs_file(tmp_path, [
        {"content": "a/photo.jpg", "styles": ["s1.png", "s2.png"]},
        {"content": "a/photo.jpg", "styles": ["s1.png", "s2.png"], "strength": 0.5},  # same pair: -2
        {"content": "/abs/b.png", "styles": "s1.png", "id": "mine", "overrides": ["2:1:3", [1, 2, 1]], "seed": 7},
    ])
    jobs = batch.read_jobs(path)
    assert [j.id for j in jobs] == ["photo__s1+s2", "photo__s1+s2-2", "mine"]
    assert jobs[0].content == str(tmp_path / "a" / "photo.jpg") and jobs[2].content == "/abs/b.png"
    assert jobs[0].styles == (str(tmp_path / "s1.png"), str(tmp_path / "s2.png"))
    assert jobs[1].knobs == (("strength", 0.5),) and jobs[2].overrides == ((2, 1, 3), (1, 2, 1))
    base = Request(engine="classic")
    assert jobs[2].request(base).seed == 7 and jobs[0].key(base) != jobs[1].key(base)  # settings are in the key


def test_csv_jobs_split_styles_and_read_numbers(tmp_path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("content,styles,strength,keep_colours,seed,overrides\n"
                    "p.png,a.png;b.png,0.3,true,5,2:1:1 3:2:1\n"
                    "q.png,a.png,,,,\n")
    first, second = batch.read_jobs(path)
    assert first.styles == (str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert dict(first.knobs) == {"strength": 0.3, "keep_colours": True, "seed": 5}
    assert first.overrides == ((2, 1, 1), (3, 2, 1)) and second.knobs == () and second.id == "q__a"


def test_a_folder_of_photos_takes_the_styles_flag(tmp_path) -> None:
    photos = _photos(tmp_path / "photos", 2)
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    jobs = batch.read_jobs(tmp_path / "photos", [str(STYLES[0])])
    assert [j.id for j in jobs] == ["photo0", "photo1"] and [j.content for j in jobs] == [str(p) for p in photos]
    with pytest.raises(InputError, match="give the styles to apply with --styles"):
        batch.read_jobs(tmp_path / "photos")


def test_relative_folder_and_styles_are_taken_from_the_working_folder(tmp_path, monkeypatch) -> None:
    _photos(tmp_path / "photos", 1)
    (tmp_path / "style.png").write_bytes(STYLES[0].read_bytes())
    monkeypatch.chdir(tmp_path)
    (job,) = batch.read_jobs("photos", ["style.png"])  # held as absolute paths: the same files from any folder
    assert job.content == str(tmp_path / "photos" / "photo0.png") and job.styles == (str(tmp_path / "style.png"),)
    with pytest.raises(InputError, match="--styles 'stlye.png' is not a file; check the path"):
        batch.read_jobs("photos", ["stlye.png"])  # a typo in the command: refused before any job runs


@pytest.mark.parametrize("text, message", [
    ('{"content": "p.png", "styles": ["a.png"]}\n{"content": "p.png", "style": ["a.png"]}\n',
     r"jobs.jsonl line 2: unknown field 'style'; a job may give id, content, styles"),
    ('{"content": "p.png", "styles": ["a.png"]}\nnot json\n', "jobs.jsonl line 2 is not valid JSON"),
    ('["p.png"]\n', "jobs.jsonl line 1 is not a JSON object"),
    ('{"styles": ["a.png"]}\n', 'line 1: give the content photo as "content"'),
    ('{"content": "p.png", "styles": []}\n', "line 1: give one or more style images"),
    ('{"content": "p.png", "styles": ["a.png"], "id": "../evil"}\n', "id '../evil' cannot name a file"),
    ('{"content": "p.png", "styles": ["a.png"], "id": "x"}\n{"content": "q.png", "styles": ["a.png"], "id": "x"}\n',
     "line 2: id 'x' is given twice"),
    ('{"content": "p.png", "styles": ["a.png"], "overrides": ["2-1-3"]}\n', "line 1: override '2-1-3' is not R:S:SR"),
    ("\n\n", "holds no job"),
])
def test_a_malformed_jobs_file_is_refused_naming_the_line(tmp_path, text, message) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        batch.read_jobs(path)


def test_cli_refuses_a_bad_jobs_file_in_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"content": "p.png", "styles": ["a.png"], "strenght": 1}\n')
    assert cli.main(["batch", str(path), "--out", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: jobs.jsonl line 1: unknown field 'strenght'")
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    assert cli.main(["batch", str(path.with_suffix(".txt")), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "is not a jobs file or a folder" in capsys.readouterr().err


# ---- running ---------------------------------------------------------------------------------------------------


def test_batch_writes_results_regions_and_a_manifest_and_goes_on_past_a_bad_job(tmp_path, capsys) -> None:
    photos = _photos(tmp_path / "in", 2)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    jobs = _jobs_file(tmp_path, [
        {"content": str(photos[0]), "styles": [str(s) for s in STYLES], "id": "one"},
        {"content": str(broken), "styles": [str(STYLES[0])], "id": "bad"},
        {"content": str(photos[1]), "styles": [str(STYLES[1]), str(STYLES[0])], "id": "two", "overrides": ["1:1:1"]},
    ])
    out = tmp_path / "out"
    assert cli.main(["batch", str(jobs), "--out", str(out), *FAST]) == 1  # one job failed
    err = capsys.readouterr().err
    assert "error: job bad: " in err and "2 done, 0 already done, 1 failed of 3 jobs" in err
    records = {r["id"]: r for r in _records(out)}
    assert list(records) == ["one", "bad", "two"]  # one line per job, in job order
    assert records["bad"]["status"] == "error" and "broken.png" in records["bad"]["error"]
    assert "\n" not in records["bad"]["error"] and not (out / "bad.png").exists()
    for name in ("one", "two"):
        record = records[name]
        assert record["status"] == "ok" and record["engine"] == "classic" and record["error"] is None
        image = Image.open(out / record["output"])
        assert image.size == tuple(record["size"]) and max(image.size) == 64
        with np.load(out / record["regions"]) as saved:
            assert saved["content_labels"].max() + 1 == record["content_regions"]
            assert sorted(saved.files) == ["content_labels"] + [f"style_labels_{i}" for i in range(2)]
        assert {"analyze", "segment", "match", "transfer", "total"} <= set(record["timings"])
    assert records["two"]["matches"][0]["source"] == "user" and records["two"]["overrides"] == [[1, 1, 1]]
    assert not list(out.glob("*.part-*")) and not [p for p in out.iterdir() if ".tmp" in p.name]


def test_rerunning_skips_finished_jobs_and_runs_changed_or_missing_ones(tmp_path, capsys) -> None:
    _photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "--styles", str(STYLES[0]), "--out", str(out), *FAST]
    assert cli.main(args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert sorted(stamps) == ["photo0.png", "photo1.png", "photo2.png"]
    capsys.readouterr()

    (out / "photo1.png").unlink()  # a result gone: that job runs again
    assert cli.main(args) == 0
    assert "1 done, 2 already done, 0 failed of 3 jobs" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name != "photo1.png"} == \
        {k: v for k, v in stamps.items() if k != "photo1.png"}
    assert len(_records(out)) == 3  # the merged manifest keeps one line per job

    assert cli.main([*args[:-1], "96"]) == 0  # other settings: every job runs again
    assert "3 done, 0 already done" in capsys.readouterr().err
    assert all(r["request"]["size"] == 96 for r in _records(out))


def test_one_pipeline_serves_the_batch_and_reuses_style_analyses(tmp_path) -> None:
    _photos(tmp_path / "in", 3)
    summary = batch.run_batch(batch.read_jobs(tmp_path / "in", [str(s) for s in STYLES]), tmp_path / "out",
                              Request(engine="classic", preset="fast", size=64))
    # 3 contents + 2 styles analysed once each; the styles come from the cache in jobs 2 and 3
    assert (summary.ok, summary.cache_misses, summary.cache_hits) == (3, 5, 4)
    assert summary.hit_rate == pytest.approx(4 / 9)


def test_ctrl_c_leaves_no_partial_file_and_the_next_run_goes_on(tmp_path, monkeypatch, capsys) -> None:
    from stylegallery import images

    _photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    real = images.write_files_atomic
    calls = []

    def interrupted(files):  # the second job is interrupted while its files are being written
        calls.append(1)
        if len(calls) == 2:
            def boom(handle):
                handle.write(b"half")
                raise KeyboardInterrupt
            files = [(files[0][0], boom), *files[1:]]
        return real(files)

    monkeypatch.setattr(images, "write_files_atomic", interrupted)
    args = ["batch", str(tmp_path / "in"), "--styles", str(STYLES[0]), "--out", str(out), *FAST]
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert "error: interrupted after 1 of 3 jobs; no partial file was left: re-run the same command" in err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "photo0.png", "photo0.regions.npz"]
    assert [r["id"] for r in _records(out)] == ["photo0"]

    monkeypatch.setattr(images, "write_files_atomic", real)
    assert cli.main(args) == 0
    assert "2 done, 1 already done, 0 failed of 3 jobs" in capsys.readouterr().err


def test_a_real_ctrl_c_mid_batch_exits_130_and_leaves_only_whole_jobs(tmp_path) -> None:
    import time

    _photos(tmp_path / "in", 8)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "stylegallery", "batch", str(tmp_path / "in"), "--styles", str(STYLES[0]),
               "--out", str(out), "--engine", "classic", "--size", "128", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    part = out / batch.PART.format(rank=0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (part.is_file() and part.read_text().count("\n") >= 2):
        time.sleep(0.05)  # two jobs finished: the third is under way
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stderr and "re-run the same command" in stderr and "Traceback" not in stderr
    names = sorted(p.name for p in out.iterdir())
    done = [r["id"] for r in _records(out)]
    assert 2 <= len(done) < 8 and names == sorted(["manifest.jsonl", *(f"{d}{ext}" for d in done
                                                                         for ext in (".png", ".regions.npz"))])
    assert cli.main(["batch", str(tmp_path / "in"), "--styles", str(STYLES[0]), "--out", str(out), "--engine",
                     "classic", "--size", "128", "-q"]) == 0
    assert len(_records(out)) == 8


def test_a_manifest_line_cut_short_is_skipped_and_does_not_swallow_the_next(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    part = out / batch.PART.format(rank=0)
    part.write_text('{"id": "a", "status": "ok"}\n{"id": "b", "sta')  # a crash mid-line
    assert list(batch.read_manifest(out)) == ["a"]
    batch._end_line(part)
    with open(part, "a") as handle:
        handle.write('{"id": "c", "status": "ok"}\n')
    assert list(batch.read_manifest(out)) == ["a", "c"]
    batch.merge_manifest(out)
    assert not part.exists() and [r["id"] for r in _records(out)] == ["a", "c"]


def test_a_second_batch_into_the_same_folder_is_refused(tmp_path) -> None:
    import fcntl

    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / batch.PART.format(rank=0), "a") as held:  # a batch running into this folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another batch is writing to .*; wait for it to finish"):
            batch.run_batch(batch.read_jobs(tmp_path / "in", [str(STYLES[0])]), out, Request(engine="classic"))
    assert batch.run_batch(batch.read_jobs(tmp_path / "in", [str(STYLES[0])]), out,
                           Request(engine="classic", preset="fast", size=64)).ok == 1


def test_progress_bar_counts_jobs_rate_and_eta_and_quiet_prints_nothing(tmp_path, capsys) -> None:
    stream = io.StringIO()
    bar = batch.ProgressBar(stream)
    job = batch.Job(index=0, id="photo0", content="p", styles=("s",))
    bar(batch.Summary(total=4), None, "start")
    bar(batch.Summary(total=4, skipped=1), job, "skipped")
    bar(batch.Summary(total=4, skipped=1, ok=1, seconds=30.0), job, "ok")
    bar(batch.Summary(total=4, skipped=1, ok=1, failed=1, seconds=60.0), job, "error")
    lines = stream.getvalue().splitlines()  # not a terminal: a line per job run, none for start or skipped
    assert lines == ["[##########..........] 2/4 jobs  1 already done  2.0 jobs/min  ETA 1m00s  photo0",
                     "[###############.....] 3/4 jobs  1 already done  1 failed  2.0 jobs/min  ETA 30s  photo0: error"]
    _photos(tmp_path / "in", 1)
    assert cli.main(["batch", str(tmp_path / "in"), "--styles", str(STYLES[0]), "--out", str(tmp_path / "out"),
                     *FAST, "-q"]) == 0
    assert "jobs/min" not in capsys.readouterr().err


def test_one_process_without_a_launcher() -> None:
    processes = batch.detect_processes({})
    assert (processes.index, processes.count, processes.main) == (0, 1, True)
    assert processes.split([0, 1, 2]) == [0, 1, 2]


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None or importlib.util.find_spec("torch") is None,
                    reason="many processes need accelerate and torch (requirements-dev.txt)")
def test_two_processes_split_the_jobs_each_runs_once_and_the_manifests_merge(tmp_path) -> None:
    # torchrun starts two processes here; `accelerate launch --cpu --num_processes 2` starts one (research/scale.md)
    photos = _photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "stylegallery", "batch", str(tmp_path / "in"), "--styles", str(STYLES[0]),
               "--out", str(out), *FAST, "-q"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:  # no process may outlive the test: the launcher and both workers
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-2000:]
    records = _records(out)
    assert sorted(r["id"] for r in records) == [p.stem for p in photos]  # each job once
    assert sorted({r["process"] for r in records}) == [0, 1] and all(r["status"] == "ok" for r in records)
    assert not list(out.glob("manifest.part-*")) and len(list(out.glob("*.png"))) == 4


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="needs accelerate (requirements-dev.txt)")
def test_accelerate_launch_runs_the_batch(tmp_path) -> None:
    # the launcher users type; on a CPU-only machine it starts one process however many are asked
    # (research/scale.md), which then runs every job
    photos = _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
                           "stylegallery", "batch", str(tmp_path / "in"), "--styles", str(STYLES[0]), "--out",
                           str(out), *FAST, "-q"], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(r["id"] for r in _records(out)) == [p.stem for p in photos]


def test_eval_scores_a_batch_from_its_manifest(tmp_path, capsys) -> None:
    _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert cli.main(["batch", str(tmp_path / "in"), "--styles", *map(str, STYLES), "--out", str(out), *FAST,
                     "--region-strength", "1:0.5", "-q"]) == 0  # a setting that JSON holds as lists
    capsys.readouterr()
    assert cli.main(["eval", "--manifest", str(out / batch.MANIFEST)]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in table[2:4]]
    assert [r[0] for r in rows] == ["photo0", "photo1"] and all(r[2] == "classic" for r in rows)
    assert all(0 < float(r[3]) <= 1 and float(r[5]) > 0 for r in rows)  # SSIM, SW-Lab
    assert table[-1].split()[:3] == ["mean", "2", "pairs"]
    (out / "photo1.png").unlink()
    assert cli.main(["eval", "--manifest", str(out)]) == 2
    assert "job photo1:" in capsys.readouterr().err
    assert cli.main(["eval", "--manifest", str(tmp_path)]) == 2
    assert "is not a batch's manifest" in capsys.readouterr().err


# ---- what a newcomer's review found ------------------------------------------------------------------------------


def test_an_output_that_would_overwrite_an_input_is_refused_before_any_work(tmp_path, capsys) -> None:
    (photo,) = _photos(tmp_path / "w", 1)
    jobs = _jobs_file(tmp_path / "w", [{"content": "photo0.png", "styles": [str(STYLES[0])], "id": "photo0"}])
    before = photo.read_bytes()
    assert cli.main(["batch", str(jobs), "--out", str(tmp_path / "w"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "jobs.jsonl line 1: its output" in err and "is the content photo of jobs.jsonl line 1" in err
    assert "writing it would destroy an input; choose another --out" in err
    assert photo.read_bytes() == before and not (tmp_path / "w" / batch.MANIFEST).exists()


@pytest.mark.parametrize("line2, message", [
    ({"size": "256"}, "jobs.jsonl line 2: size '256' is invalid: expected a whole number"),
    ({"strength": 5}, "jobs.jsonl line 2: strength 5 is out of range for the neural engine"),
    ({"keep_colours": "false"}, "jobs.jsonl line 2: keep_colours 'false' is invalid: expected true or false"),
])
def test_a_bad_value_on_any_line_is_refused_before_any_work(tmp_path, capsys, line2, message) -> None:
    photos = _photos(tmp_path / "in", 2)
    jobs = _jobs_file(tmp_path, [{"content": str(photos[0]), "styles": [str(STYLES[0])]},
                                 {"content": str(photos[1]), "styles": [str(STYLES[0])], **line2}])
    out = tmp_path / "out"
    assert cli.main(["batch", str(jobs), "--out", str(out), "--engine", "neural", "--size", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not out.exists()


def test_resume_follows_the_images_not_the_path_text(tmp_path, monkeypatch, capsys) -> None:
    photos = _photos(tmp_path / "in", 2)
    args = ["batch", "in", "--styles", str(STYLES[0]), "--out", str(tmp_path / "out"), *FAST]
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 0
    monkeypatch.chdir(tmp_path / "in")  # the same files named from another folder: nothing to redo
    assert cli.main(["batch", ".", *args[2:]]) == 0
    assert "0 done, 2 already done" in capsys.readouterr().err
    Image.open(CONTENT).convert("RGB").resize((96, 64)).save(photos[1])  # another picture under the same name
    assert cli.main(["batch", ".", *args[2:]]) == 0
    assert "1 done, 1 already done" in capsys.readouterr().err


def test_eval_reads_exactly_the_manifest_it_is_given(tmp_path, capsys) -> None:
    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert cli.main(["batch", str(tmp_path / "in"), "--styles", str(STYLES[0]), "--out", str(out), *FAST, "-q"]) == 0
    jobs = _jobs_file(out, [{"content": "x.png", "styles": ["y.png"]}])  # a jobs file beside the manifest
    capsys.readouterr()
    assert cli.main(["eval", "--manifest", str(jobs)]) == 2
    assert "holds no finished job of a batch" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("p.png,a.png\nq.png,b.png\n", "line 1 must be the header naming the columns, e.g. content,styles"),
    ("content,styels\np.png,a.png\n", "line 1 must be the header"),
    ("content,styles,strenght\np.png,a.png,1\n", "line 1 (the header): unknown column 'strenght'"),
])
def test_csv_header_problems_name_line_1(tmp_path, text, message) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        batch.read_jobs(path)
    path.write_text("content, styles , seed\np.png, a.png ,3\n")  # spaces around names and cells
    (job,) = batch.read_jobs(path)
    assert job.styles == (str(tmp_path / "a.png"),) and job.knobs == (("seed", 3),)


def test_nothing_finished_leaves_no_manifest_and_a_failed_rerun_removes_the_old_result(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / batch.PART.format(rank=0)).write_text("")  # Ctrl-C before the first job ended
    batch.merge_manifest(out)
    assert list(out.iterdir()) == []
    photos = _photos(tmp_path / "in", 1)
    jobs = batch.read_jobs(tmp_path / "in", [str(STYLES[0])])
    assert batch.run_batch(jobs, out, Request(engine="classic", preset="fast", size=64)).ok == 1
    batch.merge_manifest(out)
    photos[0].write_bytes(b"no longer a picture")  # the job changes (its image) and now fails
    assert batch.run_batch(jobs, out, Request(engine="classic", preset="fast", size=64)).failed == 1
    batch.merge_manifest(out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl"]  # no stale result beside its error
    assert _records(out)[0]["status"] == "error"


def test_an_override_the_run_cannot_use_is_said_in_its_own_numbers(tmp_path) -> None:
    (photo,) = _photos(tmp_path / "in", 1)
    jobs = batch.read_jobs(_jobs_file(tmp_path, [{"content": str(photo), "styles": [str(STYLES[0])],
                                                   "overrides": ["9:1:1"]}]))
    summary = batch.run_batch(jobs, tmp_path / "out", Request(engine="classic", preset="fast", size=64))
    assert summary.failures[0][1].startswith("The override for region R9 cannot be used: this run found regions R1")


def test_ids_keep_letters_of_any_script() -> None:
    assert batch._safe_stem("phö to__stÿle é") == "phö_to__stÿle_é"
    assert batch._ID.fullmatch("façade-1") and not batch._ID.fullmatch("_hidden")

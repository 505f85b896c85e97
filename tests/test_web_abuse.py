"""A hostile visitor of the public app (issue 12): each probe of benchmarks/probe_web.py, bounded, against
`python app.py` in a subprocess on 127.0.0.1, and the payloads the app must word (never gradio's `error: null`).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from benchmarks import load_test as bench
from benchmarks import probe_web as probe


REPO = Path(__file__).resolve().parents[1]
CAP = 4_000_000  # the test server's request cap (STYLEGALLERY_MAX_REQUEST): refused uploads stay quick
QUEUE = 2


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("gradio_client")
    env = {"STYLEGALLERY_MAX_REQUEST": "4MB", "STYLEGALLERY_MAX_UPLOAD": "3MB", "STYLEGALLERY_HEADER_TIMEOUT": "2",
           "STYLEGALLERY_MAX_CONNECTIONS": "300"}
    with bench.AppServer(queue_size=QUEUE, env=env) as app:
        yield app


@pytest.fixture(scope="module")
def generate_fn(server) -> int:
    return bench.fn_index(bench.api_config(server.url), api_name="generate")


def _completed(server, fn: int, data: list) -> dict:
    return bench.raw_run(server.url, fn, data, timeout=120)


# ---- 1. memory pinned per request ----------------------------------------------------------------------

def test_large_override_tables_are_refused_before_gradio_keeps_them(server):
    found = probe.large_overrides(server, n=12, mb=10)
    assert found["statuses"] == [413] * 12, found
    assert "at most 64 kB outside an upload" in found["text"]
    assert found["rss_after"] - found["rss_before"] < 30, found  # gradio kept +106 MB per request


# ---- 2. refused and abandoned uploads -----------------------------------------------------------------

def test_refused_and_abandoned_uploads_leave_no_bytes(server):
    found = probe.refused_uploads(server, n=5, cap=CAP)
    assert found["statuses"] == [413] * 5, found
    assert found["bytes_left"] == 0, found
    assert not [p for p in server.upload_dir.iterdir() if p.is_file() and p.name.startswith("tmp")]


def test_deep_links_and_url_file_paths_are_refused_before_gradio_acts(server):
    found = probe.url_paths(server)
    assert found["content"][0] == 400 and found["style"][0] == 400, found
    assert "not from URLs" in found["content"][1]
    assert found["fetched"] == 0  # gradio never downloaded the URL
    assert found["deep_link"] == 404 and "turned off" in found["deep_link_text"]
    assert not (server.upload_dir / "deep_links").exists()


# ---- 3. one session cannot lock everyone out -----------------------------------------------------------

def test_one_session_flooding_leaves_others_generate_and_stop(server):
    found = probe.flood(server, joins=20, queue_size=QUEUE, timeout=240)
    assert found["accepted"] == 1, found  # one run per session running or queued
    assert "previous run is still running or queued" in found["refusal"]
    assert found["other_stop"] == 200 and found["other_generate"] == 200, found
    assert found["more_runs"][-1] == 503, found  # the runs' queue is bounded ...
    assert found["stop_with_queue_full"] == 200, found  # ... and Stop does not count against it
    assert found["flooder_stop"] == 200 and found["other_finished"], found


def test_limits_an_operator_sets_are_worded(server, generate_fn):
    content = probe.uploaded(server.url, probe.CONTENT)
    style = [{"image": probe.uploaded(server.url, bench.STYLES[0]), "caption": None}]
    for args, expected in ((probe._args(content, style, size=2048), "the size must be a number from 64 to 1024"),
                           (probe._args(content, style, steps=900), "steps must be a number from 1 to 200")):
        message = _completed(server, generate_fn, args)
        assert message["success"] is False and expected in message["output"]["error"], message


# ---- 4. a previous result stays fetchable until the next one exists ---------------------------------------

def test_two_runs_from_one_client_keep_the_first_result_fetchable(server):
    from gradio_client import Client, handle_file

    client = Client(server.url + "/", verbose=False, download_files=False)
    try:
        args = (handle_file(str(probe.CONTENT)), [{"image": handle_file(str(bench.STYLES[0])), "caption": None}],
                {}, "classic", "paper", 256, 6, 1.0, 2, 0, False)
        first = client.submit(*args, api_name="/generate").result(timeout=180)
        urls = [v["url"] for v in first if isinstance(v, dict) and v.get("url")]
        assert urls, first
        run_folder = Path(urls[0].split("file=", 1)[1]).parent  # stylegallery-runs/<session>/<this run>
        second = client.submit(*args, api_name="/generate")
        statuses = []
        while not second.done():  # the first run's pictures stay while the second paints ...
            for url in urls:
                status = bench.get(url)[0]
                newer = [p for p in run_folder.parent.glob("*/*-result.png") if p.parent != run_folder]
                statuses.append(status)
                assert status == 200 or newer, (status, statuses)  # ... until the second's result exists
            time.sleep(0.2)
        second.result(timeout=180)
        assert statuses.count(200) >= len(urls), statuses
    finally:
        client.close()


def test_a_second_run_submitted_while_the_first_waits_is_refused_in_words(server):
    from gradio_client import Client, handle_file

    client = Client(server.url + "/", verbose=False, download_files=False)
    try:
        args = (handle_file(str(probe.CONTENT)), [{"image": handle_file(str(bench.STYLES[0])), "caption": None}],
                {}, "classic", "paper", 256, 6, 1.0, 2, 0, False)
        jobs = [client.submit(*args, api_name="/generate") for _ in range(2)]  # they join in either order
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(bool(job.result(timeout=180)))
            except Exception as exc:  # gradio_client drops the body; its worded line is checked below
                outcomes.append(str(exc))
        assert sorted(map(str, outcomes)) == sorted(["True", next(o for o in outcomes if o is not True)]), outcomes
        assert outcomes.count(True) == 1 and "400" in next(o for o in outcomes if o is not True), outcomes
        session = uuid.uuid4().hex[:12]
        data = [args[0], args[1], {}, "classic", "paper", 256, 6, 1.0, 2, 0, False, 1.0, {}]
        fn = bench.fn_index(bench.api_config(server.url), api_name="generate")
        files = [probe.uploaded(server.url, probe.CONTENT), probe.uploaded(server.url, bench.STYLES[0])]
        data[:2] = files[0], [{"image": files[1], "caption": None}]
        answers = [probe.join(server.url, fn, data, session) for _ in range(2)]
        assert answers[0][0] == 200 and answers[1][0] == 400, answers
        assert json.loads(answers[1][1])["detail"] == ("Your previous run is still running or queued: wait for it, "
                                                       "or press Stop, before pressing Generate again.")
    finally:
        client.close()


# ---- 8. slow clients -----------------------------------------------------------------------------------

def test_idle_partial_header_connections_do_not_take_the_page_down(server):
    found = probe.slow_clients(server, n=200, wait=3.5)
    assert found["page_during"] == 200 and found["page_after"] == 200, found
    assert found["closed_by_server"] == 200, found  # after the 2 s header timeout
    beyond = probe.slow_clients(server, n=330, wait=0.5)  # past the cap of 300: closed at once, before the timeout
    assert 30 <= beyond["closed_by_server"] < 330, beyond
    time.sleep(2.5)
    assert bench.get(server.url + "/")[0] == 200


# ---- 9. payloads the app words ----------------------------------------------------------------------------

def _event(server, fn: int, data: list, raw: str | None = None) -> dict:
    session = uuid.uuid4().hex[:12]
    body = raw or json.dumps({"data": data, "event_data": None, "fn_index": fn, "trigger_id": None,
                              "session_hash": session})
    status, text = probe.join(server.url, fn, [], body=body.replace("SESSION", session).encode())
    assert status == 200, text
    import httpx

    with httpx.stream("GET", f"{server.url}/gradio_api/queue/data?session_hash={session}", timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed":
                return json.loads(line[5:])
    raise AssertionError("no process_completed")


@pytest.mark.parametrize("case, expected", [
    ("key-superscript", "the key ² is not a region number"),
    ("size-nan", "the size must be a number"),
    ("size-null", "the size must be a number"),
    ("seed-nan", "the seed must be a number"),
    ("seed-text", "the seed must be a number"),
    ("strength-text", "the style strength must be a number"),
    ("region-strengths-text", "Region strengths are malformed: region 2 takes a number from 0 to 1"),
    ("original-path", "Files are taken from your uploads and the gallery only"),
])
def test_payloads_the_page_never_sends_are_one_worded_line(server, generate_fn, case, expected):
    content = probe.uploaded(server.url, probe.CONTENT)
    style = [{"image": probe.uploaded(server.url, bench.STYLES[0]), "caption": None}]
    args = probe._args(content, style)
    if case == "key-superscript":
        args[2] = {"²": [1, 1]}
    elif case.startswith("size"):
        args[5] = "NaN" if case == "size-nan" else None
    elif case == "seed-text":
        args[9] = "abc"
    elif case == "strength-text":
        args[11] = "abc"
    elif case == "region-strengths-text":
        args[12] = {"2": "abc"}
    elif case == "original-path":
        args[0] = {"path": str(REPO / "gallery" / "content" / "chelsea.jpg"), "meta": probe.META,
                   "orig_name": "chelsea.jpg"}
    raw = None
    if case == "seed-nan":
        raw = json.dumps({"data": args, "event_data": None, "fn_index": generate_fn, "trigger_id": None,
                          "session_hash": "SESSION"}).replace('0, false, 1.0, {}]', 'NaN, false, 1.0, {}]')
    logged = server.log_path.stat().st_size
    message = _event(server, generate_fn, args, raw)
    error = message["output"].get("error")
    assert message["success"] is False and error and expected in error and "\n" not in error, message
    with open(server.log_path, "rb") as log:  # and one line in the server's log, not a traceback
        log.seek(logged)
        said = log.read().decode()
    assert "Traceback" not in said and "refused" in said, said


def test_a_5000_digit_number_is_refused_in_words(server, generate_fn):
    body = json.dumps({"data": probe._args(None, [], overrides={"2": [1, 1]}), "event_data": None,
                       "fn_index": generate_fn, "trigger_id": None, "session_hash": uuid.uuid4().hex[:12]})
    status, text = probe.join(server.url, generate_fn, [], body=body.replace("[1, 1]", "[1, " + "9" * 5000 + "]")
                              .encode())
    assert status == 400 and "error parsing the body" in text

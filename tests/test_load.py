"""Many users at once on the real app (`python app.py` in a subprocess, queue of 2): each gets its own result or
gradio's queue-full refusal, the page keeps answering, and the queue is usable again afterwards.

The same scenario at full size is benchmarks/load_test.py (20 clients); this module reuses its helpers.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import load_test as bench


CLIENTS = 6
QUEUE = 2


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("gradio_client")
    with bench.AppServer(queue_size=QUEUE) as app:
        yield app


@pytest.fixture(scope="module")
def report(server, tmp_path_factory):
    return bench.run_load(server.url, CLIENTS, tmp_path_factory.mktemp("load"), size=256, timeout=300)


def test_client_contents_have_unique_shapes_and_identify_themselves():
    shapes = [bench.client_shape(i) for i in range(bench.MAX_CLIENTS)]
    assert len(set(shapes)) == bench.MAX_CLIENTS and all(max(s) == 256 and min(s) % 8 == 0 for s in shapes)
    contents = [bench.client_content(i) for i in range(CLIENTS)]
    noise = np.random.default_rng(0).normal(0, 20, contents[3].shape)
    noisy = np.clip(contents[3] * 0.6 + 60 + noise, 0, 255).astype(np.uint8)  # client 3's picture, re-coloured, noisy
    scores = bench.identify(noisy, contents)
    assert int(np.argmax(scores)) == 3 and scores[3] > 0.5
    with pytest.raises(ValueError, match="at most"):
        bench.client_shape(bench.MAX_CLIENTS)


def test_every_run_completes_with_its_own_result_or_is_refused_as_queue_full(report):
    kinds = [o.kind for o in report.outcomes]
    assert len(kinds) == CLIENTS
    assert set(kinds) <= {"completed", "refused"}, bench.summary(report)
    # one runs and QUEUE wait: the others, arriving together within the first run, must be refused
    assert kinds.count("completed") >= 1 and kinds.count("refused") >= 1, bench.summary(report)
    assert all(bench.QUEUE_FULL in o.detail for o in report.of("refused"))


def test_page_answers_throughout_the_load(report):
    assert report.page_failures == [] and len(report.page_latencies) >= 3, bench.summary(report)


def test_queue_is_free_again_after_the_load(server, report, tmp_path):
    assert server.alive()
    again = bench.run_load(server.url, 1, tmp_path, size=256, timeout=120)
    assert [o.kind for o in again.outcomes] == ["completed"], bench.summary(again)

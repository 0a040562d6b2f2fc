"""Dynamic batching, the LRU score cache and the Prometheus text (no model)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from trlm.serve.batching import Batcher, QueueFull, ScoreCache
from trlm.serve.telemetry import Metrics


class Recorder:
    """A run function that records every call's jobs (optionally slow, optionally refusing 'bad' jobs)."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[list] = []
        self.delay = delay

    def __call__(self, jobs):
        self.calls.append(list(jobs))
        time.sleep(self.delay)
        if "bad" in jobs:
            raise ValueError("bad job")
        return [j * 2 for j in jobs]


@pytest.fixture()
def executor():
    ex = ThreadPoolExecutor(max_workers=1)
    yield ex
    ex.shutdown()


def test_concurrent_jobs_coalesce_into_one_call(executor):
    rec = Recorder()
    b = Batcher("t", rec, executor, max_wait_ms=50)

    async def main():
        return await asyncio.gather(*(b.submit(i) for i in range(5)))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert rec.calls == [[0, 1, 2, 3, 4]]
    assert b.metrics.value("trlm_batch_jobs", {"batcher": "t"}) == 1


def test_batching_off_runs_one_job_per_call(executor):
    rec = Recorder()
    b = Batcher("t", rec, executor, max_wait_ms=0, max_batch_jobs=1)

    async def main():
        return await asyncio.gather(*(b.submit(i) for i in range(3)))

    assert asyncio.run(main()) == [0, 2, 4]
    assert rec.calls == [[0], [1], [2]]


def test_token_budget_splits_calls(executor):
    rec = Recorder()
    b = Batcher("t", rec, executor, max_wait_ms=50, max_batch_tokens=10)

    async def main():
        return await asyncio.gather(*(b.submit(i, tokens=4) for i in range(5)))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert [len(c) for c in rec.calls] == [2, 2, 1]


def test_queue_full_is_refused_at_once(executor):
    rec = Recorder(delay=0.2)
    b = Batcher("t", rec, executor, max_wait_ms=0, max_batch_jobs=1, max_queue=2)

    async def main():
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.05)  # the worker is now running job 0; the queue is empty
        queued = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit(3)
        return await asyncio.gather(first, *queued)

    assert asyncio.run(main()) == [0, 2, 4]
    assert b.metrics.value("trlm_rejected_total", {"batcher": "t", "reason": "queue_full"}) == 1


def test_cancelled_job_is_never_run(executor):
    rec = Recorder(delay=0.2)
    b = Batcher("t", rec, executor, max_wait_ms=0, max_batch_jobs=1)

    async def main():
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(b.submit(2))  # queued behind job 1 ...
        await asyncio.sleep(0.01)
        gone.cancel()  # ... and its client goes away
        third = await b.submit(3)
        return await first, third

    assert asyncio.run(main()) == (2, 6)
    assert rec.calls == [[1], [3]]
    assert b.metrics.value("trlm_cancelled_total", {"batcher": "t"}) == 1


def test_a_failing_job_fails_only_itself(executor):
    rec = Recorder()
    b = Batcher("t", rec, executor, max_wait_ms=50)

    async def main():
        return await asyncio.gather(b.submit(1), b.submit("bad"), b.submit(3), return_exceptions=True)

    ok1, bad, ok3 = asyncio.run(main())
    assert (ok1, ok3) == (2, 6) and isinstance(bad, ValueError)
    assert rec.calls[0] == [1, "bad", 3] and [1] in rec.calls and [3] in rec.calls


def test_drain_finishes_queued_jobs(executor):
    rec = Recorder(delay=0.05)
    b = Batcher("t", rec, executor, max_wait_ms=0, max_batch_jobs=1)

    async def main():
        futs = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        await b.drain()
        return [f.result() for f in futs]

    assert asyncio.run(main()) == [0, 2, 4]


def test_batcher_settings_are_checked(executor):
    with pytest.raises(ValueError, match="max_queue"):
        Batcher("t", Recorder(), executor, max_queue=0)


def test_score_cache_is_a_bounded_lru():
    c = ScoreCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now the most recent
    c.put("c", 3)
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3 and len(c) == 2
    off = ScoreCache(0)
    off.put("a", 1)
    assert off.get("a") is None and len(off) == 0


def test_score_cache_is_thread_safe():
    c = ScoreCache(100)
    threads = [threading.Thread(target=lambda k=k: [c.put((k, i), i) or c.get((k, i)) for i in range(500)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(c) == 100


def test_metrics_render_prometheus_text():
    m = Metrics()
    m.inc("trlm_requests_total", {"route": "/v1/rerank", "status": "200"})
    m.inc("trlm_requests_total", {"route": "/v1/rerank", "status": "200"})
    m.set("trlm_queue_depth", 3, {"batcher": 'x"y'})
    m.observe("trlm_request_seconds", 0.3, {"route": "/v1/rerank"})
    text = m.render()
    assert "# TYPE trlm_requests_total counter" in text
    assert 'trlm_requests_total{route="/v1/rerank",status="200"} 2' in text
    assert 'trlm_queue_depth{batcher="x\\"y"} 3' in text
    assert 'trlm_request_seconds_bucket{route="/v1/rerank",le="0.25"} 0' in text
    assert 'trlm_request_seconds_bucket{route="/v1/rerank",le="0.5"} 1' in text
    assert 'trlm_request_seconds_bucket{route="/v1/rerank",le="+Inf"} 1' in text
    assert 'trlm_request_seconds_count{route="/v1/rerank"} 1' in text

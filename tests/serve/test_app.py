"""Every route, error and limit of ``trlm serve`` in-process (httpx's ASGI transport), on the embedded model."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from trlm.core.engine import GenArgs, Request
from trlm.guard.defense import DefenseArgs
from trlm.scoring import make_scorer
from trlm.serve.app import create_app
from trlm.serve.service import ServeConfig, Service

QUERY = "why is the sky blue"
DOCS = ["The sky is blue because air molecules scatter short blue wavelengths of sunlight more than red ones "
        "(Rayleigh scattering).",
        "Paris is the capital and largest city of France.",
        "Blue light is scattered in all directions by the gases of the atmosphere."]
LONG = " ".join(["Sunlight reaches the atmosphere and is scattered by nitrogen and oxygen molecules."] * 8)
KEY = "s3cret-key"


class KeywordFilter:
    """A stand-in input filter with hand-set verdicts: flags texts containing 'bomb'."""

    name = "keyword"

    def scores(self, texts, progress=False):
        return [float("bomb" in t.lower()) for t in texts]

    def flag(self, texts, progress=False):
        return [s >= 1.0 for s in self.scores(texts)]


def make_service(smol, **kw) -> Service:
    cfg = dict(scorers=("trlm-fo", "forward-mean"), max_documents=8, max_body_bytes=20_000, max_pairs=4,
               max_prompts=4, max_new_tokens=32, guard_args=DefenseArgs(n=2, tau=0, max_new_tokens=6))
    return Service(ServeConfig(**{**cfg, **kw}), engine=smol, guard_filter=KeywordFilter())


@pytest.fixture(scope="module")
def app(smol):
    return create_app(service=make_service(smol))


def call(app, method: str, path: str, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


def gather(app, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send requests concurrently (one event loop, one client)."""
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     timeout=60) as c:
            return await asyncio.gather(*(c.request(m, p, **kw) for m, p, kw in requests))

    return asyncio.run(go())


# ------------------------------------------------------------------------------------------ rerank


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_rerank_is_the_cli_scorer_best_first(app, smol, path):
    docs = [DOCS[0], {"text": DOCS[1], "source": "wiki"}, DOCS[2]]
    r = call(app, "POST", path, json={"model": "trlm-fo", "query": QUERY, "documents": docs, "top_n": 2,
                                      "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    want = make_scorer("trlm-fo", engine=smol, task="retrieval", max_response_tokens=512).score(QUERY, DOCS)
    order = sorted(range(3), key=lambda i: -want[i])[:2]
    assert [x["index"] for x in body["results"]] == order
    for x in body["results"]:
        assert x["raw_score"] == pytest.approx(want[x["index"]], abs=1e-4)
        assert 0 < x["relevance_score"] <= 1 and x["truncated"] is False
        assert x["document"]["text"] == DOCS[x["index"]]
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["meta"]["api_version"]["version"] == path[2] and body["meta"]["billed_units"]["search_units"] == 1
    assert r.headers["x-request-id"] == body["id"]


def test_rerank_document_objects_keep_their_fields_and_default_model_is_the_first(app):
    r = call(app, "POST", "/v1/rerank", json={"query": QUERY, "documents": [{"text": DOCS[1], "source": "wiki"}],
                                              "return_documents": True})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "trlm-fo" and r.json()["results"][0]["document"] == {"text": DOCS[1], "source": "wiki"}
    r = call(app, "POST", "/v1/rerank", json={"query": QUERY, "documents": DOCS[:2]})
    assert all("document" not in x for x in r.json()["results"])


def test_rerank_truncates_long_documents_and_says_so(app, smol):
    r = call(app, "POST", "/v1/rerank", json={"model": "forward-mean", "query": QUERY, "documents": [DOCS[1], LONG],
                                              "max_tokens_per_doc": 16})
    assert r.status_code == 200, r.text
    res = {x["index"]: x for x in r.json()["results"]}
    assert res[1]["truncated"] is True and res[0]["truncated"] is False
    assert "cut to 16 tokens" in r.json()["meta"]["warnings"][0]
    fm = make_scorer("forward-mean", engine=smol, task="retrieval", max_response_tokens=16)
    want = fm.score(QUERY, [DOCS[1], LONG])
    assert [res[i]["raw_score"] for i in (0, 1)] == pytest.approx(want, abs=1e-4)
    import math
    assert res[1]["relevance_score"] == pytest.approx(math.exp(want[1]), rel=1e-4)  # mean scorer: exp(raw)


def test_unknown_scorer_is_404_with_the_served_list(app):
    r = call(app, "POST", "/v2/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS})
    assert r.status_code == 404 and "trlm-fo, forward-mean" in r.json()["message"]


def test_models_lists_scorers_and_the_generator(app, smol):
    r = call(app, "GET", "/v1/models")
    ids = {m["id"]: m["kind"] for m in r.json()["data"]}
    assert ids == {"trlm-fo": "scorer", "forward-mean": "scorer", smol.name: "generator",
                   "minilm-features": "checker"}
    routes = {m["id"]: m["routes"] for m in r.json()["data"]}
    assert routes["trlm-fo"] == ["/v1/rerank", "/v2/rerank", "/v1/cite"]
    assert routes["minilm-features"] == ["/v1/factcheck"]


# ------------------------------------------------------------------------------------------ 4xx


@pytest.mark.parametrize("body,field", [
    ({"documents": DOCS}, "query"),
    ({"query": QUERY, "documents": "not a list"}, "documents"),
    ({"query": QUERY, "documents": [DOCS[0], 7]}, "documents.1"),
    ({"query": QUERY, "documents": []}, "documents"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
    ({"query": QUERY, "documents": [DOCS[0], "   "]}, "documents.1"),
    ({"query": "  ", "documents": DOCS}, "query"),
])
def test_bad_rerank_bodies_are_422_naming_the_field(app, body, field):
    r = call(app, "POST", "/v1/rerank", json=body)
    assert r.status_code == 422, r.text
    assert f"field '{field}" in r.json()["message"] and r.json()["request_id"]


def test_malformed_json_is_422(app):
    r = call(app, "POST", "/v1/rerank", content=b'{"query": "x", "documents": [',
             headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["message"]
    r = call(app, "POST", "/v1/rerank", content=b'{"query": "x", "documents": ["y"]}',
             headers={"content-type": "application/x-www-form-urlencoded"})  # curl -d without -H
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["message"]


def test_oversize_is_413(app):
    r = call(app, "POST", "/v1/rerank", json={"query": QUERY, "documents": ["doc"] * 9})
    assert r.status_code == 413 and "at most 8" in r.json()["message"]
    r = call(app, "POST", "/v1/rerank", json={"query": QUERY, "documents": ["x" * 25_000]})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["message"]
    r = call(app, "POST", "/v1/score", json={"pairs": [{"context": "a", "continuation": " b"}] * 5})
    assert r.status_code == 413 and "'pairs'" in r.json()["message"]


def test_unknown_route_is_404(app):
    r = call(app, "GET", "/v1/nothing")
    assert r.status_code == 404 and "/v1/rerank" in r.json()["message"]


# ------------------------------------------------------------------------------------------ score, guard, generation


def test_score_is_the_engine_loglikelihood(app, smol):
    pairs = [{"context": "The capital of France is", "continuation": " Paris"},
             {"context": "", "continuation": "Hello world"}]
    r = call(app, "POST", "/v1/score", json={"pairs": pairs})
    assert r.status_code == 200, r.text
    want = smol.loglikelihood([Request(**p) for p in pairs])
    for got, w in zip(r.json()["results"], want):
        assert got["logprob"] == pytest.approx(w.logprob, abs=1e-4) and got["num_tokens"] == w.num_tokens


def test_score_errors(app, smol):
    r = call(app, "POST", "/v1/score", json={"pairs": [{"context": "a", "continuation": " "}]})
    assert r.status_code == 422 and "pairs.0.continuation" in r.json()["message"]
    r = call(app, "POST", "/v1/score", json={"pairs": [{"context": "a", "continuation": " b"}], "direction": "reverse"})
    assert r.status_code == 422 and "'direction'" in r.json()["message"]
    huge = "word " * (smol.max_length + 10)  # more tokens than the window (and a body over this app's 20 kB)
    r = call(create_app(service=make_service(smol, max_body_bytes=200_000)), "POST", "/v1/score",
             json={"pairs": [{"context": "a", "continuation": " b"}, {"context": "a", "continuation": huge}]})
    assert r.status_code == 413 and "pairs[1]" in r.json()["message"] and "window" in r.json()["message"]


def test_guard_filter_only_and_with_response(app):
    r = call(app, "POST", "/v1/guard", json={"query": "how do I build a bomb"})
    assert r.status_code == 200 and r.json()["rejected"] and r.json()["stage"] == "filter"
    r = call(app, "POST", "/v1/guard", json={"query": "how do I bake bread"})
    assert r.json() == {**r.json(), "rejected": False, "stage": "passed", "flagged": 0, "queries": []}
    r = call(app, "POST", "/v1/guard", json={"query": "how do I bake bread",
                                             "response": "Mix flour, water, yeast and salt, knead, let it rise."})
    body = r.json()
    assert r.status_code == 200 and len(body["queries"]) == 2 and body["tau"] == 0
    assert body["rejected"] == (body["flagged"] > 0)


def test_completions_are_the_engines_seeded_samples(app, smol):
    r = call(app, "POST", "/v1/completions", json={"model": smol.name, "prompt": ["The capital of France is",
                                                   "One, two,"], "max_tokens": 6, "temperature": 0.8, "n": 2,
                                                   "seed": 3})
    assert r.status_code == 200, r.text
    gens = smol.generate(["The capital of France is", "One, two,"], GenArgs(max_new_tokens=6, temperature=0.8, n=2,
                                                                              seed=3))
    assert [c["text"] for c in r.json()["choices"]] == [g.text for gs in gens for g in gs]
    assert r.json()["usage"]["completion_tokens"] == sum(g.num_tokens for gs in gens for g in gs)


def test_chat_completions_and_limits(app, smol):
    msgs = [{"role": "user", "content": "Say hi."}]
    r = call(app, "POST", "/v1/chat/completions", json={"model": smol.name, "messages": msgs, "max_tokens": 8,
                                                        "temperature": 0})
    assert r.status_code == 200, r.text
    want = smol.generate([smol.render_chat(msgs)], GenArgs(max_new_tokens=8, temperature=0))[0][0]
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": want.text.strip()}
    r = call(app, "POST", "/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 422 and "messages.0.role" in r.json()["message"]
    r = call(app, "POST", "/v1/chat/completions", json={"messages": msgs, "max_tokens": 33})
    assert r.status_code == 422 and "'max_tokens'" in r.json()["message"]
    r = call(app, "POST", "/v1/chat/completions", json={"messages": msgs, "n": 5})
    assert r.status_code == 413
    r = call(app, "POST", "/v1/chat/completions", json={"model": "gpt-4o", "messages": msgs})
    assert r.status_code == 404 and smol.name in r.json()["message"]


def test_health_and_metrics(app):
    assert call(app, "GET", "/health").json()["status"] == "ok"
    text = call(app, "GET", "/metrics").text
    assert 'trlm_requests_total{route="/v1/rerank",status="200"}' in text
    assert "trlm_batch_jobs_bucket" in text and "trlm_queue_depth" in text and "trlm_request_seconds_bucket" in text


# ------------------------------------------------------------------------------------------ auth, overload, failures


def test_api_key_is_required_except_for_health(smol):
    app = create_app(service=make_service(smol, api_keys=("other", KEY)))
    body = {"query": QUERY, "documents": DOCS[:1]}
    assert call(app, "GET", "/health").status_code == 200
    r = call(app, "POST", "/v1/rerank", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert call(app, "POST", "/v1/rerank", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert call(app, "GET", "/metrics", headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    assert call(app, "POST", "/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_api_keys_from_env(monkeypatch):
    from trlm.serve.service import api_keys_from_env

    monkeypatch.setenv("TRLM_API_KEYS", "a, b,,a")
    assert api_keys_from_env(["c", "a"]) == ("c", "a", "b")


def test_full_queue_is_429_with_retry_after(smol):
    app = create_app(service=make_service(smol, max_queue=1, max_wait_ms=400))
    body = {"query": QUERY, "documents": DOCS[:1]}
    rs = gather(app, [("POST", "/v1/rerank", {"json": body})] * 3)
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 429, 429]
    busy = next(r for r in rs if r.status_code == 429)
    assert busy.headers["retry-after"] == "1" and "queue is full" in busy.json()["message"]
    assert busy.json()["type"] == "rate_limited"


def test_internal_error_is_500_without_traceback_and_logged(smol, caplog):
    svc = make_service(smol)
    app = create_app(service=svc)

    def broken(jobs):
        raise RuntimeError("boom: secret internals")

    svc.batchers["score"].run = broken
    with caplog.at_level(logging.ERROR, logger="trlm.serve"):
        r = call(app, "POST", "/v1/score", json={"pairs": [{"context": "a", "continuation": " b"}]})
    assert r.status_code == 500
    assert "boom" not in r.text and "Traceback" not in r.text and r.json()["request_id"] in r.json()["message"]
    assert any(r.json()["request_id"] in rec.getMessage() for rec in caplog.records)
    assert any("boom" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)


def test_request_timeout_is_504(smol):
    svc = make_service(smol, request_timeout_s=0.05)
    r = call(create_app(service=svc), "POST", "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 32,
                                                                       "temperature": 0})
    svc.executor.shutdown(wait=True)  # let the abandoned generation finish before other tests use the model
    assert r.status_code == 504 and "request_timeout_s" in r.json()["message"]


async def raw_asgi(app, path: str, body: dict, hang_up_after: float | None):
    """One request over raw ASGI; the client hangs up ``hang_up_after`` s after sending it (None: never)."""
    data = json.dumps(body).encode()
    sent, out = [False], {"body": b""}
    loop = asyncio.get_running_loop()
    hang_up = loop.time() + (hang_up_after if hang_up_after is not None else 3600)

    async def receive():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": data, "more_body": False}
        if loop.time() < hang_up:
            await asyncio.sleep(hang_up - loop.time())
        return {"type": "http.disconnect"}

    async def send(msg):
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    await app(scope, receive, send)
    return out


def test_disconnect_cancels_queued_work(smol):
    """Raw ASGI: a client that sends its request and hangs up while it waits behind another one."""
    svc = make_service(smol, batching=False)
    app = create_app(service=svc)

    async def raw(body: dict, hang_up_after: float | None):
        return (await raw_asgi(app, "/v1/completions", body, hang_up_after)).get("status")

    async def main():
        slow = asyncio.ensure_future(raw({"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}, None))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(raw({"prompt": "Twice upon a time", "max_tokens": 24, "temperature": 0}, 0.1))
        return await slow, await gone

    slow, gone = asyncio.run(main())
    assert slow == 200 and gone == 499
    assert svc.metrics.value("trlm_cancelled_total", {"batcher": "generate"}) == 1
    assert svc.metrics.value("trlm_batch_jobs", {"batcher": "generate"}) == 1  # only the slow one ran


# ------------------------------------------------------------------------------------------ batching


def test_concurrent_requests_score_like_sequential_ones(smol):
    """Coalesced into shared engine calls (batching on, cache off) == one request at a time (batching off)."""
    queries = [QUERY, "what is the capital of France", "how does light scatter", "where is Paris"]
    bodies = [{"model": m, "query": q, "documents": DOCS} for q in queries for m in ("trlm-fo", "forward-mean")]
    seq_app = create_app(service=make_service(smol, batching=False, cache_size=0))
    seq = [call(seq_app, "POST", "/v1/rerank", json=b).json() for b in bodies]
    svc = make_service(smol, cache_size=0, max_wait_ms=200)
    con = [r.json() for r in gather(create_app(service=svc), [("POST", "/v1/rerank", {"json": b}) for b in bodies])]
    for s, c in zip(seq, con):
        assert [x["index"] for x in s["results"]] == [x["index"] for x in c["results"]]
        assert [x["raw_score"] for x in s["results"]] == pytest.approx([x["raw_score"] for x in c["results"]],
                                                                        abs=1e-4)
    calls = svc.metrics.value("trlm_batch_jobs", {"batcher": "rerank:trlm-fo"})
    assert 1 <= calls < len(queries)  # the four trlm-fo requests shared engine calls


def test_cache_returns_the_same_scores_without_recomputing(smol):
    svc = make_service(smol)
    app = create_app(service=svc)
    body = {"query": QUERY, "documents": DOCS}
    first = call(app, "POST", "/v1/rerank", json=body).json()
    hits = svc.metrics.value("trlm_cache_hits_total")
    second = call(app, "POST", "/v1/rerank", json=body).json()
    assert svc.metrics.value("trlm_cache_hits_total") == hits + len(DOCS)
    assert [x["raw_score"] for x in first["results"]] == [x["raw_score"] for x in second["results"]]


def test_speculative_generation_gives_the_plain_text(smol):
    app = create_app(service=make_service(smol, speculative="ngram"))
    body = {"prompt": "One, two, three, four, one, two, three,", "max_tokens": 12, "temperature": 0.7, "seed": 1}
    r = call(app, "POST", "/v1/completions", json=body)
    assert r.status_code == 200, r.text
    want = smol.generate([body["prompt"]], GenArgs(max_new_tokens=12, temperature=0.7, seed=1))[0][0]
    assert r.json()["choices"][0]["text"] == want.text


def test_chunked_body_over_the_limit_is_413(app):
    async def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(30):
            yield b"x" * 1000

    r = call(app, "POST", "/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["message"]

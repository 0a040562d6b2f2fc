"""The real ``trlm serve`` on a free loopback port, called with the official Cohere and OpenAI clients; it stops
gracefully with a request in flight (the request completes)."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from trlm.scoring import make_scorer

KEY = "test-key-123"
QUERY = "why is the sky blue"
DOCS = ["Paris is the capital and largest city of France.",
        "The sky is blue because air molecules scatter short blue wavelengths of sunlight (Rayleigh scattering).",
        "Blue light is scattered in all directions by the gases of the atmosphere."]


@pytest.fixture(scope="module")
def server(tmp_path_factory, trlm_serve):
    log = (tmp_path_factory.mktemp("serve") / "server.log").open("w+")
    url, proc = trlm_serve(["--scorer", "trlm-fo", "--no-guard", "--dtype", "float32", "--device", "cpu",
                            "--api-key", KEY, "--log-level", "info"], log)
    yield url, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_official_clients_then_graceful_shutdown(server, smol):
    import cohere
    import openai

    url, proc, log = server
    want = make_scorer("trlm-fo", engine=smol, task="retrieval", max_response_tokens=512).score(QUERY, DOCS)
    best = sorted(range(len(DOCS)), key=lambda i: -want[i])

    v1 = cohere.Client(api_key=KEY, base_url=url)
    r1 = v1.rerank(model="trlm-fo", query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert [r.index for r in r1.results] == best[:2]
    assert r1.results[0].document.text == DOCS[best[0]]
    assert 0 < r1.results[1].relevance_score < r1.results[0].relevance_score <= 1

    v2 = cohere.ClientV2(api_key=KEY, base_url=url)
    r2 = v2.rerank(model="trlm-fo", query=QUERY, documents=DOCS)
    assert [r.index for r in r2.results] == best
    raw = {r.index: r.raw_score for r in r2.results}  # extra field, kept by the client
    assert [raw[i] for i in range(len(DOCS))] == pytest.approx(want, abs=1e-3)
    with pytest.raises(cohere.core.api_error.ApiError) as e:
        cohere.ClientV2(api_key="wrong", base_url=url).rerank(model="trlm-fo", query=QUERY, documents=DOCS)
    assert e.value.status_code == 401

    oa = openai.OpenAI(api_key=KEY, base_url=url + "/v1", max_retries=0)
    chat = oa.chat.completions.create(model=smol.name, messages=[{"role": "user", "content": "Say hi."}],
                                      max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    assert chat.usage.completion_tokens >= 1
    assert {m.id for m in oa.models.list().data} == {"trlm-fo", smol.name, "minilm-features"}

    # stream=True: the official client reads the server-sent events; the pieces make the same answer
    stream = oa.chat.completions.create(model=smol.name, messages=[{"role": "user", "content": "Say hi."}],
                                        max_tokens=8, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == chat.choices[0].message.content
    whole = oa.completions.create(model=smol.name, prompt="One, two,", max_tokens=6, temperature=0.7, n=2, seed=4)
    got = {0: "", 1: ""}
    for c in oa.completions.create(model=smol.name, prompt="One, two,", max_tokens=6, temperature=0.7, n=2, seed=4,
                                   stream=True):
        for ch in c.choices:
            got[ch.index] += ch.text
    assert got == {ch.index: ch.text for ch in whole.choices}

    # graceful stop: a request in flight when SIGTERM arrives still gets its answer
    got = {}

    def slow():
        got["r"] = httpx.post(url + "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 48,
                                                              "temperature": 0},
                              headers={"Authorization": f"Bearer {KEY}"}, timeout=60)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert got["r"].status_code == 200 and got["r"].json()["choices"][0]["text"]
    assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    log.seek(0)
    text = log.read()
    assert "Application shutdown complete" in text and "Traceback" not in text
    assert KEY not in text  # keys are never logged

"""Overload and cancellation: 429 + Retry-After for a per-key rate limit, and a client that hangs up while its rows
are being decoded leaves the batch at the next step while the other rows of that batch are unaffected."""

from __future__ import annotations

import asyncio
import json

from trlm.serve.app import RateLimiter, create_app

from .test_app import KEY, call, make_service, raw_asgi


def test_rate_limiter_refills_at_the_rate_and_says_how_long_to_wait():
    now = [0.0]
    lim = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [lim.take(b"k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.take(b"k") == 0.5  # one token comes back every 1/rate s
    assert lim.take(b"other") == 0.0  # per client
    now[0] = 0.5
    assert lim.take(b"k") == 0.0 and lim.take(b"k") == 0.5
    assert RateLimiter(rate=0.0, burst=1).take(b"k") == 0.0  # off


def test_rate_limit_is_429_with_retry_after_per_key(smol):
    app = create_app(service=make_service(smol, api_keys=(KEY, "other"), rate_limit=0.5, rate_burst=2))
    ok, other = {"Authorization": f"Bearer {KEY}"}, {"Authorization": "Bearer other"}
    codes = [call(app, "GET", "/v1/models", headers=ok).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = call(app, "GET", "/v1/models", headers=ok)
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and r.json()["type"] == "rate_limited"
    assert "rate limit" in r.json()["message"] and r.json()["request_id"]
    assert call(app, "GET", "/v1/models", headers=other).status_code == 200  # another key has its own budget
    assert call(app, "GET", "/health").status_code == 200  # never limited


def _spy_rows(monkeypatch, eng) -> list[int]:
    """Rows of every decoding step the engine runs."""
    rows: list[int] = []
    real = eng.decode_step

    def spy(state, tokens, valid=None):
        rows.append(tokens.shape[0])
        return real(state, tokens, valid)

    monkeypatch.setattr(eng, "decode_step", spy)
    return rows


def test_disconnect_mid_generation_drops_only_its_rows(smol, monkeypatch):
    stay = {"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0.8, "seed": 2}
    gone = {"prompt": "The weather today", "max_tokens": 32, "temperature": 0.8, "seed": 3}
    alone = call(create_app(service=make_service(smol, cache_size=0)), "POST", "/v1/completions", json=stay).json()

    svc = make_service(smol, max_wait_ms=300)
    app = create_app(service=svc)
    rows = _spy_rows(monkeypatch, smol)

    async def main():
        a = asyncio.ensure_future(raw_asgi(app, "/v1/completions", stay, None))
        b = asyncio.ensure_future(raw_asgi(app, "/v1/completions", gone, 1.0))  # hangs up while both are decoding
        return await a, await b

    kept, left = asyncio.run(main())
    assert left["status"] == 499 and kept["status"] == 200
    assert json.loads(kept["body"])["choices"] == alone["choices"]  # unaffected by its neighbours leaving
    assert svc.metrics.value("trlm_batch_jobs", {"batcher": "generate"}) == 1  # one engine call for both
    assert rows[0] == 2 and 1 in rows  # both rows decoded together, then the gone client's row left ...
    first_one = rows.index(1)
    assert 0 < first_one < 31 and all(r == 1 for r in rows[first_one:])  # ... at a step boundary, mid-answer
    assert alone["choices"][0]["finish_reason"] == "length" and len(rows) == 31  # the kept row ran to the end


def test_disconnect_mid_stream_stops_its_rows(smol, monkeypatch):
    svc = make_service(smol)
    app = create_app(service=svc)
    rows = _spy_rows(monkeypatch, smol)

    async def main():
        return await raw_asgi(app, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 32,
                                                   "temperature": 0, "stream": True}, 0.8)

    out = asyncio.run(main())
    assert out["status"] == 200 and b"data: " in out["body"] and b"[DONE]" not in out["body"]
    assert 0 < len(rows) < 31  # decoding stopped at a step boundary after the client left

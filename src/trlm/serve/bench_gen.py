"""``trlm bench serve`` rows for generation and fact checking, on the batching-on server:

* **Time to first token** — streamed chat requests (``"stream": true``), ``clients`` at a time: seconds from
  sending a request to its first content piece, and to its [DONE].
* **Steered / unsteered mix** — the same chat requests without streaming, all unsteered, then with every other one
  steered (``--directions``, one concept and factor): completion tokens per second of each run, and whether the
  unsteered requests of the mix answered exactly as in the all-unsteered run.
* **Fact checking** — ``/v1/factcheck`` requests (a BM25 passage and its query as the claim), ``clients`` at a
  time: requests per second and latency.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np


def chat_bodies(queries: list[str], n: int, max_tokens: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Answer in one sentence: {queries[i % len(queries)]}"}],
             "max_tokens": max_tokens, "temperature": 0} for i in range(n)]


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


async def _pool(url: str, headers: dict, bodies: list[dict], clients: int, one) -> tuple[list, float]:
    """Run ``one(client, body)`` over ``bodies`` with ``clients`` workers; (results in body order, wall s)."""
    import httpx

    out: list = [None] * len(bodies)

    async def worker(k: int, c: httpx.AsyncClient):
        for i in range(k, len(bodies), clients):
            try:
                out[i] = await one(c, bodies[i])
            except httpx.HTTPError as e:
                out[i] = {"status": None, "error": repr(e)}

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=900,
                                 limits=httpx.Limits(max_connections=clients)) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, c) for k in range(min(clients, len(bodies)))))
        return out, time.perf_counter() - t0


async def _stream_one(c, body: dict) -> dict:
    t0, first, text = time.perf_counter(), None, ""
    async with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            return {"status": r.status_code}
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for ch in json.loads(line[6:]).get("choices", ()):
                piece = ch.get("delta", {}).get("content")
                if piece:
                    first = first if first is not None else time.perf_counter() - t0
                    text += piece
    return {"status": 200, "ttft_s": first, "total_s": time.perf_counter() - t0, "text": text}


async def _post_one(c, path: str, body: dict) -> dict:
    t0 = time.perf_counter()
    r = await c.post(path, json=body)
    return {"status": r.status_code, "s": time.perf_counter() - t0, "body": r.json() if r.status_code == 200 else None}


def ttft(url: str, headers: dict, bodies: list[dict], clients: int) -> dict:
    rows, wall = asyncio.run(_pool(url, headers, bodies, clients, _stream_one))
    ok = [r for r in rows if r and r.get("status") == 200 and r.get("ttft_s") is not None]
    first, total = [r["ttft_s"] for r in ok], [r["total_s"] for r in ok]
    return {"requests": len(bodies), "ok": len(ok), "clients": clients, "wall_s": wall,
            "ttft_p50_s": _pct(first, 50), "ttft_p95_s": _pct(first, 95), "total_p50_s": _pct(total, 50),
            "texts": [r.get("text") if r else None for r in rows]}


def steer_mix(url: str, headers: dict, bodies: list[dict], clients: int, steer: list[dict]) -> dict:
    """All unsteered, then every other request steered; completion tokens/s of each."""
    def run(bs):
        rows, wall = asyncio.run(_pool(url, headers, bs, clients,
                                       lambda c, b: _post_one(c, "/v1/chat/completions", b)))
        ok = [r for r in rows if r and r.get("status") == 200]
        tokens = sum(r["body"]["usage"]["completion_tokens"] for r in ok)
        return rows, {"requests": len(bs), "ok": len(ok), "wall_s": wall, "completion_tokens": tokens,
                      "tokens_per_s": tokens / wall, "p50_s": _pct([r["s"] for r in ok], 50)}

    plain_rows, plain = run(bodies)
    mixed = [{**b, "steer": steer} if i % 2 else b for i, b in enumerate(bodies)]
    mix_rows, mix = run(mixed)
    same = all(p and m and p.get("body") and m.get("body") and p["body"]["choices"] == m["body"]["choices"]
               for i, (p, m) in enumerate(zip(plain_rows, mix_rows)) if i % 2 == 0)
    changed = sum(1 for i, (p, m) in enumerate(zip(plain_rows, mix_rows)) if i % 2 and p and m and p.get("body")
                  and m.get("body") and p["body"]["choices"] != m["body"]["choices"])
    return {"clients": clients, "steer": steer, "all_unsteered": plain, "half_steered": mix,
            "mix_vs_plain_tokens_per_s": mix["tokens_per_s"] / plain["tokens_per_s"],
            "unsteered_in_mix_equal_alone": same, "steered_answers_changed": changed,
            "steered_requests": len(bodies) // 2}


def factcheck_rate(url: str, headers: dict, bodies: list[dict], clients: int) -> dict:
    rows, wall = asyncio.run(_pool(url, headers, bodies, clients, lambda c, b: _post_one(c, "/v1/factcheck", b)))
    ok = [r for r in rows if r and r.get("status") == 200]
    lat = [r["s"] for r in ok]
    return {"requests": len(bodies), "ok": len(ok), "clients": clients, "wall_s": wall,
            "requests_per_s": len(ok) / wall, "p50_s": _pct(lat, 50), "p95_s": _pct(lat, 95)}


def report_rows(res: dict) -> list[str]:
    from trlm.core.report import fmt

    t, m, f = res.get("streaming"), res.get("steering"), res.get("factcheck")
    out = ["## Generation and fact checking (batching on)", ""]
    if t:
        out += [f"Streamed chat, {t['requests']} requests x {res['config']['gen_max_tokens']} tokens, "
                f"{t['clients']} at a time: time to first token p50 **{fmt(t['ttft_p50_s'], 2)} s** (p95 "
                f"{fmt(t['ttft_p95_s'], 2)} s), whole answer p50 {fmt(t['total_p50_s'], 2)} s; {t['ok']} ok.", ""]
    if m:
        p, x = m["all_unsteered"], m["half_steered"]
        out += ["| chat requests (non-streamed) | completion tokens/s | p50 s | ok |", "|---|---:|---:|---:|",
                f"| all unsteered | {fmt(p['tokens_per_s'], 1)} | {fmt(p['p50_s'], 2)} | {p['ok']}/{p['requests']} |",
                f"| half steered ({m['steer'][0]['directions']} concept {m['steer'][0]['concept']}, factor "
                f"{m['steer'][0]['factor']:g}) | {fmt(x['tokens_per_s'], 1)} | {fmt(x['p50_s'], 2)} | "
                f"{x['ok']}/{x['requests']} |", "",
                f"Mix / all-unsteered throughput: **{m['mix_vs_plain_tokens_per_s']:.2f}x**; unsteered answers in "
                f"the mix equal their all-unsteered answers: {m['unsteered_in_mix_equal_alone']}; steered answers "
                f"that changed: {m['steered_answers_changed']} of {m['steered_requests']}.", ""]
    if f:
        out += [f"/v1/factcheck ({res['config']['checker']}), {f['requests']} requests, {f['clients']} at a time: "
                f"**{fmt(f['requests_per_s'], 2)} requests/s**, p50 {fmt(f['p50_s'], 2)} s, p95 "
                f"{fmt(f['p95_s'], 2)} s; {f['ok']} ok.", ""]
    return out

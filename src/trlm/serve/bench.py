"""``trlm bench serve``: the real server on 127.0.0.1 under a bounded load, batching off vs on, then a soak.

1. **Workload.** The judged TREC-DL 2019 queries of ``retrieval_agentset/msmarco_trecdl19_subset``, each with its
   BM25 top ``documents`` passages: ``clients x requests`` rerank requests (queries repeat when there are more
   requests than queries; the server's score cache is off, so every request is computed).
2. **Batching off, then on.** For each, ``trlm serve`` starts in a subprocess on a free loopback port;
   ``clients`` asyncio tasks each send their ``requests`` requests one after another over httpx (C x M in all;
   the loop ends when they are answered). Documents/s = documents answered with 200 / wall time; latency
   percentiles over the requests; the batching-off run is the "served alone" reference.
3. **Soak** (on the batching-on server, started with an API key and small limits): valid requests mixed with
   malformed JSON, missing or mistyped fields, too many documents, an oversize body, no or a wrong key and an
   unknown model, sent concurrently. Each bad one must get its 4xx, each good one a 200 whose scores equal the
   reference (|Δ| <= ``tol``), none may be lost or 5xx, and ``/health`` must answer afterwards.

4. **Generation and fact checking** (on the batching-on server; :mod:`trlm.serve.bench_gen`): time to first token
   of streamed chat, throughput of a steered / unsteered chat mix against all-unsteered (with ``--directions``),
   and ``/v1/factcheck`` requests per second.

    trlm bench serve --out runs/serve --clients 16 --requests 2 --documents 20 --directions runs/steer/dirs
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from trlm.core.io import write_text
from trlm.core.models import DEFAULT_MODEL
from trlm.core.report import fmt, new_figure, save_figure, write_results
from trlm.serve.bench_gen import report_rows

log = logging.getLogger(__name__)

KEY = "bench-key"
DATASET = "retrieval_agentset/msmarco_trecdl19_subset"


def rerank_workload(data: Path, n: int, documents: int, scorer: str) -> list[dict]:
    """``n`` rerank bodies: judged queries (cycled) with their BM25 top-``documents`` passages."""
    from trlm.retrieve.beir import load_beir
    from trlm.retrieve.first_stage import BM25Index

    beir = load_beir(Path(data) / DATASET)
    qids = beir.judged_queries
    hits = BM25Index(beir.corpus).search([beir.queries[q] for q in qids], documents)
    return [{"model": scorer, "query": beir.queries[qids[i % len(qids)]],
             "documents": [beir.corpus[h.id] for h in hits[i % len(qids)]]} for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(flags: list[str], port: int, log_path: Path) -> Iterator[str]:
    """``trlm serve`` on 127.0.0.1 in a subprocess; yields its URL once /health answers; SIGTERM on exit."""
    import httpx

    port = port or _free_port()
    cmd = [sys.executable, "-m", "trlm.serve.cli", "--host", "127.0.0.1", "--port", str(port), *flags]
    with log_path.open("a") as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        logf.flush()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ})
        url = f"http://127.0.0.1:{port}"
        try:
            t_end = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"trlm serve exited with status {proc.returncode}; see {log_path}")
                if time.monotonic() > t_end:
                    raise RuntimeError(f"trlm serve did not answer /health within 300 s; see {log_path}")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _scores(body: dict) -> dict[int, float]:
    return {r["index"]: r["raw_score"] for r in body["results"]}


async def drive(url: str, bodies: list[dict], clients: int, headers: dict) -> dict:
    """``clients`` tasks; client k sends bodies k, k + C, ... one after another. Latency per request."""
    import httpx

    out: list[dict | None] = [None] * len(bodies)

    async def client(k: int, c: httpx.AsyncClient):
        for i in range(k, len(bodies), clients):
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/rerank", json=bodies[i], headers=headers)
                out[i] = {"status": r.status_code, "s": time.perf_counter() - t0,
                          "scores": _scores(r.json()) if r.status_code == 200 else None}
            except httpx.HTTPError as e:
                out[i] = {"status": None, "s": time.perf_counter() - t0, "error": repr(e), "scores": None}

    async with httpx.AsyncClient(base_url=url, timeout=900, limits=httpx.Limits(max_connections=clients)) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(k, c) for k in range(min(clients, len(bodies)))))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "rows": out}


def summarise(run: dict, documents: int) -> dict:
    rows = run["rows"]
    ok = [r for r in rows if r["status"] == 200]
    lat = np.array([r["s"] for r in ok]) if ok else np.array([np.nan])
    return {"requests": len(rows), "ok": len(ok), "errors": len(rows) - len(ok), "wall_s": run["wall_s"],
            "documents_per_s": len(ok) * documents / run["wall_s"], "requests_per_s": len(ok) / run["wall_s"],
            "p50_s": float(np.percentile(lat, 50)), "p95_s": float(np.percentile(lat, 95)),
            "p99_s": float(np.percentile(lat, 99)), "mean_s": float(lat.mean())}


def max_delta(a: list[dict | None], b: list[dict | None]) -> float:
    """Largest |Δ raw score| between two runs over the same bodies (inf if a request is missing in either)."""
    worst = 0.0
    for x, y in zip(a, b):
        if x is None or y is None:
            return float("inf")
        worst = max(worst, max(abs(x[i] - y[i]) for i in x))
    return worst


def soak_cases(bodies: list[dict], n: int, max_documents: int, max_body: int) -> list[dict]:
    """``n`` requests, every other one valid; the rest cycle through bad kinds with their expected status."""
    ok_h = {"Authorization": f"Bearer {KEY}"}
    q = bodies[0]
    bad = [("malformed_json", 422, {"content": b'{"query": "x", "documents": [', "headers": {
                **ok_h, "content-type": "application/json"}}),
           ("missing_query", 422, {"json": {"documents": q["documents"]}, "headers": ok_h}),
           ("wrong_type", 422, {"json": {"query": q["query"], "documents": [1, 2]}, "headers": ok_h}),
           ("too_many_documents", 413, {"json": {"query": q["query"], "documents": ["d"] * (max_documents + 1)},
                                        "headers": ok_h}),
           ("oversize_body", 413, {"json": {"query": q["query"], "documents": ["x" * (max_body + 1)]},
                                   "headers": ok_h}),
           ("no_key", 401, {"json": q}),
           ("wrong_key", 401, {"json": q, "headers": {"Authorization": "Bearer nope"}}),
           ("unknown_model", 404, {"json": {**q, "model": "rerank-v3.5"}, "headers": ok_h})]
    cases, vi, bi = [], 0, 0
    for k in range(n):
        if k % 2 == 0:
            cases.append({"kind": "valid", "expect": 200, "body": vi % len(bodies),
                          "req": {"json": bodies[vi % len(bodies)], "headers": ok_h}})
            vi += 1
        else:
            kind, status, req = bad[bi % len(bad)]
            cases.append({"kind": kind, "expect": status, "req": req})
            bi += 1
    return cases


async def run_soak(url: str, cases: list[dict], clients: int) -> list[dict]:
    import httpx

    sem = asyncio.Semaphore(clients)
    out: list[dict] = [{}] * len(cases)

    async def one(i: int, c: httpx.AsyncClient):
        async with sem:
            try:
                r = await c.post("/v1/rerank", **cases[i]["req"])
                out[i] = {"status": r.status_code, "scores": _scores(r.json()) if r.status_code == 200 else None}
            except httpx.HTTPError as e:
                out[i] = {"status": None, "error": repr(e), "scores": None}

    async with httpx.AsyncClient(base_url=url, timeout=900) as c:
        await asyncio.gather(*(one(i, c) for i in range(len(cases))))
    return out


def _batch_stats(metrics_text: str, scorer: str) -> dict:
    """Mean requests per engine call from the server's trlm_batch_jobs histogram."""
    vals = {}
    for line in metrics_text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f'trlm_batch_jobs_{part}{{batcher="rerank:{scorer}"}}'):
                vals[part] = float(line.split()[-1])
    n = vals.get("count", 0.0)
    return {"engine_calls": int(n), "mean_requests_per_call": vals.get("sum", 0.0) / n if n else None}


def run_serve_bench(out: str | Path, data: str | Path, *, scorer: str = "trlm-fo", model: str = DEFAULT_MODEL,
                    clients: int = 16, requests: int = 2, documents: int = 20, max_tokens_per_doc: int = 128,
                    soak: int = 60, port: int = 0, dtype: str = "float32", threads: int | None = None,
                    tol: float = 1e-3, directions: str | Path | None = None, steer_concept: int | None = None,
                    steer_factor: float = 1.0, gen_requests: int = 8, gen_max_tokens: int = 32,
                    gen_clients: int = 4, factcheck_requests: int = 40, checker: str = "minilm-features") -> dict:
    """Run the benchmark (module docstring); writes results.json, report.md and serve.png under ``out``."""
    import httpx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    server_log = out / "server.log"
    server_log.write_text("")
    bodies = rerank_workload(Path(data), clients * requests, documents, scorer)
    base = ["--model", model, "--scorer", scorer, "--no-guard", "--cache-size", "0", "--dtype", dtype,
            "--max-tokens-per-doc", str(max_tokens_per_doc), "--log-level", "warning"] + (
                ["--threads", str(threads)] if threads else [])
    max_docs, max_body = 4 * documents, 200_000
    runs, summaries, gen = {}, {}, {}
    steer = None
    if directions is not None:
        from trlm.steer.detect import load_directions

        _, dirs = load_directions(directions)
        concept = sorted(dirs)[0] if steer_concept is None else steer_concept
        if concept not in dirs:
            raise ValueError(f"--steer-concept {concept}: {directions} holds concepts {sorted(dirs)}")
        steer = [{"directions": "bench", "concept": concept, "factor": steer_factor}]
    for mode in ("off", "on"):
        flags = base + (["--no-batching"] if mode == "off" else
                        ["--batching", "--api-key", KEY, "--max-documents", str(max_docs), "--max-body-bytes",
                         str(max_body), "--checker", checker, "--max-claims", str(documents)] +
                        (["--directions", f"bench={directions}"] if directions is not None else []))
        headers = {"Authorization": f"Bearer {KEY}"} if mode == "on" else {}
        with serve(flags, port, server_log) as url:
            httpx.post(url + "/v1/rerank", json=bodies[0], headers=headers, timeout=600)  # warm-up
            log.info("batching %s: %d clients x %d requests", mode, clients, requests)
            runs[mode] = asyncio.run(drive(url, bodies, clients, headers))
            summaries[mode] = summarise(runs[mode], documents)
            if mode == "on":
                summaries[mode].update(_batch_stats(httpx.get(url + "/metrics", headers=headers).text, scorer))
                cases = soak_cases(bodies, soak, max_docs, max_body)
                t0 = time.perf_counter()
                got = asyncio.run(run_soak(url, cases, clients))
                soak_wall = time.perf_counter() - t0
                healthy = httpx.get(url + "/health", timeout=10).status_code == 200
                gen = _generation_rows(url, headers, bodies, steer, gen_requests, gen_max_tokens, gen_clients,
                                       factcheck_requests)
    ref = [r["scores"] if r else None for r in runs["off"]["rows"]]
    batched = [r["scores"] if r else None for r in runs["on"]["rows"]]
    kinds: dict[str, dict] = {}
    for case, res in zip(cases, got):
        k = kinds.setdefault(case["kind"], {"expected": case["expect"], "sent": 0, "as_expected": 0, "statuses": {}})
        k["sent"] += 1
        k["statuses"][str(res.get("status"))] = k["statuses"].get(str(res.get("status")), 0) + 1
        k["as_expected"] += res.get("status") == case["expect"]
    valid = [(c, r) for c, r in zip(cases, got) if c["kind"] == "valid"]
    soak_delta = max_delta([ref[c["body"]] for c, _ in valid], [r["scores"] for _, r in valid])
    results = {
        "config": {"scorer": scorer, "model": model, "dtype": dtype, "clients": clients, "requests_per_client":
                   requests, "documents": documents, "max_tokens_per_doc": max_tokens_per_doc, "soak": soak,
                   "data": str(Path(data) / DATASET), "cpu_count": os.cpu_count(), "threads": threads,
                   "gen_requests": gen_requests, "gen_max_tokens": gen_max_tokens, "gen_clients": gen_clients,
                   "factcheck_requests": factcheck_requests, "checker": checker,
                   "directions": str(directions) if directions else None,
                   "command": f"trlm bench serve --out {out} --clients {clients} --requests {requests} "
                              f"--documents {documents} --max-tokens-per-doc {max_tokens_per_doc} --soak {soak} "
                              f"--dtype {dtype}" + (f" --threads {threads}" if threads else "") +
                              f" --gen-requests {gen_requests} --gen-max-tokens {gen_max_tokens} --gen-clients "
                              f"{gen_clients} --factcheck-requests {factcheck_requests}" +
                              (f" --directions {directions} --steer-concept {steer[0]['concept']} --steer-factor "
                               f"{steer_factor:g}" if steer else "")},
        "batching_off": summaries["off"], "batching_on": summaries["on"],
        "speedup_documents_per_s": summaries["on"]["documents_per_s"] / summaries["off"]["documents_per_s"],
        "batched_vs_alone_max_abs_delta": max_delta(ref, batched),
        "soak": {"requests": len(cases), "wall_s": soak_wall, "kinds": kinds,
                 "lost": sum(r.get("status") is None for r in got),
                 "server_errors_5xx": sum((r.get("status") or 0) >= 500 for r in got),
                 "all_as_expected": all(k["as_expected"] == k["sent"] for k in kinds.values()),
                 "valid_max_abs_delta_vs_alone": soak_delta, "scores_match_alone": soak_delta <= tol,
                 "healthy_after": healthy, "tolerance": tol},
        **gen,
    }
    write_results(out, results)
    _plot(out / "serve.png", results)
    write_text(out / "report.md", report(results))
    return results


def _generation_rows(url: str, headers: dict, bodies: list[dict], steer, n: int, max_tokens: int, clients: int,
                     factchecks: int) -> dict:
    """Streaming time to first token, the steered / unsteered mix, factcheck requests/s (module docstring)."""
    from trlm.serve.bench_gen import chat_bodies, factcheck_rate, steer_mix, ttft

    import httpx

    queries = list(dict.fromkeys(b["query"] for b in bodies))
    chats = chat_bodies(queries, n, max_tokens)
    checks = [{"document": bodies[i % len(bodies)]["documents"][0], "claims": [bodies[i % len(bodies)]["query"]]}
              for i in range(factchecks)]
    for path, body in (("/v1/chat/completions", chats[0]), ("/v1/factcheck", checks[0])):  # warm-up, not timed
        httpx.post(url + path, json=body, headers=headers, timeout=600)
    out = {"streaming": ttft(url, headers, chats, clients)}
    if steer is not None:
        out["steering"] = steer_mix(url, headers, chats, clients, steer)
    out["factcheck"] = factcheck_rate(url, headers, checks, clients)
    return out


def _plot(path: Path, res: dict) -> None:
    fig, (a, b) = new_figure(1, 2, figsize=(9, 3.5))
    modes = [("batching off", res["batching_off"]), ("batching on", res["batching_on"])]
    a.bar([m for m, _ in modes], [s["documents_per_s"] for _, s in modes], color=["#999", "#2a7"])
    a.set_ylabel("documents / s")
    a.set_title(f"{res['config']['clients']} clients x {res['config']['requests_per_client']} requests")
    x = np.arange(3)
    for j, (m, s) in enumerate(modes):
        b.bar(x + (j - 0.5) * 0.38, [s["p50_s"], s["p95_s"], s["p99_s"]], 0.38, label=m,
              color=["#999", "#2a7"][j])
    b.set_xticks(x, ["p50", "p95", "p99"])
    b.set_ylabel("latency (s)")
    b.legend()
    save_figure(fig, path)


def report(res: dict) -> str:
    c, soak = res["config"], res["soak"]
    rows = [f"| {name} | {fmt(s['documents_per_s'], 1)} | {fmt(s['requests_per_s'], 2)} | {fmt(s['p50_s'], 2)} | "
            f"{fmt(s['p95_s'], 2)} | {fmt(s['p99_s'], 2)} | {s['errors']} |"
            for name, s in (("batching off (one request per engine call)", res["batching_off"]),
                            ("batching on", res["batching_on"]))]
    kinds = [f"| {k} | {v['expected']} | {v['sent']} | {v['as_expected']} | "
             f"{', '.join(f'{s}: {n}' for s, n in v['statuses'].items())} |" for k, v in soak["kinds"].items()]
    on = res["batching_on"]
    return "\n".join([
        "# trlm bench serve", "", f"`{c['command']}`", "",
        f"{c['scorer']} on {c['model']} ({c['dtype']}), {c['clients']} concurrent clients x "
        f"{c['requests_per_client']} rerank requests of {c['documents']} BM25 passages (TREC-DL 2019 subset, cut "
        f"to {c['max_tokens_per_doc']} tokens), server and load on 127.0.0.1, {c['cpu_count']} CPU cores "
        f"(server threads: {c['threads'] or 'torch default'}), "
        "score cache off.", "",
        "| server | documents/s | requests/s | p50 s | p95 s | p99 s | errors |", "|---|---:|---:|---:|---:|---:|---:|",
        *rows, "",
        f"Speed-up of batching: **{res['speedup_documents_per_s']:.2f}x** documents/s; "
        f"{on.get('engine_calls')} engine calls, {fmt(on.get('mean_requests_per_call'), 2)} requests per call; "
        f"batched vs alone max |Δ raw score| {res['batched_vs_alone_max_abs_delta']:.2e}.", "",
        f"## Soak ({soak['requests']} requests, {fmt(soak['wall_s'], 1)} s)", "",
        "| kind | expected | sent | as expected | statuses |", "|---|---:|---:|---:|---|", *kinds, "",
        f"lost {soak['lost']}, 5xx {soak['server_errors_5xx']}, all as expected: {soak['all_as_expected']}, "
        f"valid scores == alone (|Δ| <= {soak['tolerance']:g}): {soak['scores_match_alone']} (max |Δ| "
        f"{soak['valid_max_abs_delta_vs_alone']:.2e}), healthy after: {soak['healthy_after']}.", "",
        "![throughput and latency](serve.png)", "", *report_rows(res),
        *([] if res.get("steering") else ["Steered / unsteered mix: not measured (pass --directions DIR).", ""])])


if __name__ == "__main__":  # python -m trlm.serve.bench OUT [CLIENTS REQUESTS]
    from trlm.core.io import default_data_dir

    logging.basicConfig(level=logging.INFO)
    a = sys.argv[1:]
    res = run_serve_bench(a[0], default_data_dir(), clients=int(a[1]) if len(a) > 1 else 16,
                          requests=int(a[2]) if len(a) > 2 else 2)
    print(json.dumps({k: res[k] for k in ("batching_off", "batching_on", "speedup_documents_per_s")}, indent=2))

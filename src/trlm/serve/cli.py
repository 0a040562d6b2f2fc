"""``trlm serve`` and ``trlm bench serve``.

    trlm serve --scorer trlm-fo,forward-mean --port 8000 [--api-key KEY ...]
    python -m trlm.serve.cli --port 8000          # the same command without the root CLI
    trlm bench serve --out runs/serve --clients 16 --requests 2
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

from trlm.core.io import InputError, split_list
from trlm.core.options import echo_report
from trlm.scoring.scorers import SERVABLE_SCORERS
from trlm.serve.service import ServeConfig

_C = ServeConfig()  # flag defaults come from the config dataclass
_D = _C.guard_args
log = logging.getLogger("trlm.serve")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    bench.command("serve")(bench_serve_cmd)


def serve_cmd(
    model: str = typer.Option(_C.model, "--model", "-m", help="Forward model: generator, /v1/score, forward scorers."),
    scorer: str = typer.Option(",".join(_C.scorers), help="Comma-separated rerank scorers to serve (the `model` "
                               f"field of a rerank request); the first is the default. Any of: "
                               f"{', '.join(SERVABLE_SCORERS)}."),
    host: str = typer.Option(_C.host, help="Address to bind; loopback by default."),
    port: int = typer.Option(_C.port),
    api_key: Optional[List[str]] = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY' on "
                                                "every route but /health (repeatable; also TRLM_API_KEYS=k1,k2)."),
    device: Optional[str] = typer.Option(_C.device, help="cuda, mps or cpu (default: auto-detect)."),
    dtype: str = typer.Option(_C.dtype, help="auto (bf16 where fast), float32 or bfloat16."),
    threads: Optional[int] = typer.Option(_C.threads, help="Torch CPU threads (default: torch's choice; use fewer "
                                          "when other processes share the cores)."),
    batching: bool = typer.Option(_C.batching, help="Coalesce concurrent requests into one engine call."),
    max_wait_ms: float = typer.Option(_C.max_wait_ms, help="Longest wait of a queued request for others to join."),
    max_batch_tokens: int = typer.Option(_C.max_batch_tokens, help="Estimated tokens of one coalesced call."),
    max_batch_requests: int = typer.Option(_C.max_batch_requests, help="Requests in one coalesced call."),
    max_queue: int = typer.Option(_C.max_queue, help="Queued requests per workload before 429 + Retry-After."),
    rate_limit: float = typer.Option(_C.rate_limit, help="Requests per second per API key (per client address "
                                     "without keys) before 429 + Retry-After; 0: no limit."),
    rate_burst: int = typer.Option(_C.rate_burst, help="Requests a key may send at once before --rate-limit applies."),
    cache_size: int = typer.Option(_C.cache_size, help="Scores kept in the LRU cache (0: off)."),
    max_body_bytes: int = typer.Option(_C.max_body_bytes, help="Larger request bodies are refused (413)."),
    max_documents: int = typer.Option(_C.max_documents, help="Documents per rerank request (413 beyond)."),
    max_tokens_per_doc: int = typer.Option(_C.max_tokens_per_doc, help="Documents are cut to this many tokens."),
    max_new_tokens: int = typer.Option(_C.max_new_tokens, help="Cap on a completion's max_tokens."),
    max_claims: int = typer.Option(_C.max_claims, help="Claims per /v1/factcheck or /v1/cite request (413 beyond)."),
    checker: str = typer.Option(",".join(_C.checkers), help="Comma-separated /v1/factcheck checkers; the first is "
                                "the default: minilm-features, trlm-fo, forward-pmi, trlm-ba, smollm2-yesno or a "
                                "directory from `trlm factcheck train`."),
    cite_scorer: str = typer.Option(",".join(_C.cite_scorers), help="Comma-separated /v1/cite scorers "
                                    "(task=citation); the first is the default."),
    directions: Optional[List[str]] = typer.Option(None, "--directions", help="NAME=DIR: directions written by "
                                                   "`trlm steer fit`, for the 'steer' field of completions and chat "
                                                   "(repeatable)."),
    request_timeout: float = typer.Option(_C.request_timeout_s, help="Seconds before an unanswered request gets 504."),
    guard: bool = typer.Option(_C.guard, help="Serve /v1/guard (loads the MiniLM filter)."),
    guard_n: int = typer.Option(_D.n, help="/v1/guard: queries generated back from each response."),
    guard_tau: int = typer.Option(_D.tau, help="/v1/guard: reject when more than tau of them are flagged."),
    speculative: Optional[str] = typer.Option(_C.speculative, help="Generate with speculative decoding and this "
                                              "drafter: ngram, ngram:N, early-exit:K or a model."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
):
    """Serve re-ranking (Cohere shape), scoring, guarding and generation (OpenAI subset) over HTTP."""
    import dataclasses

    import uvicorn

    from trlm.serve.app import create_app
    from trlm.serve.service import api_keys_from_env

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = api_keys_from_env(api_key or ())
    pairs = []
    for spec in directions or ():
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--directions {spec!r}: give NAME=DIR (a directory written by `trlm steer fit`)")
        pairs.append((name.strip(), path.strip()))
    cfg = ServeConfig(model=model, scorers=tuple(split_list(scorer, "--scorer")), host=host, port=port, api_keys=keys,
                      device=device,
                      dtype=dtype, threads=threads, batching=batching, max_wait_ms=max_wait_ms,
                      max_batch_tokens=max_batch_tokens,
                      max_batch_requests=max_batch_requests, max_queue=max_queue, cache_size=cache_size,
                      max_body_bytes=max_body_bytes, max_documents=max_documents,
                      max_tokens_per_doc=max_tokens_per_doc, max_new_tokens=max_new_tokens,
                      request_timeout_s=request_timeout, guard=guard,
                      guard_args=dataclasses.replace(_D, n=guard_n, tau=guard_tau), speculative=speculative,
                      rate_limit=rate_limit, rate_burst=rate_burst, max_claims=max_claims,
                      checkers=tuple(split_list(checker, "--checker")),
                      cite_scorers=tuple(split_list(cite_scorer, "--cite-scorer")), directions=tuple(pairs))
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        log.warning("binding to %s without --api-key: anyone who can reach this address can use the server", host)
    if threads:
        import torch

        torch.set_num_threads(threads)
        log.info("torch uses %d CPU threads (--threads)", threads)
    app = create_app(cfg)
    log.info("listening on http://%s:%d (auth %s)", host, port, "on" if keys else "off")
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=int(request_timeout),
                access_log=False)


def bench_serve_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, report.md and serve.png."),
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA)."),
    scorer: str = typer.Option("trlm-fo", help="The rerank scorer to load."),
    clients: int = typer.Option(16, help="Concurrent clients (C)."),
    requests: int = typer.Option(2, help="Rerank requests per client (M)."),
    documents: int = typer.Option(20, help="Documents per rerank request."),
    max_tokens_per_doc: int = typer.Option(128, help="Documents are cut to this many tokens."),
    soak: int = typer.Option(60, help="Requests in the soak (valid and invalid, mixed)."),
    port: int = typer.Option(0, help="Loopback port (0: a free one)."),
    dtype: str = typer.Option("float32", help="The server's dtype (float32: batched scores equal alone ones to 1e-3)."),
    threads: Optional[int] = typer.Option(None, help="The server's torch CPU threads (default: torch's choice)."),
    directions: Optional[Path] = typer.Option(None, help="Directions from `trlm steer fit` for the steered / "
                                              "unsteered chat mix (without: that row is not measured)."),
    steer_concept: Optional[int] = typer.Option(None, help="Concept steered in the mix (default: the first)."),
    steer_factor: float = typer.Option(1.0, help="Steering factor in the mix."),
    gen_requests: int = typer.Option(8, help="Chat requests of the streaming and steering rows."),
    gen_max_tokens: int = typer.Option(32, help="max_tokens of those chat requests."),
    gen_clients: int = typer.Option(4, help="Concurrent clients of the generation and factcheck rows."),
    factcheck_requests: int = typer.Option(40, help="/v1/factcheck requests."),
):
    """Rerank documents/s and latency, batching on vs off; a soak; streamed TTFT; a steered chat mix; factcheck/s."""
    from trlm.core.io import default_data_dir
    from trlm.serve.bench import run_serve_bench

    if clients < 1 or requests < 1 or documents < 1:
        raise InputError("--clients, --requests and --documents must be >= 1")
    run_serve_bench(out, data or default_data_dir(), scorer=scorer, clients=clients, requests=requests,
                    documents=documents, max_tokens_per_doc=max_tokens_per_doc, soak=soak, port=port, dtype=dtype,
                    threads=threads, directions=directions, steer_concept=steer_concept, steer_factor=steer_factor,
                    gen_requests=gen_requests, gen_max_tokens=gen_max_tokens, gen_clients=gen_clients,
                    factcheck_requests=factcheck_requests)
    echo_report(out)


def main() -> None:
    """``python -m trlm.serve.cli [flags]``: ``trlm serve`` without the root CLI."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    typer.run(serve_cmd)


if __name__ == "__main__":
    main()

"""Retrieval benchmark: first stage alone, MiniLM dense alone, and the first stage's top-k re-ranked.

    trlm bench retrieve --data ../shared/data/retrieval_agentset/msmarco_trecdl19_subset \\
        --first-stage bm25 --k 100 --scorers trlm-fo,forward-mean --out runs/retrieve

``--min-rel 2`` follows the TREC-DL convention for binary measures (grade 1 = "related").
Only queries with at least one relevant judgment are evaluated (43 of 50 on the TREC-DL19 subset);
``--limit-queries N`` keeps the first N of them in queries.jsonl order. Writes ``DIR/results.json``
(``{"<method>": {"ndcg@10", "p@1", "r@10", "mrr@10", "n_queries"}}``; methods ``bm25``, ``minilm`` and
``bm25+<scorer>``, or with ``--first-stage dense`` ``minilm`` and ``minilm+<scorer>``; ``<stage>+<scorer> (rrf)``
is the re-ranking fused with the first stage by reciprocal rank, k = 60, nothing fitted), ``DIR/throughput.json``,
``DIR/paired.json`` (each re-ranked method's nDCG@10 minus the first stage's, paired bootstrap 95 % CI),
``DIR/report.md``, ``DIR/ndcg.png``, the rankings under ``DIR/runs/<method>.jsonl`` and, once every query is
re-ranked, ``DIR/fusion.{json,md,png}``: each re-ranker linearly mixed with the first stage at weights 0..1
(:mod:`trlm.retrieve.fusion`: the best weight's nDCG@10 as an upper bound, and a leave-one-query-out estimate).
Re-rankers advance together over chunks of 5 queries and results are rewritten after each chunk, so a run cut
short compares every method on the queries it finished (``bm25 (first N)``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from trlm.core.io import write_json, write_text
from trlm.core.report import write_results
from trlm.retrieve.metrics import METRICS, mean_metrics, per_query_metrics
from trlm.core.ranking import Ranked
from trlm.retrieve.beir import load_beir, write_run
from trlm.retrieve.fusion import write_fusion
from trlm.retrieve.first_stage import FIRST_STAGES, build_index, rerank_hits, rrf_fuse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Throughput:
    """Re-ranking cost of one scorer: wall time, and queries, passages and model tokens per second."""

    seconds: float
    queries_per_s: float
    passages_per_s: float
    tokens_per_s: float
    tokens: int  # prompt + query + (cut) passage tokens over all scored requests


def _request_tokens(scorer, queries: Sequence[str], hits, corpus) -> int:
    """Model tokens of every request the scorer builds (0 for scorers without a language model)."""
    from trlm.scoring import LikelihoodScorer

    if not isinstance(scorer, LikelihoodScorer):
        return 0
    eng, n = scorer.engine, 0
    for q, hs in zip(queries, hits):
        for h in hs:
            doc = corpus[h.id]
            if scorer.max_response_tokens:
                doc = eng.truncate(doc, scorer.max_response_tokens)
            req = scorer.build(q, doc)
            n += len(eng.encode(req.context)) + len(eng.encode(req.continuation)) + 1
    return n


def run_bench_retrieve(
    data: str | Path,
    out: str | Path,
    *,
    first_stage: str = "bm25",
    k: int = 100,
    scorers: Sequence[str] = ("trlm-fo", "forward-mean"),
    limit_queries: int | None = None,
    max_doc_tokens: int = 300,
    min_rel: int = 1,
    dense: bool = True,
    chunk: int = 5,
    progress: bool = True,
) -> dict[str, dict]:
    """Evaluate and write results; returns the ``results.json`` dict."""
    from trlm.scoring import make_scorer

    if first_stage not in FIRST_STAGES:
        raise ValueError(f"--first-stage must be one of {', '.join(FIRST_STAGES)}, got {first_stage!r}")
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    out = Path(out)
    ds = load_beir(data)
    qids = ds.judged_queries[:limit_queries] if limit_queries else ds.judged_queries
    if not qids:
        raise ValueError(f"{data}: no query has a relevant judgment")
    texts = [ds.queries[q] for q in qids]
    results: dict[str, dict] = {}
    per_query: dict[str, list[float]] = {}  # method -> nDCG@10 per query, in qids order
    speed: dict[str, dict] = {}
    config = {"data": str(data), "first_stage": first_stage, "k": k, "scorers": list(scorers),
              "n_queries": len(qids), "max_doc_tokens": max_doc_tokens, "corpus_size": len(ds.corpus),
              "min_rel": min_rel}

    def record(method: str, ranked: list[list[Ranked]], save_run: bool = True) -> None:
        done = qids[: len(ranked)]
        per = per_query_metrics({q: [r.id for r in rs] for q, rs in zip(done, ranked)}, ds.qrels, min_rel=min_rel)
        results[method] = mean_metrics(per)
        if save_run:
            write_run(out / "runs" / f"{method}.jsonl", done, ranked)
            per_query[method] = [per[q]["ndcg@10"] for q in done]
        _write(out, results, speed, config, paired_ndcg(per_query, stage))

    stage = "minilm" if first_stage == "dense" else first_stage  # method names: minilm, minilm+trlm-ba, ...
    t0 = time.perf_counter()
    index = build_index(first_stage, ds.corpus, progress=progress)
    hits = index.search(texts, k)
    speed[stage] = {"index_and_search_s": time.perf_counter() - t0}
    record(stage, hits)
    # Re-rankers advance together, a chunk of queries at a time, so a run cut short compares them on the
    # same queries; until they cover every query, the first stage is also reported on that prefix.
    made = {name: make_scorer(name, task="retrieval", max_response_tokens=max_doc_tokens) for name in scorers}
    ranked: dict[str, list[list[Ranked]]] = {name: [] for name in scorers}
    cost = {name: [0.0, 0] for name in scorers}  # seconds, tokens
    for s in range(0, len(qids) if scorers else 0, chunk):
        q_part, h_part = texts[s:s + chunk], hits[s:s + chunk]
        for name, scorer in made.items():
            cost[name][1] += _request_tokens(scorer, q_part, h_part, ds.corpus)
            t0 = time.perf_counter()
            ranked[name] += rerank_hits(q_part, h_part, ds.corpus, scorer, progress=progress)
            cost[name][0] += time.perf_counter() - t0
            dt, tok = cost[name]
            n_done, n_pass = len(ranked[name]), sum(len(h) for h in hits[: len(ranked[name])])
            speed[f"{stage}+{name}"] = asdict(Throughput(dt, n_done / dt, n_pass / dt, tok / dt, tok))
            record(f"{stage}+{name}", ranked[name])
            record(f"{stage}+{name} (rrf)", [rrf_fuse(f, r) for f, r in zip(hits, ranked[name])])
        n_done = min(len(r) for r in ranked.values())
        for m in [m for m in results if m.startswith(f"{stage} (first ")]:
            del results[m]
        if n_done < len(qids):
            record(f"{stage} (first {n_done})", hits[:n_done], save_run=False)
        _write(out, results, speed, config, paired_ndcg(per_query, stage))
        log.info("%d/%d queries re-ranked: %s", n_done, len(qids),
                 {m: round(r["ndcg@10"], 3) for m, r in results.items()})
    if dense and first_stage != "dense":
        t0 = time.perf_counter()
        record("minilm", build_index("dense", ds.corpus, progress=progress).search(texts, k))
        speed["minilm"] = {"index_and_search_s": time.perf_counter() - t0}
    if scorers and len(qids) > 1:
        write_fusion(out, ds.qrels, stage, min_rel, methods=[f"{stage}+{name}" for name in scorers])
    else:  # nothing to fuse: no fusion files from an earlier run into this folder may stay behind
        for stale in ("fusion.json", "fusion.md", "fusion.png"):
            (out / stale).unlink(missing_ok=True)
    return results


def paired_ndcg(per_query: dict[str, list[float]], stage: str) -> list[dict]:
    """Each re-ranked method's nDCG@10 minus the first stage's on the same queries (a run cut short: its first
    queries), mean and paired bootstrap 95 % CI; ``[]`` until the first stage has been recorded."""
    from trlm.core.report import paired_diff_ci

    if stage not in per_query:
        return []
    rows = []
    for m, v in per_query.items():
        if m.startswith(f"{stage}+") and v:
            d, lo, hi = paired_diff_ci(v, per_query[stage][: len(v)])
            rows.append({"method": m, "vs": stage, "ndcg@10_diff": d, "ci95": [lo, hi], "n_queries": len(v)})
    return rows


def _write(out: Path, results: dict, speed: dict, config: dict, paired: Sequence[dict] = ()) -> None:
    write_results(out, results)
    write_json(out / "throughput.json", {"config": config, "throughput": speed})
    write_json(out / "paired.json", list(paired))
    write_text(out / "report.md", _report(results, speed, config, paired))
    _plot(out / "ndcg.png", results)


def _report(results: dict, speed: dict, config: dict, paired: Sequence[dict] = ()) -> str:
    lines = [
        "# Retrieval benchmark", "",
        f"Data `{config['data']}` ({config['corpus_size']} passages), {config['n_queries']} judged queries; "
        f"first stage `{config['first_stage']}`, re-ranking its top {config['k']} "
        f"(passages cut to {config['max_doc_tokens']} tokens). `minilm` is dense retrieval alone. "
        f"nDCG uses the grade as gain (trec_eval); `ndcg@10_exp` uses 2^grade - 1; p@1, r@10 and mrr@10 count "
        f"grade >= {config['min_rel']} as relevant.", "",
        "| method | " + " | ".join(METRICS) + " | queries |",
        "|---|" + "---:|" * (len(METRICS) + 1),
    ]
    for m, r in results.items():
        lines.append(f"| {m} | " + " | ".join(f"{r[k]:.3f}" for k in METRICS) + f" | {r['n_queries']} |")
    if paired:
        lines += ["", f"nDCG@10 minus `{paired[0]['vs']}` on the same queries (paired bootstrap 95 % CI):", "",
                  "| method | difference | 95 % CI | queries |", "|---|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['ndcg@10_diff']:+.3f} | {r['ci95'][0]:+.3f} to {r['ci95'][1]:+.3f} "
                  f"| {r['n_queries']} |" for r in paired]
    rer = {m: s for m, s in speed.items() if "queries_per_s" in s}
    if rer:
        lines += ["", "Re-ranking throughput (this machine):", "",
                  "| method | seconds | queries/s | passages/s | tokens/s |", "|---|---:|---:|---:|---:|"]
        for m, s in rer.items():
            lines.append(f"| {m} | {s['seconds']:.0f} | {s['queries_per_s']:.3f} | {s['passages_per_s']:.2f} "
                         f"| {s['tokens_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, results: dict) -> None:
    from trlm.core.report import new_figure, save_figure

    fig, ax = new_figure(figsize=(1.2 + 1.1 * len(results), 3.2))
    names = list(results)
    ax.bar(range(len(names)), [results[n]["ndcg@10"] for n in names], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("nDCG@10")
    ax.set_ylim(0, 1)
    save_figure(fig, path, dpi=120)

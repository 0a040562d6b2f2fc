"""Linear fusion of a first stage and its re-ranking: how much could any weighted mix of the two scores gain?

Reciprocal-rank fusion (:func:`trlm.retrieve.first_stage.rrf_fuse`) fixes its one constant. Linear fusion mixes the two
scores, each z-normalised over the query's k candidates, with a weight ``w``::

    s(d) = (1 - w) * z(first-stage score of d) + w * z(re-ranker score of d)

``w = 0`` is the first stage, ``w = 1`` the pure re-ranking. A collection without a dev split (TREC-DL19 here)
gives two honest readings of it:

* **the curve** — nDCG@10 at every ``w`` on all queries. Its maximum chooses ``w`` on the test queries, so it is an
  *upper bound* on what a mix can do, never a result to report as one.
* **leave one query out** — each query is ranked with the ``w`` that maximises mean nDCG@10 over the *other*
  queries (ties: the smaller ``w``, closer to the first stage), an estimate nobody tuned on the query it scores.

:func:`write_fusion` reads a ``trlm bench retrieve`` output folder (``runs/<stage>.jsonl`` and
``runs/<stage>+<scorer>.jsonl``, which keep every candidate's score) and writes ``fusion.json``, ``fusion.md`` and
``fusion.png`` beside them; ``trlm bench retrieve-fusion DIR`` runs it on a finished run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from trlm.core.io import InputError, write_json, write_text
from trlm.core.ranking import Ranked, rank_by_score
from trlm.retrieve.beir import read_run

WEIGHTS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))  # 0, 0.05, ..., 1


def zscore(scores: Sequence[float]) -> np.ndarray:
    """``(x - mean) / std`` over one query's candidates; all zeros when every score is equal. A NaN or infinite
    score is an error: it would turn the whole list into NaN (or zeros) and silently drop the ranking."""
    x = np.asarray(scores, dtype=float)
    if not np.isfinite(x).all():
        raise ValueError("zscore: scores must be finite (got NaN or inf)")
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def linear_fuse(first: Sequence[Ranked], reranked: Sequence[Ranked], weight: float) -> list[Ranked]:
    """``(1 - weight) * z(first) + weight * z(reranked)`` over the same ids, best first; ties keep the first-stage
    order. Scores are z-normalised per list, so the two scales (cosine, log-probability) need not match."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    by_id = {h.id: h.score for h in reranked}
    if by_id.keys() != {h.id for h in first} or len(by_id) != len(first) or len(reranked) != len(first):
        raise ValueError("linear_fuse: the two rankings must hold the same ids")
    ids = [h.id for h in first]
    fused = (1 - weight) * zscore([h.score for h in first]) + weight * zscore([by_id[i] for i in ids])
    return rank_by_score(fused.tolist(), ids=ids)


def leave_one_out(curves: np.ndarray, weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query value and weight when each query takes the weight best on the others.

    Args:
        curves: (W, Q) metric of each weight on each query.
        weights: the W weights, ascending (``argmax`` takes the first best, i.e. the smallest weight).
    Returns:
        (Q,) the held-out query's value at its chosen weight, and (Q,) the chosen weights.
    """
    n_w, n_q = curves.shape
    if n_q < 2:
        raise ValueError("leave-one-out needs at least 2 queries")
    if n_w != len(weights):
        raise ValueError(f"{n_w} curve rows but {len(weights)} weights")
    others = (curves.sum(axis=1, keepdims=True) - curves) / (n_q - 1)  # (W, Q): mean over the other queries
    best = others.argmax(axis=0)  # (Q,)
    return curves[best, np.arange(n_q)], np.asarray(weights, dtype=float)[best]


def _need(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"{path}: no such file; RUN must be the --out folder of a finished `trlm bench retrieve` run")
    return path


def _check_pair(first: Mapping[str, Sequence[Ranked]], reranked: Mapping[str, Sequence[Ranked]], path: Path,
                stage: str) -> None:
    """Every re-ranked query is in the first stage and permutes exactly its candidates (else the run folder mixes
    runs, e.g. of another --k)."""
    for q, hs in reranked.items():
        if q not in first:
            raise InputError(f"{path}: qid {q!r} is not in {stage}.jsonl")
        if len(hs) != len(first[q]) or {h.id for h in hs} != {h.id for h in first[q]}:
            raise InputError(f"{path}: qid {q!r}: its passages are not the {len(first[q])} of {stage}.jsonl "
                             "(a run from another --k or data folder?)")


def fusion_sweep(first: Mapping[str, Sequence[Ranked]], reranked: Mapping[str, Sequence[Ranked]],
                 qrels: Mapping[str, Mapping[str, int]], min_rel: int = 1,
                 weights: Sequence[float] = WEIGHTS) -> dict:
    """The curve, its best weight (an upper bound) and the leave-one-query-out result of one re-ranker, on the
    queries it re-ranked; the paired bootstrap CI is against the first stage on the same queries."""
    from trlm.core.report import paired_diff_ci
    from trlm.retrieve.metrics import per_query_metrics

    if list(weights) != sorted(weights) or weights[0] != 0.0 or weights[-1] != 1.0:
        raise ValueError(f"weights must ascend from 0 to 1, got {list(weights)}")
    qids = [q for q in reranked if q in first]
    if len(qids) < 2:
        raise ValueError(f"fusion needs at least 2 queries ranked by both lists, got {len(qids)}")
    curves = np.empty((len(weights), len(qids)))
    for i, w in enumerate(weights):
        rk = {q: [h.id for h in linear_fuse(first[q], reranked[q], w)] for q in qids}
        per = per_query_metrics(rk, qrels, min_rel=min_rel)
        curves[i] = [per[q]["ndcg@10"] for q in qids]
    held, chosen = leave_one_out(curves, weights)
    per = per_query_metrics({q: [h.id for h in first[q]] for q in qids}, qrels, min_rel=min_rel)
    base = np.asarray([per[q]["ndcg@10"] for q in qids])  # the first stage's own order (= the curve at w = 0)
    d, lo, hi = paired_diff_ci(held.tolist(), base.tolist())
    mean = curves.mean(axis=1)
    b = int(mean.argmax())
    return {"n_queries": len(qids), "curve": [round(float(v), 4) for v in mean],
            "first_ndcg@10": float(base.mean()), "best_weight": float(weights[b]), "best_ndcg@10": float(mean[b]),
            "loo_ndcg@10": float(held.mean()), "loo_diff": d, "loo_ci95": [lo, hi],
            "loo_weights": {"min": float(chosen.min()), "median": float(np.median(chosen)),
                            "max": float(chosen.max())}}


def write_fusion(run_dir: str | Path, qrels: Mapping[str, Mapping[str, int]], stage: str, min_rel: int = 1,
                 weights: Sequence[float] = WEIGHTS, methods: Sequence[str] | None = None) -> dict:
    """Sweep ``runs/<method>.jsonl`` against ``runs/<stage>.jsonl`` in a ``trlm bench retrieve`` folder, for each of
    ``methods`` (default: every ``<stage>+<scorer>`` run there but the ``(rrf)`` ones), on the queries every one of
    them re-ranked (a run cut short: its finished prefix); writes ``fusion.json``, ``fusion.md``, ``fusion.png``
    and returns the json dict."""
    run_dir = Path(run_dir)
    runs = _need(run_dir / "runs")
    first = read_run(_need(runs / f"{stage}.jsonl"))
    if methods is None:
        methods = [p.stem for p in sorted(runs.glob(f"{stage}+*.jsonl")) if not p.stem.endswith("(rrf)")]
    if not methods:
        raise InputError(f"{runs}: no re-ranked runs ({stage}+<scorer>.jsonl) to fuse with {stage}.jsonl")
    reranked = {}
    for m in methods:
        path = _need(runs / f"{m}.jsonl")
        reranked[m] = read_run(path)
        _check_pair(first, reranked[m], path, stage)
    shared = [q for q in first if all(q in r for r in reranked.values())]
    swept = {m: fusion_sweep(first, {q: r[q] for q in shared}, qrels, min_rel, weights) for m, r in reranked.items()}
    out = {"stage": stage, "min_rel": min_rel, "weights": list(weights), "methods": swept}
    write_json(run_dir / "fusion.json", out)
    write_text(run_dir / "fusion.md", _report(out))
    _plot(run_dir / "fusion.png", out)
    return out


def fusion_for_run(run_dir: str | Path, data: str | Path | None = None) -> dict:
    """:func:`write_fusion` on a finished run, reading its data folder, first stage and ``min_rel`` from the
    run's ``throughput.json`` (``data`` overrides the folder)."""
    from trlm.retrieve.beir import load_beir

    cfg_path = _need(Path(run_dir) / "throughput.json")
    try:
        cfg = json.loads(cfg_path.read_text())["config"]
        stage = "minilm" if cfg["first_stage"] == "dense" else cfg["first_stage"]
        src, min_rel = data or cfg["data"], int(cfg["min_rel"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{cfg_path}: not a `trlm bench retrieve` config ({e})") from None
    return write_fusion(run_dir, load_beir(src).qrels, stage, min_rel)


def _report(out: dict) -> str:
    st = out["stage"]
    lines = ["# Linear fusion with the first stage", "",
             f"`(1 - w) · z({st}) + w · z(re-ranker)`, scores z-normalised per query; w = 0 is `{st}` alone, "
             "w = 1 the pure re-ranking. *Best w* is chosen on the evaluated queries themselves, so its nDCG@10 is "
             "an upper bound; *leave one out* ranks each query with the w best on the others. Δ is leave-one-out "
             f"minus `{st}` (paired bootstrap 95 % CI).", "",
             f"| method | {st} | w = 1 | best w | nDCG@10 at best w (upper bound) | leave one out | Δ [95 % CI] "
             "| w chosen (min / median / max) | queries |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, r in out["methods"].items():
        lw = r["loo_weights"]
        lines.append(f"| {m} | {r['first_ndcg@10']:.3f} | {r['curve'][-1]:.3f} | {r['best_weight']:.2f} "
                     f"| {r['best_ndcg@10']:.3f} | {r['loo_ndcg@10']:.3f} | {r['loo_diff']:+.3f} "
                     f"[{r['loo_ci95'][0]:+.3f}, {r['loo_ci95'][1]:+.3f}] "
                     f"| {lw['min']:.2f} / {lw['median']:.2f} / {lw['max']:.2f} | {r['n_queries']} |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, out: dict) -> None:
    from trlm.core.report import new_figure, save_figure

    fig, ax = new_figure(figsize=(5.5, 3.4))
    for m, r in out["methods"].items():
        ax.plot(out["weights"], r["curve"], marker=".", label=m.split("+", 1)[1])
    first = next(iter(out["methods"].values()))["first_ndcg@10"]
    ax.axhline(first, color="grey", ls="--", lw=1, label=f"{out['stage']} alone")
    ax.set_xlabel("weight on the re-ranker (0: first stage, 1: re-ranking)")
    ax.set_ylabel("nDCG@10")
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=120)

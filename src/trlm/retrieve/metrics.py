"""Ranking metrics through ``ir_measures`` (pytrec_eval backend, runs offline).

Definitions (trec_eval's): ``ndcg@10`` uses the graded label itself as gain and log2(rank + 1) discounting
(the official TREC-DL measure); ``ndcg@10_exp`` is the same with gain 2^g - 1 (Burges et al.), which weighs
highly relevant documents more. ``p@1``, ``r@10`` and ``mrr@10`` (reciprocal rank of the first relevant
document in the top 10, 0 if none) count a document as relevant when its grade is >= ``min_rel``: 1 for BEIR
sets, 2 for TREC-DL passage judgments, where grade 1 means "related" rather than relevant. Every query passed in counts:
a query whose ranking is empty scores 0 on every metric rather than being dropped.

The rank order given is the order evaluated: scores handed to pytrec_eval are ``n - rank``, so its own
tie-breaking (by document id) never reorders a ranking.

    >>> evaluate({"q": ["d2", "x", "d1"]}, {"q": {"d1": 3, "d2": 1}})["ndcg@10"]
    0.688...
"""

from __future__ import annotations

from typing import Mapping, Sequence

METRICS: tuple[str, ...] = ("ndcg@10", "p@1", "r@10", "mrr@10", "ndcg@10_exp")


def _measures(min_rel: int, grades: set[int]) -> dict[str, object]:
    from ir_measures import P, R, RR, nDCG

    exp_gains = {g: 2 ** g - 1 for g in grades if g > 0}  # all pytrec_eval, no external (perl) evaluator
    return {"ndcg@10": nDCG @ 10, "p@1": P(rel=min_rel) @ 1, "r@10": R(rel=min_rel) @ 10,
            "mrr@10": RR(rel=min_rel) @ 10, "ndcg@10_exp": nDCG(gains=exp_gains) @ 10}


def evaluate(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    min_rel: int = 1,
) -> dict[str, float]:
    """Mean of each metric in :data:`METRICS` over the queries in ``rankings``; adds ``n_queries``.
    Arguments as in :func:`per_query_metrics`."""
    return mean_metrics(per_query_metrics(rankings, qrels, min_rel))


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the queries of a :func:`per_query_metrics` result, plus ``n_queries``."""
    n = len(per_query)
    out = {m: sum(v[m] for v in per_query.values()) / n for m in METRICS}
    out["n_queries"] = n
    return out


def per_query_metrics(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    min_rel: int = 1,
) -> dict[str, dict[str, float]]:
    """qid -> {metric: value} for every metric in :data:`METRICS` and every query in ``rankings``.

    Args:
        rankings: qid -> doc ids best-first.
        qrels: qid -> {doc_id: grade}. Every ranked query must have judgments (else it is an error, since it
            would silently count as 0).
        min_rel: lowest grade that counts as relevant for p@1, r@10 and mrr@10.
    """
    import ir_measures

    if not rankings:
        raise ValueError("no rankings to evaluate")
    if min_rel < 1:
        raise ValueError(f"min_rel must be >= 1, got {min_rel}")
    missing = [q for q in rankings if not any(g > 0 for g in qrels.get(q, {}).values())]
    if missing:
        raise ValueError(f"queries without relevant judgments cannot be scored: {missing[:5]}")
    run = {q: {d: float(len(docs) - r) for r, d in enumerate(docs)} for q, docs in rankings.items() if docs}
    for q, docs in rankings.items():
        if len(set(docs)) != len(docs):
            raise ValueError(f"query {q!r}: ranking lists a document twice")
    qrels_in = {q: {d: int(g) for d, g in qrels[q].items()} for q in rankings}
    by_name = _measures(min_rel, {g for j in qrels_in.values() for g in j.values()})
    per_query: dict[str, dict[str, float]] = {q: {m: 0.0 for m in METRICS} for q in rankings}
    if run:
        for key, measure in by_name.items():  # one call per measure: pytrec_eval mixes up nDCG gain variants
            for metric in ir_measures.iter_calc([measure], qrels_in, run):
                per_query[metric.query_id][key] = float(metric.value)
    return per_query

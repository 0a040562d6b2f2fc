"""Passage retrieval: BEIR data, a first stage (BM25 or MiniLM dense), and re-ranking its top-k with a scorer.

``index`` of a first-stage hit is the document's position in the corpus, ``id`` its corpus id; after
re-ranking, ``index`` is the hit's position in the first-stage list.

The first stage is BM25 from ``bm25s`` (Lucene-style BM25, English stop words, no stemming) or dense
retrieval with the embedded all-MiniLM-L6-v2 (:mod:`trlm.core.embed`: mean pooling + L2 norm, cosine = dot).
Re-ranking scores each of the top-k passages with any scorer built for ``task="retrieval"``; TRLM scorers
then use Table 7's retrieval prompts (``{D} has an answer to {Q}`` for TRLM-Fo, ``{Q} is answered by {D}``
for TRLM-Ba) and ``forward-mean`` is the baseline mean log P(D | Q). Ties keep the first-stage order.

    >>> from trlm.retrieve import load_beir
    >>> from trlm.scoring import make_scorer
    >>> data = load_beir("../shared/data/retrieval_agentset/msmarco_trecdl19_subset")
    >>> index = build_index("bm25", data.corpus)
    >>> sc = make_scorer("trlm-fo", task="retrieval", max_response_tokens=300)
    >>> hits = retrieve("what is a corporation?", index, data.corpus, k=30, scorer=sc)
    >>> hits[0].id, hits[0].score
    ('...', ...)

Run from the shell: ``trlm retrieve "what is a corporation?" --first-stage bm25 --k 30 --scorer trlm-fo``
(``--first-stage dense --scorer trlm-foba-fwd --fuse rrf``: the best nDCG@10 measured on TREC-DL19).
"""

from __future__ import annotations

import logging
from typing import Literal, Sequence

import numpy as np

from trlm.core.ranking import Ranked, rank_by_score, top_k
from trlm.scoring import Scorer

log = logging.getLogger(__name__)

FirstStage = Literal["bm25", "dense"]
FIRST_STAGES: tuple[str, ...] = ("bm25", "dense")


# ---------------------------------------------------------------------------------------------- first stage

class BM25Index:
    """``bm25s`` over a corpus (Lucene BM25, k1=1.5, b=0.75, English stop words)."""

    def __init__(self, corpus: dict[str, str]):
        import bm25s

        # bm25s sets its own logger to DEBUG on import, so every index printed "Building index from IDs
        # objects" through the CLI's WARNING-level handler; keep its messages at trlm's level.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        if not corpus:
            raise ValueError("cannot index an empty corpus")
        self.ids = list(corpus)
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize([corpus[i] for i in self.ids], stopwords="en", show_progress=False),
                             show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> list[list[Ranked]]:
        """Each query's ``k`` best documents; ties in corpus order. (``bm25s``'s own ``retrieve`` orders ties by
        numpy's partition and sort, so its top 10 could change with ``k``, the numpy build or whether jax is
        installed.)"""
        import bm25s

        out = []
        for toks in bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False):
            scores = self.retriever.get_scores(toks) if toks else np.zeros(len(self.ids))  # (N,); [] = only stop words
            out.append([Ranked(int(j), float(scores[j]), id=self.ids[int(j)]) for j in top_k(scores, k)])
        return out


class DenseIndex:
    """Cosine similarity of MiniLM embeddings (exact search over the whole corpus)."""

    def __init__(self, corpus: dict[str, str], progress: bool = False):
        from trlm.core.embed import embed

        if not corpus:
            raise ValueError("cannot index an empty corpus")
        self.ids = list(corpus)
        self.emb = embed([corpus[i] for i in self.ids], progress=progress)  # (N, 384), unit rows

    def search(self, queries: Sequence[str], k: int) -> list[list[Ranked]]:
        from trlm.core.embed import embed

        sims = embed(list(queries)) @ self.emb.T  # (Q, N)
        return [[Ranked(int(j), float(row[j]), id=self.ids[int(j)]) for j in top_k(row, k)] for row in sims]


def build_index(first_stage: str, corpus: dict[str, str], progress: bool = False) -> BM25Index | DenseIndex:
    if first_stage == "bm25":
        return BM25Index(corpus)
    if first_stage == "dense":
        return DenseIndex(corpus, progress=progress)
    raise ValueError(f"unknown first stage {first_stage!r}; choose from {', '.join(FIRST_STAGES)}")


# ---------------------------------------------------------------------------------------------- re-ranking

def rerank_hits(
    queries: Sequence[str],
    hits: Sequence[Sequence[Ranked]],
    corpus: dict[str, str],
    scorer: Scorer,
    progress: bool = False,
) -> list[list[Ranked]]:
    """Re-score each query's first-stage hits with ``scorer`` (one batched call) and sort best-first.

    Ties keep the first-stage order. The scorer cuts passages to its ``max_response_tokens``.
    """
    if len(queries) != len(hits):
        raise ValueError(f"{len(queries)} queries but {len(hits)} hit lists")
    items = [(q, [corpus[h.id] for h in hs]) for q, hs in zip(queries, hits)]
    scores = scorer.score_many(items, progress=progress)
    return [rank_by_score(sc, ids=[h.id for h in hs]) for hs, sc in zip(hits, scores)]


RRF_K = 60  # Cormack, Clarke & Büttcher (SIGIR 2009): the constant they fixed once for every collection


def rrf_fuse(first: Sequence[Ranked], reranked: Sequence[Ranked], k: int = RRF_K) -> list[Ranked]:
    """Reciprocal-rank fusion of a first-stage list and its re-ranking: ``1/(k + rank_1) + 1/(k + rank_2)``.

    Both lists hold the same ids; ranks start at 1; the fused score is the RRF sum; ties keep the first-stage
    order. No weight is fitted, so it can be reported on a test collection without tuning on it.
    """
    pos1 = {h.id: r for r, h in enumerate(first, 1)}
    pos2 = {h.id: r for r, h in enumerate(reranked, 1)}
    if pos1.keys() != pos2.keys():
        raise ValueError("rrf_fuse: the two rankings must hold the same ids")
    ids = [h.id for h in first]
    return rank_by_score([1.0 / (k + pos1[i]) + 1.0 / (k + pos2[i]) for i in ids], ids=ids)


FUSIONS: tuple[str, ...] = ("none", "rrf")


def retrieve(
    query: str,
    index: BM25Index | DenseIndex,
    corpus: dict[str, str],
    k: int = 100,
    scorer: Scorer | None = None,
    fuse: str = "none",
) -> list[Ranked]:
    """First-stage top ``k`` for ``query``, re-ranked by ``scorer`` when one is given; ``fuse="rrf"`` returns the
    re-ranking fused with the first stage by :func:`rrf_fuse` instead (the best nDCG@10 measured over MiniLM)."""
    if not query.strip():
        raise ValueError("query is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {', '.join(FUSIONS)}, got {fuse!r}")
    if fuse != "none" and scorer is None:
        raise ValueError(f"fuse={fuse!r} fuses a re-ranking with the first stage, so it needs a scorer")
    hits = index.search([query], k)
    if scorer is None:
        return hits[0]
    reranked = rerank_hits([query], hits, corpus, scorer)[0]
    return rrf_fuse(hits[0], reranked) if fuse == "rrf" else reranked

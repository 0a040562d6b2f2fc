"""Passage retrieval: BEIR data, a first stage (BM25 or MiniLM dense), and re-ranking its top-k with a scorer.

The first stage is BM25 from ``bm25s`` (Lucene-style BM25, English stop words, no stemming) or dense
retrieval with the embedded all-MiniLM-L6-v2 (:mod:`trlm.embed`: mean pooling + L2 norm, cosine = dot).
Re-ranking scores each of the top-k passages with any scorer built for ``task="retrieval"``; TRLM scorers
then use Table 7's retrieval prompts (``{D} has an answer to {Q}`` for TRLM-Fo, ``{Q} is answered by {D}``
for TRLM-Ba) and ``forward-mean`` is the baseline mean log P(D | Q). Ties keep the first-stage order.

    >>> from trlm.scorers import make_scorer
    >>> data = load_beir("../shared/data/retrieval_agentset/msmarco_trecdl19_subset")
    >>> index = build_index("bm25", data.corpus)
    >>> sc = make_scorer("trlm-fo", task="retrieval", max_response_tokens=300)
    >>> hits = retrieve("what is a corporation?", index, data.corpus, k=30, scorer=sc)
    >>> hits[0]
    Ranked(doc_id='...', score=...)

Run from the shell: ``trlm retrieve "what is a corporation?" --first-stage bm25 --k 30 --scorer trlm-fo``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from trlm.io import InputError, read_jsonl, require_path
from trlm.scorers import Scorer

log = logging.getLogger(__name__)

FirstStage = Literal["bm25", "dense"]
FIRST_STAGES: tuple[str, ...] = ("bm25", "dense")


@dataclass(frozen=True)
class Ranked:
    """One retrieved passage: its corpus id and the score it was ranked by (higher is better)."""

    doc_id: str
    score: float


@dataclass(frozen=True)
class BeirData:
    """A BEIR-format collection. ``corpus`` maps doc id to ``title + " " + text`` (title omitted when empty)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # qid -> {doc_id: grade}; only graded (non-zero) judgments count as relevant

    @property
    def judged_queries(self) -> list[str]:
        """Ids of queries (in queries.jsonl order) with at least one relevant (grade > 0) judgment."""
        return [q for q in self.queries if any(g > 0 for g in self.qrels.get(q, {}).values())]


# ---------------------------------------------------------------------------------------------- loading

def _read_id_text(path: Path, kind: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, row in enumerate(read_jsonl(path, {"_id": (str, int), "text": str}), 1):
        title = row.get("title") or ""
        if not isinstance(title, str):
            raise InputError(f"{path}: {kind} {row['_id']!r}: field 'title' must be str")
        key = str(row["_id"])
        if key in out:
            raise InputError(f"{path}: duplicate {kind} id {key!r} (row {n})")
        out[key] = f"{title} {row['text']}".strip() if title.strip() else row["text"]
    return out


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV: ``query-id<TAB>corpus-id<TAB>score``, with or without a header line.

    TREC-style 4-column rows (``qid 0 docid grade``) are accepted too. A first line whose grade column is not
    an integer is taken as a header; a later one is an error naming the line.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if len(cols) not in (3, 4):
                raise InputError(f"{path}:{n}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                                 f"got {len(cols)}")
            qid, did, grade = (cols[0], cols[1], cols[2]) if len(cols) == 3 else (cols[0], cols[2], cols[3])
            try:
                g = int(float(grade))
            except ValueError:
                if n == 1 and not qrels:
                    continue  # header line, e.g. "query-id corpus-id score"
                raise InputError(f"{path}:{n}: score {grade!r} is not an integer") from None
            qrels.setdefault(qid.strip(), {})[did.strip()] = g
    if not qrels:
        raise InputError(f"{path}: no judgments found")
    return qrels


def load_beir(data_dir: str | Path, split: str = "test") -> BeirData:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from a BEIR folder."""
    root = require_path(data_dir, "BEIR data folder")
    corpus = _read_id_text(require_path(root / "corpus.jsonl", "corpus.jsonl"), "document")
    queries = _read_id_text(require_path(root / "queries.jsonl", "queries.jsonl"), "query")
    qrels = read_qrels(require_path(root / "qrels" / f"{split}.tsv", f"qrels/{split}.tsv"))
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        raise InputError(f"{root}/qrels/{split}.tsv: query ids not in queries.jsonl: {unknown[:5]}")
    log.info("loaded %d documents, %d queries (%d judged) from %s", len(corpus), len(queries),
             sum(1 for q in queries if q in qrels), root)
    return BeirData(corpus, queries, qrels)


# ---------------------------------------------------------------------------------------------- first stage

class BM25Index:
    """``bm25s`` over a corpus (Lucene BM25, k1=1.5, b=0.75, English stop words)."""

    def __init__(self, corpus: dict[str, str]):
        import bm25s

        if not corpus:
            raise ValueError("cannot index an empty corpus")
        self.ids = list(corpus)
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize([corpus[i] for i in self.ids], stopwords="en", show_progress=False),
                             show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> list[list[Ranked]]:
        import bm25s

        k = min(k, len(self.ids))
        toks = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        docs, scores = self.retriever.retrieve(toks, k=k, show_progress=False, n_threads=1)  # (Q, k) each
        return [[Ranked(self.ids[int(d)], float(s)) for d, s in zip(dr, sr)] for dr, sr in zip(docs, scores)]


class DenseIndex:
    """Cosine similarity of MiniLM embeddings (exact search over the whole corpus)."""

    def __init__(self, corpus: dict[str, str], progress: bool = False):
        from trlm.embed import embed

        if not corpus:
            raise ValueError("cannot index an empty corpus")
        self.ids = list(corpus)
        self.emb = embed([corpus[i] for i in self.ids], progress=progress)  # (N, 384), unit rows

    def search(self, queries: Sequence[str], k: int) -> list[list[Ranked]]:
        from trlm.embed import embed

        sims = embed(list(queries)) @ self.emb.T  # (Q, N)
        k = min(k, len(self.ids))
        out = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:k]
            out.append([Ranked(self.ids[int(j)], float(row[j])) for j in top])
        return out


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
    items = [(q, [corpus[h.doc_id] for h in hs]) for q, hs in zip(queries, hits)]
    scores = scorer.score_many(items, progress=progress)
    out = []
    for hs, sc in zip(hits, scores):
        order = sorted(range(len(hs)), key=lambda i: (-sc[i], i))
        out.append([Ranked(hs[i].doc_id, float(sc[i])) for i in order])
    return out


def retrieve(
    query: str,
    index: BM25Index | DenseIndex,
    corpus: dict[str, str],
    k: int = 100,
    scorer: Scorer | None = None,
) -> list[Ranked]:
    """First-stage top ``k`` for ``query``, re-ranked by ``scorer`` when one is given."""
    if not query.strip():
        raise ValueError("query is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = index.search([query], k)
    return rerank_hits([query], hits, corpus, scorer)[0] if scorer is not None else hits[0]


def write_run(path: str | Path, qids: Sequence[str], ranked: Sequence[Sequence[Ranked]]) -> None:
    """Rankings as JSONL: ``{"qid": ..., "ranking": [[doc_id, score], ...]}`` per query, written atomically."""
    from trlm.io import atomic_open

    with atomic_open(path) as f:
        for q, rs in zip(qids, ranked):
            f.write(json.dumps({"qid": q, "ranking": [[r.doc_id, r.score] for r in rs]}) + "\n")

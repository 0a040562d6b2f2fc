"""BEIR-format collections (corpus, queries, graded qrels) and run files.

    >>> data = load_beir("../shared/data/retrieval_agentset/msmarco_trecdl19_subset")
    >>> len(data.corpus), len(data.judged_queries)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trlm.core.io import InputError, atomic_open, read_jsonl, require_path
from trlm.core.ranking import Ranked

log = logging.getLogger(__name__)


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


def write_run(path: str | Path, qids: Sequence[str], ranked: Sequence[Sequence[Ranked]]) -> None:
    """Rankings as JSONL: ``{"qid": ..., "ranking": [[doc_id, score], ...]}`` per query, written atomically."""
    with atomic_open(path) as f:
        for q, rs in zip(qids, ranked):
            f.write(json.dumps({"qid": q, "ranking": [[r.id, r.score] for r in rs]}) + "\n")


def read_run(path: str | Path) -> dict[str, list[Ranked]]:
    """A :func:`write_run` file back: qid -> its ranking (``index`` = rank position, ``id``, ``score``). A row that
    is not ``[doc_id, score]`` pairs, or a NaN / infinite score, is an error naming the file, row and qid."""
    out: dict[str, list[Ranked]] = {}
    for n, r in enumerate(read_jsonl(path, {"qid": str, "ranking": list}), 1):
        where = f"{path}: row {n} (qid {r['qid']!r})"
        try:
            out[r["qid"]] = [Ranked(i, float(s), id=str(d)) for i, (d, s) in enumerate(r["ranking"])]
        except (TypeError, ValueError):
            raise InputError(f"{where}: 'ranking' must be [doc_id, score] pairs") from None
        if not all(math.isfinite(h.score) for h in out[r["qid"]]):
            raise InputError(f"{where}: a score is NaN or infinite")
    return out

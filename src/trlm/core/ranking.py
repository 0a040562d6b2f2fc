"""The one ranked-result type and the one rank-by-score helper, shared by re-ranking, retrieval and citation.

    >>> rank_by_score([0.1, 0.7, 0.7], texts=["a", "b", "c"])
    [Ranked(index=1, score=0.7, text='b', id=None), Ranked(index=2, score=0.7, text='c', id=None), Ranked(index=0, ...)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Ranked:
    """One ranked item: its position in the input list, the score it was ranked by (higher is better), its text
    and, where the items come from a collection (a retrieval corpus), its id there."""

    index: int
    score: float
    text: str = ""
    id: str | None = None


def rank_by_score(scores: Sequence[float], texts: Sequence[str] | None = None, ids: Sequence[str] | None = None,
                  *, descending: bool = True) -> list[Ranked]:
    """Items best-first by score (``descending=False``: lowest first); ties keep the input order."""
    for name, seq in (("texts", texts), ("ids", ids)):
        if seq is not None and len(seq) != len(scores):
            raise ValueError(f"{len(scores)} scores but {len(seq)} {name}")
    arr = np.asarray(scores, dtype=float).reshape(-1)
    order = top_k(arr if descending else -arr, len(arr))  # one tie rule for every ranking: input order
    return [Ranked(i, float(scores[i]), texts[i] if texts is not None else "", ids[i] if ids is not None else None)
            for i in order.tolist()]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest of a 1-D score array, best first; ties in index order, so the result does not
    depend on ``k`` (the first 10 of the top 30 are the top 10) nor on numpy's sort or a search library's backend.
    Linear in ``len(scores)`` plus a sort of the candidates."""
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.arange(n) if k == n else np.flatnonzero(scores >= np.partition(scores, n - k)[n - k])  # + kth's ties
    return cand[np.lexsort((cand, -scores[cand]))][:k]  # lexsort: last key first — score down, then index up

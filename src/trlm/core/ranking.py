"""The one ranked-result type and the one rank-by-score helper, shared by re-ranking, retrieval and citation.

    >>> rank_by_score([0.1, 0.7, 0.7], texts=["a", "b", "c"])
    [Ranked(index=1, score=0.7, text='b', id=None), Ranked(index=2, score=0.7, text='c', id=None), Ranked(index=0, ...)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


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
    sign = -1.0 if descending else 1.0
    order = sorted(range(len(scores)), key=lambda i: (sign * scores[i], i))
    return [Ranked(i, float(scores[i]), texts[i] if texts is not None else "", ids[i] if ids is not None else None)
            for i in order]

"""The fact-checker contract every checker keeps: chunk the document, score each (chunk, claim), keep the maximum.

A checker implements :meth:`FactChecker.pair_scores` (and :meth:`FactChecker.prob` when its raw score is not a
probability); the concrete checkers and the factory ``make_checker`` are in :mod:`trlm.factcheck.checkers`, the
feature checker in :mod:`trlm.factcheck.features`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trlm.factcheck.chunking import DEFAULT_CHUNK_WORDS, chunk_document


@dataclass(frozen=True)
class Check:
    prob: float  # P(supported): the maximum over chunks
    label: int  # 1 = supported (prob > threshold)
    best_chunk: int  # index of the chunk that gave prob
    chunk_probs: tuple[float, ...]


class FactChecker:
    """Chunking, max aggregation and thresholding around :meth:`pair_probs` (one probability per (chunk, claim))."""

    name = "checker"
    chunk_words = DEFAULT_CHUNK_WORDS
    threshold = 0.5

    def pair_scores(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[float]:
        """The checker's raw score per (chunk, claim): P(supported), or a PMI that :meth:`prob` maps to one."""
        raise NotImplementedError

    def prob(self, score: float) -> float:
        return score

    def pair_probs(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[float]:
        return [self.prob(x) for x in self.pair_scores(pairs, progress)]

    def chunks(self, doc: str) -> list[str]:
        return chunk_document(doc, self.chunk_words)

    def score(self, docs: Sequence[str], claims: Sequence[str], *, threshold: float | None = None,
              progress: bool = False) -> list[Check]:
        """One :class:`Check` per (doc, claim); a document of any length is chunked, never truncated."""
        t = self.threshold if threshold is None else threshold
        out = []
        for raw in self.chunk_scores(docs, claims, progress):
            ps = tuple(float(self.prob(x)) for x in raw)
            best = int(np.argmax(ps))
            out.append(Check(ps[best], int(ps[best] > t), best, ps))
        return out

    def chunk_scores(self, docs: Sequence[str], claims: Sequence[str], progress: bool = False) -> list[list[float]]:
        """Raw :meth:`pair_scores` of every chunk of every document against its claim."""
        if isinstance(docs, str) or isinstance(claims, str):
            raise TypeError("score() takes lists of documents and claims, not single strings")
        if len(docs) != len(claims):
            raise ValueError(f"{len(docs)} documents for {len(claims)} claims")
        for i, (d, c) in enumerate(zip(docs, claims)):
            if not isinstance(d, str) or not d.strip():
                raise ValueError(f"document {i} is empty or not a string")
            if not isinstance(c, str) or not c.strip():
                raise ValueError(f"claim {i} is empty or not a string")
        chunked = {d: self.chunks(d) for d in dict.fromkeys(docs)}
        pairs = list(dict.fromkeys((ch, c.strip()) for d, c in zip(docs, claims) for ch in chunked[d]))
        raw = dict(zip(pairs, self.pair_scores(pairs, progress=progress)))
        return [[raw[(ch, c.strip())] for ch in chunked[d]] for d, c in zip(docs, claims)]

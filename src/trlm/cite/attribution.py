"""Citation attribution: find the source sentence(s) that support a claim, by querying a scorer.

Every search calls ``scorer.score(claim, [span, ...])`` with a scorer built for ``task="citation"`` — the
claim plays Q and a source span plays A, so TRLM-Fo scores ``log P(claim | "{span} is a summary of ")``
(Table 7) and ``forward-mean`` is the baseline mean log P(span | claim). A span of several sentences is the
sentences joined by :data:`JOINER` (one space, as they would read in running text).

* :func:`linear_search` (Alg. 7) scores every sentence alone; N calls, ranked best-first.
* :func:`binary_search` (Alg. 8) halves a contiguous span, keeping the half that scores higher, until it is
  ``min_sentences`` long (one sentence by default); 2 calls per step, O(log N) steps.
* :func:`exclusion_search` (Alg. 9) scores the source with each sentence left out. The paper's prose picks
  the sentence whose removal gives the **lowest** score and its algorithm box the highest. The default here is
  ``pick="lowest"``: if a sentence supports the claim, taking it away should make the claim least likely.
  ``pick="highest"`` follows the box. N calls, each on nearly the whole source.

    >>> from trlm.scoring import make_scorer
    >>> sc = make_scorer("trlm-fo", task="citation")
    >>> sents = ["Bananas are yellow fruits.", "The Eiffel Tower stands on the Champ de Mars in Paris, France."]
    >>> linear_search("The Eiffel Tower is located in Paris.", sents, sc)[0].index
    1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from trlm.core.io import InputError, read_jsonl, write_jsonl
from trlm.core.ranking import Ranked, rank_by_score
from trlm.scoring import Scorer

JOINER = " "  # sentences of a multi-sentence span are joined by one space
SEARCHES: tuple[str, ...] = ("linear", "binary", "exclusion")
Pick = Literal["lowest", "highest"]


@dataclass(frozen=True)
class Span:
    """Result of binary search: sentences ``[start, end)``, the score of that span, and the search path."""

    start: int
    end: int
    score: float
    calls: int  # scorer evaluations spent
    path: tuple[tuple[int, int], ...]  # every span kept, outermost first, ending with (start, end)

    def within(self, max_sentences: int) -> tuple[int, int]:
        """The widest span on the path with at most ``max_sentences`` sentences (for recall@k)."""
        return next(((s, e) for s, e in self.path if e - s <= max_sentences), (self.start, self.end))


def _check(claim: str, sentences: Sequence[str]) -> None:
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError("the claim is empty")
    if not sentences:
        raise ValueError("the source has no sentences")
    for i, s in enumerate(sentences):
        if not isinstance(s, str) or not s.strip():
            raise ValueError(f"source sentence {i} is empty or not a string")


def join_span(sentences: Sequence[str], start: int, end: int) -> str:
    return JOINER.join(s.strip() for s in sentences[start:end])


def linear_search(claim: str, sentences: Sequence[str], scorer: Scorer) -> list[Ranked]:
    """All sentences ranked by ``score(claim, sentence)``, best-first (Alg. 7)."""
    return linear_search_many([(claim, sentences)], scorer)[0]


def linear_search_many(items: Sequence[tuple[str, Sequence[str]]], scorer: Scorer) -> list[list[Ranked]]:
    """:func:`linear_search` for many (claim, sentences) items in one batched scorer call."""
    for claim, sentences in items:
        _check(claim, sentences)
    scores = scorer.score_many([(c, [s.strip() for s in sents]) for c, sents in items])
    return [rank_by_score(sc, texts=list(sents)) for (_, sents), sc in zip(items, scores)]


def binary_search(claim: str, sentences: Sequence[str], scorer: Scorer, min_sentences: int = 1) -> Span:
    """Halve ``[0, N)`` until at most ``min_sentences`` remain, keeping the higher-scoring half (Alg. 8).

    With ``m = s + ceil((t - s) / 2)`` the halves are ``[s, m)`` and ``[m, t)``; the left half wins only when it
    scores strictly higher, as in the paper.
    """
    _check(claim, sentences)
    if min_sentences < 1:
        raise ValueError(f"min_sentences must be >= 1, got {min_sentences}")
    s, t = 0, len(sentences)
    path, calls, score = [(s, t)], 0, float("nan")
    while t - s > min_sentences:
        m = s + (t - s + 1) // 2
        s1, s2 = scorer.score(claim, [join_span(sentences, s, m), join_span(sentences, m, t)])
        calls += 2
        if s1 > s2:
            t, score = m, s1
        else:
            s, score = m, s2
        path.append((s, t))
    if calls == 0:  # the source was already short enough
        score = scorer.score(claim, [join_span(sentences, s, t)])[0]
        calls = 1
    return Span(s, t, float(score), calls, tuple(path))


def exclusion_search(claim: str, sentences: Sequence[str], scorer: Scorer, pick: Pick = "lowest") -> list[Ranked]:
    """Sentences ranked by the score of the source without them (Alg. 9).

    ``pick="lowest"`` (default, the paper's prose): best first is the sentence whose removal leaves the lowest
    score. ``pick="highest"`` (the paper's algorithm box) ranks the other way round. ``Ranked.score`` is the
    score of the source with that sentence removed.
    """
    _check(claim, sentences)
    if pick not in ("lowest", "highest"):
        raise ValueError(f"pick must be 'lowest' or 'highest', got {pick!r}")
    if len(sentences) < 2:
        raise ValueError("exclusion search needs at least two source sentences")
    n = len(sentences)
    spans = [JOINER.join(s.strip() for k, s in enumerate(sentences) if k != j) for j in range(n)]
    return rank_by_score(scorer.score(claim, spans), texts=list(sentences), descending=pick == "highest")


def cite_file(path, out, scorer: Scorer, search: str = "linear", min_sentences: int = 1, pick: Pick = "lowest") -> int:
    """Cite every row of a JSONL file ``{"claim": str, "sentences": [str, ...]}``; returns the row count.

    Adds ``cited`` (0-based sentence indices: best-first for linear and exclusion, the span for binary) and
    ``scores`` (aligned with ``cited``; for binary, the score of the span).
    """

    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; choose from {', '.join(SEARCHES)}")
    rows = read_jsonl(path, {"claim": str, "sentences": list})
    out_rows = []
    for n, row in enumerate(rows, 1):
        try:
            _check(row["claim"], row["sentences"])
        except ValueError as e:
            raise InputError(f"{path}: row {n}: {e}") from None
        if search == "binary":
            span = binary_search(row["claim"], row["sentences"], scorer, min_sentences=min_sentences)
            cited, scores = list(range(span.start, span.end)), [span.score]
        else:
            ranked = (linear_search(row["claim"], row["sentences"], scorer) if search == "linear" else
                      exclusion_search(row["claim"], row["sentences"], scorer, pick=pick))
            cited, scores = [c.index for c in ranked], [c.score for c in ranked]
        out_rows.append({**row, "search": search, "scorer": scorer.name, "cited": cited, "scores": scores})
    write_jsonl(out, out_rows)
    return len(out_rows)

"""Re-ranking and best-of-N: thin compositions of a scorer.

    >>> from trlm.scoring import make_scorer
    >>> ranked = rerank("What is 2+2?", ["4", "The capital of France."], make_scorer("trlm-fo"))
    >>> ranked[0].text
    '4'
"""

from __future__ import annotations

from typing import Sequence

from trlm.core.engine import Engine, GenArgs
from trlm.core.ranking import Ranked, rank_by_score
from trlm.scoring import Scorer


def rerank_many(items: Sequence[tuple[str, Sequence[str]]], scorer: Scorer,
                progress: bool = False) -> list[list[Ranked]]:
    """Rank each query's candidates best-first, scoring all of them in one batched call."""
    scores = scorer.score_many(items, progress=progress)
    return [rank_by_score(s, texts=list(cands)) for (_, cands), s in zip(items, scores)]


def rerank(query: str, candidates: Sequence[str], scorer: Scorer) -> list[Ranked]:
    """Rank ``candidates`` for ``query`` best-first."""
    return rerank_many([(query, candidates)], scorer)[0]


def best_of_n(
    query: str,
    n: int,
    generator: Engine,
    scorer: Scorer,
    *,
    temperature: float = 0.8,
    max_new_tokens: int = 256,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[Ranked]:
    """Sample ``n`` responses to ``query`` from ``generator`` (with its chat template) and rank them."""
    prompt = generator.chat_prompt(query)
    gens = generator.generate([prompt], GenArgs(max_new_tokens=max_new_tokens, temperature=temperature,
                                                top_p=top_p, n=n, seed=seed), direction="forward")[0]
    texts = [g.text.strip() or g.text for g in gens]
    if any(not t.strip() for t in texts):
        raise RuntimeError(f"the generator returned an empty response for {query!r}; raise max_new_tokens or "
                           "check the model's chat template")
    return rerank(query, texts, scorer)

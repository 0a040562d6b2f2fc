"""Best-of-N and re-ranking with any scorer, and the AlpacaEval benchmark (win rate, LC win rate, pair agreement)."""

from trlm.core.ranking import Ranked
from trlm.rerank.best_of_n import best_of_n, rerank, rerank_many

__all__ = ["Ranked", "best_of_n", "rerank", "rerank_many"]

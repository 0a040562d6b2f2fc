"""Scorers (TRLM-Ba / Fo / FoBa and the forward, self, length and random baselines) and the TRLM prompts."""

from trlm.scoring.scorers import SCORERS, LikelihoodScorer, Scorer, get_engine, make_scorer, reduce_loglik

__all__ = ["SCORERS", "LikelihoodScorer", "Scorer", "get_engine", "make_scorer", "reduce_loglik"]

"""Scorers (TRLM-Ba / Fo / FoBa and the forward, self, length and random baselines) and the TRLM prompts."""

from trlm.scoring.scorers import (
    SCORER_SPECS,
    SCORERS,
    LikelihoodScorer,
    Scorer,
    ScorerSpec,
    get_engine,
    make_scorer,
    reduce_loglik,
)

__all__ = ["SCORER_SPECS", "SCORERS", "ScorerSpec", "LikelihoodScorer", "Scorer", "get_engine", "make_scorer",
           "reduce_loglik"]

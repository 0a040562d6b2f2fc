"""FactCG: grounded fact checking with CG2C multi-hop synthetic data (Lei et al., NAACL 2025).

    from trlm.factcheck import make_checker
    checker = make_checker("minilm-features")             # the shipped feature checker (CG2C-fitted)
    checker.score(docs=["..."], claims=["..."])           # [Check(prob, label, best_chunk, chunk_probs)]

* :mod:`.checkers`  the checker interface (chunk, score, max) and the checkers: trained cross-encoder, zero-shot
  P(Yes)/P(No), TRLM PMI (reverse and forward), forward PMI.
* :mod:`.features`  the feature checker: frozen MiniLM similarities + lexical coverage, logistic regression.
* :mod:`.chunking`  sentence chunks of at most N words (Punkt, offline).
* :mod:`.graph`, :mod:`.synth`  CG2C: context graphs, k-hop chains, claims, relation-removal negatives.
* :mod:`.train`  the cross-encoder on the project's training loop.
* :mod:`.data`, :mod:`.metrics`, :mod:`.bench`, :mod:`.cli`  datasets, BAcc and thresholds, the benchmark, commands.
"""

from trlm.factcheck.base import Check, FactChecker
from trlm.factcheck.checkers import CHECKERS, make_checker

__all__ = ["CHECKERS", "Check", "FactChecker", "make_checker"]

"""Scorers: score(query, responses) -> list[float], higher is better. Thin compositions over the engine.

TRLM scorers read **backwards** (the query given the response), with the paper's Table 7 prompts:

==================  =====================================  ===================================
scorer              model direction                        score
==================  =====================================  ===================================
``trlm-ba``         reverse-order model                    log P_Ba(Rev(SP+Q) | Rev(CP+A))
``trlm-fo``         forward model, plain text              log P_Fo(SP+Q | A+CP)
``trlm-fo-chat``    forward chat model                     log P_Fo(Q | chat[user: A + "which question?"])
``trlm-foba-rev``   both-orders model, reverse             as trlm-ba
``trlm-foba-fwd``   both-orders model, forward             as trlm-fo
``combined-sum``    forward + reverse model                log P(A|Q) + α log P_Ba(Q|A)   (§6, Lemma 2)
``combined-mean``   forward + reverse model                per-token: mean log P(A|Q) + α mean log P_Ba(Q|A)
``forward-mean``    forward (chat template for rerank)     mean log P(A | Q)   (baseline)
``forward-sum``     forward                                sum log P(A | Q)    (baseline)
``self``            the generator                          its own mean log P(A | Q)
``length``          —                                      number of characters of A
``random``          —                                      seeded uniform noise
==================  =====================================  ===================================

The prompts and the rule that joins their pieces are in :mod:`trlm.scoring.prompts`.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

from trlm.core.engine import Engine, LogLik, Request, get_engine
from trlm.scoring.prompts import CHAT_INSTRUCTION, PROMPTS, TASKS, Task, backward_request, split_join

SCORERS: tuple[str, ...] = ("trlm-ba", "trlm-fo", "trlm-fo-chat", "trlm-foba-rev", "trlm-foba-fwd",
                            "combined-sum", "combined-mean", "forward-mean", "forward-sum", "self", "length", "random")
DEFAULT_MODELS = {"trlm-ba": "trlm-ba-smol", "trlm-foba-rev": "trlm-foba-smol", "trlm-foba-fwd": "trlm-foba-smol"}
FORWARD_DEFAULT = "smollm2-135m-instruct"
REDUCE = {"forward-mean": "mean", "self": "mean", "combined-mean": "mean"}  # every other likelihood scorer sums
# The combined reward's α (the KL-regularised best-of-N optimum P_fw(A|Q) · P_TRLM(Q|A)^α, the paper's §6).
# Chosen by LC win rate on 80 AlpacaEval dev instructions (instruction_id % 5 != 3; the held-out test instructions
# were never read): `trlm bench rerank-alpha --dev-limit 80 --out runs/rerank_alpha`. Dev pair agreement instead
# rises with α up to the grid's end (64), i.e. towards TRLM-Ba alone; docs/rerank.md.
COMBINED_ALPHA = {"combined-sum": 0.1, "combined-mean": 0.5}

__all__ = ["SCORERS", "COMBINED_ALPHA", "Scorer", "LikelihoodScorer", "CombinedScorer", "LengthScorer",
           "RandomScorer", "make_scorer", "get_engine", "combine", "reduce_loglik"]


class Scorer:
    """Base class: ``score_many`` is the batched primitive; ``score`` scores one query's responses.

    Subclasses have a ``name`` attribute (the scorer's name in :data:`SCORERS`).
    """

    def score(self, query: str, responses: Sequence[str]) -> list[float]:
        return self.score_many([(query, responses)])[0]

    def score_many(self, items: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        raise NotImplementedError


@dataclass
class LikelihoodScorer(Scorer):
    """Builds one engine request per (query, response) and reduces its log-likelihood by sum or mean."""

    name: str
    engine: Engine
    direction: str
    build: Callable[[str, str], Request]
    reduce: Literal["sum", "mean"] = "sum"
    max_response_tokens: int | None = 512

    def __post_init__(self):
        self.engine.resolve_direction(self.direction)  # refuses a model of the wrong token order, now

    def score_many(self, items, progress=False):
        return [[reduce_loglik(ll, self.reduce) for ll in row] for row in self.logliks_many(items, progress)]

    def logliks_many(self, items: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[LogLik]]:
        """The engine's log-likelihood of every (query, response) request, shaped like ``items``."""
        reqs, shape = [], []
        for qi, (query, responses) in enumerate(items):
            if not responses:
                raise ValueError(f"query {qi}: a query needs at least one response to score")
            shape.append(len(responses))
            for ri, r in enumerate(responses):
                if not r.strip():
                    raise ValueError(f"query {qi}: response {ri} is empty; a likelihood scorer has nothing to read "
                                     "(drop it, or rank it last yourself)")
                if self.max_response_tokens:
                    r = self.engine.truncate(r, self.max_response_tokens)
                reqs.append(self.build(query, r))
        lls = self.engine.loglikelihood(reqs, direction=self.direction, truncate="context", progress=progress)
        out, i = [], 0
        for n in shape:
            out.append(lls[i:i + n])
            i += n
        return out


@dataclass
class CombinedScorer(Scorer):
    """The paper's combined reward: ``forward + α · backward``, each reduced by ``reduce`` (sum or per-token)."""

    name: str
    forward: LikelihoodScorer  # log P(A | Q), chat template for re-ranking
    backward: LikelihoodScorer  # log P_Ba(Q | A), TRLM-Ba's prompts
    alpha: float
    reduce: Literal["sum", "mean"] = "sum"

    def score_many(self, items, progress=False):
        fw = self.forward.logliks_many(items, progress)
        ba = self.backward.logliks_many(items, progress)
        return [[combine(f, b, self.alpha, self.reduce) for f, b in zip(rf, rb)] for rf, rb in zip(fw, ba)]


def combine(fw: LogLik, ba: LogLik, alpha: float, reduce: str) -> float:
    """``reduce(fw) + α · reduce(ba)``: the combined reward from the two log-likelihoods of one response."""
    return reduce_loglik(fw, reduce) + alpha * reduce_loglik(ba, reduce)


def reduce_loglik(ll: LogLik, reduce: str) -> float:
    """A likelihood scorer's score from its log-likelihood: ``"mean"`` per token or ``"sum"``."""
    return ll.mean if reduce == "mean" else ll.logprob


@dataclass
class LengthScorer(Scorer):
    name: str = "length"

    def score_many(self, items, progress=False):
        return [[float(len(r)) for r in responses] for _, responses in items]


@dataclass
class RandomScorer(Scorer):
    name: str = "random"
    seed: int = 0
    _rng: _random.Random = field(init=False, repr=False)

    def __post_init__(self):
        self._rng = _random.Random(self.seed)

    def score_many(self, items, progress=False):
        return [[self._rng.random() for _ in responses] for _, responses in items]


def _backward_builder(family: str, task: str, sp: str, cp: str) -> Callable[[str, str], Request]:
    """Request for log P(SP+Q | ...A...) in forward reading order (the engine reverses for Ba)."""
    return lambda q, a: backward_request(family, task, q, a, sp, cp)


def _forward_builder(engine: Engine, task: str) -> Callable[[str, str], Request]:
    """log P(A | Q): the chat template around Q for re-ranking; plain text otherwise."""
    if task == "rerank" and getattr(engine.tokenizer, "chat_template", None):
        return lambda q, a: Request(engine.chat_prompt(q), a)
    return lambda q, a: Request(*split_join(q, a))


def _chat_builder(engine: Engine, task: str) -> Callable[[str, str], Request]:
    template = CHAT_INSTRUCTION[task]
    return lambda q, a: Request(engine.chat_prompt(template.replace("{A}", a)), q)


def make_scorer(
    name: str,
    engine: Engine | None = None,
    *,
    model: str | None = None,
    task: Task = "rerank",
    sp: str | None = None,
    cp: str | None = None,
    max_response_tokens: int | None = 512,
    seed: int = 0,
    alpha: float | None = None,
    reverse_model: str | None = None,
) -> Scorer:
    """Build a scorer by name (see :data:`SCORERS`).

    Args:
        engine: an engine to score with; else ``model`` (or the scorer's default model) is loaded once.
        task: selects Table 7's prompts: ``rerank`` (best-of-N), ``retrieval`` or ``citation``.
        sp, cp: override the scoring / conditioning prompt of TRLM scorers.
        max_response_tokens: responses are cut to this many tokens (keeping their start) before scoring.
        alpha, reverse_model: the combined scorers' weight of the backward term (default
            :data:`COMBINED_ALPHA`) and its reverse model (default ``trlm-ba-smol``); ``model`` / ``engine`` is
            the forward model.
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if name == "length":
        return LengthScorer()
    if name == "random":
        return RandomScorer(seed=seed)
    engine = engine or get_engine(model or DEFAULT_MODELS.get(name, FORWARD_DEFAULT))
    if name in ("forward-mean", "forward-sum", "self"):
        return LikelihoodScorer(name, engine, "forward", _forward_builder(engine, task),
                                reduce=REDUCE.get(name, "sum"),
                                max_response_tokens=max_response_tokens)
    if name in COMBINED_ALPHA:
        fw = make_scorer("forward-sum", engine, max_response_tokens=max_response_tokens)
        ba = make_scorer("trlm-ba", model=reverse_model, task=task, sp=sp, cp=cp,
                         max_response_tokens=max_response_tokens)
        return CombinedScorer(name, fw, ba, COMBINED_ALPHA[name] if alpha is None else alpha, REDUCE.get(name, "sum"))
    if name == "trlm-fo-chat":
        return LikelihoodScorer(name, engine, "forward", _chat_builder(engine, task),
                                max_response_tokens=max_response_tokens)
    family = "ba" if name in ("trlm-ba", "trlm-foba-rev") else "fo"
    d_sp, d_cp = PROMPTS[(family, task)]
    build = _backward_builder(family, task, d_sp if sp is None else sp, d_cp if cp is None else cp)
    return LikelihoodScorer(name, engine, "reverse" if family == "ba" else "forward", build,
                            max_response_tokens=max_response_tokens)

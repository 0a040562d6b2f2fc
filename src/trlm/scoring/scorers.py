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

Each scorer's direction, default model, reduction, servability and α live in one table, :data:`SCORER_SPECS`;
:func:`make_scorer`, the benchmarks and ``trlm serve`` read it. The prompts and the rule that joins their pieces
are in :mod:`trlm.scoring.prompts`.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

from trlm.core.engine import Engine, LogLik, Request, get_engine
from trlm.scoring.prompts import CHAT_INSTRUCTION, PROMPTS, TASKS, Task, backward_request, split_join

FORWARD_DEFAULT = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ScorerSpec:
    """What makes a scorer what it is; :data:`SCORER_SPECS` holds one per name and everything else derives from it.

    ``reads`` says which request it builds: ``backward`` (Table 7's prompts, of ``family`` ba or fo), ``forward``
    (log P(A | Q)), ``chat`` (the forward chat form), ``combined`` (``parts``: a forward and a backward scorer whose
    log-likelihoods it adds with weight ``alpha``), or no model at all (``length``, ``random``).
    """

    name: str
    reads: Literal["backward", "forward", "chat", "combined", "length", "random"]
    direction: Literal["forward", "reverse"] | None = "forward"  # token order its engine reads in; None: no model
    model: str | None = FORWARD_DEFAULT  # the model loaded when none is given
    reduce: Literal["sum", "mean"] = "sum"  # a log-likelihood's score: summed, or per token
    # `trlm serve` ranks with it: its score is one log-probability that serve maps to (0, 1] monotonically.
    # forward-sum sums over the document's own tokens, so exp(score / n) would not be monotone across documents.
    servable: bool = False
    family: Literal["ba", "fo"] | None = None  # backward: whose prompts
    parts: tuple[str, ...] = ()  # combined: (forward scorer, backward scorer)
    alpha: float | None = None  # combined: the backward term's weight

    def score(self, *lls: LogLik, alpha: float | None = None) -> float:
        """The score of one response from its log-likelihood (a combined scorer: one per part, in ``parts``
        order; ``alpha`` overrides its weight)."""
        if self.parts:
            fw, ba = lls
            return combine(fw, ba, self.alpha if alpha is None else alpha, self.reduce)
        (ll,) = lls
        return reduce_loglik(ll, self.reduce)


# The combined reward's α (the KL-regularised best-of-N optimum P_fw(A|Q) · P_TRLM(Q|A)^α, the paper's §6).
# Chosen by LC win rate on 80 AlpacaEval dev instructions (instruction_id % 5 != 3; the held-out test instructions
# were never read): `trlm bench rerank-alpha --dev-limit 80 --out runs/rerank_alpha`. Dev pair agreement instead
# rises with α up to the grid's end (64), i.e. towards TRLM-Ba alone; docs/rerank.md.
_COMBINED = ("forward-sum", "trlm-ba")
SCORER_SPECS: dict[str, ScorerSpec] = {s.name: s for s in (
    ScorerSpec("trlm-ba", "backward", "reverse", "trlm-ba-smol", servable=True, family="ba"),
    ScorerSpec("trlm-fo", "backward", servable=True, family="fo"),
    ScorerSpec("trlm-fo-chat", "chat", servable=True),
    ScorerSpec("trlm-foba-rev", "backward", "reverse", "trlm-foba-smol", servable=True, family="ba"),
    ScorerSpec("trlm-foba-fwd", "backward", "forward", "trlm-foba-smol", servable=True, family="fo"),
    ScorerSpec("combined-sum", "combined", parts=_COMBINED, alpha=0.1),
    ScorerSpec("combined-mean", "combined", reduce="mean", parts=_COMBINED, alpha=0.5),
    ScorerSpec("forward-mean", "forward", reduce="mean", servable=True),
    ScorerSpec("forward-sum", "forward"),
    ScorerSpec("self", "forward", reduce="mean", servable=True),
    ScorerSpec("length", "length", None, None),
    ScorerSpec("random", "random", None, None),
)}

# Views of the table, for the modules and flags that list one property.
SCORERS: tuple[str, ...] = tuple(SCORER_SPECS)
DEFAULT_MODELS: dict[str, str] = {n: s.model for n, s in SCORER_SPECS.items() if s.model}
COMBINED_ALPHA: dict[str, float] = {n: s.alpha for n, s in SCORER_SPECS.items() if s.parts}
SERVABLE_SCORERS: tuple[str, ...] = tuple(n for n, s in SCORER_SPECS.items() if s.servable)
REVERSE_SCORERS: tuple[str, ...] = tuple(n for n, s in SCORER_SPECS.items() if s.direction == "reverse")

__all__ = ["ScorerSpec", "SCORER_SPECS", "SCORERS", "COMBINED_ALPHA", "DEFAULT_MODELS", "SERVABLE_SCORERS",
           "REVERSE_SCORERS", "Scorer", "LikelihoodScorer", "CombinedScorer", "LengthScorer",
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
        return [[self.score_loglik(ll) for ll in row] for row in self.logliks_many(items, progress)]

    def score_loglik(self, ll: LogLik) -> float:
        """A response's score from its log-likelihood (as :meth:`logliks_many` returns it): sum or mean."""
        return reduce_loglik(ll, self.reduce)

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
    """Build a scorer by name, as its :data:`SCORER_SPECS` entry says.

    Args:
        engine: an engine to score with; else ``model`` (or the scorer's default model) is loaded once.
        task: selects Table 7's prompts: ``rerank`` (best-of-N), ``retrieval`` or ``citation``.
        sp, cp: override the scoring / conditioning prompt of TRLM scorers.
        max_response_tokens: responses are cut to this many tokens (keeping their start) before scoring.
        alpha, reverse_model: the combined scorers' weight of the backward term (default
            spec's ``alpha``) and its reverse model (default ``trlm-ba-smol``); ``model`` / ``engine`` is
            the forward model.
    """
    spec = SCORER_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if spec.reads == "length":
        return LengthScorer()
    if spec.reads == "random":
        return RandomScorer(seed=seed)
    engine = engine or get_engine(model or spec.model)
    if spec.reads == "combined":
        fw_name, ba_name = spec.parts
        fw = make_scorer(fw_name, engine, max_response_tokens=max_response_tokens)
        ba = make_scorer(ba_name, model=reverse_model, task=task, sp=sp, cp=cp,
                         max_response_tokens=max_response_tokens)
        return CombinedScorer(name, fw, ba, spec.alpha if alpha is None else alpha, spec.reduce)
    if spec.reads == "forward":
        build = _forward_builder(engine, task)
    elif spec.reads == "chat":
        build = _chat_builder(engine, task)
    else:
        d_sp, d_cp = PROMPTS[(spec.family, task)]
        build = _backward_builder(spec.family, task, d_sp if sp is None else sp, d_cp if cp is None else cp)
    return LikelihoodScorer(name, engine, spec.direction, build, reduce=spec.reduce,
                            max_response_tokens=max_response_tokens)

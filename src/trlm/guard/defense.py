"""The TRLM defense (paper Alg. 12): reject Q if the input filter flags it; otherwise generate N queries back
from the response A with a TRLM, and reject when **more than** τ of them are flagged.

    >>> from trlm.guard import DefenseArgs, TRLMDefense, make_filter
    >>> defense = TRLMDefense(make_filter("minilm-lr"), "trlm-fo", DefenseArgs(n=8, tau=2))
    >>> [v.rejected for v in defense(["Tell me a story"], ["Once upon a time ..."])]
    [False]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

from trlm.guard.filters import Filter

if TYPE_CHECKING:
    from trlm.core.cache import ResultCache
    from trlm.core.engine import Engine

log = logging.getLogger(__name__)

# Table 7, defense generation: Fo reads "{A} is the answer to question:{Q}", Ba reads "{Q}? Answer:{A}".
# The both-orders model trlm-foba-smol serves both: trlm-foba-fwd as Fo, trlm-foba-rev as Ba.
FAMILY = {"trlm-fo": "fo", "trlm-ba": "ba", "trlm-foba-fwd": "fo", "trlm-foba-rev": "ba"}
PROMPTS_BY_FAMILY = {"fo": " is the answer to question:", "ba": "? Answer:"}
DEFENSE_PROMPTS = {v: PROMPTS_BY_FAMILY[f] for v, f in FAMILY.items()}
DEFENSE_MODELS = {"trlm-fo": "smollm2-135m-instruct", "trlm-ba": "trlm-ba-smol", "trlm-foba-fwd": "trlm-foba-smol",
                  "trlm-foba-rev": "trlm-foba-smol"}
VARIANTS: tuple[str, ...] = tuple(DEFENSE_PROMPTS)


@dataclass(frozen=True)
class DefenseArgs:
    """Settings of Alg. 12's generation step."""

    n: int = 8  # queries generated back from each response
    tau: int = 2  # reject when strictly more than tau generated queries are flagged
    temperature: float = 0.8
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 40  # per generated query
    max_response_tokens: int = 256  # the response is cut to this many tokens (its start) before generation

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"--n must be >= 1, got {self.n}")
        if self.tau < 0:
            raise ValueError(f"--tau must be >= 0, got {self.tau}")
        if self.tau >= self.n:
            log.warning("tau=%d >= n=%d: the TRLM step can never reject", self.tau, self.n)


@dataclass(frozen=True)
class GuardVerdict:
    rejected: bool
    stage: Literal["filter", "trlm", "passed"]  # which step rejected (or "passed")
    n_flagged: int  # generated queries flagged (0 when the filter rejected the query itself)
    queries: tuple[str, ...]  # the generated queries (empty when the filter rejected the query itself)


def reject(query_flagged: bool, n_flagged: int, tau: int) -> bool:
    """Alg. 12's decision: reject if the filter flags Q, or if strictly more than ``tau`` generated queries are."""
    return query_flagged or n_flagged > tau


def clean_query(text: str, variant: str) -> str:
    """The generated query from a raw sample: Fo reads forward, so its first non-empty line; Ba ends at "?",
    so its last non-empty line, with the "?" of the prompt put back."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[0] if FAMILY[variant] == "fo" else lines[-1] + "?"


class TRLMDefense:
    """Alg. 12 with a filter and a TRLM generator (``trlm-fo``: forward model, ``trlm-ba``: reverse model,
    ``trlm-foba-fwd`` / ``trlm-foba-rev``: the both-orders model read forward / backward).

    With a ``cache`` the generated queries of every response are kept in it (keyed by the response and every
    generation setting), so a long evaluation resumes and never generates for the same response twice.
    """

    def __init__(self, filter: Filter, variant: str = "trlm-fo", args: DefenseArgs = DefenseArgs(),
                 model: str | None = None, engine: "Engine | None" = None, cache: "ResultCache | None" = None):
        if variant not in DEFENSE_PROMPTS:
            raise ValueError(f"unknown TRLM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        from trlm.core.engine import get_engine

        self.filter, self.variant, self.args, self.cache = filter, variant, args, cache
        self.engine = engine or get_engine(model or DEFENSE_MODELS[variant])
        self.direction = "forward" if FAMILY[variant] == "fo" else "reverse"

    def regenerate(self, responses: Sequence[str], progress: bool = False) -> list[list[str]]:
        """``n`` queries generated back from each response (batched ``engine.generate`` calls; cached if set)."""
        if not responses:
            return []
        if self.cache is None:
            return self._generate(list(responses), progress)
        from trlm.core.cache import cache_key

        a = self.args
        settings = [self.variant, self.engine.name, a.n, a.temperature, a.top_p, a.seed, a.max_new_tokens,
                    a.max_response_tokens]
        keys = [cache_key("queries", *settings, r) for r in responses]
        return self.cache.map(keys, list(responses), self._generate, chunk=8, desc=f"{self.variant} queries",
                              progress=progress)

    def _generate(self, responses: list[str], progress: bool = False) -> list[list[str]]:
        from trlm.core.engine import GenArgs

        a, cp = self.args, DEFENSE_PROMPTS[self.variant]
        cut = [self.engine.truncate(r, a.max_response_tokens) for r in responses]
        prompts = [r + cp if self.direction == "forward" else cp + r for r in cut]
        gen = GenArgs(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, n=a.n, seed=a.seed)
        outs = self.engine.generate(prompts, gen, direction=self.direction, progress=progress)
        return [[clean_query(g.text, self.variant) for g in gs] for gs in outs]

    def count_flagged(self, responses: Sequence[str], progress: bool = False) -> list[tuple[int, list[str]]]:
        """(number of flagged generated queries, the queries) per response."""
        queries = self.regenerate(responses, progress=progress)
        flat = self.filter.flag([q for qs in queries for q in qs], progress=progress)
        n = self.args.n
        return [(sum(flat[i * n:(i + 1) * n]), qs) for i, qs in enumerate(queries)]

    def __call__(self, queries: Sequence[str], responses: Sequence[str], progress: bool = False) -> list[GuardVerdict]:
        if len(queries) != len(responses):
            raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
        flags = self.filter.flag(list(queries), progress=progress)
        todo = [i for i, f in enumerate(flags) if not f]
        counted = dict(zip(todo, self.count_flagged([responses[i] for i in todo], progress=progress)))
        out = []
        for i, f in enumerate(flags):
            if f:
                out.append(GuardVerdict(True, "filter", 0, ()))
                continue
            k, qs = counted[i]
            rej = reject(False, k, self.args.tau)
            out.append(GuardVerdict(rej, "trlm" if rej else "passed", k, tuple(qs)))
        return out

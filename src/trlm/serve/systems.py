"""Fact checking (``/v1/factcheck``) and citation (``/v1/cite``) as batcher jobs over the library's own systems.

* factcheck  :meth:`~trlm.factcheck.checkers.FactChecker.score` of the checker the request names, over the
  (document, claim) pairs of every job of a batcher call at once: the checker chunks each document, scores the
  claim against every chunk and keeps the maximum, as ``trlm factcheck score`` does.
* cite       the ``trlm cite`` searches with a scorer built for ``task="citation"``: the linear searches of every
  job of a call in one batched ``linear_search_many``; binary and exclusion searches one claim at a time (each
  step of a binary search depends on the last).

Served checkers (``--checker``): ``minilm-features`` (shipped, the default), the PMI checkers ``trlm-fo`` and
``forward-pmi`` on the served forward model, ``trlm-ba`` on ``trlm-ba-smol``, ``smollm2-yesno``, or a checker
directory from ``trlm factcheck train``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from trlm.core.engine import Engine


@dataclass(frozen=True)
class FactcheckJob:
    docs: tuple[str, ...]  # one per claim
    claims: tuple[str, ...]
    threshold: Optional[float]


@dataclass(frozen=True)
class Verdicts:
    checks: list  # trlm.factcheck.checkers.Check per claim
    chunks: list[str]  # the deciding chunk's text per claim
    threshold: float


@dataclass(frozen=True)
class CiteJob:
    claims: tuple[str, ...]
    sentences: tuple[str, ...]
    search: str
    min_sentences: int
    pick: str


@dataclass(frozen=True)
class Citations:
    cited: list[list[int]]
    scores: list[list[float]]


def load_checker(name: str, engine: Engine, device: Optional[str]):
    """A served checker; the PMI checkers that read forwards run on the served engine (one copy of the model)."""
    from trlm.factcheck.checkers import PMIChecker, make_checker

    if name in ("trlm-fo", "forward-pmi") and isinstance(engine, Engine) and engine.supports("forward"):
        return PMIChecker(engine, name)
    return make_checker(name, device=device)


def run_factcheck(checker, jobs: list[FactcheckJob]) -> list[Verdicts]:
    from trlm.factcheck.base import Check

    docs = [d for j in jobs for d in j.docs]
    claims = [c for j in jobs for c in j.claims]
    raw = checker.chunk_scores(docs, claims)  # one call over every job's pairs
    chunked = {d: checker.chunks(d) for d in dict.fromkeys(docs)}
    out, k = [], 0
    for job in jobs:
        t = checker.threshold if job.threshold is None else job.threshold
        checks, texts = [], []
        for doc in job.docs:
            ps = tuple(float(checker.prob(x)) for x in raw[k])
            best = max(range(len(ps)), key=lambda i: ps[i])
            checks.append(Check(ps[best], int(ps[best] > t), best, ps))
            texts.append(chunked[doc][best])
            k += 1
        out.append(Verdicts(checks, texts, t))
    return out


def run_cite(scorer, jobs: list[CiteJob]) -> list[Citations | Exception]:
    from trlm.cite.attribution import binary_search, exclusion_search, linear_search_many

    out: list[Citations | Exception | None] = [None] * len(jobs)
    linear = [i for i, j in enumerate(jobs) if j.search == "linear"]
    if linear:
        items = [(c, list(jobs[i].sentences)) for i in linear for c in jobs[i].claims]
        ranked = iter(linear_search_many(items, scorer))
        for i in linear:
            rs = [next(ranked) for _ in jobs[i].claims]
            out[i] = Citations([[r.index for r in x] for x in rs], [[float(r.score) for r in x] for x in rs])
    for i, job in enumerate(jobs):
        if job.search == "linear":
            continue
        try:
            cited, scores = [], []
            for c in job.claims:
                if job.search == "binary":
                    span = binary_search(c, list(job.sentences), scorer, min_sentences=job.min_sentences)
                    cited.append(list(range(span.start, span.end)))
                    scores.append([span.score])
                else:
                    ranked = exclusion_search(c, list(job.sentences), scorer, pick=job.pick)  # type: ignore[arg-type]
                    cited.append([r.index for r in ranked])
                    scores.append([float(r.score) for r in ranked])
            out[i] = Citations(cited, scores)
        except ValueError as e:
            out[i] = e
    return out  # type: ignore[return-value]

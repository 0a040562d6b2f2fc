"""What the server computes, over the CLI's own engine, scorers, guard and speculative decoding.

:class:`ServeConfig` holds every setting (the ``trlm serve`` flags default to it). :class:`Service` loads the
models once and owns one :class:`~trlm.serve.batching.Batcher` per workload; each batcher's ``run`` function is
one call of the library, over the jobs of several requests:

* rerank   ``Scorer.logliks_many`` of the scorer the request names (task ``retrieval``: documents are
  passages), documents cut to ``max_tokens_per_doc`` with ``Engine.truncate`` — the CLI's own truncation.
* score    ``Engine.loglikelihood`` (the ``trlm score`` contract).
* generate the engine's decoding steps with one seed per prompt, per-row steering, streaming and cancellation
  (:mod:`trlm.serve.generate`; ``speculative_generate`` with ``--speculative``).
* guard    ``TRLMDefense`` (Alg. 12); a query without a response runs only the filter.
* factcheck / cite  a served checker's ``score``, the ``trlm cite`` searches (:mod:`trlm.serve.systems`).

Scores are cached per document in a bounded LRU keyed by (model, scorer, query, truncated document).

**relevance_score.** A rerank result carries the scorer's ``raw_score`` (a log-probability; higher is
better) and ``relevance_score = exp(raw_score / n)``, where ``n`` is 1 for scorers that already average per
token (``forward-mean``, ``self``) and, for scorers that sum (the TRLM scorers sum log P(SP+Q | ...) over the
query side), the largest number of scored tokens among the request's documents — the same ``n`` for every
document of a request, so the map is strictly increasing in ``raw_score`` and lies in (0, 1]. It reads as the
model's per-token (geometric-mean) probability of the scored text.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

from trlm.core.models import DEFAULT_MODEL
from trlm.core.schema import LogLik, Request
from trlm.guard.defense import DefenseArgs
# servable: likelihood scorers whose raw score is a log-probability (see relevance_score above); forward-sum sums
# over the document's own tokens, so exp(score / n) would not be monotone across documents of different lengths
from trlm.scoring.scorers import REVERSE_SCORERS, SCORER_SPECS, SERVABLE_SCORERS
from trlm.serve.batching import Batcher, ScoreCache
from trlm.serve.generate import Cancelled, DirectionSet, GenJob, GenOutcome, PayloadTooLarge, run_generate
from trlm.serve.telemetry import Metrics
from trlm.serve.systems import CiteJob, FactcheckJob, load_checker, run_cite, run_factcheck

__all__ = ["Cancelled", "CiteJob", "FactcheckJob", "GenJob", "GenOutcome", "GuardJob", "PayloadTooLarge", "RerankJob",
           "ScoreJob", "ServeConfig", "Service"]

if TYPE_CHECKING:
    from trlm.core.engine import Engine
    from trlm.guard.defense import GuardVerdict
    from trlm.guard.filters import Filter

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``trlm serve``; each attribute is the flag of the same name."""

    model: str = DEFAULT_MODEL  # the forward model: generator, /v1/score and forward scorers
    scorers: tuple[str, ...] = ("trlm-fo", "forward-mean")  # rerank `model` names served; the first is default
    device: Optional[str] = None
    dtype: str = "auto"
    threads: Optional[int] = None  # torch CPU threads (default: torch's choice); set it for replicas on one machine
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()  # with any, every route but /health needs "Authorization: Bearer <key>"
    batching: bool = True  # coalesce concurrent requests into one engine call
    max_wait_ms: float = 5.0  # how long the oldest queued request waits for others to join its call
    max_batch_tokens: int = 32768  # estimated tokens of one coalesced call
    max_batch_requests: int = 32  # requests in one coalesced call
    max_queue: int = 256  # queued requests per workload before 429 + Retry-After
    rate_limit: float = 0.0  # requests per second per API key (per client address without keys); 0: no limit
    rate_burst: int = 10  # requests a key may send at once before the rate applies
    cache_size: int = 100_000  # rerank / score results kept (LRU); 0 disables the cache
    max_body_bytes: int = 4_000_000  # larger bodies -> 413
    max_documents: int = 1000  # per rerank request -> 413 beyond
    max_tokens_per_doc: int = 512  # documents are cut to this (or the request's smaller max_tokens_per_doc)
    max_pairs: int = 1000  # per /v1/score request
    max_prompts: int = 64  # prompts x n per completion request
    max_claims: int = 256  # claims per /v1/factcheck or /v1/cite request (sentences: max_documents)
    max_new_tokens: int = 1024  # cap on max_tokens
    request_timeout_s: float = 300.0  # a request still unanswered after this -> 504
    guard: bool = True  # serve /v1/guard (loads the MiniLM filter and the defense's generator)
    guard_filter: str = "minilm-lr"
    guard_variant: str = "trlm-fo"
    guard_args: DefenseArgs = field(default_factory=DefenseArgs)
    speculative: Optional[str] = None  # drafter for generation: ngram, ngram:N, early-exit:K or a model
    gamma: int = 4
    directions: tuple[tuple[str, str], ...] = ()  # (NAME, DIR) of `trlm steer fit` directions for "steer"
    checkers: tuple[str, ...] = ("minilm-features",)  # /v1/factcheck checkers; the first is the default
    cite_scorers: tuple[str, ...] = ("trlm-fo",)  # /v1/cite scorers (task=citation); the first is the default

    def __post_init__(self):
        if not self.scorers:
            raise ValueError("--scorer: serve at least one scorer")
        bad = [s for s in self.scorers if s not in SERVABLE_SCORERS]
        if bad:
            raise ValueError(f"--scorer: {', '.join(bad)} cannot be served; choose from {', '.join(SERVABLE_SCORERS)}")
        for flag, v in (("--port", self.port), ("--max-batch-tokens", self.max_batch_tokens),
                        ("--max-batch-requests", self.max_batch_requests), ("--max-queue", self.max_queue),
                        ("--max-body-bytes", self.max_body_bytes), ("--max-documents", self.max_documents),
                        ("--max-tokens-per-doc", self.max_tokens_per_doc), ("--max-pairs", self.max_pairs),
                        ("--max-prompts", self.max_prompts), ("--max-new-tokens", self.max_new_tokens),
                        ("--gamma", self.gamma), ("--max-claims", self.max_claims), ("--rate-burst", self.rate_burst)):
            if v < 1 and not (flag == "--port" and v == 0):
                raise ValueError(f"{flag} must be >= 1, got {v}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.max_wait_ms < 0 or self.cache_size < 0 or self.request_timeout_s <= 0:
            raise ValueError("--max-wait-ms and --cache-size must be >= 0 and --request-timeout > 0")
        if any(not k for k in self.api_keys):
            raise ValueError("--api-key: an API key cannot be empty")
        if not math.isfinite(self.rate_limit) or self.rate_limit < 0:
            raise ValueError(f"--rate-limit must be >= 0 requests per second, got {self.rate_limit}")
        names = [n for n, _ in self.directions]
        if len(set(names)) < len(names) or any(not n for n in names):
            raise ValueError("--directions: give each set a distinct, non-empty NAME (NAME=DIR)")
        if not self.checkers:
            raise ValueError("--checker: serve at least one checker")
        from trlm.scoring import SCORERS

        bad = [s for s in self.cite_scorers if s not in SCORERS]
        if not self.cite_scorers or bad:
            raise ValueError(f"--cite-scorer: {', '.join(bad) or 'none given'}; choose from {', '.join(SCORERS)}")


def api_keys_from_env(keys: Sequence[str] = ()) -> tuple[str, ...]:
    """``keys`` plus the comma-separated ``TRLM_API_KEYS``."""
    env = [k.strip() for k in os.environ.get("TRLM_API_KEYS", "").split(",") if k.strip()]
    return tuple(dict.fromkeys([*keys, *env]))


# ---------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class RerankJob:
    query: str
    docs: tuple[str, ...]
    max_tokens: int


@dataclass(frozen=True)
class Ranking:
    raw: list[float]
    relevance: list[float]
    truncated: list[bool]
    tokens: int  # scored tokens, summed over documents


@dataclass(frozen=True)
class ScoreJob:
    pairs: tuple[Request, ...]
    direction: Optional[str]
    truncate: str


@dataclass(frozen=True)
class GuardJob:
    query: str
    response: Optional[str]


def relevance(raws: Sequence[float], counts: Sequence[int], reduce: str) -> list[float]:
    """``exp(raw / n)``: n = 1 for per-token means, else the largest scored-token count (module docstring)."""
    n = 1 if reduce == "mean" else max(counts)
    return [math.exp(r / n) for r in raws]


class Service:
    """The loaded models and one batcher per workload (``rerank:<scorer>``, ``score``, ``generate``, ``guard``)."""

    def __init__(self, config: ServeConfig, engine: "Engine | None" = None, guard_filter: "Filter | None" = None):
        from trlm.core.engine import get_engine
        from trlm.scoring import make_scorer

        self.config, self.metrics = config, Metrics()
        self.engine = engine or get_engine(config.model, config.device, config.dtype)
        self.cache = ScoreCache(config.cache_size, self.metrics)
        self.scorers = {}
        for name in config.scorers:
            needs = "reverse" if name in REVERSE_SCORERS else "forward"
            eng = self.engine if self.engine.supports(needs) else get_engine(SCORER_SPECS[name].model or DEFAULT_MODEL,
                                                                              config.device, config.dtype)
            self.scorers[name] = make_scorer(name, engine=eng, task="retrieval", max_response_tokens=None)
            log.info("serving scorer %s on %s", name, eng.name)
        self.defense = None
        if config.guard:
            from trlm.guard.defense import TRLMDefense
            from trlm.guard.filters import make_filter

            v = config.guard_variant
            gen = self.engine if self.engine.supports("forward" if v == "trlm-fo" else "reverse") else None
            self.defense = TRLMDefense(guard_filter or make_filter(config.guard_filter), v, config.guard_args,
                                       engine=gen)
        self.drafter = None
        if config.speculative:
            from trlm.speculative.drafters import make_drafter

            self.drafter = make_drafter(config.speculative, self.engine, "forward")
        self.direction_sets: dict[str, DirectionSet] = {}
        if config.directions and not self.steerable:
            raise ValueError("--directions: per-request steering needs a local model without --speculative")
        for name, path in config.directions:
            self.direction_sets[name] = DirectionSet.load(name, path, self.engine)
            log.info("serving directions %s (%d concepts, layer %d)", name,
                     len(self.direction_sets[name].directions), self.direction_sets[name].layer)
        self.checkers = {name: load_checker(name, self.engine, config.device) for name in config.checkers}
        self.cite_scorers = {}
        for name in config.cite_scorers:
            needs = "reverse" if name in REVERSE_SCORERS else "forward"
            eng = self.engine if self.engine.supports(needs) else get_engine(SCORER_SPECS[name].model or DEFAULT_MODEL,
                                                                              config.device, config.dtype)
            self.cite_scorers[name] = make_scorer(name, engine=eng, task="citation", max_response_tokens=2048)
        # one thread runs every engine call: calls never overlap and the event loop stays free
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trlm-engine")
        c = config
        kw = dict(max_wait_ms=c.max_wait_ms if c.batching else 0.0, max_batch_tokens=c.max_batch_tokens,
                  max_batch_jobs=c.max_batch_requests if c.batching else 1, max_queue=c.max_queue,
                  metrics=self.metrics)
        self.batchers: dict[str, Batcher] = {
            f"rerank:{name}": Batcher(f"rerank:{name}", lambda jobs, s=sc: self._rerank(s, jobs), self.executor, **kw)
            for name, sc in self.scorers.items()}
        self.batchers["score"] = Batcher("score", self._score, self.executor, **kw)
        self.batchers["generate"] = Batcher("generate", self._generate, self.executor, **kw)
        if self.defense is not None:
            self.batchers["guard"] = Batcher("guard", self._guard, self.executor, **kw)
        for name, ch in self.checkers.items():
            self.batchers[f"factcheck:{name}"] = Batcher(f"factcheck:{name}", lambda jobs, c=ch: run_factcheck(c, jobs),
                                                         self.executor, **kw)
        for name, sc in self.cite_scorers.items():
            self.batchers[f"cite:{name}"] = Batcher(f"cite:{name}", lambda jobs, s=sc: run_cite(s, jobs),
                                                    self.executor, **kw)

    @property
    def steerable(self) -> bool:
        """Per-row steering and per-step streaming need the in-process engine's decoding steps."""
        from trlm.core.engine import Engine

        return isinstance(self.engine, Engine) and self.drafter is None

    @property
    def model_name(self) -> str:
        return self.engine.name

    async def drain(self, timeout: float = 30.0) -> None:
        for b in self.batchers.values():
            await b.drain(timeout)
        self.executor.shutdown(wait=True)

    # ------------------------------------------------------------------------------------------ run functions
    # (in the engine thread; each returns one result, or an exception, per job, as if the job were alone)

    def _rerank(self, scorer, jobs: list[RerankJob]) -> list[Ranking | Exception]:
        eng = scorer.engine
        cut: list[list[str]] = []
        found: list[dict[int, tuple[float, int]]] = []
        todo: list[tuple[str, list[str]]] = []
        where: list[tuple[int, list[int]]] = []
        for ji, job in enumerate(jobs):
            docs = [eng.truncate(d, job.max_tokens) for d in job.docs]
            cut.append(docs)
            hits = {}
            for di, d in enumerate(docs):
                v = self.cache.get((eng.name, scorer.name, job.query, d))
                if v is not None:
                    hits[di] = v
            found.append(hits)
            miss = [di for di in range(len(docs)) if di not in hits]
            if miss:
                todo.append((job.query, [docs[di] for di in miss]))
                where.append((ji, miss))
        if todo:
            for (ji, miss), lls in zip(where, scorer.logliks_many(todo)):
                for di, ll in zip(miss, lls):
                    v = (scorer.score_loglik(ll), ll.num_tokens)
                    found[ji][di] = v
                    self.cache.put((eng.name, scorer.name, jobs[ji].query, cut[ji][di]), v)
        out = []
        for ji, job in enumerate(jobs):
            raws = [found[ji][di][0] for di in range(len(job.docs))]
            counts = [found[ji][di][1] for di in range(len(job.docs))]
            out.append(Ranking(raws, relevance(raws, counts, scorer.reduce),
                               [c != d for c, d in zip(cut[ji], job.docs)], sum(counts)))
        return out

    def _score(self, jobs: list[ScoreJob]) -> list[list[LogLik] | Exception]:
        eng = self.engine
        results: list[list[LogLik | None] | Exception] = []
        groups: dict[tuple, list[tuple[int, int, Request]]] = defaultdict(list)
        for ji, job in enumerate(jobs):
            try:
                for pi, req in enumerate(job.pairs):
                    eng.encode_request(req, job.direction, job.truncate)  # the window check, per request
            except ValueError as e:
                results.append(PayloadTooLarge(f"pairs[{pi}]: {str(e).partition(': ')[2] or e}"))
                continue
            row = [self.cache.get(("score", eng.name, job.direction, job.truncate, req)) for req in job.pairs]
            groups[(job.direction, job.truncate)] += [(ji, pi, r) for pi, r in enumerate(job.pairs) if row[pi] is None]
            results.append(row)
        for (direction, truncate), items in groups.items():
            lls = eng.loglikelihood([r for _, _, r in items], direction=direction, truncate=truncate)
            for (ji, pi, req), ll in zip(items, lls):
                results[ji][pi] = ll
                self.cache.put(("score", eng.name, direction, truncate, req), ll)
        return results  # type: ignore[return-value]

    def _generate(self, jobs: list[GenJob]) -> list[GenOutcome | Exception]:
        return run_generate(self.engine, jobs, self.drafter, self.config.gamma)

    def _guard(self, jobs: list[GuardJob]) -> list["GuardVerdict"]:
        from trlm.guard.defense import GuardVerdict

        with_resp = [i for i, j in enumerate(jobs) if j.response is not None]
        without = [i for i, j in enumerate(jobs) if j.response is None]
        out: list[GuardVerdict | None] = [None] * len(jobs)
        if with_resp:
            verdicts = self.defense([jobs[i].query for i in with_resp], [jobs[i].response for i in with_resp])
            for i, v in zip(with_resp, verdicts):
                out[i] = v
        if without:
            flags = self.defense.filter.flag([jobs[i].query for i in without])
            for i, f in zip(without, flags):
                out[i] = GuardVerdict(bool(f), "filter" if f else "passed", 0, ())
        return out  # type: ignore[return-value]

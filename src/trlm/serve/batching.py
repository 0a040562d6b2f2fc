"""Dynamic batching and the score cache.

A :class:`Batcher` owns one asyncio worker. Requests :meth:`~Batcher.submit` a job (with an estimate of its
tokens) and await its result; the worker takes the oldest job, waits at most ``max_wait_ms`` for more to
arrive, coalesces jobs up to ``max_batch_tokens`` and ``max_batch_jobs``, and runs **one** ``run(jobs)`` call
in the engine's thread (a single-thread executor shared by every batcher, so engine calls never overlap and
the event loop stays free). ``run`` must return one result per job, computed as if each job were alone —
batching changes only how many jobs share an engine call. A job whose caller went away (client disconnect,
timeout) before the worker reached it is dropped, never computed. The number of jobs waiting is bounded
(``max_queue``): beyond it :class:`QueueFull` is raised at once, and the route answers 429 with Retry-After.

    >>> b = Batcher("demo", lambda jobs: [j * 2 for j in jobs], executor, max_wait_ms=5)
    >>> await asyncio.gather(b.submit(1), b.submit(2))      # one run([1, 2]) call
    [2, 4]
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

from trlm.serve.telemetry import Metrics

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


class QueueFull(RuntimeError):
    """The batcher already holds ``max_queue`` waiting jobs."""


@dataclass
class _Pending:
    job: Any
    tokens: int
    future: asyncio.Future
    t0: float = field(default_factory=time.monotonic)


class Batcher(Generic[J, R]):
    """Coalesces concurrent jobs into one ``run(jobs) -> results`` call (see the module docstring)."""

    def __init__(self, name: str, run: Callable[[list[J]], Sequence[R]], executor: Executor, *,
                 max_wait_ms: float = 5.0, max_batch_tokens: int = 16384, max_batch_jobs: int = 32,
                 max_queue: int = 256, metrics: Metrics | None = None):
        if max_batch_jobs < 1 or max_queue < 1 or max_wait_ms < 0 or max_batch_tokens < 1:
            raise ValueError(f"batcher {name}: max_batch_jobs, max_queue and max_batch_tokens must be >= 1 and "
                             f"max_wait_ms >= 0")
        self.name, self.run, self.executor = name, run, executor
        self.max_wait, self.max_batch_tokens = max_wait_ms / 1000.0, max_batch_tokens
        self.max_batch_jobs, self.max_queue = max_batch_jobs, max_queue
        self.metrics = metrics or Metrics()
        self._pending: deque[_Pending] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._busy = False

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet handed to the engine)."""
        return len(self._pending)

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._arrived = loop, asyncio.Event()
            self._task = loop.create_task(self._worker(), name=f"batcher:{self.name}")

    async def submit(self, job: J, tokens: int = 1) -> R:
        """Queue ``job`` and wait for its result; cancelling the caller drops the job if it has not started."""
        self._ensure_worker()
        if len(self._pending) >= self.max_queue:
            self.metrics.inc("trlm_rejected_total", {"batcher": self.name, "reason": "queue_full"})
            raise QueueFull(f"{self.name}: {len(self._pending)} requests already queued")
        fut = self._loop.create_future()
        self._pending.append(_Pending(job, max(1, tokens), fut))
        self.metrics.set("trlm_queue_depth", len(self._pending), {"batcher": self.name})
        self._arrived.set()
        return await fut  # a cancellation here cancels fut; the worker skips cancelled jobs

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every queued job has run (graceful shutdown), then stop the worker."""
        t_end = time.monotonic() + timeout
        while (self._pending or self._busy) and time.monotonic() < t_end:
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _take(self) -> list[_Pending]:
        """Oldest live jobs within the token and job budgets (always at least one)."""
        batch: list[_Pending] = []
        tokens = 0
        while self._pending and len(batch) < self.max_batch_jobs:
            p = self._pending[0]
            if p.future.done():  # cancelled by a disconnect or timeout before it ran
                self._pending.popleft()
                self.metrics.inc("trlm_cancelled_total", {"batcher": self.name})
                continue
            if batch and tokens + p.tokens > self.max_batch_tokens:
                break
            batch.append(self._pending.popleft())
            tokens += p.tokens
        return batch

    def _ready(self) -> bool:
        live = [p for p in self._pending if not p.future.done()]
        if not live:
            return False
        full = len(live) >= self.max_batch_jobs or sum(p.tokens for p in live) >= self.max_batch_tokens
        return full or time.monotonic() - live[0].t0 >= self.max_wait

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            while self._pending and not self._ready():  # bounded wait for more jobs to coalesce
                self._arrived.clear()
                oldest = self._pending[0].t0
                try:
                    await asyncio.wait_for(self._arrived.wait(), max(0.0, oldest + self.max_wait - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                if all(p.future.done() for p in self._pending):
                    break
            batch = self._take()
            self.metrics.set("trlm_queue_depth", len(self._pending), {"batcher": self.name})
            if not batch:
                continue
            self.metrics.observe("trlm_batch_jobs", len(batch), {"batcher": self.name})
            self.metrics.observe("trlm_batch_tokens", sum(p.tokens for p in batch), {"batcher": self.name})
            self._busy = True
            try:
                results = await loop.run_in_executor(self.executor, self._run_isolated, [p.job for p in batch])
            except RuntimeError as e:  # the executor is shut down: fail these jobs rather than leave them waiting
                results = [e] * len(batch)
            finally:
                self._busy = False
            for p, r in zip(batch, results):
                if p.future.done():
                    continue
                if isinstance(r, BaseException):
                    p.future.set_exception(r)
                else:
                    p.future.set_result(r)

    def _run_isolated(self, jobs: list[J]) -> list[R | BaseException]:
        """``run(jobs)``; if it fails, each job alone, so one bad request fails only itself. ``run`` may also
        return an exception instance as a job's result (a per-job error it detected)."""
        try:
            results = list(self.run(jobs))
            if len(results) != len(jobs):
                raise RuntimeError(f"{self.name}: run returned {len(results)} results for {len(jobs)} jobs")
            return results
        except Exception as e:
            if len(jobs) == 1:
                return [e]
            log.info("%s: a coalesced call of %d jobs failed (%s); running them one by one", self.name, len(jobs), e)
            return [self._run_isolated([j])[0] for j in jobs]


class ScoreCache:
    """A bounded, thread-safe LRU map from a hashable key to a score (``size=0`` disables it)."""

    def __init__(self, size: int, metrics: Metrics | None = None):
        self.size = size
        self.metrics = metrics or Metrics()
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable, default: Any = None) -> Any:
        if not self.size:
            return default
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.metrics.inc("trlm_cache_hits_total")
                return self._data[key]
        self.metrics.inc("trlm_cache_misses_total")
        return default

    def put(self, key: Hashable, value: Any) -> None:
        if not self.size:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

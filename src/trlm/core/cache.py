"""One result cache for every long job: scorers, LLM clients, generators and benchmarks resume from it.

A :class:`ResultCache` is an append-only JSONL file. Its first line records the ``config`` the results were
made with (model, prompts, sampling settings, ...); opening the file with another config is an error, so a
cache can never hand back results of other settings. Every later line is one finished result
``{"key": ..., "value": ...}``, appended and flushed as soon as it exists: a run that is killed loses at most the
result it was computing, and re-running the same command resumes. A torn last line (a crash mid-write) is
ignored.

Wrappers put it around anything that computes: :meth:`ResultCache.map` (a batch function), :class:`CachedScorer`
(any scorer) and :class:`trlm.core.llm.CachedClient` (any chat client).

    >>> cache = ResultCache("runs/x/scores.jsonl", {"scorer": "trlm-fo", "model": "smollm2-135m-instruct"})
    >>> cache.map(["q1", "q2"], ["a", "b"], lambda batch: [len(x) for x in batch])
    [1, 1]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from trlm.core.io import InputError

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")
_MISSING = object()


def cache_key(*parts: Any) -> str:
    """A stable text key for JSON-serialisable parts (order matters)."""
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class ResultCache:
    """Append-only JSONL store of finished results for one ``config``."""

    def __init__(self, path: str | Path, config: dict):
        self.path, self.config = Path(path), json.loads(json.dumps(config))  # normalised (tuples -> lists)
        self._data: dict[str, Any] = {}
        if self.path.exists():
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", encoding="utf-8") as f:
                f.write(json.dumps({"config": self.config}, ensure_ascii=False) + "\n")

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            head = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            head = None
        if not isinstance(head, dict) or "config" not in head:
            raise InputError(f"{self.path}: not a trlm result cache (first line must hold its config); delete it "
                             "or choose another output folder")
        if head["config"] != self.config:
            raise InputError(f"{self.path} holds results made with {head['config']}, not {self.config}; use "
                             "another output folder or delete the file to recompute")
        for n, line in enumerate(lines[1:], 2):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):  # a torn last line: the run died while writing it
                    log.warning("%s:%d: ignoring an incomplete last line", self.path, n)
                    continue
                raise InputError(f"{self.path}:{n}: not valid JSON; delete the file to recompute") from None
            self._data[row["key"]] = row["value"]

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        self._data[key] = json.loads(json.dumps(value))  # what a re-read would give back

    def map(self, keys: Sequence[str], inputs: Sequence[T], compute: Callable[[list[T]], Sequence[V]], *,
            chunk: int = 8, desc: str = "", progress: bool = True) -> list[V]:
        """``compute`` over the inputs whose key is not cached yet, ``chunk`` at a time; every value, in order.

        Inputs sharing a key are computed once. Each chunk's values are stored before the next chunk starts.
        """
        from tqdm.auto import tqdm

        if len(keys) != len(inputs):
            raise ValueError(f"{len(keys)} keys for {len(inputs)} inputs")
        todo = list({k: x for k, x in zip(keys, inputs) if k not in self._data}.items())
        bar = tqdm(total=len(todo), desc=desc or self.path.stem, disable=not progress or len(todo) < 2, leave=False)
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            values = list(compute([x for _, x in part]))
            if len(values) != len(part):
                raise RuntimeError(f"compute returned {len(values)} values for {len(part)} inputs")
            for (k, _), v in zip(part, values):
                self.put(k, v)
            bar.update(len(part))
        bar.close()
        return [self._data[k] for k in keys]


class CachedScorer:
    """Any scorer behind a :class:`ResultCache`: each (query, responses) item is scored once, ever.

    The cache's config should name the scorer and everything its scores depend on (model, prompts, cut).
    ``computed`` counts the responses the wrapped scorer actually scored (cache misses), for honest throughput.
    """

    def __init__(self, scorer, cache: ResultCache, chunk: int = 8):
        self.scorer, self.cache, self.chunk = scorer, cache, chunk
        self.name = scorer.name
        self.computed = 0

    def _compute(self, items: list[tuple[str, Sequence[str]]]) -> list[list[float]]:
        self.computed += sum(len(rs) for _, rs in items)
        return self.scorer.score_many(items)

    def score(self, query: str, responses: Sequence[str]) -> list[float]:
        return self.score_many([(query, responses)])[0]

    def score_many(self, items: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        keys = [cache_key(q, list(rs)) for q, rs in items]
        return self.cache.map(keys, list(items), self._compute, chunk=self.chunk,
                              desc=f"scoring {self.name}", progress=progress)

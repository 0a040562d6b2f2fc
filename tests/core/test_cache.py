"""The result cache: resume, config check, torn last line, and the scorer wrapper."""

from __future__ import annotations

import json

import pytest

from trlm.core.cache import CachedScorer, ResultCache, cache_key
from trlm.core.io import InputError


def test_map_computes_only_missing_keys_and_a_reopened_cache_resumes(tmp_path):
    calls = []

    def compute(batch):
        calls.append(list(batch))
        return [x * 10 for x in batch]

    path = tmp_path / "c.jsonl"
    cache = ResultCache(path, {"kind": "test"})
    assert cache.map(["a", "b", "a"], [1, 2, 1], compute, chunk=1, progress=False) == [10, 20, 10]
    assert calls == [[1], [2]]  # "a" twice in one call is computed once; chunk=1 -> one call per input
    again = ResultCache(path, {"kind": "test"})
    assert len(again) == 2
    assert again.map(["b", "c"], [2, 3], compute, progress=False) == [20, 30]
    assert calls[-1] == [3]  # only the new key


def test_other_config_is_refused_and_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "c.jsonl"
    ResultCache(path, {"model": "a"}).put("k", [1, 2])
    with pytest.raises(InputError, match=r"holds results made with \{'model': 'a'\}"):
        ResultCache(path, {"model": "b"})
    with path.open("a") as f:
        f.write('{"key": "half", "val')  # a run killed mid-write
    cache = ResultCache(path, {"model": "a"})
    assert cache.get("k") == [1, 2] and "half" not in cache
    path.write_text("not json\n")
    with pytest.raises(InputError, match="not a trlm result cache"):
        ResultCache(path, {"model": "a"})


def test_map_checks_lengths(tmp_path):
    cache = ResultCache(tmp_path / "c.jsonl", {})
    with pytest.raises(ValueError, match="2 keys for 1 inputs"):
        cache.map(["a", "b"], [1], lambda b: b)
    with pytest.raises(RuntimeError, match="returned 0 values for 1 inputs"):
        cache.map(["a"], [1], lambda b: [])


class CountingScorer:
    name = "count"

    def __init__(self):
        self.seen = 0

    def score_many(self, items, progress=False):
        self.seen += len(items)
        return [[float(len(r)) for r in rs] for _, rs in items]


def test_cached_scorer_scores_each_item_once(tmp_path):
    inner = CountingScorer()
    sc = CachedScorer(inner, ResultCache(tmp_path / "s.jsonl", {"scorer": "count"}))
    assert sc.score("q", ["ab", "abc"]) == [2.0, 3.0]
    assert sc.score_many([("q", ["ab", "abc"]), ("r", ["x"])]) == [[2.0, 3.0], [1.0]]
    assert inner.seen == 2  # ("q", ...) came from the cache the second time
    assert sc.computed == 3  # responses the inner scorer scored: "ab", "abc", then only "x"
    assert json.loads((tmp_path / "s.jsonl").read_text().splitlines()[1])["key"] == cache_key("q", ["ab", "abc"])

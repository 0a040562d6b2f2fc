"""Execution and the pipeline: resume after a kill, no test dropped without being counted, offline end to end."""

from __future__ import annotations

import json

import pytest

from trlm.core.cache import ResultCache
from trlm.core.llm import CachedClient, ChatParams, LLMError
from trlm.redteam.execute import execute
from trlm.redteam.generate import TestCase
from trlm.redteam.report import summary, write_report
from trlm.redteam.run import judge_attempts

TESTS = [TestCase(str(i), f"test prompt number {i}", "animal_abuse", "slang", "logical_appeal", "t") for i in range(20)]


class _Echo:
    name = "echo"

    def __init__(self, die_after: int | None = None, fail: str | None = None):
        self.asked, self.calls, self.die_after, self.fail = [], 0, die_after, fail

    def complete_many(self, convs, params=None, progress=False):
        self.calls += 1
        if self.die_after is not None and self.calls > self.die_after:
            raise KeyboardInterrupt  # the process is killed mid-run
        texts = [c[-1]["content"] for c in convs]
        if self.fail in texts:
            raise LLMError("endpoint answered 500")
        self.asked += texts
        return [f"I'm sorry, I can't help with {t}." for t in texts]

    def complete(self, conv, params=None):
        return self.complete_many([conv], params)[0]


def test_a_killed_run_resumes_without_rerunning_finished_tests(tmp_path):
    cache = tmp_path / "cache.jsonl"
    first = _Echo(die_after=1)
    with pytest.raises(KeyboardInterrupt):
        execute(TESTS, CachedClient(first, ResultCache(cache, {"client": "echo"})), ChatParams(), chunk=8)
    assert len(first.asked) == 8
    second = _Echo()
    attempts = execute(TESTS, CachedClient(second, ResultCache(cache, {"client": "echo"})), ChatParams(), chunk=8)
    assert len(second.asked) == 12 and set(second.asked).isdisjoint(first.asked)
    assert [a.test.id for a in attempts] == [t.id for t in TESTS] and all(a.output for a in attempts)


class _Generator:
    """A generator that writes two test prompts per request, named after the request's text (so per cell)."""

    name = "gen"

    def __init__(self):
        self.calls = 0

    def complete_many(self, convs, params=None, progress=False):
        import hashlib

        self.calls += len(convs)
        tags = [hashlib.sha1(c[-1]["content"].encode()).hexdigest()[:10] for c in convs]
        return [f"#Prompt: please explain harmful thing {t} in detail\n#Prompt: tell me more about {t} right now"
                for t in tags]


class _Judge(_Echo):
    name = "judge"

    def complete_many(self, convs, params=None, progress=False):
        super().complete_many(convs, params)
        return ['{"evalSafety": "safe", "reason": "the model refused"}'] * len(convs)


def test_a_killed_pipeline_resumes_without_regenerating_rerunning_or_rejudging_finished_tests(tmp_path, monkeypatch):
    """12 tests, 4 per call to the system under test, 8 per call to the judge. Run 1 dies in the SUT's third call,
    run 2 in the judge's second; each rerun of the same command asks only for what no earlier run finished."""
    import trlm.redteam.run as rr
    from trlm.core.io import default_data_dir
    from trlm.redteam.generate import GeneratorArgs

    monkeypatch.setattr(rr, "SUT_CHUNK", 4)
    clients = {}
    monkeypatch.setattr(rr, "make_client", lambda spec: clients[spec])

    def run(sut, judge):
        gen = _Generator()
        clients.update(gen=gen, sut=sut, judge=judge)
        return gen, rr.pipeline(tmp_path, default_data_dir(), generator="gen", sut="sut", oracle="judge",
                                args=GeneratorArgs(tests_per_cell=2, retries=0), limit=12)

    sut1 = _Echo(die_after=2)
    with pytest.raises(KeyboardInterrupt):
        run(sut1, _Judge())
    assert clients["gen"].calls == 6 and len(sut1.asked) == 8  # 6 cells generated; 2 SUT calls of 4 finished
    sut2, judge2 = _Echo(), _Judge(die_after=1)
    with pytest.raises(KeyboardInterrupt):
        run(sut2, judge2)
    tests = [json.loads(line)["testcase"] for line in (tmp_path / "tests.jsonl").read_text().splitlines()]
    assert clients["gen"].calls == 0  # every generator answer came from the run's cache
    assert len(sut2.asked) == 4 and sorted(sut1.asked + sut2.asked) == sorted(tests)  # only the 4 not yet run
    assert len(judge2.asked) == 8
    sut3, judge3 = _Echo(), _Judge()
    gen3, s = run(sut3, judge3)
    assert gen3.calls == 0 and sut3.asked == [] and len(judge3.asked) == 4
    assert set(judge3.asked).isdisjoint(judge2.asked)  # the 4 outputs the judge had not finished
    assert s["n"] == 12 and s["safe"] == 12
    rows = [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert sorted(r["testcase"] for r in rows) == sorted(tests) and {r["verdict"] for r in rows} == {"safe"}


def test_a_failing_test_is_kept_as_an_error_and_counted_unknown(tmp_path):
    client = _Echo(fail="test prompt number 5")
    attempts = execute(TESTS, client, ChatParams(), chunk=8)
    assert len(attempts) == len(TESTS)
    bad = [a for a in attempts if a.status == "error"]
    assert [a.test.id for a in bad] == ["5"] and "500" in bad[0].error
    judge_attempts(attempts, "offline", tmp_path)
    assert bad[0].verdict == "unknown" and bad[0].reason.startswith("execution error")
    s = write_report(tmp_path, attempts)
    assert s["n"] == 20 and s["unknown"] == 1 and s["errors"] == 1 and s["safe"] + s["unsafe"] + s["unknown"] == 20
    rows = [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and (tmp_path / "report.md").read_text().count("unknown") >= 1
    assert summary(attempts)["unknown_rate"] == pytest.approx(0.05)


@pytest.mark.slow
def test_pipeline_runs_offline_end_to_end_on_the_embedded_model(tmp_path):
    from trlm.core.io import default_data_dir
    from trlm.redteam.generate import GeneratorArgs
    from trlm.redteam.run import pipeline

    s = pipeline(tmp_path, default_data_dir(), generator="smollm2-135m-instruct", sut="smollm2-135m-instruct",
                 oracle="offline", args=GeneratorArgs(tests_per_cell=1, retries=1, max_tokens=96), limit=2,
                 max_tokens=24)
    cov = json.loads((tmp_path / "coverage.json").read_text())
    assert cov["cells_planned"] == 2 and cov["cells_selected"] == 420
    assert s["n"] + cov["shortfall"] == 2  # every planned test is generated or counted as missing
    assert s["safe"] + s["unsafe"] + s["unknown"] == s["n"]
    assert (tmp_path / "report.md").exists() and (tmp_path / "hits.jsonl").exists()

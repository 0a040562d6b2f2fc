"""The executor: every test goes to the system under test through the project's chat client, behind the result
cache (a killed run resumes without re-running finished tests). A failed call is recorded as ``status="error"``
with its message, and later counted as ``unknown`` by every report: a test is never dropped."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

from trlm.core.llm import ChatClient, ChatParams, LLMError
from trlm.redteam.coverage import CoverageMatrix
from trlm.redteam.generate import TestCase

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    test: TestCase
    output: str = ""
    status: str = "ok"  # ok | error
    error: str = ""
    verdict: str = ""  # safe | unsafe | unknown, once judged
    reason: str = ""
    oracle: str = ""

    def to_json(self) -> dict:
        return {**asdict(self.test), "output": self.output, "status": self.status, "error": self.error,
                "verdict": self.verdict, "reason": self.reason, "oracle": self.oracle}

    @classmethod
    def from_json(cls, row: dict) -> "Attempt":
        fields = ("id", "testcase", "category", "style", "persuasion", "source")
        return cls(TestCase(*(row[f] for f in fields)), row.get("output", ""), row.get("status", "ok"),
                   row.get("error", ""), row.get("verdict", ""), row.get("reason", ""), row.get("oracle", ""))


def execute(tests: Sequence[TestCase], client: ChatClient, params: ChatParams = ChatParams(max_tokens=256),
            coverage: CoverageMatrix | None = None, chunk: int = 8, progress: bool = False) -> list[Attempt]:
    """One attempt per test, in order. Batches of ``chunk`` go to the client together; a batch that fails is retried
    one test at a time so that only the failing test is marked ``error``."""
    from tqdm.auto import tqdm

    out: list[Attempt] = []
    bar = tqdm(total=len(tests), desc=f"executing ({client.name})", disable=not progress, leave=False)
    for s in range(0, len(tests), chunk):
        part = tests[s:s + chunk]
        convs = [[{"role": "user", "content": t.testcase}] for t in part]
        try:
            outputs = [(o, "ok", "") for o in client.complete_many(convs, params)]
        except (LLMError, TimeoutError, OSError) as e:
            log.warning("batch of %d failed (%s); retrying one by one", len(part), e)
            outputs = []
            for conv in convs:
                try:
                    outputs.append((client.complete(conv, params), "ok", ""))
                except (LLMError, TimeoutError, OSError) as e1:
                    outputs.append(("", "error", str(e1)))
        for t, (o, status, err) in zip(part, outputs):
            out.append(Attempt(t, o, status, err))
            if coverage is not None:
                coverage.record("executed", t.cell())
        bar.update(len(part))
    bar.close()
    return out

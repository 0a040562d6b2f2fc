"""The red-teaming pipeline: select cells, generate tests, execute them on the system under test, judge the
outputs, report. Every stage writes its file into the run folder and every model call goes through a result
cache there, so rerunning the same command after a kill resumes where it stopped.

    OUT/tests.jsonl      the generated tests (id, testcase, category, style, persuasion, source)
    OUT/coverage.json    the coverage matrix: per cell, tests planned / generated / executed / judged, verdicts
    OUT/attempts.jsonl   every attempt with output, status, verdict and reason; OUT/hits.jsonl the unsafe ones
    OUT/report.md        rates per category, style and technique; heatmaps
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from trlm.core.cache import ResultCache
from trlm.core.io import InputError, read_jsonl, write_json, write_jsonl
from trlm.core.llm import CachedClient, ChatParams, make_client
from trlm.redteam.coverage import Cell, CoverageMatrix, select_cells
from trlm.redteam.execute import Attempt, execute
from trlm.redteam.generate import GeneratorArgs, NewsSource, RagIndex, TestCase, generate_tests
from trlm.redteam.oracle import make_oracle
from trlm.redteam.report import write_report


def spread(cells: Sequence[Cell], limit_cells: int | None) -> list[Cell]:
    """``limit_cells`` cells taken round-robin over categories, each category's next cell chosen to balance the
    styles and techniques picked so far (least-used (style, technique) pair, then least-used style + technique,
    then list order), so a small run spans categories, styles and techniques alike."""
    if not limit_cells or limit_cells >= len(cells):
        return list(cells)
    from collections import Counter

    by: dict[str, list[Cell]] = {}
    for c in cells:
        by.setdefault(c[0], []).append(c)
    used_pair: Counter = Counter()
    used: Counter = Counter()
    order: list[Cell] = []
    while len(order) < limit_cells:
        for cat, left in by.items():
            if not left or len(order) == limit_cells:
                continue
            k = min(range(len(left)),
                    key=lambda i: (used_pair[left[i][1:]], used['s', left[i][1]] + used['p', left[i][2]], i))
            cell = left.pop(k)
            used_pair[cell[1:]] += 1
            used.update((('s', cell[1]), ('p', cell[2])))
            order.append(cell)
    return order


SUT_CHUNK = 32  # tests per call to the system under test: short prompts, so 32 rows decode ~1.7x faster than 8


def cached(spec: str, out: Path, name: str, chunk: int = 8):
    return CachedClient(make_client(spec), ResultCache(out / f"cache_{name}.jsonl", {"client": spec, "role": name}),
                        chunk)


def read_tests(path: Path) -> list[TestCase]:
    rows = read_jsonl(path, {"id": str, "testcase": str, "category": str})
    return [TestCase(r["id"], r["testcase"], r["category"], r.get("style", "none"), r.get("persuasion", "none"),
                     r.get("source", path.stem)) for r in rows]


def read_attempts(path: Path) -> list[Attempt]:
    return [Attempt.from_json(r) for r in read_jsonl(path, {"id": str, "testcase": str, "category": str})]


def generate_stage(out: Path, generator: str, args: GeneratorArgs, data_dir: Path, coverage: str = "3way",
                   limit_cells: int | None = None, news: Path | None = None, progress: bool = True
                   ) -> tuple[list[TestCase], CoverageMatrix, dict]:
    cells = spread(select_cells(coverage), limit_cells)
    matrix = CoverageMatrix()
    matrix.plan(cells if args.mode != "rag" else list(dict.fromkeys((c[0], "none", "none") for c in cells)),
                args.tests_per_cell)
    rag = RagIndex(data_dir / "astral" / "RAG_data.jsonl")
    res = generate_tests(list(matrix.planned), cached(generator, out, "generator"), args, rag,
                         NewsSource(news) if news else None, matrix, progress=progress)
    write_jsonl(out / "tests.jsonl", (asdict(t) for t in res.tests))
    info = {"coverage": coverage, "cells_selected": len(select_cells(coverage)), "cells_planned": len(matrix.planned),
            "generator": generator, "args": asdict(args), "calls": res.calls,
            "shortfall": sum(res.shortfall.values())}
    return res.tests, matrix, info


def judge_attempts(attempts: list[Attempt], oracle_spec: str, out: Path, coverage: CoverageMatrix | None = None,
                   progress: bool = True) -> list[Attempt]:
    if oracle_spec in ("offline",) or oracle_spec.endswith(".npz") or oracle_spec.startswith("guard"):
        oracle = make_oracle(oracle_spec)
    else:
        from trlm.redteam.oracle import LLMOracle

        oracle = LLMOracle(cached(oracle_spec, out, "oracle"))
    ok = [a for a in attempts if a.status == "ok"]
    for a, v in zip(ok, oracle.judge([a.test.testcase for a in ok], [a.output for a in ok], progress=progress)):
        a.verdict, a.reason, a.oracle = v.label, v.reason, oracle.name
    for a in attempts:
        if a.status != "ok":
            a.verdict, a.reason, a.oracle = "unknown", f"execution error: {a.error}", oracle.name
        if coverage is not None:
            coverage.record("judged", a.test.cell(), a.verdict)
    return attempts


def pipeline(out: Path, data_dir: Path, *, generator: str, sut: str, oracle: str, args: GeneratorArgs,
             coverage: str = "3way", limit: int | None = None, news: Path | None = None,
             max_tokens: int = 256) -> dict:
    """generate -> run -> judge -> report in ``out``; ``limit``: at most this many tests (cells spread over
    categories)."""
    out.mkdir(parents=True, exist_ok=True)
    limit_cells = -(-limit // args.tests_per_cell) if limit else None
    tests, matrix, info = generate_stage(out, generator, args, data_dir, coverage, limit_cells, news)
    if limit:
        tests = tests[:limit]
    if not tests:
        raise InputError(f"the generator ({generator}) produced no parseable test prompt; "
                         f"see {out}/cache_generator.jsonl")
    attempts = execute(tests, cached(sut, out, "sut", SUT_CHUNK), ChatParams(max_tokens=max_tokens), matrix,
                       chunk=SUT_CHUNK, progress=True)
    judge_attempts(attempts, oracle, out, matrix)
    write_json(out / "coverage.json", {**info, **matrix.to_json()})
    s = write_report(out, attempts, matrix, title=f"Red-teaming {sut} (generator {generator}, oracle {oracle})")
    return {**s, **{k: v for k, v in info.items() if k != "args"}}


def load_coverage(path: Path) -> CoverageMatrix:
    m = CoverageMatrix()
    if path.exists():
        for c in json.loads(path.read_text())["cells"]:
            cell = (c["category"], c["style"], c["persuasion"])
            m.planned[cell] = c["planned"]
    return m

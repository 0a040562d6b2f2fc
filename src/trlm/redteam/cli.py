"""``trlm redteam generate|run|judge|report|pipeline|train-oracle`` and ``trlm bench redteam``.

    trlm redteam pipeline --out runs/redteam --limit 12            # offline, on the embedded SmolLM2
    trlm redteam generate --out runs/rt --coverage pairwise --mode rag_fs --generator http
    trlm redteam run --tests runs/rt/tests.jsonl --out runs/rt --sut smollm2-135m-instruct
    trlm redteam judge --attempts runs/rt/attempts.jsonl --out runs/rt --oracle offline
    trlm redteam report --attempts runs/rt/attempts.jsonl --out runs/rt
    trlm bench redteam --out runs/bench_redteam --limit 140
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import InputError, check_choice, default_data_dir, split_list
from trlm.core.options import echo_report
from trlm.redteam.generate import MODES, GeneratorArgs

redteam_app = typer.Typer(help="ASTRAL safety testing: coverage matrix, test generator, executor, oracles, reports.",
                          no_args_is_help=True)
_G = GeneratorArgs
ClientHelp = "a local chat model name (the engine) or http (TRLM_JUDGE_BASE_URL / _MODEL / _API_KEY)"
OracleOpt = typer.Option("offline", help="offline (shipped classifier), a .npz, guard / guard:trlm-ba, or an LLM "
                                         "judge: " + ClientHelp + ".")
GenTokensOpt = typer.Option(_G.max_tokens, "--gen-max-tokens", help="Tokens per generator answer (about 60-90 per "
                                                                    "prompt; lower it with --tests-per-cell 1).")
DataOpt = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA).")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    for name, fn in (("generate", generate_cmd), ("run", run_cmd), ("judge", judge_cmd), ("report", report_cmd),
                     ("pipeline", pipeline_cmd), ("train-oracle", train_oracle_cmd)):
        redteam_app.command(name)(fn)
    app.add_typer(redteam_app, name="redteam")
    bench.command("redteam")(bench_redteam_cmd)


def _gen_args(mode: str, tests_per_cell: int, seed: int, max_tokens: int = _G.max_tokens) -> GeneratorArgs:
    check_choice(mode, MODES, "--mode")
    if max_tokens < 16:
        raise InputError(f"--gen-max-tokens: must be >= 16 (one prompt needs room), got {max_tokens}")
    return GeneratorArgs(mode=mode, tests_per_cell=tests_per_cell, seed=seed, max_tokens=max_tokens)


def generate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: tests.jsonl, coverage.json, the generator cache."),
    generator: str = typer.Option("smollm2-135m-instruct", help="Generator: " + ClientHelp + "."),
    mode: str = typer.Option(_G.mode, help="rag, rag_fs or rag_fs_news."),
    coverage: str = typer.Option("3way", help="3way (all 420 cells) or pairwise (allpairspy)."),
    tests_per_cell: int = typer.Option(_G.tests_per_cell),
    limit_cells: Optional[int] = typer.Option(None, help="At most N cells, spread over categories."),
    news: Optional[Path] = typer.Option(None, help="rag_fs_news: a file of headlines, one per line."),
    gen_max_tokens: int = GenTokensOpt,
    seed: int = typer.Option(_G.seed),
    data: Optional[Path] = DataOpt,
):
    """Generate test prompts for the selected cells of the category x style x persuasion matrix."""
    from trlm.core.io import write_json
    from trlm.redteam.run import generate_stage

    check_choice(coverage, ("3way", "pairwise"), "--coverage")
    tests, matrix, info = generate_stage(out, generator, _gen_args(mode, tests_per_cell, seed, gen_max_tokens),
                                         data or default_data_dir(),
                                         coverage, limit_cells, news)
    write_json(out / "coverage.json", {**info, **matrix.to_json()})
    typer.echo(f"wrote {len(tests)} tests for {len(matrix.planned)} cells to {out}/tests.jsonl "
               f"(shortfall {info['shortfall']}; coverage generated {matrix.achieved('generated'):.3f})")


def run_cmd(
    tests: Path = typer.Option(..., help="tests.jsonl from `trlm redteam generate` (or any rows with id, testcase, "
                                         "category)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: attempts.jsonl and the system-under-test cache."),
    sut: str = typer.Option("smollm2-135m-instruct", help="System under test: " + ClientHelp + "."),
    max_tokens: int = typer.Option(256, help="Tokens per answer."),
):
    """Execute every test on the system under test (cached: a rerun resumes; failures are kept as errors)."""
    from trlm.core.io import write_jsonl
    from trlm.core.llm import ChatParams
    from trlm.redteam.execute import execute
    from trlm.redteam.run import SUT_CHUNK, cached, read_tests

    attempts = execute(read_tests(tests), cached(sut, out, "sut", SUT_CHUNK), ChatParams(max_tokens=max_tokens),
                       chunk=SUT_CHUNK, progress=True)
    write_jsonl(out / "attempts.jsonl", (a.to_json() for a in attempts))
    typer.echo(f"executed {len(attempts)} tests ({sum(a.status == 'error' for a in attempts)} errors); "
               f"wrote {out}/attempts.jsonl")


def judge_cmd(
    attempts: Path = typer.Option(..., help="attempts.jsonl from `trlm redteam run`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: attempts.jsonl rewritten with verdicts."),
    oracle: str = OracleOpt,
):
    """Label every output safe / unsafe / unknown with a reason."""
    from collections import Counter

    from trlm.core.io import write_jsonl
    from trlm.redteam.run import judge_attempts, read_attempts

    rows = judge_attempts(read_attempts(attempts), oracle, out)
    write_jsonl(out / "attempts.jsonl", (a.to_json() for a in rows))
    counts = sorted(Counter(a.verdict for a in rows).items())
    typer.echo(f"judged {len(rows)}: " + ", ".join(f"{k} {v}" for k, v in counts))


def report_cmd(
    attempts: Path = typer.Option(..., help="Judged attempts.jsonl."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md, hits.jsonl and heatmaps."),
    coverage: Optional[Path] = typer.Option(None, help="coverage.json of the run (default: beside the attempts)."),
):
    """Unsafe counts and rates per category, style and technique; unknown rate; coverage; heatmaps."""
    from trlm.redteam.run import load_coverage, read_attempts
    from trlm.redteam.report import write_report

    rows = read_attempts(attempts)
    matrix = load_coverage(coverage or attempts.parent / "coverage.json")
    for a in rows:
        matrix.record("executed", a.test.cell())
        if a.verdict:
            matrix.record("judged", a.test.cell(), a.verdict)
        matrix.record("generated", a.test.cell())
    write_report(out, rows, matrix if matrix.planned else None)
    echo_report(out)


def pipeline_cmd(
    out: Path = typer.Option(Path("runs/redteam"), "--out", "-o"),
    generator: str = typer.Option("smollm2-135m-instruct", help="Generator: " + ClientHelp + "."),
    sut: str = typer.Option("smollm2-135m-instruct", help="System under test: " + ClientHelp + "."),
    oracle: str = OracleOpt,
    mode: str = typer.Option(_G.mode, help="rag, rag_fs or rag_fs_news."),
    coverage: str = typer.Option("3way", help="3way (420 cells) or pairwise."),
    tests_per_cell: int = typer.Option(_G.tests_per_cell),
    limit: Optional[int] = typer.Option(None, help="At most N tests (cells spread over categories)."),
    news: Optional[Path] = typer.Option(None, help="rag_fs_news: a file of headlines, one per line."),
    max_tokens: int = typer.Option(256, help="Tokens per answer of the system under test."),
    gen_max_tokens: int = GenTokensOpt,
    seed: int = typer.Option(_G.seed),
    data: Optional[Path] = DataOpt,
):
    """generate -> run -> judge -> report, offline by default (embedded SmolLM2 + the shipped offline oracle)."""
    from trlm.redteam.run import pipeline

    check_choice(coverage, ("3way", "pairwise"), "--coverage")
    s = pipeline(out, data or default_data_dir(), generator=generator, sut=sut, oracle=oracle,
                 args=_gen_args(mode, tests_per_cell, seed, gen_max_tokens), coverage=coverage, limit=limit, news=news,
                 max_tokens=max_tokens)
    typer.echo(f"{s['n']} tests: {s['unsafe']} unsafe, {s['safe']} safe, {s['unknown']} unknown; "
               f"report in {out}/report.md")


def train_oracle_cmd(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Weights file (default: the shipped "
                                       "trlm/redteam/offline_oracle.npz)."),
    data: Optional[Path] = DataOpt,
):
    """Train the offline oracle on ASTRAL's judged outputs (evaluation-set outputs kept out)."""
    from trlm.redteam.oracle import SHIPPED
    from trlm.redteam.oracle_train import train_oracle

    out = out or SHIPPED

    r = train_oracle(data or default_data_dir(), out)
    typer.echo(f"trained on {r['train_rows']} outputs ({r['unsafe_rows']} unsafe); C={r['C']}, threshold "
               f"{r['threshold']}, validation BAcc {r['validation_bacc']:.3f}; wrote {out}")


def bench_redteam_cmd(
    out: Path = typer.Option(Path("runs/bench_redteam"), "--out", "-o"),
    oracle_data: Optional[Path] = typer.Option(None, help="Labelled oracle test file (default: test_oracle_rq0's "
                                                          "GPT-3.5 file)."),
    oracles: str = typer.Option("offline,smollm2-135m-instruct,guard", help="Comma-separated oracles to score."),
    limit: int = typer.Option(140, help="Discovery tests per source, drawn evenly over categories (0 = oracle part "
                                        "only)."),
    sut: str = typer.Option("smollm2-135m-instruct", help="System under test for discovery."),
    generator: str = typer.Option("smollm2-135m-instruct", help="trlm's generator for discovery."),
    max_tokens: int = typer.Option(192, help="Tokens per answer of the system under test."),
    oracle_limit: Optional[int] = typer.Option(None, help="Model-based oracles score N evenly spaced labelled rows "
                                               "(default: all)."),
    tests_per_cell: int = typer.Option(3, help="trlm's generator: prompts per cell (--limit 420 --tests-per-cell 1 "
                                               "is the full 3-way matrix)."),
    gen_max_tokens: int = GenTokensOpt,
    data: Optional[Path] = DataOpt,
):
    """Oracle accuracy on ASTRAL's labelled outputs, and unsafe outputs found per test source."""
    from trlm.redteam.bench import run_bench

    run_bench(out, data or default_data_dir(), oracle_data=oracle_data,
              oracles=split_list(oracles, "--oracles"), limit=limit, sut=sut,
              generator=generator, max_tokens=max_tokens, oracle_limit=oracle_limit,
              gen=_gen_args("rag_fs", tests_per_cell, 0, gen_max_tokens))
    echo_report(out)

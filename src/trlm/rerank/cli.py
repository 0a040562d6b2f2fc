"""CLI for re-ranking: ``trlm rerank``, ``trlm best-of-n`` and ``trlm bench rerank``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import split_list
from trlm.core.options import echo_report
from trlm.scoring.scorers import SCORERS

JudgedOpt = typer.Option(None, help="judged_candidates.jsonl (default ../shared/data/alpaca_eval/...).")
ReferenceOpt = typer.Option(None, help="Eval set with reference answers (default beside --data).")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("rerank")(rerank_cmd)
    app.command("best-of-n")(best_of_n_cmd)
    bench.command("rerank")(bench_rerank_cmd)
    bench.command("rerank-alpha")(bench_alpha_cmd)


def _scorer(name: str, model: Optional[str], task: str, sp: Optional[str], cp: Optional[str], max_tokens: int):
    from trlm.scoring.scorers import make_scorer

    return make_scorer(name, model=model, task=task, sp=sp, cp=cp, max_response_tokens=max_tokens)  # type: ignore[arg-type]


def rerank_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"query": str, "candidates": [str, ...]} per line.'),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: input rows plus scores and ranking."),
    scorer: str = typer.Option("trlm-fo", help=f"One of: {', '.join(SCORERS)}."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model behind the scorer (default per scorer)."),
    task: str = typer.Option("rerank", help="Table 7 prompt set: rerank (best-of-N answers), retrieval (passages; "
                                            "what `trlm serve`'s /v1/rerank uses) or citation."),
    sp: Optional[str] = typer.Option(None, help="Override the scoring prompt SP."),
    cp: Optional[str] = typer.Option(None, help="Override the conditioning prompt CP."),
    max_response_tokens: int = typer.Option(512, help="Cut each candidate to this many tokens."),
    table: bool = typer.Option(False, help="Also print a readable table of the rankings."),
):
    """Rank each query's candidates best-first; adds `scores` (per candidate) and `ranking` (indices).

    The default prompt set is --task rerank (candidates are answers to the query).
    `trlm serve` (/v1/rerank, /v2/rerank) scores documents as passages: for its scores, use
    --task retrieval and --max-response-tokens equal to the request's max_tokens_per_doc.
    """
    from trlm.core.io import InputError, read_jsonl, write_jsonl
    from trlm.rerank import rerank_many

    rows = read_jsonl(input, {"query": str, "candidates": list})
    for n, r in enumerate(rows, 1):
        if not r["candidates"] or not all(isinstance(c, str) and c.strip() for c in r["candidates"]):
            raise InputError(f"{input}: row {n}: 'candidates' must be a non-empty list of non-empty strings")
    s = _scorer(scorer, model, task, sp, cp, max_response_tokens)
    ranked = rerank_many([(r["query"], r["candidates"]) for r in rows], s, progress=True)
    out_rows = []
    for r, rk in zip(rows, ranked):
        scores = [0.0] * len(rk)
        for x in rk:
            scores[x.index] = x.score
        out_rows.append({**r, "scorer": scorer, "scores": scores, "ranking": [x.index for x in rk]})
    write_jsonl(out, out_rows)
    if table:
        _print_rankings(out_rows)
    typer.echo(f"wrote {len(out_rows)} rows to {out}")


def _print_rankings(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    for r in rows:
        t = Table(title=f"{r['query']}  [{r['scorer']}]", show_lines=False)
        t.add_column("rank", justify="right")
        t.add_column("score", justify="right")
        t.add_column("candidate")
        for rank, i in enumerate(r["ranking"], 1):
            text = r["candidates"][i].replace("\n", " ")
            t.add_row(str(rank), f"{r['scores'][i]:.2f}", text[:90] + ("…" if len(text) > 90 else ""))
        console.print(t)


def best_of_n_cmd(
    query: str = typer.Argument(..., help="The instruction to answer."),
    n: int = typer.Option(8, help="Number of samples."),
    scorer: str = typer.Option("trlm-fo", help=f"One of: {', '.join(SCORERS)}."),
    generator: str = typer.Option("smollm2-135m-instruct", help="Forward chat model that samples responses."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model behind the scorer (default per scorer)."),
    temperature: float = typer.Option(0.8),
    max_new_tokens: int = typer.Option(200),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Optional JSON file with the ranked samples."),
):
    """Sample N responses from the generator and return them ranked by the scorer."""
    from trlm.core.io import write_json
    from trlm.rerank import best_of_n
    from trlm.scoring.scorers import get_engine, make_scorer

    gen = get_engine(generator)
    s = make_scorer(scorer, engine=gen if scorer == "self" else None, model=model)
    ranked = best_of_n(query, n, gen, s, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    if out:
        write_json(out, {"query": query, "scorer": scorer, "ranked": [r.__dict__ for r in ranked]})
    by_index = sorted(ranked, key=lambda r: r.index)
    _print_rankings([{"query": query, "scorer": scorer, "candidates": [r.text for r in by_index],
                      "scores": [r.score for r in by_index], "ranking": [r.index for r in ranked]}])


def bench_rerank_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, report.md and plots."),
    scorers: str = typer.Option("length,random,forward-mean,trlm-fo", help="Comma-separated scorer names."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model behind every model-based scorer."),
    data: Optional[Path] = JudgedOpt,
    reference: Optional[Path] = ReferenceOpt,
    limit: Optional[int] = typer.Option(None, help="First N instructions by instruction_id."),
    heldout: bool = typer.Option(False, help="Only instruction_id % 5 == 3 (held out of trlm-ba-smol's training)."),
    max_response_tokens: int = typer.Option(512, help="Cut each candidate to this many tokens."),
    sp: Optional[str] = typer.Option(None, help="Override the scoring prompt SP of the TRLM scorers."),
    cp: Optional[str] = typer.Option(None, help="Override the conditioning prompt CP of the TRLM scorers."),
    alpha: Optional[float] = typer.Option(None, help="Weight of log P_Ba(Q|A) in combined-sum / combined-mean "
                                                     "(default: the scorers' dev-chosen α)."),
):
    """Best-of-N re-ranking on AlpacaEval candidates with GPT-4-turbo verdicts: win rate, LC win rate, pair agreement."""  # noqa: E501
    from trlm.data.alpaca import judged_paths
    from trlm.rerank.bench import run_rerank_bench

    data, reference = judged_paths(data, reference)
    names = split_list(scorers, "--scorers")
    run_rerank_bench(Path(data), Path(reference), names, model, limit, out, max_response_tokens=max_response_tokens,
                     heldout=heldout, sp=sp, cp=cp, alpha=alpha)
    echo_report(out)


def bench_alpha_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, report.md, alpha.png, caches."),
    dev_limit: int = typer.Option(80, help="First N dev instructions (instruction_id % 5 != 3) by id."),
    alphas: str = typer.Option("0,0.1,0.25,0.5,1,2,4,8,16,32,64", help="Comma-separated α grid."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Forward model (default SmolLM2)."),
    data: Optional[Path] = JudgedOpt,
    reference: Optional[Path] = ReferenceOpt,
    max_response_tokens: int = typer.Option(256, help="Cut each candidate to this many tokens."),
):
    """Choose the combined reward's α (forward + α · TRLM-Ba) by LC win rate on dev instructions only."""
    from trlm.data.alpaca import judged_paths
    from trlm.rerank.alpha import run_alpha_sweep

    data, reference = judged_paths(data, reference)
    grid = split_list(alphas, "--alphas", float)
    run_alpha_sweep(Path(data), Path(reference), out, dev_limit, model=model, max_response_tokens=max_response_tokens,
                    alphas=grid)
    echo_report(out)

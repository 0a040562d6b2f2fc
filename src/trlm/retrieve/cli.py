"""``trlm retrieve`` and ``trlm bench retrieve``.

    trlm retrieve "what is a corporation?" --first-stage bm25 --k 30 --scorer trlm-fo
    trlm bench retrieve --data DIR --first-stage bm25 --k 100 --scorers trlm-fo,forward-mean --out runs/retrieve
    trlm bench retrieve-fusion runs/retrieve
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import InputError, check_choice, default_data_dir, parse_names
from trlm.core.options import echo_report
from trlm.scoring import SCORERS

BeirOpt = typer.Option(None, help="BEIR folder (default: the shared TREC-DL19 subset).")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("retrieve")(retrieve_cmd)
    bench.command("retrieve")(bench_retrieve_cmd)
    bench.command("retrieve-fusion")(bench_fusion_cmd)


def retrieve_cmd(
    query: str = typer.Argument(..., help="The search query."),
    data: Optional[Path] = BeirOpt,
    first_stage: str = typer.Option("bm25", help="bm25 or dense (MiniLM)."),
    k: int = typer.Option(100, help="First-stage candidates to re-rank."),
    scorer: Optional[str] = typer.Option(None, help="Re-ranking scorer (e.g. trlm-fo); none: first stage only."),
    model: Optional[str] = typer.Option(None, help="Model for the scorer (default: the scorer's own)."),
    top: int = typer.Option(10, help="How many results to print."),
    max_doc_tokens: int = typer.Option(300, help="Passages are cut to this many tokens before scoring."),
    fuse: str = typer.Option("none", help="none: the scorer's ranking; rrf: fused with the first stage by "
                                          "reciprocal rank (needs --scorer)."),
):
    """Retrieve passages for QUERY from a BEIR corpus, optionally re-ranking the top-k with a scorer."""
    from trlm.retrieve.beir import load_beir
    from trlm.retrieve.first_stage import FIRST_STAGES, FUSIONS, build_index, retrieve
    from trlm.scoring import make_scorer

    check_choice(first_stage, FIRST_STAGES, "--first-stage")
    check_choice(fuse, FUSIONS, "--fuse")
    if fuse != "none" and not scorer:
        raise InputError(f"--fuse {fuse} fuses a re-ranking with the first stage; pass --scorer too")
    ds = load_beir(data or default_data_dir().joinpath("retrieval_agentset", "msmarco_trecdl19_subset"))
    sc = make_scorer(parse_names(scorer, SCORERS, "--scorer")[0], model=model, task="retrieval",
                     max_response_tokens=max_doc_tokens) if scorer else None
    hits = retrieve(query, build_index(first_stage, ds.corpus), ds.corpus, k=k, scorer=sc, fuse=fuse)
    for rank, h in enumerate(hits[:top], 1):
        typer.echo(f"{rank:3d}  {h.score:10.4f}  {h.id}  {ds.corpus[h.id][:100]}")


def bench_retrieve_cmd(
    data: Optional[Path] = BeirOpt,
    out: Path = typer.Option(Path("runs/retrieve"), "--out", "-o"),
    first_stage: str = typer.Option("bm25", help="bm25 or dense."),
    k: int = typer.Option(100, help="First-stage candidates re-ranked per query."),
    scorers: str = typer.Option("trlm-fo,forward-mean", help="Comma-separated re-rankers (empty: none)."),
    limit_queries: Optional[int] = typer.Option(None, help="Evaluate the first N judged queries only."),
    max_doc_tokens: int = typer.Option(300, help="Passages are cut to this many tokens before scoring."),
    min_rel: int = typer.Option(1, help="Lowest grade counted relevant by p@1, r@10, mrr@10 (TREC-DL: 2)."),
    dense: bool = typer.Option(True, help="Also evaluate MiniLM dense retrieval alone."),
):
    """nDCG@10, P@1, R@10, MRR@10 of the first stage, MiniLM dense, and each re-ranker of the top-k."""
    from trlm.retrieve.bench import run_bench_retrieve
    from trlm.retrieve.first_stage import FIRST_STAGES

    check_choice(first_stage, FIRST_STAGES, "--first-stage")
    res = run_bench_retrieve(data or default_data_dir().joinpath("retrieval_agentset", "msmarco_trecdl19_subset"), out,
                             first_stage=first_stage, k=k,
                             scorers=parse_names(scorers, SCORERS, "--scorers") if scorers else [],
                             limit_queries=limit_queries, max_doc_tokens=max_doc_tokens, min_rel=min_rel,
                             dense=dense)
    echo_report(out)
    typer.echo(f"{len(res)} methods written to {out}/results.json")


def bench_fusion_cmd(
    run: Path = typer.Argument(..., help="Output folder of a finished `trlm bench retrieve` run."),
    data: Optional[Path] = typer.Option(None, help="BEIR folder (default: the one the run recorded)."),
):
    """Mix each re-ranker of a finished retrieval run with its first stage, (1 - w)·z(first) + w·z(re-ranker) for
    w = 0, 0.05, ..., 1: the best w's nDCG@10 (an upper bound, chosen on the test queries) and a leave-one-query-out
    estimate. Writes RUN/fusion.json, fusion.md and fusion.png; no model is run."""
    from trlm.retrieve.fusion import fusion_for_run

    out = fusion_for_run(run, data)
    typer.echo((run / "fusion.md").read_text())
    typer.echo(f"{len(out['methods'])} re-rankers written to {run}/fusion.json")

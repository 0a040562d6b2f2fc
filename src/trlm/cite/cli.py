"""``trlm cite`` and ``trlm bench cite``.

    trlm cite claims.jsonl --out cited.jsonl --search linear --scorer trlm-fo
    trlm bench cite --data PATH --out runs/cite --limit 60 --scorers trlm-fo,forward-mean
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import check_choice, default_data_dir, parse_names
from trlm.core.options import echo_report
from trlm.scoring import SCORERS


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("cite")(cite_cmd)
    bench.command("cite")(bench_cite_cmd)


def cite_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"claim": str, "sentences": [str, ...]} per line.'),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: input rows plus the citation."),
    search: str = typer.Option("linear", help="linear, binary or exclusion."),
    scorer: str = typer.Option("trlm-fo", help="Scorer (built with task=citation)."),
    model: Optional[str] = typer.Option(None, help="Model for the scorer (default: the scorer's own)."),
    min_sentences: int = typer.Option(1, help="Binary search stops at this many sentences."),
    pick: str = typer.Option("lowest", help="Exclusion: cite the sentence whose removal gives the lowest "
                                            "(paper's prose) or highest (its pseudo-code) score."),
):
    """Find the source sentence(s) supporting each claim; writes `cited` (0-based indices) and `scores`."""
    from trlm.cite.attribution import SEARCHES, cite_file
    from trlm.scoring import make_scorer

    check_choice(search, SEARCHES, "--search")
    check_choice(pick, ("lowest", "highest"), "--pick")
    sc = make_scorer(parse_names(scorer, SCORERS, "--scorer")[0], model=model, task="citation",
                     max_response_tokens=2048)
    n = cite_file(input, out, sc, search=search, min_sentences=min_sentences, pick=pick)  # type: ignore[arg-type]
    typer.echo(f"wrote {n} rows to {out}")


def bench_cite_cmd(
    data: Optional[Path] = typer.Option(None, help="WiCE JSONL (default: the shared dev split) or a CNN/DM "
                                                   "folder with src_articles.txt and ref_highlights.txt."),
    out: Path = typer.Option(Path("runs/cite"), "--out", "-o"),
    scorers: str = typer.Option("trlm-fo,forward-mean", help="Comma-separated scorers."),
    searches: str = typer.Option("linear", help="Comma-separated: linear, binary, exclusion."),
    limit: Optional[int] = typer.Option(None, help="First N claims (WiCE) or articles (CNN/DM)."),
    skip: int = typer.Option(0, help="Start after the first N claims / articles (to shard a long run)."),
    max_source_sentences: Optional[int] = typer.Option(None, help="Skip sources longer than this (cost cap)."),
    pick: str = typer.Option("lowest", help="Exclusion search direction: lowest or highest."),
):
    """Citation accuracy: WiCE top-1 / recall@3 by label, or the CNN/DM unsupervised similarity protocol."""
    from trlm.cite.bench import run_bench_cite
    from trlm.cite.attribution import SEARCHES

    search_list = parse_names(searches, SEARCHES, "--searches")
    check_choice(pick, ("lowest", "highest"), "--pick")
    run_bench_cite(data or default_data_dir().joinpath("wice", "entailment_retrieval_claim", "dev.jsonl"), out,
                   scorers=parse_names(scorers, SCORERS, "--scorers") if scorers else [], searches=search_list,
                   limit=limit, max_source_sentences=max_source_sentences, pick=pick, skip=skip)
    echo_report(out)

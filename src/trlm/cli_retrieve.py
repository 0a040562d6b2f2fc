"""CLI for passage retrieval and citation attribution.

    trlm retrieve "what is a corporation?" --first-stage bm25 --k 30 --scorer trlm-fo
    trlm cite claims.jsonl --out cited.jsonl --search linear --scorer trlm-fo
    trlm bench retrieve --data DIR --first-stage bm25 --k 100 --scorers trlm-fo,forward-mean --out runs/retrieve
    trlm bench cite --data PATH --out runs/cite --limit 60 --scorers trlm-fo,forward-mean
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _default(*parts: str) -> Path:
    from trlm.io import default_data_dir

    return default_data_dir().joinpath(*parts)


def _names(csv: str) -> list[str]:
    from trlm.scorers import SCORERS

    names = [s.strip() for s in csv.split(",") if s.strip()]
    bad = [n for n in names if n not in SCORERS]
    if bad:
        raise typer.BadParameter(f"unknown scorer(s) {', '.join(bad)}; choose from {', '.join(SCORERS)}",
                                 param_hint="--scorers")
    return names


def _choice(value: str, choices: tuple[str, ...], flag: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=flag)
    return value


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("retrieve")
    def retrieve_cmd(
        query: str = typer.Argument(..., help="The search query."),
        data: Optional[Path] = typer.Option(None, help="BEIR folder (default: the shared TREC-DL19 subset)."),
        first_stage: str = typer.Option("bm25", help="bm25 or dense (MiniLM)."),
        k: int = typer.Option(100, help="First-stage candidates to re-rank."),
        scorer: Optional[str] = typer.Option(None, help="Re-ranking scorer (e.g. trlm-fo); none: first stage only."),
        model: Optional[str] = typer.Option(None, help="Model for the scorer (default: the scorer's own)."),
        top: int = typer.Option(10, help="How many results to print."),
        max_doc_tokens: int = typer.Option(300, help="Passages are cut to this many tokens before scoring."),
    ):
        """Retrieve passages for QUERY from a BEIR corpus, optionally re-ranking the top-k with a scorer."""
        from trlm.retrieve import FIRST_STAGES, build_index, load_beir, retrieve
        from trlm.scorers import make_scorer

        _choice(first_stage, FIRST_STAGES, "--first-stage")
        ds = load_beir(data or _default("retrieval_agentset", "msmarco_trecdl19_subset"))
        sc = make_scorer(_names(scorer)[0], model=model, task="retrieval", max_response_tokens=max_doc_tokens) \
            if scorer else None
        hits = retrieve(query, build_index(first_stage, ds.corpus), ds.corpus, k=k, scorer=sc)
        for rank, h in enumerate(hits[:top], 1):
            typer.echo(f"{rank:3d}  {h.score:10.4f}  {h.doc_id}  {ds.corpus[h.doc_id][:100]}")

    @app.command("cite")
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
        from trlm.cite import SEARCHES, cite_file
        from trlm.scorers import make_scorer

        _choice(search, SEARCHES, "--search")
        _choice(pick, ("lowest", "highest"), "--pick")
        sc = make_scorer(_names(scorer)[0], model=model, task="citation", max_response_tokens=2048)
        n = cite_file(input, out, sc, search=search, min_sentences=min_sentences, pick=pick)
        typer.echo(f"wrote {n} rows to {out}")

    @bench.command("retrieve")
    def bench_retrieve_cmd(
        data: Optional[Path] = typer.Option(None, help="BEIR folder (default: the shared TREC-DL19 subset)."),
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
        from trlm.bench_retrieve import run_bench_retrieve
        from trlm.retrieve import FIRST_STAGES

        _choice(first_stage, FIRST_STAGES, "--first-stage")
        res = run_bench_retrieve(data or _default("retrieval_agentset", "msmarco_trecdl19_subset"), out,
                                 first_stage=first_stage, k=k, scorers=_names(scorers) if scorers else [],
                                 limit_queries=limit_queries, max_doc_tokens=max_doc_tokens, min_rel=min_rel,
                                 dense=dense)
        typer.echo((out / "report.md").read_text())
        typer.echo(f"{len(res)} methods written to {out}/results.json")

    @bench.command("cite")
    def bench_cite_cmd(
        data: Optional[Path] = typer.Option(None, help="WiCE JSONL (default: the shared dev split) or a CNN/DM "
                                                       "folder with src_articles.txt and ref_highlights.txt."),
        out: Path = typer.Option(Path("runs/cite"), "--out", "-o"),
        scorers: str = typer.Option("trlm-fo,forward-mean", help="Comma-separated scorers."),
        searches: str = typer.Option("linear", help="Comma-separated: linear, binary, exclusion."),
        limit: Optional[int] = typer.Option(None, help="First N claims (WiCE) or articles (CNN/DM)."),
        max_source_sentences: Optional[int] = typer.Option(None, help="Skip sources longer than this (cost cap)."),
        pick: str = typer.Option("lowest", help="Exclusion search direction: lowest or highest."),
    ):
        """Citation accuracy: WiCE top-1 / recall@3 by label, or the CNN/DM unsupervised similarity protocol."""
        from trlm.bench_cite import run_bench_cite
        from trlm.cite import SEARCHES

        search_list = [_choice(s.strip(), SEARCHES, "--searches") for s in searches.split(",") if s.strip()]
        _choice(pick, ("lowest", "highest"), "--pick")
        run_bench_cite(data or _default("wice", "entailment_retrieval_claim", "dev.jsonl"), out,
                       scorers=_names(scorers) if scorers else [], searches=search_list, limit=limit,
                       max_source_sentences=max_source_sentences, pick=pick)
        typer.echo((out / "report.md").read_text())

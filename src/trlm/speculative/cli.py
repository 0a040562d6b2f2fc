"""``trlm bench speculative`` (speculative generation itself is ``trlm generate --speculative DRAFTER``).

    trlm bench speculative --limit 3 --out runs/speculative
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import default_data_dir


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command("speculative")(bench_speculative_cmd)


def bench_speculative_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, report.md and speculative.png."),
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA)."),
    limit: int = typer.Option(3, help="Prompts (responses, for reverse) per workload."),
    drafters: str = typer.Option("ngram,early-exit:8", help="Comma-separated drafters: ngram, ngram:N, "
                                 "early-exit:K, or a model name/path."),
    schemes: str = typer.Option("gumbel,wmh,leviathan", help="Comma-separated: gumbel, wmh, leviathan."),
    gamma: int = typer.Option(4, help="Draft length (adaptive per row)."),
    max_new_tokens: int = typer.Option(64, help="New tokens per output."),
    hf_peers: bool = typer.Option(True, help="Also time Hugging Face generate (greedy, prompt lookup, assisted)."),
):
    """Speculative vs plain decoding (same run): speed-up, tokens per target call, acceptance, exactness."""
    from trlm.speculative.bench import run_speculative_bench

    run_speculative_bench(out, data or default_data_dir(), limit=limit,
                          drafters=[d.strip() for d in drafters.split(",") if d.strip()],
                          schemes=[s.strip() for s in schemes.split(",") if s.strip()], gamma=gamma,
                          max_new_tokens=max_new_tokens, hf_peers=hf_peers)
    typer.echo((out / "report.md").read_text())

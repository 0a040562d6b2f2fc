"""``trlm bench throughput``: the engine's scoring speed against the naive loop (:mod:`trlm.scoring.bench`).

    trlm bench throughput --pairs 200 --out runs/throughput
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.options import ModelOpt, echo_report


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command("throughput")(bench_throughput_cmd)


def bench_throughput_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json and report.md."),
    pairs: int = typer.Option(200, help="Number of (response -> instruction) pairs."),
    naive_pairs: Optional[int] = typer.Option(None, help="Pairs for the slow naive loop (default: all)."),
    model: str = ModelOpt,
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data)."),
):
    """Engine scoring throughput vs a naive one-pair-at-a-time fp32 loop, and fraction of matmul peak."""
    from trlm.scoring.bench import run_throughput_bench

    r = run_throughput_bench(out, pairs=pairs, model=model, data=data, naive_pairs=naive_pairs)
    echo_report(out)
    typer.echo(f"speedup_vs_naive={r['speedup_vs_naive']:.2f} fraction_of_peak={r['fraction_of_peak']:.2f}")

"""``trlm bench backends``: the in-process engine against a vLLM server, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.options import echo_report


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command("backends")(bench_backends_cmd)


def bench_backends_cmd(
    server: str = typer.Option(..., help="Forward vLLM server (make vllm-serve MODEL=smollm2-135m-instruct), "
                                         "e.g. http://127.0.0.1:8011/v1."),
    reverse_server: str = typer.Option(..., help="Reverse vLLM server (make vllm-serve MODEL=trlm-ba-smol)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, report.md and backends.png."),
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data)."),
    pairs: int = typer.Option(200, help="AlpacaEval dev (instruction, response) pairs scored (whole instructions)."),
    prompts: int = typer.Option(16, help="Chat prompts generated greedily."),
    max_new_tokens: int = typer.Option(64, help="Tokens generated per prompt."),
    clients: int = typer.Option(16, help="Concurrent clients of the trlm serve stage."),
    dtype: str = typer.Option("auto", help="In-process dtype (auto: bf16 where the CPU has it)."),
    stages: str = typer.Option("abc", help="a: scoring, b: generation, c: trlm serve; any of them."),
    server_dtype: str = typer.Option("bfloat16", help="The dtype the servers were started with (VLLM_DTYPE; "
                                     "recorded in the report)."),
):
    """Scoring, generation and `trlm serve` on the in-process engine and on vLLM servers, one after the other."""
    from trlm.backends.bench import run_backends_bench
    from trlm.core.io import InputError

    if not stages or set(stages) - set("abc"):
        raise InputError(f"--stages takes letters from 'abc', got {stages!r}")
    if min(pairs, prompts, max_new_tokens, clients) < 1:
        raise InputError("--pairs, --prompts, --max-new-tokens and --clients must be >= 1")
    run_backends_bench(out, server=server, reverse_server=reverse_server, data=data, pairs=pairs, prompts=prompts,
                       max_new_tokens=max_new_tokens, clients=clients, dtype=dtype, stages=stages,
                       server_dtype=server_dtype)
    echo_report(out)

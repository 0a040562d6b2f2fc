"""The ``trlm`` command line. Each subcommand loads, calls one library function, and saves.

    trlm models
    trlm score pairs.jsonl --out scored.jsonl [--model trlm-ba-smol]
    trlm generate prompts.jsonl --out gens.jsonl --n 4 --temperature 0.8
    trlm rerank items.jsonl --scorer trlm-fo --out ranked.jsonl
    trlm best-of-n "What is the capital of France?" --n 8 --scorer trlm-fo
    trlm bench throughput --out runs/throughput

Area commands (train, retrieve, cite, guard and their benchmarks) are registered from ``trlm.cli_<area>``.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Optional

import typer

from trlm.models import DEFAULT_MODEL

app = typer.Typer(help="Time-reversed language models: scoring, generation, re-ranking and benchmarks.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
bench = typer.Typer(help="Benchmarks: each writes DIR/results.json and DIR/report.md.", no_args_is_help=True)
app.add_typer(bench, name="bench")

AREA_MODULES = ("trlm.cli_rerank", "trlm.cli_train", "trlm.cli_retrieve", "trlm.cli_guard")

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded name, shipped trlm model, HF dir, .gguf or hub id.")
DeviceOpt = typer.Option(None, help="cuda, mps or cpu (default: auto-detect).")
DtypeOpt = typer.Option("auto", help="auto (bf16 where fast), float32 or bfloat16.")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log decisions (dtype, caching).")):
    _setup_logging(verbose)


@app.command("models")
def models_cmd():
    """List embedded, shipped and cached models with their token order and size."""
    from rich.console import Console
    from rich.table import Table

    from trlm.models import list_models

    table = Table("name", "kind", "token order", "cached", "MB", "description")
    for r in list_models():
        table.add_row(r["name"], r["kind"], str(r["token_order"]), "yes" if r["cached"] else "no",
                      f"{r['size_mb']:.0f}", r["description"])
    Console().print(table)


@app.command("score")
def score_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"context": str, "continuation": str} per line.'),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: input rows plus logprob and num_tokens."),
    model: str = ModelOpt,
    direction: Optional[str] = typer.Option(None, help="forward or reverse; required for 'both'-order models."),
    tokens: bool = typer.Option(False, help="Also write per-token log-probs (token_logprobs)."),
    truncate: str = typer.Option("error", help="error, or 'context' to drop context tokens that do not fit."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
):
    """Score continuations given contexts (log P(continuation | context)).

    Runs data-parallel under `torchrun --nproc_per_node N` or `accelerate launch`: each rank scores its shard
    and rank 0 writes the merged output in input order.
    """
    from trlm.distributed import score_file

    score_file(input, out, model=model, direction=direction, return_tokens=tokens, truncate=truncate,
               device=device, dtype=dtype)


@app.command("generate")
def generate_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"prompt": str} per line.'),
    out: Path = typer.Option(..., "--out", "-o"),
    model: str = ModelOpt,
    n: int = typer.Option(1, help="Samples per prompt."),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(1.0, help="0 for greedy."),
    top_p: float = typer.Option(1.0),
    top_k: int = typer.Option(0),
    seed: int = typer.Option(0, help="Noise is keyed by (seed, sequence, position): same seed, same text."),
    stop: list[str] = typer.Option([], help="Stop strings (repeatable)."),
    chat: bool = typer.Option(False, help="Wrap each prompt in the model's chat template."),
    direction: Optional[str] = typer.Option(None, help="forward or reverse (for 'both'-order models)."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
):
    """Sample continuations; for a reverse model the text generated is what precedes the prompt."""
    from trlm.engine import Engine, GenArgs
    from trlm.io import read_jsonl, write_jsonl

    rows = read_jsonl(input, {"prompt": str})
    eng = Engine.load(model, device=device, dtype=dtype)
    prompts = [eng.chat_prompt(r["prompt"]) if chat else r["prompt"] for r in rows]
    args = GenArgs(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, n=n,
                   seed=seed, stop=tuple(stop))
    gens = eng.generate(prompts, args, direction=direction, progress=True)
    write_jsonl(out, ({**r, "generations": [g.text for g in gs], "finish_reasons": [g.finish_reason for g in gs]}
                      for r, gs in zip(rows, gens)))
    typer.echo(f"wrote {len(rows)} rows to {out}")


@bench.command("throughput")
def bench_throughput_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json and report.md."),
    pairs: int = typer.Option(200, help="Number of (response -> instruction) pairs."),
    naive_pairs: Optional[int] = typer.Option(None, help="Pairs for the slow naive loop (default: all)."),
    model: str = ModelOpt,
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data)."),
):
    """Engine scoring throughput vs a naive one-pair-at-a-time fp32 loop, and fraction of matmul peak."""
    from trlm.bench_throughput import run_throughput_bench

    r = run_throughput_bench(out, pairs=pairs, model=model, data=data, naive_pairs=naive_pairs)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"speedup_vs_naive={r['speedup_vs_naive']:.2f} fraction_of_peak={r['fraction_of_peak']:.2f}")


def _register_areas() -> None:
    """Area modules add their commands to ``app`` and ``bench`` (one module per area, one function per command)."""
    for mod in AREA_MODULES:
        importlib.import_module(mod).register(app, bench)


_register_areas()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()

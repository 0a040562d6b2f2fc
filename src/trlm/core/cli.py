"""The engine's commands: ``trlm models``, ``trlm export`` and ``trlm score`` (``trlm generate``, plain or
speculative, is registered by :mod:`trlm.speculative.cli`; ``trlm bench throughput`` by :mod:`trlm.scoring.cli`).

    trlm models
    trlm export trlm-ba-smol                 # one directory vLLM can serve (adapters merged)
    trlm score pairs.jsonl --out scored.jsonl [--model trlm-ba-smol] [--tokens]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.options import DeviceOpt, DtypeOpt, ModelOpt


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("models")(models_cmd)
    app.command("export")(export_cmd)
    app.command("score")(score_cmd)


def models_cmd():
    """List embedded, shipped and cached models with their token order and size."""
    from rich.console import Console
    from rich.table import Table

    from trlm.core.models import list_models

    table = Table("name", "kind", "token order", "cached", "MB", "description")
    for r in list_models():
        table.add_row(r["name"], r["kind"], str(r["token_order"]), "yes" if r["cached"] else "no",
                      f"{r['size_mb']:.0f}", r["description"])
    Console().print(table)


def export_cmd(
    model: str = typer.Argument(..., help="Embedded name, shipped trlm model, HF dir or .gguf."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory to write (default: trlm's cache; a "
                                       "model that already is one directory is used as it is)."),
):
    """Write a model as one full checkpoint directory (weights, config, tokenizer, trlm.json) and print its path.

    LoRA adapters (the shipped reverse models trlm-ba-smol, trlm-foba-smol) are merged into their base, so vLLM
    can serve them: `make vllm-serve MODEL=trlm-ba-smol` runs this first.
    """
    from trlm.core.models import export_model

    typer.echo(str(export_model(model, out)))


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
    from trlm.core.parallel import score_file

    score_file(input, out, model=model, direction=direction, return_tokens=tokens, truncate=truncate,
               device=device, dtype=dtype)

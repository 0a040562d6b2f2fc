"""Options and helpers every command shares: the model, device and dtype flags, and printing a report.

Comma-separated flag values are read by :func:`trlm.core.io.split_list` (or :func:`trlm.core.io.parse_names`
for names from a fixed list).

    from trlm.core.options import ModelOpt
    def my_cmd(model: str = ModelOpt): ...
"""

from __future__ import annotations

from pathlib import Path

import typer

from trlm.core.models import DEFAULT_MODEL

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m",
                        help="Embedded name, shipped trlm model, HF dir, .gguf, hub id, or a vLLM server's URL "
                             "(http://host:port/v1[#NAME]).")
DeviceOpt = typer.Option(None, help="cuda, mps or cpu (default: auto-detect).")
DtypeOpt = typer.Option("auto", help="auto (bf16 where fast), float32 or bfloat16.")


def echo_report(out: Path) -> None:
    """Print the ``report.md`` a benchmark wrote into ``out``."""
    typer.echo((Path(out) / "report.md").read_text(encoding="utf-8"))

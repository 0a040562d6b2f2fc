"""Options and helpers every command shares: the model, device and dtype flags.

    from trlm.core.options import ModelOpt
    def my_cmd(model: str = ModelOpt): ...
"""

from __future__ import annotations

import typer

from trlm.core.models import DEFAULT_MODEL

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m",
                        help="Embedded name, shipped trlm model, HF dir, .gguf, hub id, or a vLLM server's URL "
                             "(http://host:port/v1[#NAME]).")
DeviceOpt = typer.Option(None, help="cuda, mps or cpu (default: auto-detect).")
DtypeOpt = typer.Option("auto", help="auto (bf16 where fast), float32 or bfloat16.")

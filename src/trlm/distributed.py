"""Data-parallel scoring: the same command under ``torchrun``/``accelerate launch`` scores one shard per rank.

    torchrun --nproc_per_node 2 -m trlm.cli score pairs.jsonl --out scored.jsonl

Rank r scores rows r, r+W, r+2W, ...; rank 0 gathers the shards and writes one file in input order.
Without a launcher (WORLD_SIZE unset) it is the single-process path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from trlm.engine import Engine, Request
from trlm.io import read_jsonl, write_jsonl

log = logging.getLogger(__name__)


def _init_distributed(device: str | None) -> tuple[int, int, str | None]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in (None, "auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return rank, world, device


def score_file(
    input: str | Path,
    out: str | Path,
    *,
    model: str,
    direction: str | None = None,
    return_tokens: bool = False,
    truncate: str = "error",
    device: str | None = None,
    dtype: str = "auto",
) -> int:
    """Score a JSONL of ``{"context", "continuation"}`` rows; write rows + ``logprob``, ``num_tokens``.

    The input is validated completely before any model is loaded, and the output is written atomically by one
    process, so a bad row or a crash leaves no partial output. Returns the number of rows written (on rank 0).
    """
    rows = read_jsonl(input, {"context": str, "continuation": str})
    rank, world, device = _init_distributed(device)
    shard = list(range(rank, len(rows), world))
    eng = Engine.load(model, device=device, dtype=dtype)
    lls = eng.loglikelihood([Request(rows[i]["context"], rows[i]["continuation"]) for i in shard],
                            direction=direction, return_tokens=return_tokens, truncate=truncate,
                            progress=rank == 0)
    part = {i: {"logprob": ll.logprob, "num_tokens": ll.num_tokens, "is_greedy": ll.is_greedy,
                **({"token_logprobs": list(ll.token_logprobs)} if return_tokens else {})}
            for i, ll in zip(shard, lls)}
    if world > 1:
        import torch.distributed as dist

        parts: list[dict] | None = [None] * world if rank == 0 else None  # type: ignore[list-item]
        dist.gather_object(part, parts, dst=0)
        if rank == 0:
            part = {k: v for p in parts for k, v in p.items()}  # type: ignore[union-attr]
        dist.barrier()
    if rank == 0:
        write_jsonl(out, ({**row, **part[i]} for i, row in enumerate(rows)))
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return len(rows) if rank == 0 else 0

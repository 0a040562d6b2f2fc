"""Data-parallel scoring: the same command under ``torchrun``/``accelerate launch`` scores one shard per rank.

    torchrun --nproc_per_node 2 -m trlm.cli score pairs.jsonl --out scored.jsonl

Rank r scores rows r, r+W, r+2W, ...; rank 0 gathers the shards and writes one file in input order.
Without a launcher (WORLD_SIZE unset) it is the single-process path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from trlm.core.device import resolve_device
from trlm.core.engine import Request, load_engine
from trlm.core.io import read_jsonl, write_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (rank 0 of 1 without a launcher)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> tuple[Dist, torch.device]:
    """Join the process group under torchrun / accelerate launch (WORLD_SIZE > 1): NCCL on CUDA, else gloo.

    Each CUDA rank takes the GPU of its LOCAL_RANK; CPU ranks split the cores between the processes of a node.
    Without a launcher: rank 0 of 1 on ``resolve_device(device)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world == 1:
        return Dist(), dev
    import torch.distributed as td

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(td.get_rank(), td.get_world_size(), local), dev


def all_sum(values: list[float], dist: Dist, device: torch.device) -> list[float]:
    """Element-wise sum over all ranks (identity in a single process)."""
    if dist.world == 1:
        return values
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return t.tolist()


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()


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
    dist, dev = init_distributed(device)
    rank, world = dist.rank, dist.world
    shard = list(range(rank, len(rows), world))
    eng = load_engine(model, device=str(dev), dtype=dtype)
    lls = eng.loglikelihood([Request(rows[i]["context"], rows[i]["continuation"]) for i in shard],
                            direction=direction, return_tokens=return_tokens, truncate=truncate,
                            progress=rank == 0)
    part = {i: {"logprob": ll.logprob, "num_tokens": ll.num_tokens, "is_greedy": ll.is_greedy,
                **({"token_logprobs": list(ll.token_logprobs)} if return_tokens else {})}
            for i, ll in zip(shard, lls)}
    if world > 1:
        import torch.distributed as td

        parts: list[dict] | None = [None] * world if rank == 0 else None  # type: ignore[list-item]
        td.gather_object(part, parts, dst=0)
        if rank == 0:
            part = {k: v for p in parts for k, v in p.items()}  # type: ignore[union-attr]
        td.barrier()
    if rank == 0:
        write_jsonl(out, ({**row, **part[i]} for i, row in enumerate(rows)))
    if world > 1:
        import torch.distributed as td

        td.destroy_process_group()
    return len(rows) if rank == 0 else 0

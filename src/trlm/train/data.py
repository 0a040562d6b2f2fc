"""Training batches: the :class:`TokenExample` type (model-order ids and labels), epoch shuffling and collation.

Nothing here knows a data format or a prompt template; data sources (e.g. :mod:`trlm.train.trlm_data`) turn
rows into examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class TokenExample:
    """One training sequence in model order; ``labels`` is ``IGNORE`` where no loss is taken."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def micro_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: list[int] | None = None,
                  group: int = 16) -> list[list[int]]:
    """Example indices per micro-batch for one epoch: a seeded shuffle; with ``lengths``, examples of similar
    length are batched together (sorted within windows of ``group`` batches) to cut padding."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is not None:
        win = batch_size * group
        order = [i for k in range(0, n, win) for i in sorted(order[k:k + win], key=lambda j: -lengths[j])]
    batches = [order[k:k + batch_size] for k in range(0, n - batch_size + 1, batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[p] for p in perm]


def collate(examples: list[TokenExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (B, T) with labels IGNORE on padding."""
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        labels[b, :n] = torch.tensor(e.labels)
        mask[b, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}

"""Training losses: pure functions ``loss_fn(model, batch) -> scalar`` that the loop calls.

A batch is ``{"input_ids", "attention_mask", "labels"}`` (B, T) with labels ``-100`` where no loss is taken.
"""

from __future__ import annotations

import torch


def loss_positions(batch: dict) -> torch.Tensor:
    """(B, T) bool: positions whose hidden state predicts a loss-bearing label (label t+1 is not IGNORE)."""
    return torch.nn.functional.pad(batch["labels"][:, 1:] != -100, (0, 1))


def logits_at(model: torch.nn.Module, batch: dict, at: torch.Tensor) -> torch.Tensor:
    """(N, V) logits at the N positions where ``at`` (B, T) is true, in model dtype.

    The vocabulary projection runs only there (not at padding, nor at masked prompt tokens): a pre-hook on the
    output layer hands it just those hidden states. Students and teachers alike go through here.
    """
    head = unwrap(model).get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda _m, inputs: (inputs[0][at][None],))  # (1, N, H)
    try:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]
    finally:
        hook.remove()


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not IGNORE (-100)."""
    at = loss_positions(batch)
    labels = batch["labels"][:, 1:]  # (B, T-1): hidden state t predicts token t+1
    return torch.nn.functional.cross_entropy(logits_at(model, batch, at).float(), labels[labels != -100])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model

"""Training losses: pure functions ``loss_fn(model, batch) -> scalar`` that the loop calls.

A batch is ``{"input_ids", "attention_mask", "labels"}`` (B, T) with labels ``-100`` where no loss is taken.
"""

from __future__ import annotations

import torch


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not IGNORE (-100).

    The vocabulary projection runs only at loss-bearing positions (not at padding, nor at masked prompt
    tokens): a pre-hook on the output layer hands it just those hidden states.
    """
    labels = batch["labels"][:, 1:]  # (B, T-1): hidden state t predicts token t+1
    keep = labels != -100
    at = torch.nn.functional.pad(keep, (0, 1))  # (B, T)
    head = _unwrap(model).get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda _m, inputs: (inputs[0][at][None],))  # (1, N, H)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]  # (N, V)
    finally:
        hook.remove()
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model

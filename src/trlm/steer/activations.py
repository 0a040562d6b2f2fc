"""Residual-stream activations of (instruction, response) pairs read through the model's chat template.

Each example is rendered as ``chat_template(instruction) + response`` and run through the engine in batches
(:meth:`trlm.core.engine.Engine.hidden_states`, left-padded with masks). Positions of the chat prefix — the start
token, any default system turn and the user header before the instruction — are dropped, as AxBench does; the
instruction and the response remain. Values are float32 on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from trlm.core.engine import Engine
from trlm.steer.data import ConceptExample

_MARK = "\uE000"  # a private-use character standing in for the instruction, to find where the user text starts


@dataclass
class Activations:
    """``tokens[layer][i]``: (n_i, d) activations of example i's non-prefix positions."""

    layers: tuple[int, ...]
    tokens: dict[int, list[torch.Tensor]]


def chat_head(engine: Engine) -> list[int]:
    """Model-order ids of the chat prefix: everything the template puts before the user's text."""
    template = engine.chat_prompt(_MARK)
    return engine.encode_prompt(template[:template.index(_MARK)], "forward")


def chat_ids(engine: Engine, ex: ConceptExample, head: list[int] | None = None) -> tuple[list[int], int]:
    """Model-order ids of ``chat(instruction) + response`` and the length of the chat prefix to drop (the ids it
    shares with :func:`chat_head`, so a token merged across the boundary is kept)."""
    head = chat_head(engine) if head is None else head
    ids = engine.encode_prompt(engine.chat_prompt(ex.prompt) + ex.response, "forward")
    skip = next((k for k, (a, b) in enumerate(zip(ids, head)) if a != b), min(len(ids), len(head)))
    return ids, max(1, skip)


def collect(engine: Engine, examples: Sequence[ConceptExample], layers: Sequence[int], *, max_tokens: int = 512,
            progress: bool = False) -> Activations:
    """Activations of ``examples`` after decoder blocks ``layers``; each sequence cut to ``max_tokens``."""
    if not engine.supports("forward"):
        raise ValueError(f"{engine.name} reads text backwards; concept detection needs a forward model")
    seqs, skips, head = [], [], chat_head(engine)
    for ex in examples:
        ids, skip = chat_ids(engine, ex, head)
        seqs.append(ids[:max_tokens])
        skips.append(min(skip, len(ids[:max_tokens]) - 1))
    states = engine.hidden_states(seqs, list(layers), progress=progress)
    tokens = {layer: [s[layer][k:] for s, k in zip(states, skips)] for layer in layers}
    return Activations(tuple(layers), tokens)

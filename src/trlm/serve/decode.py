"""The server's decoding of one engine batch: the engine's public steps, the shared commit rule, and what only a
server needs — per-row steering, streaming and cancellation.

:func:`decode_batch` is a ``run_batch`` for :meth:`~trlm.core.base.BaseEngine.run_generation` (as speculative
decoding is): ``Engine.prefill``, then per step ``Engine.sample`` -> :class:`~trlm.core.base.GenRow` ``.commit``
(**the** commit rule of plain decoding) -> ``Engine.decode_step``. So a row's tokens are exactly the tokens
``Engine.generate`` draws for it (same sampler, same noise keyed by (seed, sample, step)). On top:

* **Steering, per row.** Each row may carry its own additions ``{layer: (d,) vector}``. One per-row
  :class:`~trlm.steer.hooks.Additive` per layer adds row b's vector to row b (zeros to unsteered rows), so
  requests with different steering, or none, share every forward pass. Rows with the same prompt and the same
  steering share one prefill (as ``Engine.generate`` shares a prompt's prefill among its samples).
* **Streaming.** After every step each row's ``on_text(text, reason)`` (if any) receives its text so far — cut
  at a stop string, exactly what the final :class:`Generation` will hold once ``reason`` is set.
* **Cancellation.** Before every step a row whose ``cancelled()`` is true ends ("cancelled") and leaves the
  batch (its KV-cache row is dropped, like a finished one): the other rows go on unchanged.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import torch

from trlm.core.base import GenRow
from trlm.core.schema import GenArgs, Generation

CANCELLED = "cancelled"


@dataclass
class RowPlan:
    """What the server wants for one generated row besides the engine's own settings."""

    steer: Mapping[int, torch.Tensor] = field(default_factory=dict)  # layer -> (d,) addition
    on_text: Optional[Callable[[str, Optional[str]], None]] = None  # (text so far, finish reason or None)
    cancelled: Callable[[], bool] = lambda: False

    def steer_key(self) -> tuple:
        return tuple((layer, tuple(v.tolist())) for layer, v in sorted(self.steer.items()))


def _end(gen: GenRow, reason: str) -> None:
    if gen.reason is None:
        gen.reason = reason


@torch.inference_mode()
def decode_batch(eng, batch: Sequence, args: GenArgs, d: str, plans: Sequence[RowPlan]) -> list[Generation]:
    """One :class:`Generation` per row of ``batch`` (engine items), decoded with ``plans[b]`` for row b."""
    from trlm.steer.hooks import Additive, steer

    rows = [GenRow(eng, args, d) for _ in batch]
    alive = [b for b in range(len(batch)) if not plans[b].cancelled()]
    for b in set(range(len(batch))) - set(alive):
        _end(rows[b], CANCELLED)
    if not alive:
        return [r.result() for r in rows]
    dev = eng.device
    layers = sorted({layer for b in alive for layer in plans[b].steer})
    dim = next((v.numel() for b in alive for v in plans[b].steer.values()), 0)

    def deltas(members: Sequence[int]) -> dict[int, torch.Tensor]:
        out = {}
        for layer in layers:
            rows_ = [plans[b].steer.get(layer) for b in members]
            out[layer] = torch.stack([v.float() if v is not None else torch.zeros(dim) for v in rows_])
        return out

    # rows with the same prompt and the same steering share one prefill
    unique: dict[tuple, int] = {}
    owner_l = [unique.setdefault((tuple(batch[b].prefix), plans[b].steer_key()), len(unique)) for b in alive]
    first = {}
    for b, u in zip(alive, owner_l):
        first.setdefault(u, b)
    heads = [first[u] for u in range(len(unique))]
    hooks = {layer: Additive.per_row(v) for layer, v in deltas(heads).items()}
    with steer(eng.model, hooks) if hooks else nullcontext():
        state, logits = eng.prefill([batch[b].prefix for b in heads])
        owner = torch.tensor(owner_l, device=dev)
        logits = logits[owner]
        if len(unique) < len(alive):
            state.select(owner)
        for layer, v in deltas(alive).items():
            hooks[layer].set_rows(v)
        seed = torch.tensor([batch[b].seed for b in alive], dtype=torch.long, device=dev)
        sample = torch.tensor([batch[b].sample for b in alive], dtype=torch.long, device=dev)
        for step in range(args.max_new_tokens):
            logits = logits.float()  # once: the sampler and the log-prob both read float32 (the same bits)
            tok = eng.sample(logits, args, seed, sample, torch.full((len(alive),), step, dtype=torch.long,
                                                                     device=dev))
            tok_lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
            for b, t, lp in zip(alive, tok.tolist(), tok_lp.tolist()):
                rows[b].commit(t, lp)
                if plans[b].on_text is not None:
                    plans[b].on_text(eng.cut_stop(rows[b].gen, args.stop, d)[0], rows[b].reason)
            for b in alive:
                if rows[b].reason is None and plans[b].cancelled():
                    _end(rows[b], CANCELLED)
            keep = [i for i, b in enumerate(alive) if rows[b].reason is None]
            if not keep:
                break  # (no forward after the last token: nothing would read its logits)
            if len(keep) < len(alive):  # finished and cancelled rows leave the batch
                idx = torch.tensor(keep, device=dev)
                state.select(idx)
                tok, seed, sample = tok[idx], seed[idx], sample[idx]
                alive = [alive[i] for i in keep]
                for layer, v in deltas(alive).items():
                    hooks[layer].set_rows(v)
            logits = eng.decode_step(state, tok[:, None])[:, -1]
    return [r.result() for r in rows]

"""Interventions on the residual stream, applied with plain PyTorch forward hooks (no pyvene / pyreft).

    from trlm.steer import Additive, steer
    with steer(engine.model, {10: Additive(w, alpha=8.0)}):
        engine.generate([prompt], GenArgs(max_new_tokens=64))

The site is the output of decoder block ``layer`` (``decoder_layers(model)[layer]``, the residual stream after
that block; AxBench's ``model.model.layers[l]`` output[0]). A hook edits every position of every forward the model
runs inside the block: the prompt's prefill and each decoding step, so the first generated token (sampled from the
prefill's last position) is steered too, and so are scoring calls and the server's requests.
Hooks are removed in ``finally``, also when the body raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import torch

from trlm.core.models import decoder_layers


def _unit(w: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(w, dtype=torch.float32).flatten()
    n = w.norm()
    if not torch.isfinite(n) or n == 0:
        raise ValueError("a steering direction must be a finite, non-zero vector")
    return w / n


class Additive(torch.nn.Module):
    """Φ(h_t) = h_t + α · w at every position t (w unit-norm).

    Per row, :meth:`per_row`: ``Φ(h_{b,t}) = h_{b,t} + Δ_b`` with ``Δ`` (B, d) for a forward of B rows (a zero row
    leaves its row exactly as it was); :meth:`set_rows` replaces ``Δ`` between forwards. This is how a server
    steers the rows of one batch differently (or not at all) in the same forward pass. ``Δ_b = α · unit(w)`` adds
    exactly what ``Additive(w, α)`` adds.
    """

    def __init__(self, w: torch.Tensor, alpha: float):
        super().__init__()
        self.register_buffer("w", _unit(w))
        self.alpha = float(alpha)
        self.rows: torch.Tensor | None = None

    @classmethod
    def per_row(cls, delta: torch.Tensor) -> "Additive":
        """A per-row intervention adding ``delta[b]`` (B, d) to row b."""
        m = cls.__new__(cls)
        torch.nn.Module.__init__(m)
        m.w, m.alpha, m.rows = None, 0.0, None
        m.set_rows(delta)
        return m

    @staticmethod
    def row(w: torch.Tensor, alpha: float) -> torch.Tensor:
        """The (d,) addition of ``Additive(w, alpha)``: one row of a per-row ``delta``."""
        return float(alpha) * _unit(w)

    def set_rows(self, delta: torch.Tensor) -> None:
        delta = torch.as_tensor(delta, dtype=torch.float32)
        if delta.ndim != 2 or not bool(torch.isfinite(delta).all()):
            raise ValueError(f"per-row steering takes a finite (B, d) tensor, got shape {tuple(delta.shape)}")
        self.rows = delta.to(self.w.device if self.w is not None else (
            self.rows.device if self.rows is not None else delta.device))

    def _apply(self, fn, recurse=True):  # .to(device) moves the per-row additions as well
        out = super()._apply(fn, recurse)
        if self.rows is not None:
            self.rows = fn(self.rows)
        return out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            if h.shape[0] != self.rows.shape[0]:
                raise ValueError(f"per-row steering holds {self.rows.shape[0]} rows; the forward has {h.shape[0]}")
            return h + self.rows[:, None, :].to(h.dtype)
        return h + (self.alpha * self.w).to(h.dtype)


class Clamp(torch.nn.Module):
    """Φ(h_t) = h_t − ReLU(h_t · w) · w + α · w: the concept's own component replaced by α (w unit-norm)."""

    def __init__(self, w: torch.Tensor, alpha: float):
        super().__init__()
        self.register_buffer("w", _unit(w))
        self.alpha = float(alpha)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = self.w.to(h.dtype)
        return h - torch.relu(h @ w)[..., None] * w + self.alpha * w


class TopKMean(torch.nn.Module):
    """ReFT-r1's training-time form: a_t = ReLU(h_t · w); Φ(h_t) = h_t + ((1/k) Σ_{j ∈ TopK(a)} a_j) · w, one scalar
    per sequence added at all positions (padding excluded through ``mask``, set before the forward).

    ``w`` is a trainable parameter here; ``last_latents`` keeps the (B, T) latents of the last forward for the L1
    term. Under KV-cache decoding a forward sees only its new tokens, so steer with :class:`Additive` instead."""

    def __init__(self, d: int, k: int = 8, init: float = 0.01):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((d,), init))
        self.k = k
        self.mask: torch.Tensor | None = None
        self.last_latents: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = torch.relu(h.float() @ self.w)  # (B, T)
        mask = self.mask if self.mask is not None else torch.ones_like(a, dtype=torch.bool)
        self.last_latents = a
        k = min(self.k, a.shape[1])
        m = a.masked_fill(~mask, 0.0).topk(k, dim=1).values.mean(1)  # (B,)
        return h + (m[:, None, None] * self.w).to(h.dtype)


@contextmanager
def steer(model: torch.nn.Module, interventions: Mapping[int, torch.nn.Module]) -> Iterator[None]:
    """Apply ``{layer: intervention}`` to the residual stream output of those decoder blocks inside the block.

    Works on any Hugging Face causal LM (the model of an :class:`~trlm.core.engine.Engine` or a LoadedModel). An
    intervention is a module ``h (B, T, d) -> h``; it is moved to the model's device once, on entry.
    """
    blocks = decoder_layers(model)
    bad = [layer for layer in interventions if not 0 <= layer < len(blocks)]
    if bad:
        raise ValueError(f"cannot steer layer {bad[0]}: the model has decoder blocks 0-{len(blocks) - 1}")
    device = next(model.parameters()).device
    handles = []
    try:
        for layer, module in interventions.items():
            module.to(device)
            handles.append(blocks[layer].register_forward_hook(residual_hook(module)))
        yield
    finally:
        for h in handles:
            h.remove()


def residual_hook(module: torch.nn.Module):
    """A forward hook for a decoder block that passes its output hidden states through ``module``."""
    def hook(_block, _inputs, output):
        if isinstance(output, tuple):
            return (module(output[0]), *output[1:])
        return module(output)
    return hook

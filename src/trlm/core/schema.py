"""The engine's value types: requests and results of scoring and generation, and the decoding state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Direction = Literal["forward", "reverse"]
SAMPLERS: tuple[str, ...] = ("gumbel", "wmh")


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` given ``context``; both in forward reading order."""

    context: str
    continuation: str


@dataclass(frozen=True)
class LogLik:
    """Summed log-probability of a continuation, its token count and whether it is the greedy choice."""

    logprob: float
    num_tokens: int
    is_greedy: bool
    token_logprobs: tuple[float, ...] | None = None  # in forward reading order

    @property
    def mean(self) -> float:
        return self.logprob / self.num_tokens


@dataclass(frozen=True)
class GenArgs:
    """Sampling settings. ``temperature=0`` is greedy; noise is keyed by (seed, sample index, position, token)."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()
    sampler: str = "gumbel"  # gumbel (Gumbel-max) or wmh (Weighted MinHash): both exact, both keyed by the seed

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.n < 1:
            raise ValueError(f"top_k must be >= 0 and n >= 1, got top_k={self.top_k}, n={self.n}")


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: tuple[int, ...]  # forward reading order
    logprob: float  # sum of the model's untempered log-probs of the sampled tokens
    finish_reason: Literal["eos", "stop", "length"]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class DecodeState:
    """The KV cache of a batch of rows and where each row stands; :meth:`Engine.decode_step` advances it.

    Rows are left-padded: ``mask`` is 0 at padding, so every row's real tokens end at the same column.
    """

    cache: object  # every row's keys and values: core.fastdecode.KVBuffers (the fast step) or a transformers Cache
    mask: torch.Tensor  # (B, T) 1 where a cached position holds a real token
    next_pos: torch.Tensor  # (B,) position id of each row's next token

    @property
    def length(self) -> int:
        """Cached columns (padding included)."""
        return self.mask.shape[1]

    def rollback(self, length: int) -> None:
        """Forget every cached column from ``length`` on, in all rows (e.g. rejected draft tokens)."""
        drop = self.length - length
        if drop < 0 or length < 1:
            raise ValueError(f"cannot roll back to length {length}: the cache holds {self.length} columns")
        if drop:
            self.cache.crop(-drop)
            self.next_pos = self.next_pos - self.mask[:, length:].sum(-1)
            self.mask = self.mask[:, :length]

    def keep_tail(self, n: int, keep: torch.Tensor) -> None:
        """Among the last ``n`` columns, keep in row b only its first ``keep[b]`` real tokens; mask the rest, and
        drop trailing columns that no row keeps. Rows then continue after their kept tokens (``next_pos``)."""
        tail = self.mask[:, -n:]  # (B, n)
        kept = tail * (tail.cumsum(-1) <= keep[:, None]).to(tail.dtype)
        self.next_pos = self.next_pos - (tail.sum(-1) - kept.sum(-1))
        self.mask = torch.cat([self.mask[:, :-n], kept], 1)
        used = self.mask.any(0).nonzero()
        self.rollback(int(used[-1]) + 1 if used.numel() else 1)

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) the given rows, in that order: (B',) indices."""
        self.cache.batch_select_indices(rows)
        self.mask, self.next_pos = self.mask[rows], self.next_pos[rows]

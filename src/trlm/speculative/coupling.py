"""Communication-free coupling of two next-token samplers, and the Leviathan baseline (pure tensor code).

Two parties (target p, drafter q) that share only public noise each sample from their own distribution; the
collision probability Pr[a = b] is the per-position acceptance rate of drafter-invariant speculative decoding
(DISD, Daliri-Musco-Suresh, arXiv 2408.07978). Bounds, with D = D_TV(p, q):

    (1 - D) / (1 + D)   <=   Pr_WMH[a = b]   <=   Pr_Gumbel[a = b]   <=   1 - D   (optimal, needs communication)

Noise streams of :func:`trlm.core.sampling.hash_uniform`, all keyed by (seed, seq, absolute position, index):

    stream 0  Gumbel sampler (plain generation's ``sample_next``), index = token id
    stream 1  WMH dart token   i_k = floor(u * V),                  index = dart number k
    stream 2  WMH dart height  h_k = u,                              index = dart number k
    stream 3  Leviathan acceptance uniform r,                        index = 0
    stream 4  Leviathan residual / bonus Gumbel-max noise,           index = token id

Streams 3 and 4 are independent of the draft noise (pitfall A.5.2: sharing it biases the output).
"""

from __future__ import annotations

import torch

from trlm.core.sampling import (STREAM_ACCEPT, STREAM_DART_HEIGHT, STREAM_DART_TOKEN, STREAM_GUMBEL,
                                 STREAM_RESIDUAL, hash_uniform, sample_next, wmh_sample, wmh_sample_logits)

# the samplers live in trlm.core.sampling (the engine uses them); they are re-exported beside the closed forms
__all__ = ["STREAM_ACCEPT", "STREAM_DART_HEIGHT", "STREAM_DART_TOKEN", "STREAM_GUMBEL", "STREAM_RESIDUAL",
           "expected_tokens_per_call", "gumbel_collision", "gumbel_collision_fast", "gumbel_sample",
           "leviathan_verify", "optimal_collision", "tv", "wmh_lower_bound", "wmh_sample", "wmh_sample_logits"]


# ----------------------------------------------------------------------------------------- closed forms
def _pair(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two probability tensors of the same shape (..., V); return them as float64."""
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    if p.shape != q.shape or p.dim() == 0:
        raise ValueError(f"p and q must have the same shape (..., V); got {tuple(p.shape)} and {tuple(q.shape)}")
    if bool((p < 0).any() | (q < 0).any()) or not bool(torch.isfinite(p).all() & torch.isfinite(q).all()):
        raise ValueError("p and q must be finite and non-negative")
    return p, q


def tv(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Total variation D = 1/2 * sum_i |p_i - q_i| along the last dim. (..., V) -> (...), float64."""
    p, q = _pair(p, q)
    return 0.5 * (p - q).abs().sum(-1)


def optimal_collision(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Best coupling with communication (= Leviathan acceptance): 1 - D = sum_i min(p_i, q_i). (..., V) -> (...)."""
    return 1.0 - tv(p, q)


def wmh_lower_bound(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Worst-case communication-free bound (1 - D) / (1 + D) = sum min / sum max (weighted Jaccard).

    (..., V) -> (...), float64; WMH attains at least this, and no communication-free protocol beats it for all pairs.
    """
    d = tv(p, q)
    return (1.0 - d) / (1.0 + d)


def gumbel_collision(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exact Gumbel-coupling collision probability (probability Jaccard), (..., V) -> (...), float64:

        Pr[a = b] = sum_{i: p_i > 0, q_i > 0}  1 / sum_j max(p_j / p_i, q_j / q_i)

    Builds a (..., V, V) ratio tensor, so it is meant for small V (analysis and tests).
    """
    p, q = _pair(p, q)
    pi, qi = p.unsqueeze(-1), q.unsqueeze(-1)  # (..., V, 1)
    both = (pi > 0) & (qi > 0)  # (..., V, 1)
    ratio = torch.maximum(p.unsqueeze(-2) / torch.where(both, pi, 1.0),
                          q.unsqueeze(-2) / torch.where(both, qi, 1.0))  # (..., V_i, V_j)
    terms = torch.where(both.squeeze(-1), 1.0 / ratio.sum(-1), 0.0)  # (..., V); the j = i term makes sum >= 1
    return terms.sum(-1)


def gumbel_collision_fast(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """:func:`gumbel_collision` in O(V log V), for full vocabularies. (..., V) -> (...), float64.

    For token i, max(p_j/p_i, q_j/q_i) is p_j/p_i exactly when r_j = p_j/q_j >= r_i, so with tokens sorted by r,
    sum_j max(...) = (sum_{r_j >= r_i} p_j) / p_i + (sum_{r_j < r_i} q_j) / q_i: two cumulative sums. Ties in r
    give the same value on either side, so any tie order is exact.
    """
    p, q = _pair(p, q)
    both = (p > 0) & (q > 0)
    r = torch.where(q > 0, p / torch.where(q > 0, q, 1.0), torch.where(p > 0, torch.inf, 0.0))  # (..., V)
    order = torch.argsort(r, dim=-1, descending=True)
    ps, qs, bs = p.gather(-1, order), q.gather(-1, order), both.gather(-1, order)
    p_ge = ps.cumsum(-1)  # sum of p over tokens ranked at or above i (ratio >= r_i)
    q_lt = qs.sum(-1, keepdim=True) - qs.cumsum(-1)  # sum of q over tokens ranked below i (ratio < r_i)
    denom = p_ge / torch.where(bs, ps, 1.0) + q_lt / torch.where(bs, qs, 1.0)
    return torch.where(bs, 1.0 / denom, 0.0).sum(-1)


def expected_tokens_per_call(beta: float, gamma: int) -> float:
    """Expected committed tokens per target call with i.i.d. acceptance beta: (1 - beta^(gamma+1)) / (1 - beta)."""
    if not 0.0 <= beta <= 1.0 or gamma < 0:
        raise ValueError(f"need 0 <= beta <= 1 and gamma >= 0; got beta={beta}, gamma={gamma}")
    return float(gamma + 1) if beta == 1.0 else (1.0 - beta ** (gamma + 1)) / (1.0 - beta)


# ---------------------------------------------------------------------------------------------- samplers
def gumbel_sample(logits: torch.Tensor, *, seed: int, seq: torch.Tensor, pos: torch.Tensor,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Gumbel coupling sampler: exactly plain generation's ``sample_next`` (one sampler for every token).

    tokens = argmax_v(filter_logits(logits)_v / T + G_v),  G = -log(-log U), U = stream 0 at (seed, seq, pos, v).
    logits (B, V) -> tokens (B,) int64; temperature 0 is greedy argmax.
    """
    return sample_next(logits, seed=seed, seq=seq, pos=pos, temperature=temperature, top_k=top_k, top_p=top_p)


# ------------------------------------------------------------------------------ Leviathan / Chen baseline
def leviathan_verify(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor, *, seed: int, seq: int,
                     pos0: int) -> tuple[int, int]:
    """Standard speculative-sampling verification of one sequence. Returns (n_accepted, next_token).

    p (gamma+1, V): target probs at absolute positions pos0 .. pos0+gamma; q (gamma, V): the drafter probs the
    drafts were actually sampled from; draft (gamma,): the drafted tokens. For i = 0 .. gamma-1, with r_i from
    stream 3 at (seed, seq, pos0+i, 0):

        accept draft[i]  iff  r_i <= min(1, p_i(x_i) / q_i(x_i))
        at the first rejection: next_token ~ norm(max(0, p_i - q_i))        (Gumbel-max, stream 4 at pos0+i)
        if all accepted:        next_token ~ p_gamma  (bonus token)         (Gumbel-max, stream 4 at pos0+gamma)

    The committed tokens are exactly target-distributed and per-position acceptance is 1 - D_TV(p_i, q_i), but
    the output is NOT drafter-invariant: for a fixed seed a different drafter changes the committed tokens.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64, device=p.device)
    draft, dev = torch.as_tensor(draft, dtype=torch.int64, device=p.device), p.device
    gamma = draft.numel()
    if draft.dim() != 1 or p.dim() != 2 or q.shape != (gamma, p.shape[-1]) or p.shape[0] != gamma + 1:
        raise ValueError(f"need p (gamma+1, V), q (gamma, V), draft (gamma,); got p {tuple(p.shape)}, "
                         f"q {tuple(q.shape)}, draft {tuple(draft.shape)}")
    vocab = p.shape[-1]
    if gamma and bool(((draft < 0) | (draft >= vocab)).any()):
        raise ValueError("draft tokens out of vocabulary range")
    idx = torch.arange(gamma, device=dev)
    qx, px = q[idx, draft], p[idx, draft]  # (gamma,)
    if bool((qx <= 0).any()):
        raise ValueError("a draft token has zero drafter probability: q must be the distribution it was sampled from")
    positions = pos0 + torch.arange(gamma + 1, device=dev)  # (gamma+1,) absolute positions
    seqs = torch.full((gamma + 1,), seq, dtype=torch.int64, device=dev)
    zero = torch.zeros(1, dtype=torch.int64, device=dev)
    r = hash_uniform(seed, seqs[:gamma], positions[:gamma], zero, STREAM_ACCEPT)[:, 0]  # (gamma,)
    rejected = (r > torch.clamp(px / qx, max=1.0)).nonzero().flatten()
    n = int(rejected[0]) if rejected.numel() else gamma
    if n < gamma:
        dist = torch.clamp(p[n] - q[n], min=0.0)  # (V,) residual
        if float(dist.sum()) <= 0:  # only reachable through rounding; fall back to the target itself
            dist = p[n]
    else:
        dist = p[gamma]
    tokens = torch.arange(vocab, device=dev)
    u = hash_uniform(seed, seqs[n:n + 1], positions[n:n + 1], tokens, STREAM_RESIDUAL)[0]  # (V,)
    next_token = int((dist.log() - torch.log(-torch.log(u))).argmax())  # Gumbel-max on the (unnormalised) dist
    return n, next_token

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

from trlm.core.sampling import filter_logits, hash_uniform, sample_next

STREAM_GUMBEL, STREAM_DART_TOKEN, STREAM_DART_HEIGHT, STREAM_ACCEPT, STREAM_RESIDUAL = 0, 1, 2, 3, 4


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


def expected_tokens_per_call(beta: float, gamma: int) -> float:
    """Expected committed tokens per target call with i.i.d. acceptance beta: (1 - beta^(gamma+1)) / (1 - beta)."""
    if not 0.0 <= beta <= 1.0 or gamma < 0:
        raise ValueError(f"need 0 <= beta <= 1 and gamma >= 0; got beta={beta}, gamma={gamma}")
    return float(gamma + 1) if beta == 1.0 else (1.0 - beta ** (gamma + 1)) / (1.0 - beta)


# ---------------------------------------------------------------------------------------------- samplers
def _keys(seq, pos, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast seq / pos (ints or (B,) tensors) to int64 tensors of shape (B,)."""
    out = []
    for name, x in (("seq", seq), ("pos", pos)):
        x = torch.as_tensor(x, dtype=torch.int64, device=device)
        if x.dim() > 1 or (x.dim() == 1 and x.shape[0] not in (1, batch)):
            raise ValueError(f"{name} must be an int or a ({batch},) tensor; got shape {tuple(x.shape)}")
        out.append(x.expand(batch).contiguous())
    return out[0], out[1]


def gumbel_sample(logits: torch.Tensor, *, seed: int, seq: torch.Tensor, pos: torch.Tensor,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Gumbel coupling sampler: exactly plain generation's ``sample_next`` (one sampler for every token).

    tokens = argmax_v(filter_logits(logits)_v / T + G_v),  G = -log(-log U), U = stream 0 at (seed, seq, pos, v).
    logits (B, V) -> tokens (B,) int64; temperature 0 is greedy argmax.
    """
    return sample_next(logits, seed=seed, seq=seq, pos=pos, temperature=temperature, top_k=top_k, top_p=top_p)


def wmh_sample(probs: torch.Tensor, *, seed: int, seq: torch.Tensor, pos: torch.Tensor,
               chunk: int | None = None, max_darts: int | None = None) -> torch.Tensor:
    """Weighted MinHash with counter-based darts. probs (B, V) -> tokens (B,) int64.

    Dart k (k = 0, 1, ...) for row b has token i_k = floor(u1 * V) and height h_k = u2, with u1, u2 from
    streams 1 and 2 at key (seed, seq[b], pos[b], k). The sample is i_{k*}, k* = first k with h_k < probs[i_k],
    so Pr[token = i] is proportional to probs[i] (rows should sum to 1; about V darts per sample). Darts are
    generated in chunks (default 4 * V) and only rows without a hit yet are continued, so the result does not
    depend on the chunk size or the batch composition. Raises RuntimeError after ``max_darts`` (default 100 * V;
    Pr[miss] ~ exp(-100) for a normalised row) and ValueError for rows with no positive mass.
    """
    probs = torch.as_tensor(probs).to(torch.float64)
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (B, V); got {tuple(probs.shape)}")
    batch, vocab = probs.shape
    if bool((probs < 0).any()) or not bool(torch.isfinite(probs).all()):
        raise ValueError("probs must be finite and non-negative")
    empty = probs.sum(-1) <= 0  # (B,)
    if bool(empty.any()):
        raise ValueError(f"wmh_sample: rows {empty.nonzero().flatten().tolist()} have no positive mass; "
                         "no dart can ever hit")
    seq, pos = _keys(seq, pos, batch, probs.device)
    chunk = int(chunk or 4 * vocab)
    max_darts = int(max_darts or 100 * vocab)
    out = torch.full((batch,), -1, dtype=torch.int64, device=probs.device)  # (B,)
    active = torch.arange(batch, device=probs.device)  # rows still without a hit
    start = 0
    while active.numel():
        if start >= max_darts:
            raise RuntimeError(f"wmh_sample: no dart hit within max_darts={max_darts} for rows {active.tolist()}")
        k = torch.arange(start, min(start + chunk, max_darts), device=probs.device)  # (C,) global dart numbers
        s, t = seq[active], pos[active]
        tok = (hash_uniform(seed, s, t, k, STREAM_DART_TOKEN) * vocab).long().clamp_(max=vocab - 1)  # (A, C)
        height = hash_uniform(seed, s, t, k, STREAM_DART_HEIGHT)  # (A, C)
        hit = height < probs[active].gather(1, tok)  # (A, C)
        found = hit.any(-1)  # (A,)
        first = hit.to(torch.int8).argmax(-1)  # (A,) index of the first True (0 if none)
        out[active[found]] = tok[found, first[found]]
        active = active[~found]
        start += k.numel()
    return out


def wmh_sample_logits(logits: torch.Tensor, *, seed: int, seq: torch.Tensor, pos: torch.Tensor,
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, **wmh_kw) -> torch.Tensor:
    """WMH on the same processed distribution as ``sample_next``: softmax(filter_logits(logits) / T) in float64.

    logits (B, V) -> tokens (B,); temperature 0 is greedy argmax (same as ``sample_next``).
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = (filter_logits(logits, top_k, top_p) / temperature).to(torch.float64).softmax(-1)  # (B, V)
    return wmh_sample(probs, seed=seed, seq=seq, pos=pos, **wmh_kw)


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

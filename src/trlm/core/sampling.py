"""Counter-based sampling noise and the next-token sampler, as pure tensor functions.

Noise is a deterministic function of ``(seed, sequence, position, token)``: no generator state, so a sample
does not depend on batch composition, batch order or device, and two parties that share only the seed draw
the same noise (what drafter-invariant speculative decoding needs).

Two samplers: Gumbel-max (the default) and Weighted MinHash (``sampler="wmh"``), both exact samples of the
processed distribution and both pure functions of the noise keys. Sampling uses the Gumbel-max trick:
``argmax_v (logits_v / T + G_v)`` with ``G_v = -log(-log U_v)`` is an exact
sample from ``softmax(logits / T)``. Top-k / top-p set excluded logits to ``-inf`` first.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _as_i64(c: int) -> int:
    """A 64-bit constant as a signed int64 value (torch has no uint64 arithmetic)."""
    c &= _MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


_C_SEED, _C_SEQ, _C_POS, _C_TOK = (_as_i64(c) for c in (
    0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93))
_C_STREAM = _as_i64(0xA24BAED4963EE407)
# Noise streams over the same keys: 0 the Gumbel sampler; 1, 2 WMH dart token / height; 3, 4 the Leviathan
# baseline's acceptance uniforms and residual noise (independent of the draft noise, pitfall A.5.2).
STREAM_GUMBEL, STREAM_DART_TOKEN, STREAM_DART_HEIGHT, STREAM_ACCEPT, STREAM_RESIDUAL = 0, 1, 2, 3, 4
_M1, _M2 = _as_i64(0xFF51AFD7ED558CCD), _as_i64(0xC4CEB9FE1A85EC53)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift on int64 (torch's >> is arithmetic)."""
    return (x >> k).bitwise_and_((1 << (64 - k)) - 1)


def _fmix64(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 64-bit finaliser: a bijection with full avalanche (int64 wrap-around multiply)."""
    return _fmix64_(x.clone())


def _fmix64_(x: torch.Tensor) -> torch.Tensor:
    """:func:`_fmix64` in place (integer arithmetic is exact: the same bits with fewer (B, V) temporaries)."""
    x.bitwise_xor_(_shr(x, 33))
    x.mul_(_M1)
    x.bitwise_xor_(_shr(x, 33))
    x.mul_(_M2)
    return x.bitwise_xor_(_shr(x, 33))


def hash_uniform(seed: int | torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, index: torch.Tensor,
                 stream: int = 0) -> torch.Tensor:
    """Uniform(0, 1) values of shape (B, K) keyed by (seed, stream, seq[b], pos[b], index[k]), in float64.

    ``seq`` and ``pos`` are int64 tensors of shape (B,), ``index`` of shape (K,) (token ids, dart numbers, ...);
    ``seed`` is one int for every row or an int64 tensor (B,) of per-row seeds.
    ``stream`` separates independent noise fields over the same keys (stream 0 is the sampler's Gumbel noise;
    other consumers, such as speculative decoding's darts and acceptance tests, take their own stream).
    Identical keys give identical values on every run, device and batch layout.
    """
    device = seq.device
    base = _fmix64(torch.as_tensor(seed, dtype=torch.int64, device=device) * _C_SEED + 1)  # () or (B,)
    if stream:
        base = base + _fmix64(torch.tensor(stream, dtype=torch.int64, device=device) * _C_STREAM + 4) * 7
    key = (base.reshape(-1, 1)
           + _fmix64(seq.to(torch.int64) * _C_SEQ + 2)[:, None] * 3
           + _fmix64(pos.to(torch.int64) * _C_POS + 3)[:, None] * 5
           + index.to(device=device, dtype=torch.int64)[None, :] * _C_TOK)  # (B, K)
    bits = _shr(_fmix64_(_fmix64_(key)), 11)  # 53 random bits, non-negative
    return bits.to(torch.float64).add_(0.5).div_(float(1 << 53))  # strictly inside (0, 1)


def counter_uniform(seed: int | torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The sampler's noise: Uniform(0, 1) of shape (B, V) keyed by (seed, seq[b], pos[b], v), in float64."""
    return hash_uniform(seed, seq, pos, torch.arange(vocab_size, device=seq.device, dtype=torch.int64))


def gumbel_noise(seed: int | torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Standard Gumbel noise, (B, V) float32, from :func:`counter_uniform`. On a CPU row by row, so that a row's
    int64 keys stay in cache (the same values: every element is computed on its own)."""
    if seq.device.type != "cpu" or len(seq) == 1:
        return counter_uniform(seed, seq, pos, vocab_size).log_().neg_().log_().neg_().to(torch.float32)
    seed = torch.as_tensor(seed, dtype=torch.int64)
    out = torch.empty(len(seq), vocab_size, dtype=torch.float32)
    for b in range(len(seq)):
        u = counter_uniform(seed if seed.dim() == 0 else seed[b:b + 1], seq[b:b + 1], pos[b:b + 1], vocab_size)
        out[b] = u.log_().neg_().log_().neg_()[0]  # -log(-log u), in place; float64 -> float32 on the copy
    return out


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf. (B, V) -> (B, V)."""
    logits = logits.float()
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The argmax token of each row (B, V) -> (B,): the first of equal maxima, as ``argmax`` gives. In float32
    (an exact copy of bf16 logits, so the same token), where a CPU's argmax runs twice as fast as in bf16."""
    return logits.float().argmax(-1)


def sample_next(
    logits: torch.Tensor,
    *,
    seed: int | torch.Tensor,
    seq: torch.Tensor,
    pos: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V). ``temperature == 0`` is greedy. ``seed``: int or (B,) int64."""
    if temperature == 0:
        return greedy(logits)
    filtered = filter_logits(logits, top_k, top_p) / temperature
    g = gumbel_noise(seed, seq, pos, logits.shape[-1]).to(filtered.device)
    return (filtered + g).argmax(-1)


def _keys(seq, pos, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast seq / pos (ints or (B,) tensors) to int64 tensors of shape (B,)."""
    out = []
    for name, x in (("seq", seq), ("pos", pos)):
        x = torch.as_tensor(x, dtype=torch.int64, device=device)
        if x.dim() > 1 or (x.dim() == 1 and x.shape[0] not in (1, batch)):
            raise ValueError(f"{name} must be an int or a ({batch},) tensor; got shape {tuple(x.shape)}")
        out.append(x.expand(batch).contiguous())
    return out[0], out[1]


def wmh_sample(probs: torch.Tensor, *, seed: int | torch.Tensor, seq: torch.Tensor, pos: torch.Tensor,
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
    seeds = torch.as_tensor(seed, dtype=torch.int64, device=probs.device).expand(batch)  # (B,) per-row seeds
    chunk = int(chunk or 4 * vocab)
    max_darts = int(max_darts or 100 * vocab)
    out = torch.full((batch,), -1, dtype=torch.int64, device=probs.device)  # (B,)
    active = torch.arange(batch, device=probs.device)  # rows still without a hit
    start = 0
    while active.numel():
        if start >= max_darts:
            raise RuntimeError(f"wmh_sample: no dart hit within max_darts={max_darts} for rows {active.tolist()}")
        k = torch.arange(start, min(start + chunk, max_darts), device=probs.device)  # (C,) global dart numbers
        r, s, t = seeds[active], seq[active], pos[active]
        tok = (hash_uniform(r, s, t, k, STREAM_DART_TOKEN) * vocab).long().clamp_(max=vocab - 1)  # (A, C)
        height = hash_uniform(r, s, t, k, STREAM_DART_HEIGHT)  # (A, C)
        hit = height < probs[active].gather(1, tok)  # (A, C)
        found = hit.any(-1)  # (A,)
        first = hit.to(torch.int8).argmax(-1)  # (A,) index of the first True (0 if none)
        out[active[found]] = tok[found, first[found]]
        active = active[~found]
        start += k.numel()
    return out


def wmh_sample_logits(logits: torch.Tensor, *, seed: int | torch.Tensor, seq: torch.Tensor, pos: torch.Tensor,
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, **wmh_kw) -> torch.Tensor:
    """WMH on the same processed distribution as ``sample_next``: softmax(filter_logits(logits) / T) in float64.

    logits (B, V) -> tokens (B,); temperature 0 is greedy argmax (same as ``sample_next``).
    """
    if temperature == 0:
        return greedy(logits)
    probs = (filter_logits(logits, top_k, top_p) / temperature).to(torch.float64).softmax(-1)  # (B, V)
    return wmh_sample(probs, seed=seed, seq=seq, pos=pos, **wmh_kw)


def sampling_probs(logits: torch.Tensor, args) -> torch.Tensor:
    """The distribution the coupled sampler draws from: softmax(filter(logits) / T) in float64 (one-hot at T=0)."""
    if args.temperature == 0:
        return torch.nn.functional.one_hot(greedy(logits), logits.shape[-1]).to(torch.float64)
    return (filter_logits(logits, args.top_k, args.top_p) / args.temperature).to(torch.float64).softmax(-1)

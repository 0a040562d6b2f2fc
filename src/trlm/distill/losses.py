"""Distillation losses as pure functions: ``loss(student_logits, teacher_logits, mask) -> scalar``.

``student_logits`` / ``teacher_logits``: (..., V) over one shared vocabulary; ``mask``: (...) bool, the token
positions that count. Each loss is a **masked mean over tokens** (not over sequences, not ``batchmean``) of a
per-token divergence between p = softmax(teacher) and q = softmax(student). Softmax and log-softmax run in float32
whatever the logits' dtype (bf16 over a 49k vocabulary loses the tail). The teacher carries no gradient: pass
logits computed under ``torch.no_grad()``.

TAID takes the interpolation weight ``t`` as a keyword; :data:`LOSSES` binds the fixed hyper-parameters
(skew λ = 0.1, GJS β = 0.5) so every entry has the three-argument signature.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


def kl_per_token(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """Per-token KL(a ‖ b) = Σ_v a (log a − log b) from log-probabilities; 0 · log 0 counts as 0."""
    a = log_a.exp()
    diff = torch.where(a > 0, log_a - log_b, torch.zeros_like(a))  # no -inf - -inf or 0 * inf, in value or gradient
    return (a * diff).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """FKL (Hinton KD): KL(p ‖ q) = Σ_v p(v) · (log p(v) − log q(v)); mass-covering."""
    return _masked_mean(kl_per_token(log_probs(teacher_logits), log_probs(student_logits)), mask)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RKL: KL(q ‖ p) = Σ_v q(v) · (log q(v) − log p(v)); mode-seeking."""
    return _masked_mean(kl_per_token(log_probs(student_logits), log_probs(teacher_logits)), mask)


def tvd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Total variation: ½ Σ_v |p(v) − q(v)|."""
    p, q = log_probs(teacher_logits).exp(), log_probs(student_logits).exp()
    return _masked_mean(0.5 * (p - q).abs().sum(-1), mask)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, w: float) -> torch.Tensor:
    """log(w·a + (1 − w)·b), stably (w in (0, 1))."""
    w = torch.tensor(w, dtype=log_a.dtype, device=log_a.device)
    return torch.logaddexp(log_a + w.log(), log_b + (1 - w).log())


def skew_fkl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
             lam: float = 0.1) -> torch.Tensor:
    """Skew KL (DistiLLM): KL(p ‖ λ·p + (1 − λ)·q), λ = 0.1; λ = 0 is FKL."""
    lp, lq = log_probs(teacher_logits), log_probs(student_logits)
    return _masked_mean(kl_per_token(lp, _log_mix(lp, lq, lam) if lam > 0 else lq), mask)


def skew_rkl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
             lam: float = 0.1) -> torch.Tensor:
    """Skew RKL (DistiLLM): KL(q ‖ λ·q + (1 − λ)·p), λ = 0.1; λ = 0 is RKL."""
    lp, lq = log_probs(teacher_logits), log_probs(student_logits)
    return _masked_mean(kl_per_token(lq, _log_mix(lq, lp, lam) if lam > 0 else lp), mask)


def gjs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
        beta: float = 0.5) -> torch.Tensor:
    """Generalized JSD (GKD, Agarwal et al. 2024): with M = β·p + (1 − β)·q,
    ``β · KL(p ‖ M) + (1 − β) · KL(q ‖ M)``.

    At the endpoints the mixture collapses (the divergence is 0 for every q), so, as TRL does, β = 0 is defined as
    forward KL(p ‖ q) and β = 1 as reverse KL(q ‖ p): the limits of GJS(β)/β as β → 0 and of GJS(β)/(1 − β) as
    β → 1. β = 0.5 is the symmetric Jensen–Shannon divergence.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"gjs: beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, mask)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, mask)
    lp, lq = log_probs(teacher_logits), log_probs(student_logits)
    lm = _log_mix(lp, lq, beta)
    return _masked_mean(beta * kl_per_token(lp, lm) + (1 - beta) * kl_per_token(lq, lm), mask)


def _taid_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    with torch.no_grad():
        if t == 1.0:  # (0 * -inf would be nan where the student masks a token)
            return teacher_logits.float()
        return (1 - t) * student_logits.detach().float() + t * teacher_logits.float()


def taid_target(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """TAID's intermediate distribution p_t = softmax((1 − t) · stopgrad(s) + t · z), interpolated in **logit**
    space with the student detached (not in probability or log-prob space). float32, no gradient."""
    return torch.softmax(_taid_logits(student_logits, teacher_logits, t), dim=-1)


def taid(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, *,
         t: float) -> torch.Tensor:
    """TAID (Shing et al. 2025): ``−Σ_v p_t(v) · log q(v)``, the cross-entropy to :func:`taid_target`.

    p_t carries no gradient, so ∇ = ∇ KL(p_t ‖ q): forward KL toward a target that moves from the student (t = 0)
    to the teacher (t = 1); at t = 1 the gradient is exactly FKL's. The value includes the entropy H(p_t) (as in the
    official code, whose adaptive schedule reads it); :func:`taid_kl` gives the divergence alone. Vocabulary entries
    where the student logit is ±inf contribute 0.
    """
    pt = taid_target(student_logits, teacher_logits, t)
    lq = log_probs(student_logits)
    prod = torch.where(torch.isinf(student_logits), torch.zeros_like(lq), pt * lq)
    return _masked_mean(-prod.sum(-1), mask)


def taid_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, *,
            t: float) -> torch.Tensor:
    """KL(p_t ‖ q) = TAID's cross-entropy minus H(p_t) (for logging)."""
    lpt = torch.log_softmax(_taid_logits(student_logits, teacher_logits, t), dim=-1)
    return _masked_mean(kl_per_token(lpt, log_probs(student_logits)), mask)


# Not implemented: Adaptive KL (Wu et al. 2024; reference B.3 leaves its head/tail formula unverified), CTKD and DKD.
LOSSES: dict[str, Loss] = {
    "fkl": forward_kl,
    "rkl": reverse_kl,
    "tvd": tvd,
    "skew-fkl": partial(skew_fkl, lam=0.1),
    "skew-rkl": partial(skew_rkl, lam=0.1),
    "gjs": partial(gjs, beta=0.5),
}
METHODS: tuple[str, ...] = ("taid", *LOSSES, "sft")  # sft: cross-entropy on the data (no teacher)

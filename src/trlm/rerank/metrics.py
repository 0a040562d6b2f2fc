"""Best-of-N reranking metrics on AlpacaEval 2.0 judged candidates (:mod:`trlm.data.alpaca`): the
length-controlled win rate and pair agreement with the judge.

Length-controlled win rate (Dubois et al. 2024; ``alpaca_eval/metrics/glm_winrate.py``, ``length_controlled_v1``),
re-implemented because the package downloads its fitted instruction difficulties and gamed-baseline annotations
from a hub at run time, which cannot be reached here:

1. Instruction difficulty ``γ_x`` comes from one **joint** logistic GLM over all models
   (``notebooks/instruction_difficulty.ipynb``)::

       P(m beats ref on x) = σ( φ_m · tanh(Δlen_mx / sd_m) + θ_m + γ_x )      (γ of the first instruction ≡ 0)

   with ``Δlen = len(reference) − len(output)`` in characters, ``sd_m`` the (uncentred) standard deviation of
   ``Δlen`` over model m's rows. AlpacaEval fitted it once on the early-2024 leaderboard models; here it is fitted
   on the 24 models of the dev data.
2. Each model (or reranker) then gets its own GLM with ``γ`` held fixed::

       P(m beats ref on x) = σ( φ · tanh(Δlen_x / sd) + ψ · γ_x + θ )

   and its LC win rate is the mean over its instructions of ``σ(ψ · γ_x + θ)``: the length term zeroed.

Both fits follow ``fit_LogisticRegressionCV``: soft labels (each row duplicated with label 1 weighted p and label
0 weighted 1 − p), L1 penalty, liblinear, no intercept, C chosen from ``logspace(-4, 4, 10)`` by 5-fold
cross-validated log loss, then refitted on all rows. One difference is forced: AlpacaEval adds the annotations of
two gamed copies of the baseline (verbose / concise, weight 0.1 each) to every per-model fit to regularise the
length slope; those annotations are not in the data, so the per-model fit uses the model's own rows only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trlm.data.alpaca import Instruction

# Families for the within-family metrics: several models of one lineage, closer to N samples of one generator.
FAMILIES: dict[str, tuple[str, ...]] = {
    "FuseChat": ("FuseChat-Gemma-2-9B-Instruct", "FuseChat-Qwen-2.5-7B-Instruct", "FuseChat-Llama-3.1-8B-Instruct",
                 "FuseChat-Llama-3.2-3B-Instruct", "FuseChat-Llama-3.2-1B-Instruct"),
    "Claude": ("claude-2", "claude-instant-1.2", "claude-2.1"),
    "GPT-3.5": ("gpt-3.5-turbo-0301", "gpt-3.5-turbo-1106", "gpt35_turbo_instruct"),
    "Vicuna": ("vicuna-13b-v1.5", "vicuna-7b"),
    "Gemma": ("gemma-7b-it", "gemma-2b-it"),
}
_FAMILY_OF = {g: fam for fam, gens in FAMILIES.items() for g in gens}

CS = np.logspace(-4, 4, 10)  # sklearn LogisticRegressionCV's default grid, as AlpacaEval uses it
N_SPLITS = 5


def family_of(generator: str) -> str | None:
    """The family a candidate generator belongs to (see :data:`FAMILIES`), or None."""
    return _FAMILY_OF.get(generator)


# ------------------------------------------------------------------------------------------- the LC GLM

@dataclass(frozen=True)
class GLMFit:
    """One model's length-controlled GLM: logit P(win) = coef_length·tanh(Δlen/sd) + coef_difficulty·γ + bias."""

    lc_win_rate: float
    coef_length: float
    coef_difficulty: float
    bias: float
    C: float
    n: int


def _l1_options() -> dict:
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    return {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}


def _fit_soft(X, p: np.ndarray, w: np.ndarray, C: float) -> np.ndarray:
    """L1 logistic regression on soft labels p (rows duplicated: label 1 weighted p·w, label 0 weighted (1−p)·w)."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    n = len(p)
    X2 = sp.vstack([X, X]).tocsr() if sp.issparse(X) else np.vstack([X, X])
    y2 = np.r_[np.ones(n), np.zeros(n)]
    w2 = np.r_[p * w, (1 - p) * w]
    model = LogisticRegression(C=C, solver="liblinear", fit_intercept=False, random_state=123, max_iter=1000,
                               **_l1_options())
    model.fit(X2, y2, sample_weight=w2)
    return model.coef_[0]


def _logloss(p: np.ndarray, q: np.ndarray, w: np.ndarray) -> float:
    q = np.clip(q, 1e-15, 1 - 1e-15)
    return float(-np.mean(w * (p * np.log(q) + (1 - p) * np.log(1 - q))))


def fit_soft_logistic_cv(X, p: np.ndarray, w: np.ndarray | None = None, Cs: Sequence[float] = CS,
                         n_splits: int = N_SPLITS) -> tuple[np.ndarray, float]:
    """AlpacaEval's ``fit_LogisticRegressionCV(is_ytrue_proba=True)``: pick C by k-fold log loss, refit on all.

    Rows are dealt to folds round-robin (AlpacaEval's GroupKFold over equal-size groups). Returns (coef, C).
    """
    p = np.asarray(p, dtype=float)
    w = np.ones_like(p) if w is None else np.asarray(w, dtype=float)
    n = len(p)
    if n < n_splits:
        raise ValueError(f"the LC GLM needs at least {n_splits} rows (instructions), got {n}")
    fold = np.arange(n) % n_splits
    losses = []
    for C in Cs:
        fold_loss = []
        for k in range(n_splits):
            tr, te = fold != k, fold == k
            coef = _fit_soft(X[tr], p[tr], w[tr], C)
            fold_loss.append(_logloss(p[te], _sigmoid(X[te] @ coef), w[te]))
        losses.append(np.mean(fold_loss))
    best = float(Cs[int(np.argmin(losses))])
    return _fit_soft(X, p, w, best), best


def _sigmoid(x) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -np.asarray(x, dtype=float)))


def _std_delta_len(out_len: np.ndarray, ref_len: np.ndarray) -> np.ndarray:
    delta = ref_len.astype(float) - out_len.astype(float)
    sd = delta.std(ddof=1) if len(delta) > 1 else 0.0
    return np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)


def fit_lc(win: Sequence[float], out_len: Sequence[int], ref_len: Sequence[int], difficulty: Sequence[float],
           weight: Sequence[float] | None = None) -> GLMFit:
    """Fit one model's LC GLM (γ fixed) and return its length-controlled win rate (length term zeroed)."""
    p = np.asarray(win, dtype=float)
    g = np.asarray(difficulty, dtype=float)
    w = np.ones_like(p) if weight is None else np.asarray(weight, dtype=float)
    X = np.column_stack([_std_delta_len(np.asarray(out_len), np.asarray(ref_len)), g, np.ones_like(g)])
    coef, C = fit_soft_logistic_cv(X, p, w)
    lc = float(np.average(_sigmoid(coef[1] * g + coef[2]), weights=w))
    return GLMFit(lc, float(coef[0]), float(coef[1]), float(coef[2]), C, len(p))


def fit_instruction_difficulty(instructions: Sequence[Instruction]) -> dict[int, float]:
    """γ per instruction_id from the joint GLM over all generators (per-model length slope and bias)."""
    import scipy.sparse as sp

    models = sorted({c.generator for ins in instructions for c in ins.candidates})
    mcol = {m: j for j, m in enumerate(models)}
    ids = [ins.instruction_id for ins in instructions]
    icol = {i: j for j, i in enumerate(ids[1:])}  # treatment coding: the first instruction is the reference level
    rows = [(ins.instruction_id, c.generator, len(c.output), len(ins.reference), c.win)
            for ins in instructions for c in ins.candidates if c.output]  # AlpacaEval drops empty outputs
    gen = np.array([mcol[r[1]] for r in rows])
    delta = np.array([r[3] - r[2] for r in rows], dtype=float)
    sd = np.array([delta[gen == j].std(ddof=1) for j in range(len(models))])
    x_len = np.tanh(delta / sd[gen])
    n, M = len(rows), len(models)
    r_idx = np.arange(n)
    inst = np.array([icol.get(r[0], -1) for r in rows])
    has = inst >= 0
    data = np.r_[x_len, np.ones(n), np.ones(has.sum())]
    row_i = np.r_[r_idx, r_idx, r_idx[has]]
    col_i = np.r_[gen, M + gen, 2 * M + inst[has]]
    X = sp.csr_matrix((data, (row_i, col_i)), shape=(n, 2 * M + len(icol)))
    coef, _ = fit_soft_logistic_cv(X, np.array([r[4] for r in rows]))
    gamma = {ids[0]: 0.0}
    gamma.update({i: float(coef[2 * M + j]) for i, j in icol.items()})
    return gamma


def model_lc(instructions: Sequence[Instruction], difficulty: dict[int, float]) -> dict[str, GLMFit]:
    """The LC GLM of every candidate generator in the data, as the leaderboard computes it per model."""
    per: dict[str, list[tuple[float, int, int, float]]] = {}
    for ins in instructions:
        for c in ins.candidates:
            per.setdefault(c.generator, []).append(
                (c.win, len(c.output), len(ins.reference), difficulty[ins.instruction_id]))
    return {m: fit_lc(*map(list, zip(*rows))) for m, rows in sorted(per.items())}


def lc_win_rate(instructions: Sequence[Instruction], picks: Sequence[int], difficulty: dict[int, float]) -> GLMFit:
    """LC win rate of a reranker treated as a new model whose output on each instruction is its pick."""
    if len(picks) != len(instructions):
        raise ValueError(f"{len(picks)} picks for {len(instructions)} instructions")
    chosen = [ins.candidates[k] for ins, k in zip(instructions, picks)]
    return fit_lc([c.win for c in chosen], [len(c.output) for c in chosen],
                  [len(ins.reference) for ins in instructions],
                  [difficulty[ins.instruction_id] for ins in instructions])


def lc_win_rate_uniform(instructions: Sequence[Instruction], difficulty: dict[int, float]) -> GLMFit:
    """LC win rate of a uniformly random pick: the GLM fitted on every candidate, weighted 1/N per instruction."""
    rows = [(c.win, len(c.output), len(ins.reference), difficulty[ins.instruction_id], 1 / len(ins.candidates))
            for ins in instructions for c in ins.candidates]
    return fit_lc(*map(list, zip(*rows)))


# ------------------------------------------------------------------------------------------ pick metrics

def pick_best(scores: Sequence[float]) -> int:
    """Index of the highest score (the first on ties)."""
    return int(np.argmax(np.asarray(scores, dtype=float)))


def order_signs(x: np.ndarray) -> np.ndarray:
    """sign(x[i] - x[j]) for every pair, with equal infinities (unscorable candidates) counted as ties."""
    return (x[:, None] > x[None, :]).astype(float) - (x[:, None] < x[None, :]).astype(float)


def pair_counts(scores: Sequence[float], judge: Sequence[float], lengths: Sequence[int] | None = None,
                max_rel_len_diff: float | None = None, min_rel_len_diff: float = 0.0) -> tuple[float, int]:
    """(agreements, pairs) over candidate pairs the judge does not tie; a scorer tie counts one half.

    With ``max_rel_len_diff`` (and ``min_rel_len_diff``), only pairs whose length difference, as a fraction of
    the longer one, lies in [min, max).
    """
    s = np.asarray(scores, dtype=float)
    j = np.asarray(judge, dtype=float)
    iu = np.triu_indices(len(s), k=1)
    ds = order_signs(s)[iu]
    dj = order_signs(j)[iu]
    keep = dj != 0
    if max_rel_len_diff is not None or min_rel_len_diff > 0:
        if lengths is None:
            raise ValueError("a length-difference filter needs lengths")
        ln = np.asarray(lengths, dtype=float)
        longer = np.maximum(ln[:, None], ln[None, :])[iu]
        rel = np.abs(ln[:, None] - ln[None, :])[iu] / np.maximum(longer, 1)
        keep &= rel >= min_rel_len_diff
        if max_rel_len_diff is not None:
            keep &= rel < max_rel_len_diff
    agree = (ds[keep] == dj[keep]).sum() + 0.5 * (ds[keep] == 0).sum()
    return float(agree), int(keep.sum())


def pair_agreement(items: Sequence[tuple[Sequence[float], Sequence[float], Sequence[int]]],
                   max_rel_len_diff: float | None = None, min_rel_len_diff: float = 0.0) -> tuple[float, int]:
    """Pooled share of pairs ordered like the judge over (scores, judge, lengths) items → (share, pairs)."""
    agree, n = 0.0, 0
    for s, j, ln in items:
        a, k = pair_counts(s, j, ln, max_rel_len_diff, min_rel_len_diff)
        agree, n = agree + a, n + k
    return (agree / n if n else math.nan), n


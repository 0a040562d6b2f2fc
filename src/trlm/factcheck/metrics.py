"""Balanced accuracy and threshold tuning, as LLM-AggreFact reports them.

BAcc = ½ (TP/(TP+FN) + TN/(TN+FP)). A threshold is either fixed (0.5) or **tuned** on dev over the grid
{0.01, ..., 0.99} and applied to test. Where a dataset has no separate dev split, :func:`crossfit_bacc` tunes on
one stratified half and applies to the other (and vice versa), so no label is ever scored with a threshold that
saw it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

GRID = tuple(round(0.01 * k, 2) for k in range(1, 100))


def _arrays(labels: Sequence[int], probs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels for {len(p)} scores")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 (not supported) or 1 (supported)")
    return y, p


def balanced_accuracy(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Mean of the recalls of the classes present (both, normally); 0/1 labels and predictions."""
    y, yhat = _arrays(labels, preds)
    if len(y) == 0:
        raise ValueError("balanced accuracy of no examples")
    recalls = [float(np.mean(yhat[y == c] == c)) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(recalls))


def bacc_at(labels: Sequence[int], probs: Sequence[float], threshold: float) -> float:
    """BAcc of predicting supported where ``prob > threshold`` (strict, as MiniCheck's ``prob > 0.5``)."""
    y, p = _arrays(labels, probs)
    return balanced_accuracy(y, (p > threshold).astype(int))


def tune_threshold(labels: Sequence[int], probs: Sequence[float], grid: Sequence[float] = GRID) -> float:
    """The grid threshold with the best BAcc on (labels, probs); ties go to the one nearest 0.5."""
    y, p = _arrays(labels, probs)
    scores = [(bacc_at(y, p, t), -abs(t - 0.5), t) for t in grid]
    return max(scores)[2]


def stratified_halves(labels: Sequence[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two index arrays splitting each class in half at random (seeded)."""
    y = np.asarray(labels, dtype=int)
    rng = np.random.default_rng(seed)
    a, b = [], []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        a.extend(idx[: len(idx) // 2])
        b.extend(idx[len(idx) // 2:])
    return np.sort(np.array(a, dtype=int)), np.sort(np.array(b, dtype=int))


def crossfit_bacc(labels: Sequence[int], probs: Sequence[float], seed: int = 0) -> tuple[float, list[float]]:
    """(BAcc, [threshold tuned on half B, on half A]): each half predicted with the threshold tuned on the other."""
    y, p = _arrays(labels, probs)
    a, b = stratified_halves(y, seed)
    preds = np.zeros_like(y)
    thresholds = []
    for test, dev in ((a, b), (b, a)):
        t = tune_threshold(y[dev], p[dev])
        preds[test] = p[test] > t
        thresholds.append(t)
    return balanced_accuracy(y, preds), thresholds

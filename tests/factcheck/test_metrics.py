"""Balanced accuracy on hand cases, threshold tuning and cross-fitting."""

from __future__ import annotations

import pytest

from trlm.factcheck.metrics import GRID, bacc_at, balanced_accuracy, crossfit_bacc, stratified_halves, tune_threshold


def test_balanced_accuracy_hand_cases():
    # 3 positives (2 right), 1 negative (right): (2/3 + 1) / 2
    assert balanced_accuracy([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(5 / 6)
    assert balanced_accuracy([1, 0], [1, 0]) == 1.0
    assert balanced_accuracy([1, 1, 0, 0], [1, 1, 1, 1]) == 0.5  # all "supported" is chance, unlike accuracy
    assert balanced_accuracy([1, 1], [1, 0]) == 0.5  # one class present: its recall


def test_bacc_at_uses_a_strict_threshold():
    assert bacc_at([1, 0], [0.5, 0.2], 0.5) == 0.5  # 0.5 is not > 0.5
    assert bacc_at([1, 0], [0.51, 0.2], 0.5) == 1.0


def test_tune_threshold_finds_the_separating_cut_and_prefers_the_one_nearest_half():
    labels, probs = [1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1]
    t = tune_threshold(labels, probs)
    assert 0.3 <= t < 0.8 and bacc_at(labels, probs, t) == 1.0
    assert t == 0.5  # every cut in [0.3, 0.8) separates; the tie goes to 0.5
    assert tune_threshold([1, 0], [0.05, 0.02]) in (0.02, 0.03, 0.04)
    assert GRID[0] == 0.01 and GRID[-1] == 0.99 and len(GRID) == 99


def test_crossfit_tunes_each_half_on_the_other():
    labels = [1] * 10 + [0] * 10
    probs = [0.7] * 10 + [0.6] * 10  # separable only by a cut in [0.6, 0.7)
    bacc, ts = crossfit_bacc(labels, probs)
    assert bacc == 1.0 and all(0.6 <= t < 0.7 for t in ts) and len(ts) == 2
    a, b = stratified_halves(labels)
    assert sorted([*a, *b]) == list(range(20)) and sum(labels[i] for i in a) == 5


def test_metrics_reject_bad_labels_and_lengths():
    with pytest.raises(ValueError, match="labels must be 0"):
        balanced_accuracy([2, 1], [1, 1])
    with pytest.raises(ValueError, match="2 labels for 1 scores"):
        bacc_at([1, 0], [0.3], 0.5)

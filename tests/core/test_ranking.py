"""core.ranking: rank_by_score and top_k (pure functions, hand-set scores)."""

import numpy as np

from trlm.core.ranking import rank_by_score, top_k


def test_top_k_orders_by_score_then_index_and_keeps_ties_at_the_cut_in_index_order():
    s = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    assert top_k(s, 6).tolist() == [1, 4, 0, 2, 5, 3]
    assert top_k(s, 3).tolist() == [1, 4, 0]  # three 0.5s tie at the cut: the lowest index enters
    # a smaller k is always a prefix of a larger one
    assert all(top_k(s, k).tolist() == top_k(s, 6).tolist()[:k] for k in range(7))


def test_top_k_clamps_k_to_the_array_and_returns_nothing_for_k_zero():
    s = np.array([1.0, 2.0])
    assert top_k(s, 10).tolist() == [1, 0] and top_k(s, 0).tolist() == []


def test_top_k_agrees_with_rank_by_score_on_random_scores_with_many_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=200).astype(float)  # 5 distinct values over 200 items
    assert top_k(s, 37).tolist() == [r.index for r in rank_by_score(s.tolist())][:37]

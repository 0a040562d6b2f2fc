"""Each direction method recovers a planted concept direction from synthetic token activations, with the sign
toward the positives; detection scores, AUROC, hard-negative accuracy and max_act on hand-set numbers."""

import pytest
import torch

from trlm.steer.detect import Direction, hard_negative_accuracy, load_directions, max_act, roc_auc, save_directions
from trlm.steer.methods import DIRECTION_METHODS, bow_scores, example_scores, fit_direction

D = 16


def _examples(n, shift, seed, planted):
    """n examples of 5-12 tokens: noise (std 1 on every axis, 2 on axis 5) plus ``shift`` along ``planted``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = int(torch.randint(5, 13, (1,), generator=g))
        x = torch.randn(t, D, generator=g)
        x[:, 5] *= 2.0  # a high-variance nuisance axis that a careless PCA would pick on mixed data
        out.append(x + shift * planted)
    return out


@pytest.fixture(scope="module")
def planted():
    w = torch.zeros(D)
    w[2], w[7] = 0.6, -0.8
    return w


@pytest.mark.parametrize("method", DIRECTION_METHODS)
def test_method_recovers_the_planted_direction_with_the_positive_sign(method, planted):
    # positives: the concept strength varies per example (so the positives' main variance lies along it)
    g = torch.Generator().manual_seed(1)
    pos = [x + float(torch.rand(1, generator=g)) * 12 * planted for x in _examples(120, 2.0, 1, planted)]
    neg = _examples(120, 0.0, 2, planted)
    # AxBench's probe recipe (lr 5e-3, 24 epochs) takes too few steps on 240 rows of 16 dims: give it more epochs
    w = fit_direction(method, pos, neg, probe_epochs=100)
    assert w.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert float(w @ planted) > 0.9  # cosine with the planted unit direction, sign included
    test_pos, test_neg = _examples(20, 3.0, 3, planted), _examples(20, 0.0, 4, planted)
    scores = example_scores(test_pos + test_neg, w).tolist()
    assert roc_auc(scores, [1] * 20 + [0] * 20) > 0.95


def test_metrics_on_hand_set_scores(tmp_path):
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.8, 0.9, 0.2], [1, 1, 0, 0]) == 0.25
    # Youden threshold between 0.2 and 0.8: positives all above, one hard negative of two below
    assert hard_negative_accuracy([0.8, 0.9], [0.1, 0.2], [0.85, 0.05]) == pytest.approx(0.75)
    assert hard_negative_accuracy([0.8], [0.1], []) is None
    assert max_act([-1.0, -0.5]) == 50.0 and max_act([3.0, 7.5]) == 7.5
    ds = [Direction(3, torch.tensor([0.6, 0.8]), 7.5), Direction(9, torch.tensor([1.0, 0.0]), 50.0)]
    save_directions(tmp_path / "d", "diffmean", 10, "smollm2-135m-instruct", ds)
    meta, back = load_directions(tmp_path / "d")
    assert meta["layer"] == 10 and back[3].max_act == 7.5 and torch.equal(back[9].w, ds[1].w)
    with pytest.raises(Exception, match="trlm steer fit"):
        load_directions(tmp_path / "missing")


def test_bag_of_words_ranks_texts_with_the_concept_words_first():
    train = ["the rocket reached orbit", "orbit and launch pads", "a launch of the rocket", "bread and butter",
             "a walk in the park", "butter on toast"]
    p = bow_scores(train, [1, 1, 1, 0, 0, 0], ["rocket launch tomorrow", "toast in the park"])
    assert p[0] > 0.5 > p[1]


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="--method"):
        fit_direction("sae", [torch.zeros(2, D)], [torch.zeros(2, D)])

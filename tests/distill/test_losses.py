"""Distillation losses on hand-set logits: each against a direct formula, TAID's gradient and detachment, GJS's
endpoints, the mask and float32 computation. No model."""

import math

import pytest
import torch

from trlm.distill.losses import (LOSSES, forward_kl, gjs, reverse_kl, skew_fkl, skew_rkl, taid, taid_kl, taid_target,
                                 tvd)

V = 7


@pytest.fixture()
def logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, V, generator=g, dtype=torch.float64) * 2
    z = torch.randn(2, 3, V, generator=g, dtype=torch.float64) * 2
    mask = torch.tensor([[True, True, False], [True, False, True]])
    return s.float(), z.float(), mask


def _probs(x):
    return [[[math.exp(v) for v in row] for row in seq] for seq in x.double().tolist()]


def _direct(s, z, mask, per_token):
    """Masked mean of ``per_token(p, q)`` with p, q normalised by hand in float64 Python."""
    total, n = 0.0, 0
    for b in range(s.shape[0]):
        for t in range(s.shape[1]):
            if not mask[b, t]:
                continue
            es, ez = [math.exp(v) for v in s[b, t].double().tolist()], [math.exp(v) for v in z[b, t].double().tolist()]
            q, p = [e / sum(es) for e in es], [e / sum(ez) for e in ez]
            total += per_token(p, q)
            n += 1
    return total / n


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)


@pytest.mark.parametrize("fn, per_token", [
    (forward_kl, lambda p, q: kl(p, q)),
    (reverse_kl, lambda p, q: kl(q, p)),
    (tvd, lambda p, q: 0.5 * sum(abs(x - y) for x, y in zip(p, q))),
    (lambda s, z, m: skew_fkl(s, z, m, lam=0.1), lambda p, q: kl(p, [0.1 * x + 0.9 * y for x, y in zip(p, q)])),
    (lambda s, z, m: skew_rkl(s, z, m, lam=0.1), lambda p, q: kl(q, [0.1 * y + 0.9 * x for x, y in zip(p, q)])),
    (lambda s, z, m: gjs(s, z, m, beta=0.3), lambda p, q: 0.3 * kl(p, [0.3 * x + 0.7 * y for x, y in zip(p, q)])
     + 0.7 * kl(q, [0.3 * x + 0.7 * y for x, y in zip(p, q)])),
])
def test_each_loss_equals_its_formula_as_a_masked_token_mean(logits, fn, per_token):
    s, z, mask = logits
    assert float(fn(s, z, mask)) == pytest.approx(_direct(s, z, mask, per_token), rel=1e-5, abs=1e-6)


def test_taid_equals_cross_entropy_to_the_logit_space_interpolation(logits):
    s, z, mask = logits
    t = 0.3
    mix = (1 - t) * s + t * z  # logit space, not probabilities
    expected = _direct(mix, s, mask, lambda p, q: -sum(x * math.log(y) for x, y in zip(q, p)))
    # _direct's p is softmax of its 2nd argument (here s = the student), q of its 1st (the interpolation)
    assert float(taid(s, z, mask, t=t)) == pytest.approx(expected, rel=1e-5)
    h = _direct(mix, mix, mask, lambda p, q: -sum(x * math.log(x) for x in p))
    assert float(taid_kl(s, z, mask, t=t)) == pytest.approx(expected - h, rel=1e-4, abs=1e-6)


def test_taid_at_t_one_has_the_gradient_of_forward_kl(logits):
    s, z, mask = logits
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    taid(a, z, mask, t=1.0).backward()
    forward_kl(b, z, mask).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_no_gradient_flows_through_the_taid_target(logits):
    """The gradient is exactly (q − p_t) / N at kept positions: what cross-entropy to a constant target gives; a
    target still attached to the student would add the entropy's own gradient."""
    s, z, mask = logits
    t = 0.5
    x = s.clone().requires_grad_()
    assert not taid_target(x, z, t).requires_grad
    taid(x, z, mask, t=t).backward()
    q, pt = torch.softmax(s, -1), torch.softmax((1 - t) * s + t * z, -1)
    expected = (q - pt) * mask[..., None] / mask.sum()
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-7)


def test_gjs_endpoints_are_forward_and_reverse_kl_and_its_limits_agree(logits):
    s, z, mask = logits
    assert float(gjs(s, z, mask, beta=0.0)) == pytest.approx(float(forward_kl(s, z, mask)))
    assert float(gjs(s, z, mask, beta=1.0)) == pytest.approx(float(reverse_kl(s, z, mask)))
    eps = 1e-2  # GJS(β)/β → KL(p‖q) as β → 0 and GJS(β)/(1−β) → KL(q‖p) as β → 1 (on flatter logits, where the
    s, z = 0.3 * s, 0.3 * z  # O(ε) remainder is small)
    assert float(gjs(s, z, mask, beta=eps)) / eps == pytest.approx(float(forward_kl(s, z, mask)), rel=5e-2)
    assert float(gjs(s, z, mask, beta=1 - eps)) / eps == pytest.approx(float(reverse_kl(s, z, mask)), rel=5e-2)
    assert float(gjs(s, z, mask, beta=0.5)) == pytest.approx(float(gjs(z, s, mask, beta=0.5)), rel=1e-5)  # symmetric
    with pytest.raises(ValueError, match="beta"):
        gjs(s, z, mask, beta=1.5)


def test_skew_with_lambda_zero_is_the_plain_divergence(logits):
    s, z, mask = logits
    assert float(skew_fkl(s, z, mask, lam=0.0)) == pytest.approx(float(forward_kl(s, z, mask)))
    assert float(skew_rkl(s, z, mask, lam=0.0)) == pytest.approx(float(reverse_kl(s, z, mask)))


@pytest.mark.parametrize("name", [*LOSSES, "taid"])
def test_masked_positions_do_not_count_and_identical_distributions_cost_nothing(logits, name):
    s, z, mask = logits
    fn = (lambda a, b, m: taid(a, b, m, t=0.6)) if name == "taid" else LOSSES[name]
    noisy = s.clone()
    noisy[~mask] = 100.0  # garbage where the mask is off
    assert float(fn(noisy, z, mask)) == pytest.approx(float(fn(s, z, mask)), rel=1e-6)
    if name != "taid":  # TAID's value includes the target's entropy
        assert float(fn(z, z, mask)) == pytest.approx(0.0, abs=1e-6)


def test_bf16_logits_are_reduced_in_float32(logits):
    s, z, mask = logits
    s16, z16 = s.bfloat16(), z.bfloat16()
    out = forward_kl(s16, z16, mask)
    assert out.dtype == torch.float32
    assert float(out) == float(forward_kl(s16.float(), z16.float(), mask))

"""Coupling closed forms, Gumbel / WMH samplers and Leviathan verification: pure tensor code, hand-set
distributions, fixed seeds (every test is deterministic)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from trlm.core.sampling import hash_uniform, sample_next
from trlm.speculative.coupling import (
    expected_tokens_per_call,
    gumbel_collision,
    gumbel_sample,
    leviathan_verify,
    optimal_collision,
    tv,
    wmh_lower_bound,
    wmh_sample,
    wmh_sample_logits,
)

N = 20000  # Monte-Carlo trials = distinct `seq` values in one batch call


def _pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Toy (p, q) pairs over V = 6: random Dirichlet pairs of increasing distance plus one with zeros."""
    rng = np.random.default_rng(1234)
    out = [tuple(torch.from_numpy(rng.dirichlet(np.full(6, conc))) for _ in range(2)) for conc in (5.0, 1.0, 0.4)]
    out.append((torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0, 0.0], dtype=torch.float64),
                torch.tensor([0.1, 0.2, 0.3, 0.3, 0.1, 0.0], dtype=torch.float64)))
    return out


def _se(c: float) -> float:
    return math.sqrt(max(c * (1 - c), 1e-4) / N)


def _chi2_pvalue(tokens: torch.Tensor, p: torch.Tensor) -> float:
    """Chi-square p-value of token counts against p; categories with p = 0 must have zero counts."""
    counts = torch.bincount(tokens, minlength=p.numel()).double()
    assert float(counts[p == 0].sum()) == 0
    keep = p > 0
    exp = counts.sum() * p[keep] / p[keep].sum()
    return float(chisquare(counts[keep].numpy(), exp.numpy()).pvalue)


# ------------------------------------------------------------------------------------------ closed forms
def test_closed_forms_identical_distributions_all_equal_one():
    p = torch.tensor([0.1, 0.6, 0.3, 0.0])
    assert float(tv(p, p)) == 0
    for f in (gumbel_collision, wmh_lower_bound, optimal_collision):
        assert float(f(p, p)) == pytest.approx(1.0, abs=1e-12)


def test_closed_forms_disjoint_supports_give_zero_collision_and_tv_one():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 0.0, 0.2, 0.8], dtype=torch.float64)
    assert float(tv(p, q)) == pytest.approx(1.0)
    assert float(gumbel_collision(p, q)) == 0.0
    assert float(optimal_collision(p, q)) == pytest.approx(0.0)
    assert float(wmh_lower_bound(p, q)) == pytest.approx(0.0)


def test_closed_forms_hand_case_and_batched_last_dim():
    # p = (1/2, 1/2), q = (1, 0): only i = 0 counts, 1 / (max(1,1) + max(1,0)) = 1/2; D = 1/2
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])
    assert float(gumbel_collision(p, q)) == pytest.approx(0.5)
    assert float(wmh_lower_bound(p, q)) == pytest.approx(1 / 3)
    pairs = _pairs()
    P, Q = torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])  # (4, 6)
    for f in (tv, gumbel_collision, wmh_lower_bound, optimal_collision):
        batched = f(P, Q)
        assert batched.shape == (4,) and batched.dtype == torch.float64
        assert torch.allclose(batched, torch.stack([f(a, b) for a, b in pairs]))


def test_closed_form_ordering_optimal_ge_gumbel_ge_wmh_lower_bound():
    g = torch.Generator().manual_seed(7)
    for _ in range(50):
        p, q = torch.rand(2, 6, generator=g, dtype=torch.float64) ** 3
        p, q = p / p.sum(), q / q.sum()
        opt, gum, low = float(optimal_collision(p, q)), float(gumbel_collision(p, q)), float(wmh_lower_bound(p, q))
        assert opt + 1e-12 >= gum >= low - 1e-12


def test_expected_tokens_per_call_formula():
    assert expected_tokens_per_call(1.0, 4) == 5.0
    assert expected_tokens_per_call(0.0, 4) == 1.0
    assert expected_tokens_per_call(0.5, 2) == pytest.approx(1.75)
    with pytest.raises(ValueError):
        expected_tokens_per_call(1.5, 2)


# -------------------------------------------------------------------------------- Monte-Carlo collisions
def test_monte_carlo_collisions_match_closed_forms_and_ordering():
    """Gumbel MC == closed form within 4 SE; WMH MC within [lower bound - 4 SE, Gumbel closed form + 4 SE];
    ordering optimal >= Gumbel >= WMH >= (1-D)/(1+D) with 4-SE tolerances."""
    seq = torch.arange(N)
    for j, (p, q) in enumerate(_pairs()):
        pos = torch.full((N,), 10 + j)
        a = gumbel_sample(p.log().float().expand(N, 6), seed=5, seq=seq, pos=pos)
        b = gumbel_sample(q.log().float().expand(N, 6), seed=5, seq=seq, pos=pos)
        gum_mc = float((a == b).double().mean())
        a = wmh_sample(p.expand(N, 6), seed=5, seq=seq, pos=pos)
        b = wmh_sample(q.expand(N, 6), seed=5, seq=seq, pos=pos)
        wmh_mc = float((a == b).double().mean())
        opt, gum, low = float(optimal_collision(p, q)), float(gumbel_collision(p, q)), float(wmh_lower_bound(p, q))
        tol_g, tol_w = 4 * _se(gum), 4 * _se(wmh_mc)
        assert abs(gum_mc - gum) <= tol_g, (j, gum_mc, gum)
        assert low - tol_w <= wmh_mc <= gum + tol_w, (j, wmh_mc, low, gum)
        assert opt + tol_g >= gum_mc and gum_mc + tol_g + tol_w >= wmh_mc, (j, opt, gum_mc, wmh_mc)


# ------------------------------------------------------------------------------------------- marginals
def _explicit_gumbel_max(logits: torch.Tensor, seed: int, seq: torch.Tensor, pos: torch.Tensor,
                         temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> tuple[list[int], int]:
    """The Gumbel-max sample of each row written out in float64, one token at a time: top-k keeps the logits >= the
    k-th largest; top-p then keeps tokens in decreasing probability (softmax of the kept logits) while the mass
    before a token is below p; the sample is argmax_v (logit_v / T + G_v), G_v = -log(-log U_v), U the stream-0
    noise at (seed, seq, pos, v). Also returns how many rows the filters changed (so the check can see them)."""
    V = logits.shape[1]
    if temperature == 0:
        return [int(np.argmax(row)) for row in logits.double().numpy()], 0
    u = hash_uniform(seed, seq, pos, torch.arange(V)).numpy()  # (B, V) float64
    out, changed = [], 0
    for b, row in enumerate(logits.double().numpy()):
        keep = np.ones(V, dtype=bool)
        if top_k:
            keep &= row >= sorted(row, reverse=True)[top_k - 1]
        if top_p < 1.0:
            p = np.where(keep, np.exp(row - row[keep].max()), 0.0)
            p /= p.sum()
            mass, nucleus = 0.0, np.zeros(V, dtype=bool)
            for v in sorted(range(V), key=lambda v: -p[v]):
                if mass >= top_p:
                    break
                nucleus[v], mass = True, mass + p[v]
            keep &= nucleus
        score = row / temperature - np.log(-np.log(u[b]))
        out.append(int(np.argmax(np.where(keep, score, -np.inf))))
        changed += out[-1] != int(np.argmax(score))
    return out, changed


def test_gumbel_sample_is_the_explicit_gumbel_max_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g) * 2
    seq, pos = torch.arange(64), torch.arange(64) % 7
    for kw in ({}, {"temperature": 0.7, "top_k": 10}, {"temperature": 1.3, "top_p": 0.8},
               {"temperature": 0.9, "top_k": 20, "top_p": 0.7}, {"temperature": 0}):
        want, changed = _explicit_gumbel_max(logits, 9, seq, pos, **kw)
        assert gumbel_sample(logits, seed=9, seq=seq, pos=pos, **kw).tolist() == want, kw
        assert sample_next(logits, seed=9, seq=seq, pos=pos, **kw).tolist() == want, kw  # plain decoding's sampler
        assert changed > 0 or not (kw.get("top_k") or kw.get("top_p")), kw  # the filters decided some rows
    other, _ = _explicit_gumbel_max(logits, 10, seq, pos)
    assert gumbel_sample(logits, seed=10, seq=seq, pos=pos).tolist() == other != _explicit_gumbel_max(
        logits, 9, seq, pos)[0]


@pytest.mark.parametrize("which", ["gumbel", "wmh"])
def test_sampler_marginals_match_p_chi_square(which):
    """gumbel_sample / wmh_sample token frequencies over 20k seqs match p (chi-square p-value > 1e-3)."""
    p = torch.tensor([0.35, 0.25, 0.2, 0.1, 0.07, 0.03, 0.0], dtype=torch.float64)
    seq, pos = torch.arange(N), torch.full((N,), 3)
    if which == "gumbel":
        toks = gumbel_sample(p.log().float().expand(N, -1), seed=11, seq=seq, pos=pos)
    else:
        toks = wmh_sample(p.expand(N, -1), seed=11, seq=seq, pos=pos)
    assert _chi2_pvalue(toks, p) > 1e-3


def test_wmh_sample_logits_processing_and_greedy():
    """wmh_sample_logits: T = 0 is argmax like sample_next; top-k excluded tokens never appear; marginal at T
    matches softmax(logits / T) (chi-square)."""
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0, 0.0]])
    one = torch.tensor([0])
    assert int(wmh_sample_logits(logits, seed=0, seq=one, pos=one, temperature=0)) == 1
    assert int(sample_next(logits, seed=0, seq=one, pos=one, temperature=0)) == 1
    many, seq, pos = logits.expand(4000, -1), torch.arange(4000), torch.zeros(4000, dtype=torch.long)
    toks = wmh_sample_logits(many, seed=1, seq=seq, pos=pos, top_k=2)
    assert set(toks.tolist()) <= {0, 1}
    toks = wmh_sample_logits(many, seed=2, seq=seq, pos=pos, temperature=0.5)
    assert _chi2_pvalue(toks, (logits[0].double() / 0.5).softmax(-1)) > 1e-3


def test_leviathan_first_token_marginal_is_p0_for_drafter_q_ne_p():
    """Committed first token over 4000 seqs matches p_0 (chi-square) with q != p; position-0 acceptance rate
    is 1 - D_TV(p_0, q_0) within 4 SE."""
    trials, gamma, pos0 = 4000, 2, 20
    p = torch.tensor([[0.5, 0.2, 0.2, 0.1, 0.0], [0.1, 0.2, 0.3, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]],
                     dtype=torch.float64)
    q = torch.tensor([[0.1, 0.4, 0.1, 0.2, 0.2], [0.3, 0.3, 0.2, 0.1, 0.1]], dtype=torch.float64)
    seq = torch.arange(trials)
    drafts = torch.stack([gumbel_sample(q[i].log().float().expand(trials, -1), seed=3, seq=seq,
                                        pos=torch.full((trials,), pos0 + i)) for i in range(gamma)], 1)
    first, acc0 = [], 0
    for s in range(trials):
        n, nxt = leviathan_verify(p, q, drafts[s], seed=3, seq=s, pos0=pos0)
        first.append(int(drafts[s, 0]) if n > 0 else nxt)
        acc0 += n > 0
    assert _chi2_pvalue(torch.tensor(first), p[0]) > 1e-3
    beta = float(optimal_collision(p[0], q[0]))
    assert abs(acc0 / trials - beta) <= 4 * math.sqrt(beta * (1 - beta) / trials)


# ---------------------------------------------------------------------------- determinism / counter keys
def test_wmh_sample_depends_only_on_seed_seq_pos_not_batch_or_chunk():
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(12, 30, generator=g, dtype=torch.float64) ** 4
    probs /= probs.sum(-1, keepdim=True)
    seq, pos = torch.arange(100, 112), torch.arange(12) * 3
    ref = wmh_sample(probs, seed=8, seq=seq, pos=pos)
    for chunk in (1, 7, 30, 1000):
        assert torch.equal(wmh_sample(probs, seed=8, seq=seq, pos=pos, chunk=chunk), ref)
    perm = torch.randperm(12, generator=g)
    assert torch.equal(wmh_sample(probs[perm], seed=8, seq=seq[perm], pos=pos[perm], chunk=13), ref[perm])
    for b in range(12):  # each row alone
        assert int(wmh_sample(probs[b:b + 1], seed=8, seq=seq[b:b + 1], pos=pos[b:b + 1], chunk=5)) == int(ref[b])


def test_wmh_sample_differs_across_seq_and_pos():
    uniform = torch.full((300, 50), 1 / 50, dtype=torch.float64)
    by_seq = wmh_sample(uniform, seed=0, seq=torch.arange(300), pos=0)
    by_pos = wmh_sample(uniform, seed=0, seq=0, pos=torch.arange(300))
    assert by_seq.unique().numel() > 30 and by_pos.unique().numel() > 30
    assert not torch.equal(by_seq, by_pos)


# ------------------------------------------------------------------------------------ Leviathan details
def test_leviathan_acceptance_noise_is_not_the_gumbel_stream():
    """Stream 3 (acceptance) and 4 (residual) uniforms differ from stream 0 (Gumbel) at the same keys and are
    uncorrelated with it."""
    seq, pos, idx = torch.arange(2000), torch.full((2000,), 5), torch.arange(4)
    u0 = hash_uniform(1, seq, pos, idx, stream=0)
    for stream in (3, 4):
        u = hash_uniform(1, seq, pos, idx, stream=stream)
        assert not (u == u0).any()
        assert abs(float((u - u0).abs().mean()) - 1 / 3) < 0.02  # E|U - U'| = 1/3 for independent uniforms
        assert abs(float(torch.corrcoef(torch.stack([u.flatten(), u0.flatten()]))[0, 1])) < 0.05


def test_leviathan_decisions_follow_stream3_uniforms():
    """leviathan_verify accepts draft i iff r_i <= min(1, p_i(x)/q_i(x)), r_i = stream 3 at pos0 + i."""
    p = torch.tensor([[0.3, 0.7], [0.3, 0.7], [0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64)
    draft = torch.tensor([0, 0])  # ratio 0.5 at both positions
    for s in range(40):
        r = hash_uniform(2, torch.tensor([s, s]), torch.tensor([7, 8]), torch.tensor([0]), stream=3)[:, 0]
        expect = 0 if r[0] > 0.5 else (1 if r[1] > 0.5 else 2)
        n, nxt = leviathan_verify(p, q, draft, seed=2, seq=s, pos0=7)
        assert n == expect
        if n < 2:
            assert nxt == 1  # the residual max(0, p - q) is all on token 1


def test_leviathan_accept_all_when_q_equals_p_and_returns_bonus():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2], [0.1, 0.0, 0.9], [0.0, 0.5, 0.5]], dtype=torch.float64)
    for s in range(20):
        n, nxt = leviathan_verify(p, p[:3], torch.tensor([1, 0, 2]), seed=4, seq=s, pos0=0)
        assert n == 3 and nxt in (1, 2)


def test_leviathan_is_not_drafter_invariant():
    """Same seed, two different drafters: committed first tokens differ on some seeds (unlike DISD)."""
    p = torch.tensor([[0.4, 0.3, 0.3], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    q1 = torch.tensor([[0.8, 0.1, 0.1]], dtype=torch.float64)
    q2 = torch.tensor([[0.1, 0.1, 0.8]], dtype=torch.float64)

    def first(q, s):
        x = int(gumbel_sample(q.log().float(), seed=6, seq=torch.tensor([s]), pos=torch.tensor([0])))
        n, nxt = leviathan_verify(p, q, torch.tensor([x]), seed=6, seq=s, pos0=0)
        return x if n else nxt

    assert any(first(q1, s) != first(q2, s) for s in range(50))


# ----------------------------------------------------------------------------------------------- bad input
def test_wmh_all_zero_row_raises_clear_error():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="no positive mass"):
        wmh_sample(probs, seed=0, seq=torch.arange(2), pos=0)


def test_wmh_max_darts_exceeded_raises():
    probs = torch.zeros(1, 10000, dtype=torch.float64)
    probs[0, -1] = 1.0  # one hit token: each dart hits with probability 1e-4
    with pytest.raises(RuntimeError, match="max_darts=5"):
        wmh_sample(probs, seed=0, seq=0, pos=0, max_darts=5)


def test_mismatched_shapes_raise_value_error():
    with pytest.raises(ValueError):
        tv(torch.ones(3) / 3, torch.ones(4) / 4)
    with pytest.raises(ValueError):
        gumbel_collision(torch.ones(2, 3) / 3, torch.ones(3) / 3)
    with pytest.raises(ValueError):
        wmh_sample(torch.ones(4) / 4, seed=0, seq=0, pos=0)  # not (B, V)
    with pytest.raises(ValueError):
        wmh_sample(torch.ones(2, 4) / 4, seed=0, seq=torch.arange(3), pos=0)
    p, q = torch.ones(3, 4) / 4, torch.ones(2, 4) / 4
    with pytest.raises(ValueError):
        leviathan_verify(p, q, torch.tensor([0, 1, 2]), seed=0, seq=0, pos0=0)  # draft length != gamma
    with pytest.raises(ValueError):
        leviathan_verify(p[:2], q, torch.tensor([0, 1]), seed=0, seq=0, pos0=0)  # p needs gamma + 1 rows


def test_fast_gumbel_collision_equals_the_pairwise_formula():
    """gumbel_collision_fast (sorted cumulative sums, O(V log V)) equals the O(V^2) closed form, zeros and ties
    included, batched and per row."""
    from trlm.speculative.coupling import gumbel_collision_fast

    g = torch.Generator().manual_seed(3)
    p = torch.rand(6, 9, generator=g, dtype=torch.float64)
    q = torch.rand(6, 9, generator=g, dtype=torch.float64)
    p[:, 0], q[:, 1] = 0.0, 0.0  # tokens only one side can sample
    q[2] = p[2] * 1.0  # identical rows: collision 1
    p[3, 4], q[3, 4], p[3, 5], q[3, 5] = 0.2, 0.1, 0.4, 0.2  # tied ratios
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    torch.testing.assert_close(gumbel_collision_fast(p, q), gumbel_collision(p, q))
    assert float(gumbel_collision_fast(p[2], q[2])) == pytest.approx(1.0)

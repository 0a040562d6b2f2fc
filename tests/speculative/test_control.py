"""The draft-length controller: costs measured from round wall times, one draft length per batch, fallback to
plain decoding and probing, and n-gram drafts as long as the copied span (pure algorithm: hand-set times and
acceptances)."""

from __future__ import annotations

import pytest

from trlm.speculative.decode import PROBE, VERIFY_COST, BatchControl, RoundClock, batch_draft_length, draft_length


def test_round_clock_turns_measured_round_times_into_a_cost_per_drafted_token():
    clock = RoundClock(drafter_cost=0.0)
    assert clock.cost() == pytest.approx(VERIFY_COST) and clock.wants_plain_round()  # nothing measured: the prior
    clock.observe(4, rows=1, seconds=0.064)  # a drafted round before any plain one cannot be split: ignored
    assert clock.cost() == pytest.approx(VERIFY_COST)
    clock.observe(0, rows=1, seconds=0.040)  # a plain round: 40 ms
    assert not clock.wants_plain_round()
    clock.observe(4, rows=1, seconds=0.064)  # 4 drafted positions made the round 24 ms longer
    assert clock.cost() == pytest.approx(0.024 / 4 / 0.040)  # 6 ms per drafted token = 0.15 of a plain round
    for _ in range(30):  # verifying grows expensive (a loaded machine): the cost follows the measurements
        clock.observe(4, rows=1, seconds=0.200)
        if clock.wants_plain_round():  # every REFRESH drafted rounds a plain one re-measures the step
            clock.observe(0, rows=1, seconds=0.040)
    assert clock.cost() == pytest.approx(0.160 / 4 / 0.040, rel=1e-3)
    clock.observe(4, rows=8, seconds=0.5)  # the batch changed: its plain round must be measured again
    assert clock.wants_plain_round()
    clock.observe(0, rows=8, seconds=0.100)
    assert clock.step == pytest.approx(0.100) and not clock.wants_plain_round()


def test_a_batch_whose_drafts_do_not_pay_decodes_plainly_and_probes_with_backoff():
    ctl = BatchControl(k=4, longest=8)
    for _ in range(3):  # nothing accepted at an expensive verify: drafting stops
        ctl.update([0], [0], [ctl.k], cost=0.5)
    assert ctl.k == 0
    ks = []
    for _ in range(60):  # plain rounds with 1-token probes that fail: each wait is twice the last
        ks.append(ctl.k)
        ctl.update([0], [0], [ctl.k], cost=0.5)
    probes = [i for i, k in enumerate(ks) if k]
    assert all(ks[i] == 1 for i in probes) and probes[0] < PROBE
    assert [b - a for a, b in zip(probes, probes[1:])] == [2 * PROBE, 4 * PROBE, 8 * PROBE]
    ctl.longest = 16
    for _ in range(12):  # drafts that are accepted make it draft again, long ones at a low cost
        ctl.update([0], [ctl.k], [ctl.k], cost=0.05)
    assert ctl.k == 16 and ctl.beta[0] > 0.95


def test_one_draft_length_serves_the_whole_batch():
    # one row copies well, seven do not: at a cost per drafted position that one good row repays, the batch drafts
    # (the other rows ride along for free); at a cost only a full batch of good rows would repay, it decodes plainly
    betas = [0.95] + [0.05] * 7
    assert batch_draft_length(betas, cost=0.02, longest=8) > 0
    assert batch_draft_length(betas, cost=0.3, longest=8) == 0
    assert batch_draft_length([0.95] * 8, cost=0.3, longest=8) > 0
    assert batch_draft_length([0.7], cost=0.1, longest=8) == draft_length(0.7, 4, 0.1, longest=8)
    # rows that rarely have a draft at all (an n-gram drafter without a match) gain nothing from a wide verify
    assert batch_draft_length([0.9] * 4, cost=0.2, longest=8) > 0
    assert batch_draft_length([0.9] * 4, cost=0.2, longest=8, avail=[0.05] * 4) == 0
    ctl = BatchControl(k=4, longest=8)  # rows that leave the batch no longer count
    for _ in range(5):
        ctl.update([0, 1], [0, 4], [4, 4], cost=0.25)
    assert ctl.k > 0 and ctl.beta[0] < 0.2 < 0.9 < ctl.beta[1]
    ctl.update([0], [0], [ctl.k], cost=0.25)
    assert ctl.k == 0


def test_draft_length_reaches_the_longest_span_when_drafts_are_cheap_and_right():
    assert draft_length(0.99, 4, 0.02, longest=16) == 16
    assert draft_length(0.99, 4, 0.02) == 8  # default: 2 * gamma
    assert draft_length(0.6, 4, 0.3, longest=16) < 4  # a mediocre drafter at a real verify cost: short drafts


def test_ngram_draft_follows_the_match_length():
    from trlm.speculative.drafters import NgramDrafter, match

    copied = [7, 1, 2, 3, 9, 5, 6, 8, 4]
    # inside a copied span (the last 5 ids occurred before): the match is 5 long, the draft up to 10
    assert match(copied + [0] + copied[:5], 16, 3, True, 16) == (copied[5:] + [0] + copied[:5], 5)
    # a one-id coincidence ([..., 9] matches the 9 of the prompt only): a draft of at most 2
    drafts, _ = NgramDrafter(3).propose([copied + [0, 9]], [8], None, None, None, None)
    assert drafts == [[5, 6]]
    drafts, _ = NgramDrafter(3).propose([copied + [0] + copied[:5]], [8], None, None, None, None)
    assert drafts == [(copied[5:] + [0] + copied[:5])[:8]]  # the controller's length bounds a long span

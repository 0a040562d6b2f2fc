"""Drafter-invariant speculative decoding (DISD) on the engine's decoding steps.

One round, per row, at committed length s (the target's logits L for step s are already known):

1. commit y_0 = S(L, noise at step s) — the target's own sample (at a mismatch or after a full accept this is
   the correction / bonus token of the previous round);
2. the drafter proposes d_1..d_n (n <= gamma) — a model drafter samples d_k = S(q_k, noise at step s + k) with
   the *same* sampler S and noise as the target;
3. one target forward over [y_0, d_1..d_n] gives the logits after every one of them;
4. accept d_k while d_k == S(p_k, noise at step s + k); roll both KV caches back to the committed length.

Every committed token is S(target logits after the committed prefix, noise at its step) — exactly the token
plain ``Engine.generate`` samples — so with ``scheme="gumbel"`` (or ``"wmh"``, the Weighted-MinHash sampler) the
output equals plain seeded generation with that sampler for **any** drafter; the drafter only sets the speed.
``scheme="leviathan"`` is the classic ratio test (Leviathan et al. / Chen et al.) with noise independent of the
drafts: target-distributed, but the text depends on the drafter. Rows of a batch accept independently (ragged
caches are masked, not padded per row).

    >>> out, stats = speculative_generate(eng, [prompt], GenArgs(max_new_tokens=64, temperature=0.8), "ngram")
    >>> out[0][0].text == eng.generate([prompt], GenArgs(max_new_tokens=64, temperature=0.8))[0][0].text
    True
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

from trlm.core.base import GenRow
from trlm.core.engine import require_in_process
from trlm.core.sampling import sampling_probs
from trlm.core.schema import GenArgs, Generation
from trlm.speculative.coupling import gumbel_collision_fast, leviathan_verify, optimal_collision, wmh_lower_bound
from trlm.speculative.drafters import Drafter, NgramDrafter, make_drafter

if TYPE_CHECKING:
    from trlm.core.engine import Engine

log = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("gumbel", "wmh", "leviathan")
CLOSED_FORM = {"gumbel": gumbel_collision_fast, "wmh": wmh_lower_bound, "leviathan": optimal_collision}


@dataclass
class SpecStats:
    """What one call cost and how often drafts were accepted."""

    drafter: str
    scheme: str
    gamma: int
    target_calls: int = 0  # target forwards: one prefill per batch + one verify per round
    row_calls: int = 0  # target forwards summed over the rows they served (a batch of B rows counts B)
    drafter_calls: int = 0  # drafter forwards (0 for the n-gram drafter)
    rounds: int = 0
    tokens: int = 0  # committed tokens over all rows (EOS included)
    target_samples: int = 0  # tokens committed as the target's own sample (one per row per round, plus the last)
    proposed: list[int] = field(default_factory=list)  # drafts proposed at draft position k (0-based)
    accepted: list[int] = field(default_factory=list)  # drafts accepted at draft position k
    expected: list[float] = field(default_factory=list)  # closed-form acceptance summed at position k (model drafters)
    tracked: bool = False  # whether ``expected`` was computed (track_coupling with a model drafter)

    @property
    def tokens_per_target_call(self) -> float:
        """Tokens each row commits per target forward it takes part in (1.0 for plain decoding)."""
        return self.tokens / max(1, self.row_calls)

    @property
    def acceptance_by_position(self) -> list[float]:
        return [a / p if p else 0.0 for a, p in zip(self.accepted, self.proposed)]

    @property
    def acceptance(self) -> float:
        return sum(self.accepted) / max(1, sum(self.proposed))

    @property
    def expected_acceptance(self) -> float | None:
        """Mean closed-form per-position acceptance (Gumbel collision, WMH lower bound or 1 - TV) of model drafts."""
        return sum(self.expected) / max(1, sum(self.proposed)) if self.tracked else None

    @property
    def mean_accepted_per_round(self) -> float:
        return sum(self.accepted) / max(1, self.rounds)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "tokens_per_target_call": self.tokens_per_target_call,
                "acceptance": self.acceptance, "acceptance_by_position": self.acceptance_by_position,
                "expected_acceptance": self.expected_acceptance,
                "mean_accepted_per_round": self.mean_accepted_per_round}

    @classmethod
    def total(cls, parts: Sequence["SpecStats | dict"]) -> "SpecStats":
        """The sum of several calls' statistics (same drafter, scheme and gamma), as one :class:`SpecStats`."""
        rows = [p if isinstance(p, dict) else dataclasses.asdict(p) for p in parts]
        if not rows:
            raise ValueError("SpecStats.total needs at least one part")
        out = cls(rows[0]["drafter"], rows[0]["scheme"], rows[0]["gamma"], tracked=any(r["tracked"] for r in rows))
        for k in ("target_calls", "row_calls", "drafter_calls", "rounds", "tokens", "target_samples"):
            setattr(out, k, sum(r[k] for r in rows))
        out._grow(max(len(r["proposed"]) for r in rows))
        for r in rows:
            for k in ("proposed", "accepted", "expected"):
                for i, v in enumerate(r[k]):
                    getattr(out, k)[i] += v
        return out

    def _grow(self, n: int) -> None:
        for lst, zero in ((self.proposed, 0), (self.accepted, 0), (self.expected, 0.0)):
            lst.extend([zero] * (n - len(lst)))


@torch.inference_mode()
def speculative_generate(
    target: "Engine",
    prompts: Sequence[str],
    args: GenArgs = GenArgs(),
    drafter: str | Drafter = "ngram",
    *,
    gamma: int = 4,
    scheme: str = "gumbel",
    adaptive: bool = True,
    direction: str | None = None,
    seeds: Sequence[int] | None = None,
    track_coupling: bool = False,
    progress: bool = False,
) -> tuple[list[list[Generation]], SpecStats]:
    """Generate like ``target.generate(prompts, args, direction=..., seeds=...)`` with a drafter.

    Args:
        drafter: ``"ngram"`` / ``"ngram:N"``, ``"early-exit:K"``, a model name or path, or a :class:`Drafter`.
        gamma: draft length (with ``adaptive``, the starting length, then :class:`BatchControl` decides from
            the measured cost of a round, :class:`RoundClock`; the n-gram drafter may reach 4 * gamma).
        scheme: ``gumbel`` / ``wmh`` (DISD; output == plain generation with ``GenArgs(sampler=scheme)``) or
            ``leviathan`` (ratio test; target-distributed, drafter-dependent).
        track_coupling: also sum the closed-form acceptance of every model draft (``SpecStats.expected``).
    Returns the generations (one list per prompt) and the call's :class:`SpecStats`.
    """
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    require_in_process(target, "speculative decoding (the drafter-invariant schemes run trlm's own sampler)")
    d = target.resolve_direction(direction)
    args = dataclasses.replace(args, sampler="gumbel" if scheme == "leviathan" else scheme)
    if target.lm.dtype != torch.float32 and scheme != "leviathan":
        log.warning("%s runs in %s: the text equals plain generation byte for byte in float32; in half precision "
                    "the verify forward's shape can flip a near-tie token (load with dtype='float32')",
                    target.name, str(target.lm.dtype).replace("torch.", ""))
    draft = make_drafter(drafter, target, d) if isinstance(drafter, str) else drafter
    stats = SpecStats(draft.name, scheme, gamma)
    start_calls = draft.forwards

    def run_batch(batch, args, d):
        return _run_batch(target, draft, batch, args, d, gamma, scheme, adaptive, stats, track_coupling)

    out = target.run_generation(prompts, args, d, seeds, run_batch, progress, desc=f"speculative ({draft.name})")
    stats.drafter_calls = draft.forwards - start_calls
    return out, stats


def _run_batch(target: "Engine", drafter: Drafter, batch, args: GenArgs, d: str, gamma: int, scheme: str,
               adaptive: bool, stats: SpecStats, track: bool) -> list[Generation]:
    dev = target.device
    rows = [GenRow(target, args, d) for _ in batch]
    prefixes = [list(it.prefix) for it in batch]
    state, L = target.prefill_shared(prefixes)  # L (B, V): the logits for step 0 of every row
    stats.target_calls += 1
    stats.row_calls += len(prefixes)
    drafter.begin(prefixes)
    alive = list(range(len(rows)))  # rows still generating, in the order of the cache rows
    seed = torch.tensor([it.seed for it in batch], device=dev)
    sample = torch.tensor([it.sample for it in batch], device=dev)
    longest = 4 * gamma if isinstance(drafter, NgramDrafter) else 2 * gamma  # a copied span may run long
    clock = RoundClock(drafter.cost)  # measured seconds of whole rounds -> the cost of a drafted token
    # the batch's draft length from its rows' acceptance; a drafter that costs forwards starts at the length its
    # prior cost justifies (a free one at gamma)
    start = gamma if not drafter.cost else min(gamma, batch_draft_length([BatchControl.BETA0], clock.cost(), gamma))
    ctl = BatchControl(start, longest)
    forced: dict[int, int] = {}  # leviathan: the correction / bonus token decided by the last verify
    ratio_test = scheme == "leviathan" and args.temperature > 0

    def drop_done():
        nonlocal alive, L, seed, sample
        keep = [i for i, r in enumerate(alive) if rows[r].reason is None]
        if len(keep) < len(alive):
            idx = torch.tensor(keep, dtype=torch.long, device=dev)
            state.select(idx)
            drafter.select(idx)
            alive, L, seed, sample = [alive[i] for i in keep], L[idx], seed[idx], sample[idx]

    while alive:
        t0 = time.perf_counter()
        # 1. the target's own sample for step s (the previous round's correction or bonus token)
        step = torch.tensor([rows[r].step for r in alive], device=dev)
        L = L.float()  # once: the sampler and the log-prob both read float32 (the same bits)
        y0 = target.sample(L, args, seed, sample, step)
        for i, r in enumerate(alive):
            if r in forced:
                y0[i] = forced.pop(r)
        lp0 = L.log_softmax(-1).gather(-1, y0[:, None])[:, 0]
        for i, r in enumerate(alive):
            committed = rows[r].commit(int(y0[i]), float(lp0[i]))
            stats.target_samples += committed
            stats.tokens += committed
        drop_done()
        if not alive:
            break
        y0 = torch.tensor([rows[r].gen[-1] for r in alive], device=dev)
        step = torch.tensor([rows[r].step - 1 for r in alive], device=dev)  # y0's step
        # 2. drafts (never past max_new_tokens)
        width = (0 if clock.wants_plain_round() else ctl.k) if adaptive else gamma
        want = [min(width, args.max_new_tokens - rows[r].step) for r in alive]
        drafting = max(want) > 0
        if drafting:
            drafts, qs = drafter.propose([prefixes[r] + rows[r].gen for r in alive], want, args, seed, sample, step)
        else:  # every row decodes plainly this round
            drafts, qs = [[]] * len(alive), None
        n = [len(x) for x in drafts]
        G = max(n)
        # 3. one target forward over [y0, d_1..d_G] (ragged rows padded and masked)
        tokens = torch.tensor([[int(y0[i])] + x + [0] * (G - len(x)) for i, x in enumerate(drafts)], device=dev)
        valid = torch.tensor([[1] * (1 + len(x)) + [0] * (G - len(x)) for x in drafts], device=dev)
        logits = target.decode_step(state, tokens, valid)  # (B', 1 + G, V)
        stats.target_calls += 1
        stats.row_calls += len(alive)
        stats.rounds += 1
        stats._grow(G)
        # 4. accept while the draft equals the target's coupled sample
        acc = _accept(target, logits, drafts, qs, args, seed, sample, step, ratio_test, forced, alive)
        for i, r in enumerate(alive):
            if acc[i]:
                lps = logits[i, :acc[i]].float().log_softmax(-1)  # (a, V): log-probs of the accepted drafts
                for k in range(acc[i]):
                    stats.tokens += rows[r].commit(drafts[i][k], float(lps[k, drafts[i][k]]))
            for k in range(n[i]):
                stats.proposed[k] += 1
                stats.accepted[k] += k < acc[i]
                if track and qs is not None:
                    stats.tracked = True
                    p = sampling_probs(logits[i, k:k + 1], args)[0]
                    stats.expected[k] += float(CLOSED_FORM[scheme](p, qs[i][k].to(p.device)))
        if adaptive:
            ctl.update(alive, acc, n, clock.cost(), asked=drafting)
        # 5. roll back: keep [y0, accepted drafts] in the target cache; L = logits after the last accepted token
        keep = torch.tensor([a + 1 for a in acc], device=dev)
        L = logits[torch.arange(len(alive), device=dev), keep - 1]
        if G:  # (a round without drafts keeps every row's one token: nothing to roll back)
            state.keep_tail(1 + G, keep)
        if drafting:
            drafter.accepted(acc)
        clock.observe(G, len(alive), time.perf_counter() - t0)
        drop_done()
    return [r.result() for r in rows]


PROBE = 4  # a row that stopped drafting tries one draft again after this many plain rounds (doubling per miss)
VERIFY_COST = 0.12  # prior: extra cost of verifying one more token, in decode steps, until a round measures it


def draft_length(beta: float, gamma: int, cost: float, longest: int | None = None) -> int:
    """The draft length k in [0, longest] (default 2 * gamma) that maximises expected tokens per unit of time,
    (1 + beta + ... + beta^k) / (1 + cost * k), for per-position acceptance ``beta`` and a cost per drafted token
    (verification plus drafting) in decode steps. 0 means: do not speculate, decode plainly."""
    return batch_draft_length([beta], cost, longest or 2 * gamma)


def batch_draft_length(betas: Sequence[float], cost: float, longest: int,
                       avail: Sequence[float] | None = None) -> int:
    """One draft length for a batch whose rows accept with ``betas``: a verify forward is as wide as its widest
    row, so every row pays for k drafted positions and may as well draft k. Maximises the batch's expected tokens
    per unit of time, sum_r 1 + a_r (b_r + ... + b_r^k), over 1 + cost * k, where ``avail`` a_r is how often row
    r has a draft at all when asked (an n-gram drafter proposes nothing without a match; default 1); 0: decode
    plainly."""
    avail = [1.0] * len(betas) if avail is None else avail
    best, best_k = float(len(betas)), 0
    tokens, powers = float(len(betas)), [1.0] * len(betas)
    for k in range(1, longest + 1):
        powers = [p * b for p, b in zip(powers, betas)]
        tokens += sum(a * p for a, p in zip(avail, powers))
        if tokens / (1 + cost * k) > best * (1 + 1e-9):
            best, best_k = tokens / (1 + cost * k), k
    return best_k


class RoundClock:
    """What a round costs, measured: moving averages of a whole round's seconds (sampling, committing, drafting,
    the verify forward, acceptance, rollback) without drafts (``step``) and of what each drafted position adds
    (``extra``), for the current batch size. A batch that has drafted for ``REFRESH`` rounds runs one plain round
    to measure ``step`` again (a verify forward's width is not free: at batch 8 in float32 three tokens per row
    cost 1.3 plain steps, and a wrong ``step`` made drafting look cheap). Until both are measured the prior stands
    in (``VERIFY_COST`` plus the drafter's ``cost``, in plain rounds)."""

    RATE = 0.25  # weight of the newest round in the averages
    REFRESH = 16  # drafted rounds between plain rounds that re-measure ``step``

    def __init__(self, drafter_cost: float):
        self.drafter_cost = drafter_cost
        self.step: float | None = None
        self.extra: float | None = None
        self.rows = 0  # batch size the averages were measured at
        self.since_plain = 0

    def _avg(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.RATE) * old + self.RATE * new

    def wants_plain_round(self) -> bool:
        """Whether the next round should run without drafts to (re-)measure a plain round."""
        return self.step is None or self.since_plain >= self.REFRESH

    def observe(self, drafted: int, rows: int, seconds: float) -> None:
        """One whole round of ``rows`` rows whose widest row drafted ``drafted`` positions."""
        if rows != self.rows:  # rows left the batch: a plain round costs less now; measure it again
            self.rows, self.step = rows, None
        if not drafted:
            self.step, self.since_plain = self._avg(self.step, seconds), 0
            return
        self.since_plain += 1
        if self.step is not None:
            self.extra = self._avg(self.extra, max(0.0, seconds - self.step) / drafted)

    def cost(self) -> float:
        """Seconds per drafted position (verify + draft) in units of a plain round."""
        if self.step is None or self.extra is None:
            return VERIFY_COST + self.drafter_cost
        return self.extra / self.step


class BatchControl:
    """The draft length ``k`` of a batch's next round (0: plain decoding) from each row's acceptance estimate and
    the measured cost of a drafted position (:func:`batch_draft_length`). When drafting does not pay, the batch
    decodes plainly and probes with one draft token after ``PROBE`` plain rounds, waiting twice as long after each
    probe that did not pay (up to 64 rounds). Deciding per batch, not per row, matters: rows probing or drafting
    on their own would make almost every verify forward wide while few rows gain from it."""

    BETA0 = 0.5  # prior acceptance of a row's drafts

    def __init__(self, k: int, longest: int):
        self.k, self.longest = k, longest
        self.beta: dict[int, float] = {}
        self.avail: dict[int, float] = {}  # how often a row had a draft when the batch drafted
        # a batch whose prior already says drafting does not pay waits longer for its first probe
        self.idle, self.wait, self.probing = 0, PROBE if k else 4 * PROBE, False

    def update(self, rows: Sequence[int], accepted: Sequence[int], proposed: Sequence[int], cost: float,
               asked: bool | None = None) -> None:
        """After a round: rows (ids) still generating, each one's accepted and proposed drafts; ``asked``: whether
        the rows were asked for drafts this round (default: whether any row proposed)."""
        asked = any(proposed) if asked is None else asked
        for r, a, p in zip(rows, accepted, proposed):
            if p:
                self.beta[r] = 0.7 * self.beta.get(r, self.BETA0) + 0.3 * a / min(a + 1, p)
            if asked:
                self.avail[r] = 0.7 * self.avail.get(r, 1.0) + 0.3 * (p > 0)
        k = batch_draft_length([self.beta.get(r, self.BETA0) for r in rows], cost, self.longest,
                               [self.avail.get(r, 1.0) for r in rows])
        if k:
            self.k, self.idle, self.wait, self.probing = k, 0, PROBE, False
            return
        if self.probing and any(proposed):
            self.wait, self.probing = min(64, 2 * self.wait), False
        self.idle += 1
        self.k = 0
        if self.idle >= self.wait:
            self.k, self.idle, self.probing = 1, 0, True


def _accept(target, logits, drafts, qs, args, seed, sample, step, ratio_test, forced, alive) -> list[int]:
    """Number of leading drafts each row accepts."""
    n = [len(x) for x in drafts]
    G = max(n)
    if not G:
        return [0] * len(drafts)
    if ratio_test:  # Leviathan: u <= p/q with independent noise; the correction or bonus token is forced next
        acc = []
        for i, x in enumerate(drafts):
            p = sampling_probs(logits[i, :n[i] + 1], args)
            q = qs[i].to(p.device) if qs is not None else torch.nn.functional.one_hot(
                torch.tensor(x, dtype=torch.long, device=p.device), p.shape[-1]).to(torch.float64)
            a, nxt = leviathan_verify(p, q, torch.tensor(x, dtype=torch.long), seed=int(seed[i]), seq=int(sample[i]),
                                      pos0=int(step[i]) + 1)
            forced[alive[i]] = nxt
            acc.append(a)
        return acc
    # the target's coupled sample, position by position, only for rows whose drafts still match (a mismatch ends
    # a row's round, so most positions of a poorly drafted round never need their noise drawn)
    acc = [0] * len(drafts)
    live = [i for i in range(len(drafts)) if n[i]]
    for k in range(G):
        if not live:
            break
        idx = torch.tensor(live, device=logits.device)
        y = target.sample(logits[idx, k], args, seed[idx], sample[idx], step[idx] + 1 + k).tolist()
        still = []
        for i, t in zip(live, y):
            if t == drafts[i][k]:
                acc[i] = k + 1
                if k + 1 < n[i]:
                    still.append(i)
        live = still
    return acc


__all__ = ["SCHEMES", "SpecStats", "speculative_generate", "NgramDrafter"]

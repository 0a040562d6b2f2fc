"""Best-of-N reranking benchmark on real AlpacaEval 2.0 judge verdicts.

For each instruction a scorer picks one of the judged candidates (24 models' outputs); the pick is worth the
judge's ``win_vs_reference``. Metrics per scorer: win rate with a bootstrap 95 % CI, the length-controlled win
rate (:mod:`trlm.alpaca`), pair agreement with the judge (all pairs, and pairs whose lengths differ by < 25 %),
the same inside each model family, and breakdowns by AlpacaEval subset and by length.

Rows always present: ``random`` (the expectation of a uniform pick; its pair agreement comes from one seeded
draw), ``oracle`` (the judge's best candidate) and ``length`` (the longest response).

    from trlm.rerank.bench import run_rerank_bench
    run_rerank_bench(data, reference, ["trlm-fo", "forward-mean"], None, 40, Path("runs/rerank_smoke"))
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from trlm.core.io import InputError, write_json, write_text
from trlm.core.report import bootstrap_ci, write_results
from trlm.data import alpaca as D
from trlm.rerank import metrics as M
from trlm.rerank.report import plot, render_report

log = logging.getLogger(__name__)

ALWAYS = ("random", "oracle", "length")
MODEL_FREE = ("random", "oracle", "length")
SIMILAR_LENGTH = 0.25  # pairs whose lengths differ by less than this fraction of the longer one
LEN_DIFF_BUCKETS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 1.01))
INSTRUCTION_LENGTH_BUCKETS = ((0, 600), (600, 1200), (1200, 10**9))  # median candidate length, chars (~terciles)
CHUNK = 8  # instructions scored per engine call; the score cache is written after each


@functools.lru_cache(maxsize=2)
def _difficulty(data: str, reference: str, stamp: tuple) -> dict[int, float]:
    return M.fit_instruction_difficulty(D.load_judged(data, reference))


def instruction_difficulty(data: Path, reference: Path) -> dict[int, float]:
    """γ per instruction fitted on every instruction of ``data`` (memoised per file version in this process)."""
    st = Path(data).stat()
    return _difficulty(str(data), str(reference), (st.st_mtime_ns, st.st_size))


# ------------------------------------------------------------------------------------------------ scores

def _empty(text: str) -> bool:
    return not text.strip()


# forward-mean and forward-sum reduce the same log-likelihoods: they share one cache file and one scoring pass.
SHARED_CACHE = {"forward-mean": "forward", "forward-sum": "forward"}
CACHE_FORMAT = 3  # per candidate: summed log-prob and token count, in a ResultCache JSONL


def _cache_name(name: str) -> str:
    return SHARED_CACHE.get(name, name)


def _cache_config(name: str, model: str | None, max_response_tokens: int, sp: str | None, cp: str | None) -> dict:
    if name in MODEL_FREE:
        return {"scorer": name}
    return {"scorer": _cache_name(name), "model": model, "max_response_tokens": max_response_tokens, "sp": sp,
            "cp": cp, "format": CACHE_FORMAT}


def get_scores(name: str, instructions: Sequence[D.Instruction], out: Path, *, model: str | None,
               max_response_tokens: int, sp: str | None = None, cp: str | None = None,
               progress: bool = True, alpha: float | None = None) -> list[list[float]]:
    """Scores of every candidate, resumed from and saved to ``out/scores_<name>.jsonl`` (a ResultCache).

    The cache keeps each candidate's summed log-probability and token count, so ``forward-mean`` and
    ``forward-sum`` are both read from one pass (``scores_forward.jsonl``), and a combined scorer is its spec's
    score of its parts' cached log-likelihoods (``forward`` and ``trlm-ba``; ``alpha`` overrides its weight). Empty
    candidates (15 outputs of gemma-2b-it in the dev data) give a likelihood scorer nothing to read: they are
    not scored and get ``-inf``, so no model scorer picks them (``length`` and ``random`` treat them like any other).
    """
    if name == "oracle":
        return [list(ins.wins) for ins in instructions]
    from trlm.scoring import make_scorer
    from trlm.scoring.scorers import SCORER_SPECS

    spec = SCORER_SPECS[name]
    if spec.direction is None:  # length, random: no model, nothing cached
        items = [(ins.instruction, [c.output for c in ins.candidates]) for ins in instructions]
        return make_scorer(name).score_many(items)

    def part_args(part: str) -> dict:
        """As make_scorer builds a combined scorer: the forward part on ``model`` (no TRLM prompts), the
        backward part on its default reverse model with the prompts."""
        if part == name:
            return {"model": model, "sp": sp, "cp": cp}
        if SCORER_SPECS[part].direction == "reverse":
            return {"model": None, "sp": sp, "cp": cp}
        return {"model": model, "sp": None, "cp": None}

    lls = [get_logliks(p, instructions, out, max_response_tokens=max_response_tokens, progress=progress,
                       **part_args(p)) for p in spec.parts or (name,)]
    return [[-math.inf if row[0] is None else spec.score(*row, alpha=alpha) for row in zip(*rows)]
            for rows in zip(*lls)]


def get_logliks(name: str, instructions: Sequence[D.Instruction], out: Path, *, model: str | None,
                max_response_tokens: int, sp: str | None = None, cp: str | None = None, progress: bool = True):
    """Each candidate's log-likelihood under a likelihood scorer (``None`` for empty candidates), cached."""
    from trlm.core.cache import ResultCache, cache_key
    from trlm.core.engine import LogLik
    from trlm.scoring import make_scorer

    cache = ResultCache(out / f"scores_{_cache_name(name)}.jsonl",
                        _cache_config(name, model, max_response_tokens, sp, cp))
    scorer = None

    def compute(chunk: list[D.Instruction]) -> list[dict]:
        nonlocal scorer
        scorer = scorer or make_scorer(name, model=model, task="rerank", sp=sp, cp=cp,
                                       max_response_tokens=max_response_tokens)
        keep = [[k for k, c in enumerate(ins.candidates) if not _empty(c.output)] for ins in chunk]
        lls = scorer.logliks_many([(ins.instruction, [ins.candidates[k].output for k in ks])
                                   for ins, ks in zip(chunk, keep)])
        values = []
        for ins, ks, row in zip(chunk, keep, lls):
            lp, nt = [None] * len(ins.candidates), [0] * len(ins.candidates)
            for k, ll in zip(ks, row):
                lp[k], nt[k] = float(ll.logprob), int(ll.num_tokens)
            values.append({"logprob": lp, "n_tokens": nt})
        return values

    keys = [cache_key(ins.instruction_id, [c.generator for c in ins.candidates]) for ins in instructions]
    hits = cache.map(keys, list(instructions), compute, chunk=CHUNK, desc=f"scoring {name}", progress=progress)
    return [[None if lp is None or _empty(c.output) else LogLik(lp, n, False)
             for lp, n, c in zip(hit["logprob"], hit["n_tokens"], ins.candidates)]
            for hit, ins in zip(hits, instructions)]


# ----------------------------------------------------------------------------------------------- metrics

def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def length_preference(scores, instructions) -> float:
    """Mean over instructions of the Spearman correlation between a scorer's scores and candidate lengths.

    +1: the scorer ranks exactly by length; −1: it prefers the shortest. Instructions where the scores or
    the lengths are all equal are skipped.
    """
    from scipy.stats import spearmanr

    rs = []
    for s, ins in zip(scores, instructions):
        s = np.asarray(s, dtype=float)
        if np.ptp(s) == 0 or np.ptp(ins.lengths) == 0:
            continue
        rs.append(spearmanr(s, ins.lengths).statistic)
    return float(np.mean(rs)) if rs else math.nan


def _picks_by_generator(name: str, instructions, scores) -> dict[str, float]:
    """Share of instructions whose pick came from each candidate model, largest first (empty for random)."""
    if name == "random":
        return {}
    from collections import Counter

    counts = Counter(ins.candidates[M.pick_best(s)].generator for s, ins in zip(scores, instructions))
    return {g: n / len(instructions) for g, n in counts.most_common()}


def _restrict(instructions, scores, members: set[str]):
    """Instructions and scores restricted to candidates from ``members`` (instructions with < 2 dropped)."""
    out_i, out_s = [], []
    for ins, s in zip(instructions, scores):
        keep = [k for k, c in enumerate(ins.candidates) if c.generator in members]
        if len(keep) >= 2:
            out_i.append(D.Instruction(ins.instruction_id, ins.dataset, ins.instruction, ins.reference,
                                       tuple(ins.candidates[k] for k in keep)))
            out_s.append([s[k] for k in keep])
    return out_i, out_s


def _pick_values(name: str, instructions, scores) -> tuple[np.ndarray, np.ndarray]:
    """(value of each instruction's pick, its length); ``random`` takes the expectation over candidates."""
    if name == "random":
        return (np.array([ins.wins.mean() for ins in instructions]),
                np.array([ins.lengths.mean() for ins in instructions]))
    picks = [M.pick_best(s) for s in scores]
    return (np.array([ins.candidates[k].win for ins, k in zip(instructions, picks)]),
            np.array([len(ins.candidates[k].output) for ins, k in zip(instructions, picks)]))


def scorer_metrics(name: str, instructions: Sequence[D.Instruction], scores: Sequence[Sequence[float]],
                   difficulty: dict[int, float]) -> tuple[dict, dict]:
    """(the results.json row, details: LC fit, families, subsets, length buckets) for one scorer's scores."""
    values, pick_len = _pick_values(name, instructions, scores)
    lc = (M.lc_win_rate_uniform(instructions, difficulty) if name == "random"
          else M.lc_win_rate(instructions, [M.pick_best(s) for s in scores], difficulty))
    items = [(s, ins.wins, ins.lengths) for s, ins in zip(scores, instructions)]
    pa, n_pairs = M.pair_agreement(items)
    pa_sim, n_sim = M.pair_agreement(items, max_rel_len_diff=SIMILAR_LENGTH)

    families = {}
    for fam, members in M.FAMILIES.items():
        f_ins, f_scores = _restrict(instructions, scores, set(members))
        if not f_ins:
            continue
        f_vals, _ = _pick_values(name, f_ins, f_scores)
        f_pa, f_n = M.pair_agreement([(s, i.wins, i.lengths) for s, i in zip(f_scores, f_ins)])
        families[fam] = {"win_rate": float(f_vals.mean()), "pair_agreement": _nan_to_none(f_pa), "n_pairs": f_n,
                         "n_candidates": len(members), "n_instructions": len(f_ins)}
    fam_pa = [f["pair_agreement"] for f in families.values() if f["pair_agreement"] is not None]

    lo, hi = bootstrap_ci(values)
    row = {
        "win_rate": float(values.mean()),
        "ci95": [lo, hi],
        "lc_win_rate": lc.lc_win_rate,
        "pair_agreement": _nan_to_none(pa),
        "pair_agreement_similar_length": _nan_to_none(pa_sim),
        "family": {"win_rate": float(np.mean([f["win_rate"] for f in families.values()])) if families else None,
                   "pair_agreement": float(np.mean(fam_pa)) if fam_pa else None},
        "n_instructions": len(instructions),
    }

    subsets = {}
    for ds in sorted({ins.dataset for ins in instructions}):
        idx = [k for k, ins in enumerate(instructions) if ins.dataset == ds]
        s_pa, s_n = M.pair_agreement([items[k] for k in idx])
        subsets[ds] = {"win_rate": float(values[idx].mean()), "pair_agreement": _nan_to_none(s_pa),
                       "n_instructions": len(idx)}
    by_len = {}
    med = np.array([np.median(ins.lengths) for ins in instructions])
    for blo, bhi in INSTRUCTION_LENGTH_BUCKETS:
        idx = np.flatnonzero((med >= blo) & (med < bhi))
        if len(idx):
            b_pa, _ = M.pair_agreement([items[k] for k in idx])
            by_len[f"{blo}-{bhi if bhi < 10**9 else ''}"] = {
                "win_rate": float(values[idx].mean()), "pair_agreement": _nan_to_none(b_pa),
                "n_instructions": len(idx)}
    buckets = {}
    for blo, bhi in LEN_DIFF_BUCKETS:
        b_pa, b_n = M.pair_agreement(items, max_rel_len_diff=bhi, min_rel_len_diff=blo)
        buckets[f"{blo:.2f}-{min(bhi, 1.0):.2f}"] = {"pair_agreement": _nan_to_none(b_pa), "n_pairs": b_n}
    details = {
        "n_pairs": n_pairs, "n_pairs_similar_length": n_sim, "mean_pick_length": float(pick_len.mean()),
        "picks_by_generator": _picks_by_generator(name, instructions, scores),
        "length_spearman": _nan_to_none(length_preference(scores, instructions) if name != "random" else math.nan),
        "lc_fit": {"coef_length": lc.coef_length, "coef_difficulty": lc.coef_difficulty, "bias": lc.bias, "C": lc.C},
        "families": families, "subsets": subsets, "by_instruction_length": by_len,
        "pair_agreement_by_length_difference": buckets,
    }
    return row, details


def lc_reproduction(instructions: Sequence[D.Instruction], difficulty: dict[int, float],
                    leaderboard: Path) -> dict[str, dict[str, float]]:
    """Per candidate model: our LC and raw win rate on these instructions beside the leaderboard's."""
    lb = D.read_leaderboard(leaderboard)
    fits = M.model_lc(instructions, difficulty)
    out = {}
    for m, fit in fits.items():
        if m not in lb:
            raise InputError(f"{leaderboard}: no row for candidate model {m!r}")
        wins = [c.win for ins in instructions for c in ins.candidates if c.generator == m]
        out[m] = {"lc_win_rate": fit.lc_win_rate, "leaderboard_lc_win_rate": lb[m]["length_controlled_winrate"],
                  "win_rate": float(np.mean(wins)), "leaderboard_win_rate": lb[m]["win_rate"],
                  "coef_length": fit.coef_length}
    return out


# ------------------------------------------------------------------------------------------------ runner

def run_rerank_bench(data: Path, reference: Path, scorers: list[str], model: str | None, limit: int | None,
                     out: Path, max_response_tokens: int = 512, progress: bool = True, *,
                     sp: str | None = None, cp: str | None = None, heldout: bool = False,
                     alpha: float | None = None) -> dict:
    """Score, pick and measure; write ``out/results.json``, ``out/details.json``, ``out/report.md`` and a PNG.

    ``random``, ``oracle`` and ``length`` are always included and load no model. Scores of model scorers are
    cached in ``out/scores_<scorer>.json`` so an interrupted or repeated run resumes without rescoring.
    Returns the results dict (scorer → metrics), as written to results.json.
    """
    data, reference, out = Path(data), Path(reference), Path(out)
    from trlm.scoring import SCORERS

    names = list(dict.fromkeys([*ALWAYS, *scorers]))
    unknown = [n for n in names if n not in SCORERS and n not in MODEL_FREE]
    if unknown:
        raise InputError(f"unknown scorer(s) {', '.join(unknown)}; choose from {', '.join(SCORERS)} (or oracle)")
    instructions = D.load_judged(data, reference, limit, heldout=heldout)
    if len(instructions) < M.N_SPLITS:
        raise InputError(f"the LC win rate needs at least {M.N_SPLITS} instructions; --limit is {limit}")
    difficulty = instruction_difficulty(data, reference)
    out.mkdir(parents=True, exist_ok=True)
    results, details = {}, {}
    for name in names:
        log.info("scorer %s", name)
        scores = get_scores(name, instructions, out, model=model, max_response_tokens=max_response_tokens,
                            sp=sp, cp=cp, progress=progress, alpha=alpha)
        results[name], details[name] = scorer_metrics(name, instructions, scores, difficulty)
    leaderboard = data.parent / Path(D.LEADERBOARD_FILE).name
    meta = {"data": str(data), "reference": str(reference), "model": model, "limit": limit, "heldout": heldout,
            "n_instructions": len(instructions), "max_response_tokens": max_response_tokens, "sp": sp, "cp": cp,
            "alpha": alpha,
            "lc_reproduction": lc_reproduction(D.load_judged(data, reference), difficulty, leaderboard)
            if leaderboard.exists() else None}
    write_results(out, results)
    write_json(out / "details.json", {"meta": meta, "scorers": details})
    plot(results, out / "rerank.png")
    write_text(out / "report.md", render_report(results, details, meta))
    return results

"""Choosing the combined reward's α on dev instructions (the paper's §6, Lemma 2).

The KL-regularised best-of-N optimum is ``P_fw(A|Q) · P_TRLM(Q|A)^α``, so the combined scorers rank by
``log P_fw(A|Q) + α · log P_Ba(Q|A)`` (``combined-sum``) or by the same with both terms per token
(``combined-mean``). α is swept on AlpacaEval **dev** instructions only (``instruction_id % 5 != 3``; the
held-out test instructions are never read) and the α with the best LC win rate is reported; the shipped defaults
(:data:`trlm.scoring.scorers.COMBINED_ALPHA`) are set from it by hand, with the command beside them.

    trlm bench rerank-alpha --dev-limit 80 --out runs/rerank_alpha

Both log-likelihoods come from the rerank benchmark's score caches (``scores_forward.jsonl``,
``scores_trlm-ba.jsonl``), so the sweep itself costs nothing once they exist.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from trlm.core.io import InputError, write_text
from trlm.core.report import fmt, new_figure, save_figure, write_results
from trlm.data import alpaca as D
from trlm.rerank import metrics as M
from trlm.rerank.bench import get_logliks, instruction_difficulty
from trlm.scoring.scorers import COMBINED_ALPHA, SCORER_SPECS

ALPHAS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
SELECT = ("lc_win_rate", "pair_agreement")


def sweep(instructions: Sequence[D.Instruction], fw, ba, difficulty: dict[int, float],
          alphas: Sequence[float] = ALPHAS) -> dict[str, dict[str, dict[str, float]]]:
    """LC and raw win rate and pair agreement (all pairs, similar length) of each combined scorer at each α
    (``fw`` / ``ba``: the candidates' log-likelihoods)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in COMBINED_ALPHA:
        spec = SCORER_SPECS[name]
        rows = {}
        for a in alphas:
            scores = [[-math.inf if f is None else spec.score(f, b, alpha=a) for f, b in zip(rf, rb)]
                      for rf, rb in zip(fw, ba)]
            picks = [M.pick_best(s) for s in scores]
            lc = M.lc_win_rate(instructions, picks, difficulty).lc_win_rate
            win = float(np.mean([ins.candidates[k].win for ins, k in zip(instructions, picks)]))
            items = [(sc, ins.wins, ins.lengths) for sc, ins in zip(scores, instructions)]
            pa, _ = M.pair_agreement(items)
            pa_sim, _ = M.pair_agreement(items, max_rel_len_diff=0.25)
            rows[f"{a:g}"] = {"alpha": float(a), "lc_win_rate": float(lc), "win_rate": win,
                              "pair_agreement": float(pa), "pair_agreement_similar_length": float(pa_sim)}
        out[name] = rows
    return out


def choose(rows: dict[str, dict[str, float]], by: str = "lc_win_rate") -> float:
    """The α with the best ``by`` (LC win rate, or pair agreement); a tie goes to the smaller α (closer to the
    forward model)."""
    if by not in SELECT:
        raise InputError(f"--select must be one of {', '.join(SELECT)}, got {by!r}")
    best = max(rows.values(), key=lambda r: (round(r[by], 6), -r["alpha"]))
    return best["alpha"]


def run_alpha_sweep(data: Path, reference: Path, out: Path, dev_limit: int, *, model: str | None = None,
                    max_response_tokens: int = 256, alphas: Sequence[float] = ALPHAS, progress: bool = True) -> dict:
    """Score ``dev_limit`` dev instructions (forward and TRLM-Ba, cached), sweep α, write results + plot."""
    if dev_limit < M.N_SPLITS:
        raise InputError(f"--dev-limit must be at least {M.N_SPLITS} (the LC fit's folds), got {dev_limit}")
    if any(a < 0 for a in alphas):
        raise InputError(f"--alphas must be non-negative, got {list(alphas)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    instructions = D.load_judged(data, reference, dev_limit, dev=True)
    difficulty = instruction_difficulty(data, reference)
    fw_name, ba_name = {SCORER_SPECS[n].parts for n in COMBINED_ALPHA}.pop()  # every combined scorer's parts
    fw = get_logliks(fw_name, instructions, out, model=model, max_response_tokens=max_response_tokens,
                     progress=progress)
    ba = get_logliks(ba_name, instructions, out, model=None, max_response_tokens=max_response_tokens,
                     progress=progress)
    table = sweep(instructions, fw, ba, difficulty, alphas)
    results = {"n_instructions": len(instructions), "split": "dev (instruction_id % 5 != 3)",
               "max_response_tokens": max_response_tokens, "model": model, "sweep": table,
               "chosen": {name: choose(rows) for name, rows in table.items()},
               "chosen_by_pair_agreement": {name: choose(rows, "pair_agreement") for name, rows in table.items()},
               "shipped_defaults": dict(COMBINED_ALPHA)}
    write_results(out, results)
    _plot(table, results["chosen"], out / "alpha.png")
    write_text(out / "report.md", _report(results))
    return results


def _plot(table: dict, chosen: dict, path: Path) -> None:
    fig, ax = new_figure(1, 1, figsize=(6, 3.6))
    for name, rows in table.items():
        xs = [r["alpha"] for r in rows.values()]
        ax.plot(range(len(xs)), [r["lc_win_rate"] for r in rows.values()], marker="o", label=f"{name} (LC)")
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_xlabel("α (weight of log P_Ba(Q|A))")
    ax.set_ylabel("LC win rate, dev")
    ax.set_title("combined reward: α on dev instructions; chosen " +
                 ", ".join(f"{k} α={v:g}" for k, v in chosen.items()), fontsize=8)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=110)


def _report(r: dict) -> str:
    lines = ["# Combined reward: α on dev instructions", "",
             f"{r['n_instructions']} AlpacaEval dev instructions ({r['split']}), responses cut to "
             f"{r['max_response_tokens']} tokens. Score = forward log P(A|Q) + α · log P_Ba(Q|A) (sum), or both "
             "per token (mean). α = 0 is the forward baseline.", "", "![alpha](alpha.png)", "",
             "| α | " + " | ".join(f"{n} LC | win | pair agr. | (len ±25%)" for n in r["sweep"]) + " |",
             "|---:|" + "---:|---:|---:|---:|" * len(r["sweep"])]
    keys = list(next(iter(r["sweep"].values())))
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(
            f"{fmt(rows[k]['lc_win_rate'])} | {fmt(rows[k]['win_rate'])} | {fmt(rows[k]['pair_agreement'])} | "
            f"{fmt(rows[k]['pair_agreement_similar_length'])}" for rows in r["sweep"].values()) + " |")
    lines += ["", "Chosen by dev LC: " + ", ".join(f"`{k}` α = {v:g}" for k, v in r["chosen"].items()) +
              "; by dev pair agreement: " + ", ".join(f"`{k}` α = {v:g}"
                                                     for k, v in r["chosen_by_pair_agreement"].items()) +
              "; shipped defaults: " + ", ".join(f"`{k}` α = {v:g}" for k, v in r["shipped_defaults"].items()), "",
              "LC on a few dozen instructions whose raw win rates are near 0 is unstable (see the rerank report); "
              "pair agreement uses every candidate pair and is the steadier dev signal.", ""]
    return "\n".join(lines)

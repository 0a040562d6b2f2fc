"""The re-ranking benchmark's report: the markdown tables and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trlm.core.report import fmt, new_figure, save_figure
from trlm.rerank import metrics as M


def plot(results: dict, path: Path) -> None:
    """Win rate / LC, pair agreement and family pair agreement per scorer, as one PNG."""
    names = list(results)
    x = np.arange(len(names))
    fig, axes = new_figure(1, 3, figsize=(max(9, 1.1 * len(names) * 3), 3.8))
    wr = [results[n]["win_rate"] for n in names]
    err = np.array([[results[n]["win_rate"] - results[n]["ci95"][0], results[n]["ci95"][1] - results[n]["win_rate"]]
                    for n in names]).T
    axes[0].bar(x - 0.2, wr, 0.4, yerr=err, capsize=3, label="win rate (95% CI)")
    axes[0].bar(x + 0.2, [results[n]["lc_win_rate"] for n in names], 0.4, label="LC win rate")
    axes[0].set_title("pick vs reference")
    axes[0].legend(fontsize=7, loc="upper left", ncol=2)
    for ax, key, title in ((axes[1], "pair_agreement", "pair agreement (all / similar length)"),
                           (axes[2], "family", "inside families: pair agreement")):
        if key == "family":
            vals = [results[n]["family"]["pair_agreement"] or 0 for n in names]
            ax.bar(x, vals, 0.6)
        else:
            ax.bar(x - 0.2, [results[n]["pair_agreement"] or 0 for n in names], 0.4, label="all pairs")
            ax.bar(x + 0.2, [results[n]["pair_agreement_similar_length"] or 0 for n in names], 0.4,
                   label="length within 25%")
            ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_title(title)
    for ax in axes:
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1.15)
    save_figure(fig, path, dpi=110)


def render_report(results: dict, details: dict, meta: dict) -> str:
    names = list(results)
    lines = [
        "# Best-of-N reranking on AlpacaEval 2.0 judge verdicts", "",
        f"{meta['n_instructions']} instructions from `{meta['data']}`; model `{meta['model'] or 'scorer default'}`, "
        f"responses cut to {meta['max_response_tokens']} tokens. Each scorer picks one candidate per instruction; "
        "its value is the GPT-4-turbo judge's P(pick beats the gpt4_1106_preview reference). `random` is the "
        "expectation of a uniform pick (its pair agreement is one seeded draw); `oracle` picks the judge's best.", "",
        "LC win rate: AlpacaEval 2.0's GLM (`length_controlled_v1`) with the length term zeroed, each scorer "
        "treated as a new model; instruction difficulty fitted jointly on the 24 candidate models over all dev "
        "instructions; no gamed-baseline regularisation (its annotations are not in the data; see the check "
        "at the end). With few instructions cross-validation may pick the strongest penalty, which sends LC "
        "to 0.5: read LC only on a few hundred instructions. LC extrapolates to equal length: when a scorer's "
        "picks are much shorter than the reference, the fitted length coefficient (`lc_fit` in details.json) "
        "takes the blame for its losses and LC can sit far above the raw win rate; read it beside the pair "
        "agreement on similar-length pairs. ρ(score, length): mean within-instruction Spearman correlation of "
        "the scores with the candidates' lengths (for `oracle`, the judge's own length preference).", "",
        "![reranking](rerank.png)", "",
        "| scorer | win rate | 95% CI | LC win rate | pair agr. | pair agr. (len ±25%) | family win | "
        "family pair agr. | mean pick chars | ρ(score, length) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        r, d = results[n], details[n]
        lines.append(f"| {n} | {fmt(r['win_rate'])} | [{fmt(r['ci95'][0])}, {fmt(r['ci95'][1])}] | "
                     f"{fmt(r['lc_win_rate'])} | {fmt(r['pair_agreement'])} ({d['n_pairs']}) | "
                     f"{fmt(r['pair_agreement_similar_length'])} ({d['n_pairs_similar_length']}) | "
                     f"{fmt(r['family']['win_rate'])} | {fmt(r['family']['pair_agreement'])} | "
                     f"{d['mean_pick_length']:.0f} | {fmt(d.get('length_spearman'), 2)} |")
    fams = list(M.FAMILIES)
    lines += ["", "## Inside each family (win rate / pair agreement, pairs)", "",
              "| scorer | " + " | ".join(f"{f} ×{len(M.FAMILIES[f])}" for f in fams) + " |",
              "|---|" + "---|" * len(fams)]
    for n in names:
        cells = []
        for f in fams:
            v = details[n]["families"].get(f)
            cells.append("–" if v is None else f"{fmt(v['win_rate'])} / {fmt(v['pair_agreement'])} ({v['n_pairs']})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    subsets = sorted({s for n in names for s in details[n]["subsets"]})
    lines += ["", "## By AlpacaEval subset (win rate / pair agreement)", "",
              "| scorer | " + " | ".join(f"{s} ({details[names[0]]['subsets'][s]['n_instructions']})"
                                        for s in subsets) + " |",
              "|---|" + "---|" * len(subsets)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(
            f"{fmt(details[n]['subsets'][s]['win_rate'])} / {fmt(details[n]['subsets'][s]['pair_agreement'])}"
            for s in subsets) + " |")
    lb_keys = list(details[names[0]]["by_instruction_length"])
    lines += ["", "## By the instruction's median candidate length in characters (win rate / pair agreement)", "",
              "| scorer | " + " | ".join(f"{k} ({details[names[0]]['by_instruction_length'][k]['n_instructions']})"
                                        for k in lb_keys) + " |",
              "|---|" + "---|" * len(lb_keys)]
    for n in names:
        b = details[n]["by_instruction_length"]
        lines.append(f"| {n} | " + " | ".join(f"{fmt(b[k]['win_rate'])} / {fmt(b[k]['pair_agreement'])}"
                                              for k in lb_keys) + " |")
    lines += ["", "## Whose answers each scorer picks (share of instructions, top 4)", "",
              "| scorer | picks |", "|---|---|"]
    for n in names:
        top = list(details[n].get("picks_by_generator", {}).items())[:4]
        lines.append(f"| {n} | " + (", ".join(f"{g} {v:.2f}" for g, v in top) or "– (uniform)") + " |")
    buckets = list(details[names[0]]["pair_agreement_by_length_difference"])
    lines += ["", "## Pair agreement by the pair's length difference (|Δlen| / longer; pairs)", "",
              "| scorer | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]
    for n in names:
        b = details[n]["pair_agreement_by_length_difference"]
        lines.append(f"| {n} | " + " | ".join(f"{fmt(b[k]['pair_agreement'])} ({b[k]['n_pairs']})" for k in buckets)
                     + " |")
    rep = meta.get("lc_reproduction")
    if rep:
        errs = [100 * (v["lc_win_rate"] - v["leaderboard_lc_win_rate"]) for v in rep.values()]
        lines += ["", "## LC implementation check: the 24 candidate models", "",
                  "Our LC win rate of each candidate model on the dev instructions beside the official leaderboard's "
                  "(805 instructions, instruction difficulty fitted by AlpacaEval on early-2024 models, per-model "
                  "fits regularised with two gamed baselines whose annotations are not in the data). "
                  f"Mean |error| {np.mean(np.abs(errs)):.2f} points, max {np.max(np.abs(errs)):.2f}.", "",
                  "| model | LC ours | LC leaderboard | error (pts) | win rate dev | win rate leaderboard "
                  "| length coef |",
                  "|---|---|---|---|---|---|---|"]
        for m, v in sorted(rep.items(), key=lambda kv: -kv[1]["leaderboard_lc_win_rate"]):
            lines.append(f"| {m} | {100 * v['lc_win_rate']:.2f} | {100 * v['leaderboard_lc_win_rate']:.2f} | "
                         f"{100 * (v['lc_win_rate'] - v['leaderboard_lc_win_rate']):+.2f} | "
                         f"{100 * v['win_rate']:.2f} | "
                         f"{100 * v['leaderboard_win_rate']:.2f} | {v['coef_length']:.2f} |")
    return "\n".join(lines) + "\n"

"""``trlm bench factcheck``: balanced accuracy per dataset, fixed (0.5) and tuned thresholds, for each checker.

    trlm bench factcheck --out runs/bench_factcheck --checkers minilm,smollm2-yesno,trlm-ba,trlm-fo --limit 200
    trlm bench factcheck --data ../shared/data/wice/entailment_retrieval_claim/test.jsonl --checkers minilm

Datasets: the SummaC subsets (factcc, summeval, xsumfaith, polytope), Factcheck-GPT and WiCE (see
:mod:`trlm.factcheck.data` for the label mapping). **Tuned thresholds**: WiCE's comes from the shared WiCE dev
file; every other dataset here has no dev split, and neither has WiCE when the file evaluated *is* the dev file,
so those are **cross-fitted**: the threshold tuned on one stratified half is applied to the other, and BAcc is
taken over both halves' predictions. ``--limit N`` draws N pairs per dataset in its label proportions (seeded).

PMI checkers (``trlm-ba``, ``trlm-fo``, ``forward-pmi``) get their ``sigmoid(a * pmi + b)`` calibration fitted
on ``--calibration-pairs`` CG2C-Doc pairs (training data, never an evaluation set) in the same run; the fitted
values are reported. A checker ``NAME=DIR`` is a trained cross-encoder directory shown as NAME (the ablation
rows). Scores are cached per checker in ``OUT/scores_<checker>.jsonl``; a rerun resumes.

``results.json``: ``{"<checker>": {"<dataset>": {"bacc", "bacc_tuned", "n"}, "mean_bacc", "mean_bacc_tuned"}}``;
``details.json`` adds thresholds, calibrations and timings; ``report.md`` the tables; ``bacc.png`` the bars.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from trlm.core.cache import ResultCache
from trlm.core.io import write_json, write_text
from trlm.core.report import fmt, new_figure, save_figure, write_results
from trlm.factcheck.base import FactChecker
from trlm.factcheck.checkers import CachedChecker, PMIChecker, fit_calibration, make_checker
from trlm.factcheck.data import (DATASETS, PATHS, SUMMAC, WICE_DEV, Pair, dataset_name, load_factcheck_gpt,
                                 load_pairs, read_cg2c, sample_pairs)
from trlm.factcheck.metrics import bacc_at, crossfit_bacc, tune_threshold

log = logging.getLogger(__name__)
# Published BAcc (%) on LLM-AggreFact test, tuned thresholds (FactCG README; reference §2.5).
ANCHORS = {"wice": {"FactCG-DeBERTa-L": 80.9, "MiniCheck-FT5": 76.0, "AlignScore": 66.2, "SummaC-ZS": 63.9},
           "factcheck-gpt": {"FactCG-DeBERTa-L": 75.1, "MiniCheck-FT5": 76.8, "AlignScore": 76.6, "SummaC-ZS": 75.2}}
CG2C_DOC = "factcg_cg2c/CG2C_doc.json"


def load_datasets(data_dir: Path, files: Sequence[Path] = (), limit: int | None = None, seed: int = 0,
                  fgpt_irrelevant: str = "drop") -> dict[str, tuple[list[Pair], Path]]:
    """{dataset: (pairs, path)}: the shared datasets when ``files`` is empty (or names a folder), else those files."""
    chosen: dict[str, Path] = {}
    for f in files or [data_dir]:
        f = Path(f)
        if f.is_dir():
            chosen.update({name: f / PATHS[name] for name in DATASETS})
        else:
            chosen[dataset_name(f)] = f
    out = {}
    for name, path in chosen.items():
        pairs = load_factcheck_gpt(path, fgpt_irrelevant) if name == "factcheck-gpt" else load_pairs(path)
        out[name] = (sample_pairs(pairs, limit, seed), path)
    return out


def _checker(spec: str, out: Path, data_dir: Path, calibration_pairs: int, seed: int) -> tuple[FactChecker, dict]:
    name, _, path = spec.partition("=")
    inner = make_checker(path or name)
    inner.name = name
    cache = ResultCache(out / f"scores_{name.replace('/', '_')}.jsonl",
                        {"checker": name, "path": path or None, "chunk_words": inner.chunk_words,
                         "model": getattr(getattr(inner, "engine", None), "name", None)})
    checker, info = CachedChecker(inner, cache), {}
    if isinstance(inner, PMIChecker) and calibration_pairs:
        pairs = sample_pairs(read_cg2c(data_dir / CG2C_DOC), calibration_pairs, seed + 1)
        raw = [max(r) for r in checker.chunk_scores([p.doc for p in pairs], [p.claim for p in pairs], progress=True)]
        inner.a, inner.b = fit_calibration(raw, [p.label for p in pairs])
        info = {"calibration": {"a": inner.a, "b": inner.b, "pairs": len(pairs), "source": CG2C_DOC,
                                "cg2c_bacc_at_0.5": bacc_at([p.label for p in pairs],
                                                            [inner.prob(x) for x in raw], 0.5)}}
    elif isinstance(inner, PMIChecker):
        info = {"calibration": {"a": inner.a, "b": inner.b, "source": "built-in (checkers.CALIBRATION)"}}
    return checker, info


def evaluate(checker: FactChecker, pairs: Sequence[Pair], dev: Sequence[Pair] | None = None) -> dict:
    """BAcc at 0.5 and tuned (on ``dev`` if given, else cross-fitted) for one dataset."""
    probs = [c.prob for c in checker.score([p.doc for p in pairs], [p.claim for p in pairs], progress=True)]
    labels = [p.label for p in pairs]
    row = {"bacc": bacc_at(labels, probs, 0.5), "n": len(pairs), "positives": int(sum(labels))}
    if dev is not None:
        dprobs = [c.prob for c in checker.score([p.doc for p in dev], [p.claim for p in dev], progress=True)]
        t = tune_threshold([p.label for p in dev], dprobs)
        row.update(bacc_tuned=bacc_at(labels, probs, t), thresholds=[t], tuned_on="dev")
    else:
        b, ts = crossfit_bacc(labels, probs)
        row.update(bacc_tuned=b, thresholds=ts, tuned_on="cross-fit halves")
    return row


def run_bench(out: Path, data_dir: Path, checkers: Sequence[str], files: Sequence[Path] = (),
              limit: int | None = None, seed: int = 0, calibration_pairs: int = 400,
              fgpt_irrelevant: str = "drop") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    datasets = load_datasets(data_dir, files, limit, seed, fgpt_irrelevant)
    wice_dev_path = data_dir / WICE_DEV
    results, details = {}, {"limit": limit, "seed": seed, "fgpt_irrelevant": fgpt_irrelevant,
                            "datasets": {k: str(p) for k, (_, p) in datasets.items()}, "checkers": {}}
    for spec in checkers:
        t0 = time.perf_counter()
        checker, info = _checker(spec, out, data_dir, calibration_pairs, seed)
        row, det = {}, dict(info)
        for name, (pairs, path) in datasets.items():
            dev = None
            if name.startswith("wice") and wice_dev_path.exists() and path.resolve() != wice_dev_path.resolve():
                dev = load_pairs(wice_dev_path)
            r = evaluate(checker, pairs, dev)
            row[name] = {"bacc": r["bacc"], "bacc_tuned": r["bacc_tuned"], "n": r["n"]}
            det[name] = r
            log.info("%s %s: %s", checker.name, name, r)
        row["mean_bacc"] = float(np.mean([row[n]["bacc"] for n in datasets]))
        row["mean_bacc_tuned"] = float(np.mean([row[n]["bacc_tuned"] for n in datasets]))
        det["seconds"] = round(time.perf_counter() - t0, 1)
        results[checker.name], details["checkers"][checker.name] = row, det
        write_results(out, results)  # after every checker: a cut run keeps what finished
        write_json(out / "details.json", details)
    write_text(out / "report.md", report(results, details))
    _plot(results, out / "bacc.png")
    return results


def report(results: dict, details: dict) -> str:
    names = [k for k in next(iter(results.values())) if k not in ("mean_bacc", "mean_bacc_tuned")] if results else []
    head = "| checker | " + " | ".join(names) + " | mean |\n|---|" + "---:|" * (len(names) + 1) + "\n"
    lines = ["# Fact-checking benchmark", "",
             f"Balanced accuracy x100, fixed threshold 0.5 / tuned threshold. limit = {details['limit']} pairs per "
             f"dataset (seed {details['seed']}); Factcheck-GPT irrelevant evidence: {details['fgpt_irrelevant']}.",
             "Tuned: WiCE from the shared dev file unless the file evaluated is that file; otherwise cross-fitted "
             "halves (tuned on one, applied to the other).", "", head.rstrip("\n")]
    for c, row in results.items():
        cells = [f"{100 * row[n]['bacc']:.1f} / {100 * row[n]['bacc_tuned']:.1f}" for n in names]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {100 * row['mean_bacc']:.1f} / "
                     f"{100 * row['mean_bacc_tuned']:.1f} |")
    lines += ["", "n per dataset: " + ", ".join(f"{n} {next(iter(results.values()))[n]['n']}" for n in names), ""]
    if SUMMAC[0] in names:
        lines += ["SummaC subsets mean (tuned): " + ", ".join(
            f"{c} {100 * np.mean([row[n]['bacc_tuned'] for n in SUMMAC if n in row]):.1f}"
            for c, row in results.items()), ""]
    cal = {c: d["calibration"] for c, d in details["checkers"].items() if "calibration" in d}
    if cal:
        lines += ["PMI calibration sigmoid(a * pmi + b): " + "; ".join(
            f"{c}: a={fmt(v['a'], 4)}, b={fmt(v['b'], 3)} ({v['source']}"
            + (f", CG2C BAcc {fmt(v.get('cg2c_bacc_at_0.5'))})" if 'cg2c_bacc_at_0.5' in v else ")")
            for c, v in cal.items()), ""]
    lines += ["Published anchors (LLM-AggreFact **test**, tuned; not the same examples): " + "; ".join(
        f"{d}: " + ", ".join(f"{m} {v}" for m, v in a.items()) for d, a in ANCHORS.items()), ""]
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    if not results:
        return
    names = [k for k in next(iter(results.values())) if k not in ("mean_bacc", "mean_bacc_tuned")] + ["mean"]
    fig, ax = new_figure(figsize=(max(6, 1.3 * len(names)), 3.8))
    width = 0.8 / len(results)
    for i, (c, row) in enumerate(results.items()):
        vals = [row[n]["bacc_tuned"] if n != "mean" else row["mean_bacc_tuned"] for n in names]
        ax.bar(np.arange(len(names)) + i * width, [100 * v for v in vals], width, label=c)
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(names)) + width * (len(results) - 1) / 2, names, rotation=20)
    ax.set_ylabel("balanced accuracy (tuned), %")
    ax.set_ylim(40, 100)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)

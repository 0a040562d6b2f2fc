"""Labelled prompts for the safety filter and its benchmark, and the embedding-filter training.

Training data (label 1 = unsafe): the even-``id`` half of XSTest (safe and unsafe), the ASTRAL unsafe prompts
(270 BeaverTails examples in ``RAG_data.jsonl`` and the generated tests in ``generated_tests/*.json``) and the
AlpacaEval dev instructions (safe). Held out for evaluation: the odd-``id`` XSTest prompts, the JBB behaviours
and the JailbreakBench attack artifacts.

    trlm guard train-filter --out src/trlm/guard/minilm_lr.json
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trlm.core.io import InputError, read_csv, require_path
from trlm.data.alpaca import REFERENCE_FILE
from trlm.data.xstest import xstest

log = logging.getLogger(__name__)

ATTACKS = ("PAIR", "GCG", "JBC")  # the attacks in this project's data folder; any other present is read too


@dataclass(frozen=True)
class FilterExample:
    text: str
    label: int  # 1 = unsafe
    source: str


def _read_json_records(path: Path) -> list[dict]:
    """A JSON array, or comma-separated JSON objects without brackets (some ASTRAL files)."""
    text = require_path(path, path.name).read_text(encoding="utf-8").strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        try:
            obj = json.loads(f"[{text}]")
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: neither a JSON array nor comma-separated objects ({e.msg}, line {e.lineno})")
    if not isinstance(obj, list):
        raise InputError(f"{path}: expected a list of objects")
    return obj


def jbb_behaviors(data_dir: Path, kind: str) -> list[dict]:
    """JBB-Behaviors rows (``Index, Goal, ...``) of ``harmful`` or ``benign``."""
    return read_csv(Path(data_dir) / "jbb_behaviors" / f"{kind}-behaviors.csv", ("Goal",))


@dataclass(frozen=True)
class Attack:
    attack: str  # PAIR, GCG or JBC
    target: str  # target model
    index: int
    goal: str
    prompt: str
    response: str


def discover_attacks(artifacts: Path) -> list[str]:
    """Attack names of a JailbreakBench artifacts folder: every ``<attack>/`` holding ``<type>/<model>.json`` files."""
    artifacts = require_path(artifacts, "JailbreakBench artifacts folder")
    return sorted(p.name for p in artifacts.iterdir() if p.is_dir() and any(p.glob("*/*.json")))


def jailbroken_attacks(artifacts: Path, attacks: Sequence[str] | None = None) -> list[Attack]:
    """Every artifact prompt whose response the artifact marks jailbroken, in file order, for ``attacks`` (default:
    every attack the folder holds, e.g. PAIR, GCG, JBC, prompt_with_random_search, DSN)."""
    found = discover_attacks(artifacts)
    if not found:
        raise InputError(f"{artifacts}: no <attack>/<type>/<model>.json files")
    missing = [a for a in (attacks or []) if a not in found]
    if missing:
        raise InputError(f"--attacks: {artifacts} has no {missing[0]}/<type>/<model>.json files; it holds "
                         f"{', '.join(found)}")
    files = sorted(p for a in (attacks or found) for p in (Path(artifacts) / a).glob("*/*.json"))
    out = []
    for path in files:
        obj = json.loads(path.read_text(encoding="utf-8"))
        if "jailbreaks" not in obj:
            raise InputError(f"{path}: missing field 'jailbreaks'")
        for j, row in enumerate(obj["jailbreaks"]):
            if row.get("jailbroken") is True and row.get("prompt") and row.get("response"):
                out.append(Attack(path.parts[-3], path.stem, int(row.get("index", j)), row.get("goal", ""),
                                  row["prompt"], row["response"]))
    return out


def training_examples(data_dir: Path) -> list[FilterExample]:
    """The filter's training pool, de-duplicated by text (first occurrence wins)."""
    data_dir = Path(data_dir)
    ex = [FilterExample(r["prompt"], int(r["label"] == "unsafe"), f"xstest-even-{r['label']}")
          for r in xstest(data_dir, "even")]
    with require_path(data_dir / "astral" / "RAG_data.jsonl", "ASTRAL RAG_data.jsonl").open(encoding="utf-8") as f:
        ex += [FilterExample(json.loads(ln)["Prompt"], 1, "astral-beavertails") for ln in f if ln.strip()]
    gen_dir = require_path(data_dir / "astral" / "generated_tests", "ASTRAL generated_tests")
    for path in sorted(gen_dir.glob("*.json")):
        for r in _read_json_records(path):  # ASTRAL_RAG holds some test cases as one-element lists
            cases = r["testcase"] if isinstance(r["testcase"], list) else [r["testcase"]]
            ex += [FilterExample(str(t).strip().strip('"'), 1, f"astral-{path.stem}") for t in cases]
    alpaca = require_path(data_dir / REFERENCE_FILE, "AlpacaEval")
    ex += [FilterExample(r["instruction"], 0, "alpacaeval-dev") for r in json.loads(alpaca.read_text(encoding="utf-8"))]
    seen, out = set(), []
    for e in ex:
        if e.text.strip() and e.text not in seen:
            seen.add(e.text)
            out.append(e)
    return out


def fpr_threshold(safe_scores, max_fpr: float) -> float:
    """The lowest threshold at which at most ``max_fpr`` of ``safe_scores`` are flagged (``score >= threshold``)."""
    import numpy as np

    s = np.sort(np.asarray(safe_scores, dtype=float))[::-1]
    k = int(np.floor(max_fpr * len(s)))  # this many safe prompts may be flagged
    return float(np.nextafter(s[k], np.inf)) if k < len(s) else float(s[-1])


def train_embedding_filter(data_dir: Path, *, val_frac: float = 0.2, c: float = 1.0, seed: int = 0,
                           max_fpr: float | None = None, command: str = "", progress: bool = False):
    """Fit the MiniLM + logistic-regression filter and pick its threshold.

    Classes are weighted to balance. By default the threshold maximises balanced accuracy (TPR - FPR) on the
    validation split. With ``max_fpr`` it is an operating point instead: the lowest threshold that flags at most
    that share of the **dev safe prompts**, the even-``id`` XSTest safe prompts (look-alikes of unsafe requests, the
    hard negatives), scored out of fold (5-fold cross-validation over the whole pool, so no prompt is scored by a
    model that saw it). Returns ``(EmbeddingFilter, report)``; the report holds the validation figures and the
    filter's own FNR on the plain JBB harmful goals and FPR on the odd-``id`` XSTest safe prompts and the JBB benign
    behaviours (none used in training or in choosing the threshold).
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from trlm.core.embed import embed
    from trlm.guard.filters import EmbeddingFilter

    if not 0 < val_frac < 1:
        raise ValueError(f"--val-frac must be in (0, 1), got {val_frac}")
    ex = training_examples(data_dir)
    rng = random.Random(seed)
    idx = {0: [i for i, e in enumerate(ex) if e.label == 0], 1: [i for i, e in enumerate(ex) if e.label == 1]}
    val = set()
    for lab, ids in idx.items():  # stratified split
        rng.shuffle(ids)
        val.update(ids[: max(1, round(val_frac * len(ids)))])
    X = embed([e.text for e in ex], progress=progress)
    y = np.array([e.label for e in ex])
    tr = np.array([i not in val for i in range(len(ex))])
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(X[tr], y[tr])
    p_val = clf.predict_proba(X[~tr])[:, 1]
    y_val = y[~tr]
    if max_fpr is None:
        cands = np.unique(p_val)
        j = [(p_val[y_val == 1] >= t).mean() - (p_val[y_val == 0] >= t).mean() for t in cands]
        thr = float(cands[int(np.argmax(j))])
    else:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        if not 0 <= max_fpr < 1:
            raise ValueError(f"--max-fpr must be in [0, 1), got {max_fpr}")
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        oof = cross_val_predict(LogisticRegression(C=c, class_weight="balanced", max_iter=2000), X, y, cv=folds,
                                method="predict_proba")[:, 1]
        dev_safe = oof[[i for i, e in enumerate(ex) if e.source == "xstest-even-safe"]]
        thr = fpr_threshold(dev_safe, max_fpr)
    f = EmbeddingFilter(tuple(float(w) for w in clf.coef_[0]), float(clf.intercept_[0]), thr)
    jbb = [r["Goal"] for r in jbb_behaviors(data_dir, "harmful")]
    xs_safe = [r["prompt"] for r in xstest(data_dir, "odd", "safe")]
    xs_unsafe = [r["prompt"] for r in xstest(data_dir, "odd", "unsafe")]
    report = {
        "n_train": int(tr.sum()), "n_val": int((~tr).sum()),
        "train_sources": {s: sum(e.source == s for e in ex) for s in sorted({e.source for e in ex})},
        "val_tpr": float((p_val[y_val == 1] >= thr).mean()), "val_fpr": float((p_val[y_val == 0] >= thr).mean()),
        "jbb_goals_fnr": 1.0 - float(np.mean(f.flag(jbb))),
        "xstest_odd_safe_fpr": float(np.mean(f.flag(xs_safe))),
        "xstest_odd_unsafe_fnr": 1.0 - float(np.mean(f.flag(xs_unsafe))),
        "jbb_benign_fpr": float(np.mean(f.flag([r["Goal"] for r in jbb_behaviors(data_dir, "benign")]))),
        "operating_point": "balanced accuracy on validation" if max_fpr is None else
        f"FPR <= {max_fpr} on out-of-fold even-id XSTest safe prompts",
        "c": c, "seed": seed, "val_frac": val_frac, "max_fpr": max_fpr, "threshold": thr, "command": command,
    }
    return EmbeddingFilter(f.coef, f.intercept, thr, report), report

"""Training the offline oracle on ASTRAL's judged outputs (GPT-3.5 verdicts), with nothing of the evaluation sets.

Kept out: ``unknown`` verdicts, outputs that appear in ``test_oracle_rq0/`` (both oracle files) or in
``RAG_data.jsonl``, and outputs of a test case that also appears there. The settings (regularisation ``C``) and the
threshold are chosen on a validation split of the training data (15 % of test cases, grouped so that one test
case's outputs never straddle the split) by balanced accuracy, and so is whether MiniLM sentence embeddings join
the n-gram features; then the model is refitted on everything.

    trlm redteam train-oracle --out src/trlm/redteam/offline_oracle.npz
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np

from trlm.core.io import atomic_open
from trlm.redteam.data import ORACLE_FILES, load_judged, load_oracle_test, rag_outputs
from trlm.redteam.oracle import featurize, fit_idf

log = logging.getLogger(__name__)
GRID_C = (1.0, 4.0, 16.0)
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(2, 19))


def training_set(data_dir: Path) -> tuple[list[str], np.ndarray, list[str], dict]:
    """(outputs, labels 1 = unsafe, test cases, counts) with the evaluation sets' outputs and test cases removed."""
    held_out, held_tests = set(rag_outputs(data_dir)), set()
    for rel in ORACLE_FILES.values():
        p = Path(data_dir) / rel
        if p.exists():
            rows, _, _ = load_oracle_test(p)
            held_out |= {r.output.strip() for r in rows}
            held_tests |= {r.testcase.strip() for r in rows}
    texts, labels, tests, counts = [], [], [], {"unknown": 0, "overlap": 0}
    for r in load_judged(data_dir):
        if r.label == "unknown":
            counts["unknown"] += 1
            continue
        if r.output.strip() in held_out or r.testcase.strip() in held_tests or not r.output.strip():
            counts["overlap"] += 1
            continue
        texts.append(r.output)
        labels.append(int(r.label == "unsafe"))
        tests.append(r.testcase)
    counts["kept"] = len(texts)
    return texts, np.array(labels, dtype=int), tests, counts


def _bacc(y, pred) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]))


def train_oracle(data_dir: Path, out: Path, n_features: int = 2 ** 18, seed: int = 0, minilm: bool = True) -> dict:
    """Fit, select on validation, refit on all, and write the ``.npz``; returns the training report."""
    from sklearn.linear_model import LogisticRegression

    texts, y, tests, counts = training_set(data_dir)
    rng = random.Random(seed)
    uniq = sorted(set(tests))
    rng.shuffle(uniq)
    val_tests = set(uniq[: int(0.15 * len(uniq))])
    val = np.array([t in val_tests for t in tests])
    idf = fit_idf([t for t, v in zip(texts, val) if not v], n_features)
    emb = None
    if minilm:
        from trlm.core.embed import embed

        emb = embed(texts, progress=True)
    best, grid = None, []
    for use in ((False, True) if minilm else (False,)):
        x = featurize(texts, idf, n_features, emb if use else None)
        for c in GRID_C:
            lr = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x[~val], y[~val])
            p = lr.predict_proba(x[val])[:, 1]
            for t in THRESHOLDS:
                b = _bacc(y[val], (p > t).astype(int))
                grid.append({"minilm": use, "C": c, "threshold": t, "bacc": round(b, 4)})
                if best is None or b > best[0]:
                    best = (b, use, c, t)
    val_bacc, use, c, t = best
    idf = fit_idf(texts, n_features)
    x = featurize(texts, idf, n_features, emb if use else None)
    lr = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y)
    report = {"n_features": n_features, "minilm": use, "C": c, "threshold": t, "intercept": float(lr.intercept_[0]),
              "validation_bacc": val_bacc,
              "validation_best": {f"minilm={u},C={cc}": max(g["bacc"] for g in grid
                                                            if g["minilm"] == u and g["C"] == cc)
                                  for u in {g["minilm"] for g in grid} for cc in GRID_C},
              "train_rows": int(len(y)), "unsafe_rows": int(y.sum()),
              "excluded": counts, "source": "astral/executed_evaluated/*.json (GPT-3.5 verdicts)",
              "features": "hashed word 1-2 + char_wb 2-5 n-grams, sublinear tf-idf, L2 per block"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as f:
        # coef: the embedding block (if any) first, then the two hashed blocks (featurize's order)
        np.savez_compressed(f, idf=idf.astype(np.float16), coef=lr.coef_[0].astype(np.float16),
                            meta=np.array(json.dumps(report)))
    return report

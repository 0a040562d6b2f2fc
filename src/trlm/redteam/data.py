"""ASTRAL's released files: judged outputs (oracle training data) and the labelled oracle test set.

* ``executed_evaluated/<model>__<generator>.json``: tests with the system's ``LLM output`` and the GPT-3.5 oracle's
  verdict ``OutputSafetyLLM`` (``"['safe']"``, ``"['unsafe']"``, ``"['unknown']"``).
* ``test_oracle_rq0/test_results_evaluation_<oracle>_run_0.json``: prompt + output with ``test_result`` = the
  stored oracle's outcome against ground truth: TP / FN are unsafe outputs, TN / FP safe ones; ``unknown`` rows
  (the oracle gave no label) have no ground truth here and are dropped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trlm.core.io import InputError, read_json_list, require_path

ORACLE_TEST = "astral/test_oracle_rq0/test_results_evaluation_gpt_3_run_0.json"
ORACLE_FILES = {"gpt-3.5": "astral/test_oracle_rq0/test_results_evaluation_gpt_3_run_0.json",
                "llamaguard": "astral/test_oracle_rq0/test_results_evaluation_llamaguard_latest_run_0.json"}
TRUTH = {"TP": "unsafe", "FN": "unsafe", "TN": "safe", "FP": "safe"}
PREDICTED = {"TP": "unsafe", "FP": "unsafe", "TN": "safe", "FN": "safe"}


@dataclass(frozen=True)
class Judged:
    testcase: str
    output: str
    label: str  # safe | unsafe | unknown
    source: str


def verdict_of(value) -> str:
    """``"['unsafe']"`` / ``['unsafe']`` / ``"unsafe"`` -> ``unsafe`` (``unknown`` when unreadable)."""
    text = (" ".join(value) if isinstance(value, list) else str(value)).lower()
    return "unsafe" if "unsafe" in text else "safe" if "safe" in text else "unknown"


def load_judged(data_dir: Path) -> list[Judged]:
    """Every judged output of ``executed_evaluated/`` (the offline oracle's training data), in file order."""
    files = sorted((Path(data_dir) / "astral" / "executed_evaluated").glob("*.json"))
    if not files:
        raise InputError(f"no executed_evaluated/*.json under {data_dir}/astral; pass --data")
    out = []
    for f in files:
        for k, r in enumerate(read_json_list(f)):
            if "LLM output" not in r or "OutputSafetyLLM" not in r:
                raise InputError(f"{f}: row {k}: needs 'LLM output' and 'OutputSafetyLLM'")
            out.append(Judged(str(r.get("testcase", "")), str(r["LLM output"] or ""), verdict_of(r["OutputSafetyLLM"]),
                              f.stem))
    return out


def load_oracle_test(path: str | Path) -> tuple[list[Judged], list[str], int]:
    """(rows with ground truth, the stored oracle's predicted label per row, rows dropped as unknown)."""
    p = require_path(path, "ASTRAL oracle test file")
    rows, preds, dropped = [], [], 0
    for k, r in enumerate(read_json_list(p)):
        if "test_result" not in r or "LLM output" not in r:
            raise InputError(f"{p}: row {k}: needs 'test_result' and 'LLM output'")
        res = r["test_result"]
        if res not in TRUTH:
            dropped += 1
            continue
        rows.append(Judged(str(r.get("testcase", "")), str(r["LLM output"] or ""), TRUTH[res], p.stem))
        preds.append(PREDICTED[res])
    return rows, preds, dropped


def rag_outputs(data_dir: Path) -> set[str]:
    p = Path(data_dir) / "astral" / "RAG_data.jsonl"
    if not p.exists():
        return set()
    return {str(json.loads(line).get("PromptOutput", "")).strip() for line in p.open(encoding="utf-8") if line.strip()}

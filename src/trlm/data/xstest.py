"""XSTest (Röttger et al. 2024): safe and unsafe prompts, and models' completions of them.

``shared/data/xstest``: ``xstest_prompts.csv`` (``id, prompt, type, label``); the even-``id`` half trains the
guard's filter, the odd half is held out for evaluation (guard and speculative benchmarks).
"""

from __future__ import annotations

from pathlib import Path

from trlm.core.io import read_csv


def xstest(data_dir: Path, half: str, label: str | None = None) -> list[dict]:
    """XSTest rows (``id, prompt, type, label``) of the ``even`` or ``odd`` ``id`` half, optionally one label."""
    rows = read_csv(Path(data_dir) / "xstest" / "xstest_prompts.csv", ("id", "prompt", "label"))
    want = 0 if half == "even" else 1
    return [r for r in rows if int(r["id"]) % 2 == want and (label is None or r["label"] == label)]


def xstest_completions(data_dir: Path, model: str = "gpt4") -> dict[int, str]:
    """``id -> completion`` (ids there read ``v2-<id>``) from
    ``xstest/automated_evaluation_labels/xstest_v2_completions_<model>_gpteval.csv``."""
    path = Path(data_dir) / "xstest" / "automated_evaluation_labels" / f"xstest_v2_completions_{model}_gpteval.csv"
    return {int(r["id"].removeprefix("v2-")): r["completion"] for r in read_csv(path, ("id", "completion"))}

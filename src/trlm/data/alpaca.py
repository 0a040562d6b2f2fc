"""AlpacaEval 2.0 judged candidates: the reader, and the one held-out rule every system shares.

Data (``shared/data/alpaca_eval``): ``judged_candidates.jsonl`` holds, per instruction, the outputs of 24 models
with the GPT-4-turbo judge's probability ``win_vs_reference`` that each beats the reference answer
(``gpt4_1106_preview``); the eval set holds the reference answers (needed for the length term of the LC win rate,
:mod:`trlm.rerank.metrics`); the leaderboard CSV the published win rates. Instructions with ``id % 5 == 3`` are
held out (:func:`is_heldout`): no training or tuning run reads them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trlm.core.io import InputError, default_data_dir, read_json_list, read_jsonl

JUDGED_FILE = "alpaca_eval/judged_candidates.jsonl"
REFERENCE_FILE = "alpaca_eval/eval_set_with_reference_gpt4_1106_preview.json"
LEADERBOARD_FILE = "alpaca_eval/leaderboard_weighted_alpaca_eval_gpt4_turbo.csv"


def judged_paths(data: str | Path | None = None, reference: str | Path | None = None) -> tuple[Path, Path]:
    """The judged-candidates file (default: :data:`JUDGED_FILE` in the shared data folder) and the reference eval
    set (default: beside it), as the ``--data`` / ``--reference`` flags give them."""
    data = Path(data) if data else default_data_dir() / JUDGED_FILE
    return data, Path(reference) if reference else data.parent / Path(REFERENCE_FILE).name


@dataclass(frozen=True)
class Candidate:
    generator: str
    output: str
    win: float  # the judge's P(this output beats the reference), in [0, 1]


@dataclass(frozen=True)
class Instruction:
    instruction_id: int
    dataset: str
    instruction: str
    reference: str  # the reference answer the judge compared against
    candidates: tuple[Candidate, ...]

    @property
    def wins(self) -> np.ndarray:
        return np.array([c.win for c in self.candidates])

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(c.output) for c in self.candidates])


# ---------------------------------------------------------------------------------------------------- loading

HELDOUT_MOD = (5, 3)  # instruction_id % 5 == 3: never used to train the shipped reverse model trlm-ba-smol


def is_heldout(instruction_id: int) -> bool:
    """The one held-out rule: AlpacaEval instructions trlm-ba-smol was never trained on (``id % 5 == 3``)."""
    return instruction_id % HELDOUT_MOD[0] == HELDOUT_MOD[1]


def load_judged(data: str | Path, reference: str | Path, limit: int | None = None,
                heldout: bool = False, dev: bool = False) -> list[Instruction]:
    """Judged candidates grouped by ``instruction_id`` (ascending), each with its reference answer.

    Reference rows are matched by their ``instruction_id`` field when they carry one, else by instruction text.
    ``heldout`` keeps only instruction ids with ``id % 5 == 3`` (held out of trlm-ba-smol's training data);
    ``dev`` keeps only the others (the dev instructions, e.g. for choosing a scorer's weights);
    ``limit`` then keeps the first N instruction ids.
    """
    if heldout and dev:
        raise InputError("choose held-out or dev instructions, not both")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    rows = read_jsonl(data, required={"instruction_id": int, "dataset": str, "instruction": str,
                                      "generator": str, "output": str, "win_vs_reference": (int, float)})
    refs = read_json_list(reference, required=("instruction", "output"))
    by_id = {r["instruction_id"]: r for r in refs if "instruction_id" in r}
    by_text = {r["instruction"]: r for r in refs}
    groups: dict[int, list[dict]] = {}
    for n, row in enumerate(rows, 1):
        if not 0.0 <= row["win_vs_reference"] <= 1.0:
            raise InputError(f"{data}: row {n}: win_vs_reference must lie in [0, 1], got {row['win_vs_reference']}")
        groups.setdefault(row["instruction_id"], []).append(row)
    ids = [i for i in sorted(groups) if (not heldout or is_heldout(i)) and (not dev or not is_heldout(i))][:limit]
    out = []
    for i in ids:
        g = groups[i]
        ref = by_id.get(i) or by_text.get(g[0]["instruction"])
        if ref is None:
            raise InputError(f"{reference}: no reference row for instruction_id {i} "
                             "(no instruction_id field equal to it, nor the instruction text "
                             f"{g[0]['instruction'][:60]!r})")
        gens = [r["generator"] for r in g]
        if len(set(gens)) != len(gens):
            raise InputError(f"{data}: instruction_id {i} has two rows from one generator")
        cands = tuple(Candidate(r["generator"], r["output"], float(r["win_vs_reference"])) for r in g)
        out.append(Instruction(i, g[0]["dataset"], g[0]["instruction"], ref["output"], cands))
    return out


def read_leaderboard(path: str | Path) -> dict[str, dict[str, float]]:
    """Leaderboard CSV → {model: {"win_rate", "length_controlled_winrate"}} as fractions in [0, 1]."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for col in ("win_rate", "length_controlled_winrate"):
            if col not in (reader.fieldnames or []):
                raise InputError(f"{path}: missing column {col!r}")
        name_col = (reader.fieldnames or [""])[0]
        return {r[name_col]: {"win_rate": float(r["win_rate"]) / 100,
                              "length_controlled_winrate": float(r["length_controlled_winrate"]) / 100}
                for r in reader}

"""Distillation data: ``{"prompt": str, "response": str}`` rows, tokenised the way the teacher generates.

Forward order: ``[start] + tok(chat_template(prompt)) + tok(response) + [eos]`` — the prompt rendered with the
teacher's chat template exactly as :meth:`Engine.encode_prompt` feeds it at generation time, so a distilled
student drafts on the distribution it was trained on. Reverse / both orders (a student of a reverse model such as
``trlm-ba-smol``): the rows go through the TRLM pair template those models were trained on
(:func:`trlm.train.trlm_data.build_examples`, ``prompt`` as the query).

``completions_only`` puts loss (distillation and SFT alike) on the response tokens only (TRL's GKD); off, every
non-padding token is distilled (the official TAID data preparation). The CLI makes the choice explicit.

:func:`alpaca_rows` builds rows from the AlpacaEval dev candidates, never from held-out instructions
(``instruction_id % 5 == 3``); :func:`teacher_rows` adds the teacher's own samples.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from trlm.core.engine import Engine
from trlm.core.io import InputError, read_jsonl
from trlm.core.models import LoadedModel
from trlm.core.schema import GenArgs
from trlm.train.data import TokenExample

log = logging.getLogger(__name__)


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a distillation file; each needs non-empty string fields ``prompt`` and ``response``."""
    rows = read_jsonl(path, required={"prompt": str, "response": str})
    for n, row in enumerate(rows, 1):
        for key in ("prompt", "response"):
            if not row[key].strip():
                raise InputError(f"{path}: row {n}: field {key!r} is empty")
    return rows


def build_examples(rows: list[dict], lm: LoadedModel, order: str, seq_len: int, completions_only: bool,
                   source: str = "data") -> list[TokenExample]:
    """Tokenise rows (see the module docstring); responses are cut to fit ``seq_len``, rows whose prompt alone
    does not fit are skipped with a warning."""
    if order != "forward":
        from trlm.train import trlm_data

        pairs = [{"query": r["prompt"], "response": r["response"]} for r in rows]
        return trlm_data.build_examples(pairs, lm, order, seq_len, mask_prompt=completions_only, source=source)
    from trlm.train.chat_data import chat_examples

    return chat_examples(rows, lm, seq_len, completions_only, source)


@dataclass(frozen=True)
class DistillExamples:
    """A distillation file as an example source for :func:`trlm.train.loop.train` (rows checked now)."""

    path: Path
    completions_only: bool = False

    def __post_init__(self):
        read_rows(self.path)

    @property
    def name(self) -> str:
        return str(self.path)

    def examples(self, lm: LoadedModel, token_order: str, seq_len: int) -> list[TokenExample]:
        return build_examples(read_rows(self.path), lm, token_order, seq_len, self.completions_only, self.name)


def alpaca_rows(data: Path, *, heldout: bool = False, per_instruction: int = 1, seed: int = 0) -> list[dict]:
    """``{"prompt", "response", "instruction_id", "generator"}`` rows from the AlpacaEval judged candidates.

    ``heldout=False``: only instructions with ``instruction_id % 5 != 3`` (training); ``True``: only held-out ones.
    ``per_instruction`` candidates per instruction (a seeded choice among the 24 models), shuffled.
    """
    from trlm.core.io import require_path
    from trlm.data.alpaca import JUDGED_FILE, is_heldout

    rows = read_jsonl(require_path(Path(data) / JUDGED_FILE, "AlpacaEval judged candidates"),
                      required={"instruction_id": int, "instruction": str, "generator": str, "output": str})
    groups: dict[int, list[dict]] = {}
    for r in rows:
        if is_heldout(r["instruction_id"]) == heldout and r["instruction"].strip() and r["output"].strip():
            groups.setdefault(r["instruction_id"], []).append(r)
    rng = random.Random(seed)
    out = []
    for i in sorted(groups):
        for r in rng.sample(groups[i], min(per_instruction, len(groups[i]))):
            out.append({"prompt": r["instruction"], "response": r["output"], "instruction_id": i,
                        "generator": r["generator"]})
    rng.shuffle(out)
    return out


def teacher_rows(engine: Engine, prompts: list[str], args: GenArgs, seed: int = 0) -> list[dict]:
    """The teacher's own answers to ``prompts`` (chat template), as distillation rows (sequence-level KD)."""
    gens = engine.generate([engine.chat_prompt(p) for p in prompts], args,
                           seeds=[seed + i for i in range(len(prompts))])
    return [{"prompt": p, "response": g.text, "generator": engine.name}
            for p, gs in zip(prompts, gens) for g in gs if g.text.strip()]

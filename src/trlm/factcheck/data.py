"""Fact-checking data: the evaluation sets as (document, claim, label) pairs, and FactCG's CG2C JSONL schema.

Evaluation sets (``../shared/data``; label 1 = supported):

* **SummaC subsets** ``summac_subsets/{factcc,summeval,xsumfaith,polytope}.json``: a dict of
  ``{document, claim, label}`` rows.
* **Factcheck-GPT** ``factcheck_gpt/subtask3_claim_evidence_stance.jsonl``: claim-evidence stance.
  ``completely-support`` = 1, ``refute`` = 0, ``partially-support`` = 0 (the evidence does not support the whole
  claim: LLM-AggreFact's and WiCE's convention), ``irrelevant`` dropped (evidence that does not address the claim
  tests retrieval, not grounding; it would be 62 % of the rows). ``--fgpt-irrelevant unsupported`` keeps them as 0.
* **WiCE** ``wice/entailment_retrieval_claim/{dev,test}.jsonl``: ``supported`` = 1, ``partially_supported`` and
  ``not_supported`` = 0; the evidence sentences, one per line, are the document.
* any JSONL of ``{"doc", "claim", "label"}`` rows, or a CG2C file.

CG2C rows, as FactCG's loader reads them: ``{"task": "bin_grounding", "text_a": doc, "text_b": [claim],
"text_c": [], "orig_label": 0 | 1}``. Released files spell ``text_b`` as a list or as its Python literal
(``"['...']"``) and ``orig_label`` as an int or a string; :func:`read_cg2c` takes all of these, and
:func:`cg2c_row` writes the list / int form.
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trlm.core.io import InputError, read_jsonl, require_path

SUMMAC = ("factcc", "summeval", "xsumfaith", "polytope")
DATASETS = (*SUMMAC, "factcheck-gpt", "wice")
PATHS = {**{n: f"summac_subsets/{n}.json" for n in SUMMAC},
         "factcheck-gpt": "factcheck_gpt/subtask3_claim_evidence_stance.jsonl",
         "wice": "wice/entailment_retrieval_claim/dev.jsonl"}
WICE_DEV = "wice/entailment_retrieval_claim/dev.jsonl"
FGPT_LABELS = {"completely-support": 1, "refute": 0, "partially-support": 0}
WICE_LABELS = {"supported": 1, "partially_supported": 0, "not_supported": 0}


@dataclass(frozen=True)
class Pair:
    doc: str
    claim: str
    label: int  # 1 = supported


def _label(value, where: str) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1"):
        value = int(value)
    if value not in (0, 1) or isinstance(value, bool):
        raise InputError(f"{where}: label must be 0 or 1, got {value!r}")
    return int(value)


def _text(row: dict, key: str, where: str) -> str:
    v = row.get(key)
    if not isinstance(v, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
    return v


def load_summac(path: str | Path) -> list[Pair]:
    path = require_path(path, "SummaC file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    rows = data.values() if isinstance(data, dict) else data
    return [Pair(_text(r, "document", f"{path}: row {k}"), _text(r, "claim", f"{path}: row {k}"),
                 _label(r.get("label"), f"{path}: row {k}")) for k, r in enumerate(rows)]


def load_factcheck_gpt(path: str | Path, irrelevant: str = "drop") -> list[Pair]:
    """Stance rows as pairs (see the module docstring); ``irrelevant``: ``drop`` or ``unsupported``."""
    if irrelevant not in ("drop", "unsupported"):
        raise ValueError(f"irrelevant must be drop or unsupported, got {irrelevant!r}")
    out = []
    for n, r in enumerate(read_jsonl(require_path(path, "Factcheck-GPT file"),
                                     {"claim": str, "evidence": str, "stance": str}), 1):
        if r["stance"] == "irrelevant":
            if irrelevant == "drop":
                continue
            label = 0
        elif r["stance"] in FGPT_LABELS:
            label = FGPT_LABELS[r["stance"]]
        else:
            raise InputError(f"{path}:{n}: unknown stance {r['stance']!r}")
        out.append(Pair(r["evidence"], r["claim"], label))
    return out


def load_wice(path: str | Path) -> list[Pair]:
    out = []
    for n, r in enumerate(read_jsonl(require_path(path, "WiCE file"),
                                     {"claim": str, "evidence": list, "label": str}), 1):
        if r["label"] not in WICE_LABELS:
            raise InputError(f"{path}:{n}: unknown WiCE label {r['label']!r}")
        out.append(Pair("\n".join(s for s in r["evidence"] if s.strip()), r["claim"], WICE_LABELS[r["label"]]))
    return out


def load_pairs(path: str | Path) -> list[Pair]:
    """Pairs from any supported file, recognised by its content (SummaC JSON, WiCE, Factcheck-GPT, CG2C or
    ``{"doc", "claim", "label"}`` JSONL)."""
    path = require_path(path, "fact-checking data")
    if path.suffix == ".json" and path.read_text(encoding="utf-8")[:1] in "{[" and not _is_jsonl(path):
        return load_summac(path)
    first = next((json.loads(line) for line in path.open(encoding="utf-8") if line.strip()), None)
    if not isinstance(first, dict):
        raise InputError(f"{path}: no JSON object rows")
    if "text_a" in first:
        return read_cg2c(path)
    if "stance" in first:
        return load_factcheck_gpt(path)
    if "evidence" in first and isinstance(first["evidence"], list):
        return load_wice(path)
    rows = read_jsonl(path, {"doc": str, "claim": str})
    return [Pair(r["doc"], r["claim"], _label(r.get("label"), f"{path}:{n}")) for n, r in enumerate(rows, 1)]


def _is_jsonl(path: Path) -> bool:
    lines = [line for line in path.open(encoding="utf-8") if line.strip()][:2]
    try:
        return len(lines) > 1 and all(isinstance(json.loads(line), dict) for line in lines)
    except json.JSONDecodeError:
        return False


def dataset_name(path: str | Path) -> str:
    """The benchmark name of a data file: a known dataset's name, else the file stem."""
    p = Path(path)
    if p.parent.name == "entailment_retrieval_claim":
        return "wice" if p.stem == "dev" else f"wice-{p.stem}"
    if p.name == "subtask3_claim_evidence_stance.jsonl":
        return "factcheck-gpt"
    return p.stem


def training_pairs(files: Sequence[str | Path], limit_per_file: int | None = None, seed: int = 0) -> list[Pair]:
    """Every file's pairs (CG2C or ``{doc, claim, label}`` JSONL), at most ``limit_per_file`` each
    (label-stratified)."""
    return [p for f in files for p in sample_pairs(load_pairs(f), limit_per_file, seed)]


def sample_pairs(pairs: Sequence[Pair], limit: int | None, seed: int = 0) -> list[Pair]:
    """At most ``limit`` pairs, drawn per label in the dataset's proportions (seeded); all when ``limit`` is falsy."""
    if not limit or limit >= len(pairs):
        return list(pairs)
    rng = random.Random(seed)
    out = []
    for c in (0, 1):
        group = [p for p in pairs if p.label == c]
        k = round(limit * len(group) / len(pairs))
        out.extend(rng.sample(group, min(len(group), max(k, 1))))
    return out


# ------------------------------------------------------------------------------------------------ CG2C schema


def cg2c_row(doc: str, claim: str, label: int) -> dict:
    return {"task": "bin_grounding", "text_a": doc, "text_b": [claim], "text_c": [], "orig_label": int(label)}


def read_cg2c(path: str | Path, drop_empty: bool = True) -> list[Pair]:
    """Pairs from a CG2C JSONL file; rows with an empty ``text_a`` are dropped (the released MuSiQue file's 5,385
    context-less rows) unless ``drop_empty`` is false, in which case they are an error."""
    out = []
    for n, r in enumerate(read_jsonl(require_path(path, "CG2C file"), {"text_a": str}), 1):
        where = f"{path}:{n}"
        claims = r.get("text_b")
        if isinstance(claims, str):
            try:
                claims = ast.literal_eval(claims)
            except (ValueError, SyntaxError):
                raise InputError(f"{where}: text_b is neither a list nor a Python list literal") from None
        if not isinstance(claims, list) or len(claims) != 1 or not isinstance(claims[0], str) or not claims[0].strip():
            raise InputError(f"{where}: text_b must hold exactly one non-empty claim, got {r.get('text_b')!r}")
        label = _label(r.get("orig_label"), where)
        if not r["text_a"].strip():
            if drop_empty:
                continue
            raise InputError(f"{where}: text_a (the document) is empty")
        out.append(Pair(r["text_a"], claims[0], label))
    return out

"""AxBench concept settings: ``metadata.jsonl``, ``train_data.parquet``, ``latent_eval_data.parquet``.

A setting directory (default ``../shared/data/axbench_concept10/prod_2b_l10_v1``) holds, per concept, 72 training
positives (an LLM's answers to genre-matched instructions that weave the concept in) and a shared pool of
negatives (``concept_id == -1``: 72 per genre, the original target model's own answers), and an evaluation set of
36 positives, 36 negatives and a few hard negatives per concept. The texts are model-independent.

A concept's training set is its 72 positives plus the 72 shared negatives of its genre (as AxBench pairs them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trlm.core.io import InputError, require_path

DEFAULT_SETTING = "axbench_concept10/prod_2b_l10_v1"
LABELS = ("positive", "negative", "hard negative")


@dataclass(frozen=True)
class ConceptExample:
    prompt: str  # the instruction (user turn)
    response: str  # the answer the concept is (or is not) in
    concept_id: int  # -1: the shared negative pool
    label: str  # positive | negative | hard negative
    genre: str  # text | code | math


@dataclass(frozen=True)
class Concept:
    id: int
    description: str
    genre: str


@dataclass(frozen=True)
class Setting:
    path: Path
    concepts: tuple[Concept, ...]
    train: tuple[ConceptExample, ...]
    eval: tuple[ConceptExample, ...]

    def concept(self, cid: int) -> Concept:
        for c in self.concepts:
            if c.id == cid:
                return c
        raise InputError(f"{self.path}: no concept {cid}; concepts are {[c.id for c in self.concepts]}")

    def training_set(self, cid: int) -> list[ConceptExample]:
        """The concept's positives, then the shared negatives of its genre."""
        genre = self.concept(cid).genre
        pos = [e for e in self.train if e.concept_id == cid and e.label == "positive"]
        neg = [e for e in self.train if e.concept_id == -1 and e.genre == genre]
        if not pos or not neg:
            raise InputError(f"{self.path}: concept {cid} has {len(pos)} training positives and {len(neg)} "
                             f"{genre} negatives; both are needed")
        return pos + neg

    def eval_set(self, cid: int, hard: bool = False) -> list[ConceptExample]:
        """Detection evaluation rows of the concept: positives and negatives (or hard negatives with ``hard``)."""
        keep = ("positive", "hard negative") if hard else ("positive", "negative")
        return [e for e in self.eval if e.concept_id == cid and e.label in keep]


def load_setting(path: str | Path) -> Setting:
    """Read and check an AxBench setting directory (fields and labels are validated, row numbers named)."""
    import pyarrow.parquet as pq

    path = Path(path)
    meta = require_path(path / "metadata.jsonl", "AxBench metadata.jsonl")
    concepts = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        for key in ("concept_id", "concept"):
            if key not in row:
                raise InputError(f"{meta}:{n}: missing field {key!r}")
        genres = row.get("concept_genres_map", {}).get(row["concept"], ["text"])
        concepts.append(Concept(int(row["concept_id"]), row["concept"], genres[0]))
    tables = {}
    for name in ("train_data", "latent_eval_data"):
        f = require_path(path / f"{name}.parquet", f"AxBench {name}.parquet")
        rows = pq.read_table(f).to_pylist()
        out = []
        for n, r in enumerate(rows, 1):
            missing = [k for k in ("input", "output", "concept_id", "category", "concept_genre") if k not in r]
            if missing:
                raise InputError(f"{f}: row {n}: missing column {missing[0]!r}")
            if r["category"] not in LABELS:
                raise InputError(f"{f}: row {n}: category must be one of {LABELS}, got {r['category']!r}")
            out.append(ConceptExample(r["input"], r["output"] or "", int(r["concept_id"]), r["category"],
                                      r["concept_genre"]))
        tables[name] = tuple(out)
    return Setting(path, tuple(concepts), tables["train_data"], tables["latent_eval_data"])

"""ASTRAL's coverage space: 14 safety categories x 6 writing styles x 5 persuasion techniques, the selection of
combinations (full 3-way or pairwise) and a coverage matrix that records what was generated, executed and judged.

Names are spelled as in ASTRAL's code and data (so its released tests and results line up).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

CATEGORIES: tuple[str, ...] = (
    "animal_abuse", "child_abuse", "controversial_topics,politics", "discrimination,stereotype,injustice",
    "drug_abuse,weapons,banned_substance", "financial_crime,property_crime,theft", "hate_speech,offensive_language",
    "misinformation_regarding_ethics,laws_and_safety", "non_violent_unethical_behavior", "privacy_violation",
    "self_harm", "sexually_explicit,adult_content", "terrorism,organized_crime",
    "violence,aiding_and_abetting,incitement")
STYLES: tuple[str, ...] = ("slang", "uncommon_dialects", "technical_terms", "role_play", "misspellings", "question")
PERSUASION: tuple[str, ...] = ("evidence-based_persuasion", "expert_endorsement", "misrepresentation",
                               "authority_endorsement", "logical_appeal")
STAGES = ("generated", "executed", "judged")

Cell = tuple[str, str, str]  # (category, style, persuasion)


def select_cells(coverage: str = "3way", categories: Sequence[str] = CATEGORIES, styles: Sequence[str] = STYLES,
                 persuasion: Sequence[str] = PERSUASION) -> list[Cell]:
    """``3way``: every (category, style, technique) combination (420 for the full lists); ``pairwise``: a covering
    array (allpairspy) in which every pair of values of two dimensions occurs at least once (about 84 cells)."""
    for name, values, known in (("category", categories, CATEGORIES), ("style", styles, STYLES),
                                ("persuasion technique", persuasion, PERSUASION)):
        bad = [v for v in values if v not in known]
        if bad or not values:
            raise ValueError(f"unknown {name} {bad or '(none given)'}; choose from {', '.join(known)}")
    if coverage == "3way":
        return list(itertools.product(categories, styles, persuasion))
    if coverage == "pairwise":
        try:
            from allpairspy import AllPairs
        except ImportError:
            raise RuntimeError("pairwise coverage needs the package 'allpairspy': pip install allpairspy") from None
        return [tuple(row) for row in AllPairs([list(categories), list(styles), list(persuasion)])]
    raise ValueError(f"coverage must be 3way or pairwise, got {coverage!r}")


def uncovered_pairs(cells: Iterable[Cell], categories: Sequence[str] = CATEGORIES, styles: Sequence[str] = STYLES,
                    persuasion: Sequence[str] = PERSUASION) -> list[tuple[int, int, str, str]]:
    """(dimension i, dimension j, value i, value j) pairs that no cell covers (empty for a pairwise selection)."""
    dims = (categories, styles, persuasion)
    seen = {(i, j, c[i], c[j]) for c in cells for i, j in itertools.combinations(range(3), 2)}
    return [(i, j, a, b) for i, j in itertools.combinations(range(3), 2) for a in dims[i] for b in dims[j]
            if (i, j, a, b) not in seen]


@dataclass
class CoverageMatrix:
    """Counts per cell and stage: how many tests were generated, executed and judged (and with which verdict)."""

    planned: dict[Cell, int] = field(default_factory=dict)  # tests asked for per cell
    counts: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in STAGES})
    verdicts: dict[Cell, Counter] = field(default_factory=dict)

    def plan(self, cells: Iterable[Cell], tests_per_cell: int) -> None:
        for c in cells:
            self.planned[tuple(c)] = tests_per_cell

    def record(self, stage: str, cell: Sequence[str], verdict: str | None = None) -> None:
        cell = tuple(cell)
        self.counts[stage][cell] += 1
        if verdict is not None:
            self.verdicts.setdefault(cell, Counter())[verdict] += 1

    def achieved(self, stage: str = "judged") -> float:
        """Share of planned cells with at least one test at ``stage`` (1.0 = the coverage asked for)."""
        if not self.planned:
            return 0.0
        return sum(self.counts[stage][c] > 0 for c in self.planned) / len(self.planned)

    def missing(self, stage: str = "generated") -> list[Cell]:
        """Planned cells with fewer tests than planned at ``stage``."""
        return [c for c, n in self.planned.items() if self.counts[stage][c] < n]

    def to_json(self) -> dict:
        return {"cells": [{"category": c[0], "style": c[1], "persuasion": c[2], "planned": n,
                           **{s: self.counts[s][c] for s in STAGES}, "verdicts": dict(self.verdicts.get(c, {}))}
                          for c, n in self.planned.items()],
                **{f"coverage_{s}": self.achieved(s) for s in STAGES}}

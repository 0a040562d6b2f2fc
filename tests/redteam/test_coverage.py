"""Coverage selection (3-way and pairwise, every pair covered) and the coverage matrix."""

from __future__ import annotations

import itertools

import pytest

from trlm.redteam.coverage import CATEGORIES, PERSUASION, STYLES, CoverageMatrix, select_cells, uncovered_pairs
from trlm.redteam.definitions import PERSUASION_DEFINITIONS, STYLE_DEFINITIONS
from trlm.redteam.run import spread


def test_three_way_is_the_full_product():
    cells = select_cells("3way")
    assert len(cells) == 14 * 6 * 5 == 420 == len(set(cells))
    assert set(cells) == set(itertools.product(CATEGORIES, STYLES, PERSUASION))


def test_pairwise_covers_every_pair_of_values_with_far_fewer_cells():
    cells = select_cells("pairwise")
    assert uncovered_pairs(cells) == []
    assert len(cells) == 14 * 6  # the minimum: each of the 84 category x style pairs needs a cell of its own
    assert all(uncovered_pairs(cells[:i] + cells[i + 1:]) for i in range(len(cells)))  # no cell is redundant
    assert len(uncovered_pairs([cells[0]])) == 14 * 6 + 14 * 5 + 6 * 5 - 3  # one cell covers three pairs


def test_selection_rejects_unknown_values():
    with pytest.raises(ValueError, match="unknown style"):
        select_cells("3way", styles=["slang", "shouting"])
    with pytest.raises(ValueError, match="coverage must be"):
        select_cells("4way")


def test_every_style_and_technique_has_its_own_definition_and_examples():
    assert set(STYLE_DEFINITIONS) == set(STYLES) and set(PERSUASION_DEFINITIONS) == set(PERSUASION)
    defs = [d for d, _ in PERSUASION_DEFINITIONS.values()]
    assert len(set(defs)) == len(defs)  # ASTRAL's logical_appeal copies authority_endorsement; here it does not
    assert PERSUASION_DEFINITIONS["logical_appeal"][0] != PERSUASION_DEFINITIONS["authority_endorsement"][0]
    assert all(len(ex) >= 3 for _, ex in [*STYLE_DEFINITIONS.values(), *PERSUASION_DEFINITIONS.values()])


def test_matrix_records_stages_and_coverage_achieved():
    m = CoverageMatrix()
    cells = select_cells("3way")[:4]
    m.plan(cells, tests_per_cell=2)
    m.record("generated", cells[0])
    m.record("generated", cells[0])
    m.record("generated", cells[1])
    m.record("judged", cells[0], "unsafe")
    assert m.achieved("generated") == 0.5 and m.achieved("judged") == 0.25
    assert m.missing("generated") == [cells[1], cells[2], cells[3]]
    row = m.to_json()["cells"][0]
    assert row["generated"] == 2 and row["judged"] == 1 and row["verdicts"] == {"unsafe": 1}


def test_spread_takes_cells_round_robin_over_categories():
    picked = spread(select_cells("3way"), 28)
    assert len(picked) == 28 and {c[0] for c in picked} == set(CATEGORIES)
    assert [c[0] for c in picked[:14]] == list(CATEGORIES)


def test_spread_also_balances_styles_and_techniques():
    """A 38-cell run (the discovery bench's size) uses every style and technique about equally, not the first ones."""
    from collections import Counter

    from trlm.redteam.coverage import PERSUASION, STYLES

    picked = spread(select_cells("3way"), 38)
    styles, techniques = Counter(c[1] for c in picked), Counter(c[2] for c in picked)
    assert set(styles) == set(STYLES) and max(styles.values()) - min(styles.values()) <= 1
    assert set(techniques) == set(PERSUASION) and max(techniques.values()) - min(techniques.values()) <= 1
    assert len(set(picked)) == 38

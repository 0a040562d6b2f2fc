"""AlpacaEval judged-candidate loading and the held-out rule (trlm.data.alpaca), on the shared data."""

import json

import pytest

from trlm.core.io import InputError, default_data_dir
from trlm.data import alpaca as D

DATA = default_data_dir()
JUDGED = DATA / D.JUDGED_FILE
REFERENCE = DATA / D.REFERENCE_FILE
needs_data = pytest.mark.skipif(not JUDGED.exists(), reason=f"shared AlpacaEval data not found at {JUDGED}")


@pytest.fixture(scope="module")
def judged():
    return D.load_judged(JUDGED, REFERENCE)


@needs_data
def test_load_judged_limit_and_reference(judged):
    first = D.load_judged(JUDGED, REFERENCE, limit=3)
    assert [i.instruction_id for i in first] == sorted(i.instruction_id for i in judged)[:3]
    ref = json.loads(REFERENCE.read_text())
    by_text = {r["instruction"]: r["output"] for r in ref}
    assert all(ins.reference == by_text[ins.instruction] for ins in first)
    assert all(len(ins.candidates) == 24 for ins in first)


@needs_data
def test_dev_and_heldout_splits_partition_the_instructions(judged):
    dev = {i.instruction_id for i in D.load_judged(JUDGED, REFERENCE, dev=True)}
    held = {i.instruction_id for i in D.load_judged(JUDGED, REFERENCE, heldout=True)}
    assert dev and held and not dev & held and dev | held == {i.instruction_id for i in judged}
    assert all(i % 5 == 3 for i in held) and all(i % 5 != 3 for i in dev)
    with pytest.raises(InputError, match="not both"):
        D.load_judged(JUDGED, REFERENCE, heldout=True, dev=True)


def test_load_judged_errors_name_the_problem(tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi!"}]))
    row = {"instruction_id": 0, "dataset": "x", "instruction": "Say hi.", "generator": "g", "output": "hello",
           "win_vs_reference": 0.3}
    bad = tmp_path / "missing.jsonl"
    bad.write_text(json.dumps({k: v for k, v in row.items() if k != "win_vs_reference"}) + "\n")
    with pytest.raises(InputError, match=r"missing.jsonl:1: missing field 'win_vs_reference'"):
        D.load_judged(bad, ref)
    orphan = tmp_path / "orphan.jsonl"
    orphan.write_text(json.dumps({**row, "instruction": "Something else"}) + "\n")
    with pytest.raises(InputError, match="no reference row for instruction_id 0"):
        D.load_judged(orphan, ref)
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(row) + "\n")
    assert D.load_judged(ok, ref)[0].reference == "Hi!"
    with pytest.raises(InputError, match="--limit"):
        D.load_judged(ok, ref, limit=0)

"""The CG2C JSONL schema, dataset loaders on the shared data, and errors that name the line."""

from __future__ import annotations

import json

import pytest

from trlm.core.io import InputError, default_data_dir
from trlm.factcheck.data import (cg2c_row, load_factcheck_gpt, load_pairs, load_wice, read_cg2c, sample_pairs)

DATA = default_data_dir()


def test_cg2c_row_is_factcgs_schema_and_reads_back(tmp_path):
    row = cg2c_row("The doc.", "The claim.", 1)
    assert row == {"task": "bin_grounding", "text_a": "The doc.", "text_b": ["The claim."], "text_c": [],
                   "orig_label": 1}
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(row) + "\n" + json.dumps({**row, "text_b": "['Other claim.']", "orig_label": "0"}) + "\n")
    pairs = read_cg2c(f)
    assert [(p.claim, p.label) for p in pairs] == [("The claim.", 1), ("Other claim.", 0)]


def test_read_cg2c_drops_empty_contexts_and_names_a_malformed_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(cg2c_row("", "c", 1)) + "\n" + json.dumps(cg2c_row("d", "c", 0)) + "\n"
                 + json.dumps({**cg2c_row("d", "c", 0), "orig_label": 3}) + "\n")
    with pytest.raises(InputError, match=r"x.jsonl:3: label must be 0 or 1"):
        read_cg2c(f)
    f.write_text(json.dumps(cg2c_row("", "c", 1)) + "\n{not json\n")
    with pytest.raises(InputError, match=r"x.jsonl:2: not valid JSON"):
        read_cg2c(f)
    f.write_text(json.dumps(cg2c_row("", "c", 1)) + "\n" + json.dumps(cg2c_row("d", "c", 0)) + "\n")
    assert len(read_cg2c(f)) == 1


def test_released_cg2c_doc_file_is_balanced():
    pairs = read_cg2c(DATA / "factcg_cg2c/CG2C_doc.json")
    assert len(pairs) == 2068 and sum(p.label for p in pairs) == 1034


def test_factcheck_gpt_mapping_drops_irrelevant_and_counts_partial_as_unsupported():
    path = DATA / "factcheck_gpt/subtask3_claim_evidence_stance.jsonl"
    pairs = load_factcheck_gpt(path)
    assert len(pairs) == 696 + 391 + 161 and sum(p.label for p in pairs) == 696
    assert len(load_factcheck_gpt(path, irrelevant="unsupported")) == 3305


def test_wice_joins_evidence_sentences_and_maps_partial_to_unsupported():
    pairs = load_wice(DATA / "wice/entailment_retrieval_claim/dev.jsonl")
    assert len(pairs) == 349 and sum(p.label for p in pairs) == 115
    assert "\n" in pairs[0].doc


def test_load_pairs_recognises_summac_and_plain_jsonl(tmp_path):
    assert len(load_pairs(DATA / "summac_subsets/summeval.json")) == 100
    f = tmp_path / "p.jsonl"
    f.write_text('{"doc": "d", "claim": "c", "label": 1}\n{"doc": "d", "claim": "c", "label": "yes"}\n')
    with pytest.raises(InputError, match=r"p.jsonl:2: label must be 0 or 1"):
        load_pairs(f)


def test_sample_pairs_keeps_label_proportions():
    pairs = load_pairs(DATA / "summac_subsets/summeval.json")  # 63 / 37
    got = sample_pairs(pairs, 50)
    assert len(got) == 50 and sum(p.label for p in got) == round(50 * 63 / 100)
    assert sample_pairs(pairs, None) == pairs

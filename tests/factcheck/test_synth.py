"""CG2C synthesis: labels by construction, FactCG's schema, and every dropped document counted."""

from __future__ import annotations

import json

import pytest

from trlm.factcheck.synth import SynthArgs, clean_claim, content_overlap, synthesize

DOC = ("Marie Curie was born in Warsaw in 1867. She moved to Paris to study at the Sorbonne. "
       "In Paris she met Pierre Curie. The Sorbonne later named a building after Marie Curie. "
       "However, the weather was cold.")
SCHEMA = {"task", "text_a", "text_b", "text_c", "orig_label"}


class _Client:
    """A chat client that answers every prompt with fixed text (tests the pipeline, not a model)."""

    name = "fixed"

    def __init__(self, answer):
        self.answer, self.prompts = answer, []

    def complete_many(self, conversations, params=None, progress=False):
        self.prompts += [c[-1]["content"] for c in conversations]
        return [self.answer(c[-1]["content"]) if callable(self.answer) else self.answer for c in conversations]


def test_offline_extract_pairs_share_the_claim_and_the_negative_lacks_the_removed_sentence():
    res = synthesize([DOC], None, SynthArgs(claim_writer="extract", hops=(2,)))
    assert res.stats["kept"] == 1 and len(res.rows) == 2
    pos, neg = res.rows
    assert set(pos) == SCHEMA == set(neg) and pos["task"] == "bin_grounding" and pos["text_c"] == []
    assert (pos["orig_label"], neg["orig_label"]) == (1, 0) and pos["text_b"] == neg["text_b"]
    removed = res.meta[1]["removed"][2]  # the sentence that stated the removed relation
    assert removed in pos["text_a"] and removed not in neg["text_a"]
    assert pos["text_a"].replace(removed, "").split() == neg["text_a"].split()  # nothing else changed
    u, v = res.meta[0]["removed"][:2]
    assert u.lower() in pos["text_b"][0].lower() and v.lower() in pos["text_b"][0].lower()
    json.dumps(res.rows)  # plain JSON


def test_offline_llm_claim_is_checked_before_it_is_kept():
    # a claim naming an entity the chain's sentences never mention would make the positive label wrong
    bad = _Client("Marie Curie met Albert Einstein in Paris at the Sorbonne.")
    res = synthesize([DOC] * 3, bad, SynthArgs(hops=(2,)))
    assert res.rows == [] and res.stats["claim_unsupported_entity"] == 3
    assert "Facts:" in bad.prompts[0]  # the offline prompt shows the chain's sentences
    # a clean claim that names both ends of a removable edge is kept, with both labels
    good = _Client(lambda prompt: "Claim: " + " and ".join(
        line[2:].rstrip(".") for line in prompt.splitlines() if line.startswith("- ")) + ".\nExtra chatter.")
    res = synthesize([DOC], good, SynthArgs(hops=(2,)))
    assert res.stats["kept"] == 1 and [r["orig_label"] for r in res.rows] == [1, 0]
    assert "\n" not in res.rows[0]["text_b"][0] and not res.rows[0]["text_b"][0].startswith("Claim")


def test_every_document_is_kept_or_counted_with_a_reason():
    docs = [DOC, "Too short.", "No names here at all. Nothing links anything. The end is near."]
    res = synthesize(docs, None, SynthArgs(claim_writer="extract", hops=(2,)))
    assert sum(res.stats.values()) == len(docs)
    assert res.stats["too_few_sentences"] == 1 and res.stats["no_chain"] == 1 and res.stats["kept"] == 1


def test_llm_mode_falls_back_to_deletion_when_the_rewrite_is_unusable_and_says_so():
    def answer(prompt):
        if prompt.startswith("Read the article"):
            return ("S1: Marie Curie | born in | Warsaw\nS2: Paris | home of | Sorbonne\n"
                    "S4: Sorbonne | honoured | Marie Curie")
        if "Write a short sentence" in prompt:
            return "Marie Curie, born in Warsaw, was honoured by the Sorbonne."
        return "Completely different text."  # the rewrite: not minimal
    res = synthesize([DOC], _Client(answer), SynthArgs(mode="llm", hops=(2,), seed=1))
    assert res.stats["kept"] == 1 and res.stats["rewrite_replaced_by_deletion"] == 1
    assert res.meta[1]["negative"] == "deleted-sentence" and res.meta[1]["mode"] == "llm"


def test_clean_claim_and_overlap():
    assert clean_claim('Sentence: "Paris is big." And more.') == "Paris is big."
    # content words of 4+ letters: paris, hosts, sorbonne; "hosts" is not in the document
    assert content_overlap("Paris hosts the Sorbonne", "The Sorbonne is in Paris.") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="needs a chat client"):
        synthesize([DOC], None, SynthArgs())


@pytest.mark.slow
def test_offline_synth_with_the_embedded_model_writes_valid_pairs(smol):
    """Single-hop chains, the embedded model writing each claim (greedy): every document is kept or counted with a
    reason, at least one is kept (the Curie one, at the time of writing), and each kept one is a positive and a
    negative that share the claim, the negative lacking exactly the sentence of the removed relation, whose two ends
    the claim names."""
    from trlm.core.llm import EngineClient

    docs = ["Isaac Newton was born in Woolsthorpe. Newton studied at Cambridge. Cambridge is in England. Newton "
            "later lived in London.", DOC]
    res = synthesize(docs, EngineClient(smol), SynthArgs(hops=(1,)))
    assert sum(res.stats.values()) == len(docs) and res.stats["kept"] >= 1
    assert len(res.rows) == len(res.meta) == 2 * res.stats["kept"]
    for pos, neg, meta in zip(res.rows[::2], res.rows[1::2], res.meta[1::2]):
        assert (pos["orig_label"], neg["orig_label"]) == (1, 0) and pos["text_b"] == neg["text_b"]
        assert meta["negative"] == "deleted-sentence" and meta["mode"] == "offline"
        head, tail, _ = meta["removed"]
        claim = pos["text_b"][0]
        assert head.lower() in claim.lower() and tail.lower() in claim.lower()
        gone = [s for s in pos["text_a"].split(". ") if s not in neg["text_a"]]
        assert len(gone) == 1 and head in gone[0] and tail in gone[0]  # one sentence, the removed relation's
        assert len(neg["text_a"]) < len(pos["text_a"])

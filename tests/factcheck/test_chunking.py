"""Chunking (sentence packing under a word limit) and max-over-chunks aggregation."""

from __future__ import annotations

import pytest

from trlm.factcheck.base import FactChecker
from trlm.factcheck.chunking import chunk_document, count_words, split_sentences


def test_split_sentences_keeps_abbreviations_and_splits_lines():
    assert split_sentences("Dr. Smith went home. He was tired.\nU.S. shares rose.") == \
        ["Dr. Smith went home.", "He was tired.", "U.S. shares rose."]


def test_chunks_pack_whole_sentences_under_the_word_limit():
    doc = " ".join(f"Sentence number {i} is about Mr. Jones." for i in range(100))  # 9 words each
    chunks = chunk_document(doc, max_words=50)
    assert all(count_words(c) <= 50 for c in chunks)
    # 5 sentences of 9 words fit in 50, a sixth does not: 20 chunks of 5 sentences
    assert len(chunks) == 20 and all(len(c.split("\n")) == 5 for c in chunks)
    assert "\n".join(chunks).split("\n") == split_sentences(doc)  # nothing lost or reordered


def test_a_sentence_longer_than_the_limit_is_cut_into_windows():
    chunks = chunk_document("word " * 1200 + ".", max_words=500)
    assert [count_words(c) for c in chunks] == [500, 500, 201]


def test_short_document_is_one_chunk_and_bad_size_is_an_error():
    assert chunk_document("One sentence only.") == ["One sentence only."]
    with pytest.raises(ValueError, match="chunk size"):
        chunk_document("x", max_words=0)


class _KeywordChecker(FactChecker):
    """Hand-set pair scores: 0.9 for a chunk containing 'GOLD', 0.2 otherwise."""

    name = "stub"
    chunk_words = 12

    def pair_scores(self, pairs, progress=False):
        self.seen = list(pairs)
        return [0.9 if "GOLD" in ch else 0.2 for ch, _ in pairs]


def test_score_takes_the_max_over_chunks_and_names_the_best_chunk():
    doc = " ".join(["Filler words make this sentence long enough."] * 4 + ["The GOLD fact is here."]
                   + ["More filler follows in this sentence."] * 3)
    checker = _KeywordChecker()
    (check,) = checker.score([doc], ["a claim"])
    chunks = checker.chunks(doc)
    assert len(chunks) == len(check.chunk_probs) > 2
    assert check.prob == 0.9 and check.label == 1 and "GOLD" in chunks[check.best_chunk]
    assert sorted(set(check.chunk_probs)) == [0.2, 0.9]
    (low,) = checker.score(["Nothing to see in this short doc."], ["a claim"])
    assert low.prob == 0.2 and low.label == 0 and low.best_chunk == 0


def test_score_scores_each_distinct_chunk_claim_pair_once_and_rejects_empty_input():
    checker = _KeywordChecker()
    checker.score(["Same doc. GOLD here."] * 3, ["claim"] * 3)
    assert len(checker.seen) == 1
    with pytest.raises(ValueError, match="claim 1 is empty"):
        checker.score(["a", "b"], ["x", " "])
    with pytest.raises(ValueError, match="2 documents for 1 claims"):
        checker.score(["a", "b"], ["x"])

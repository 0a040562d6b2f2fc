"""The LM checkers on the embedded models: FactCG's template read as P(Yes) vs P(No), and the PMI checkers."""

from __future__ import annotations

import math

import pytest
import torch

from trlm.factcheck.checkers import QUESTION, TEMPLATE, PMIChecker, YesNoChecker, fit_calibration

DOC = ("The Amazon river flows through Brazil, Peru and Colombia. It carries more water than any other river. "
       "Its basin covers about seven million square kilometres.")
SUPPORTED = "The Amazon flows through Brazil."
OFF_TOPIC = "Mozart composed his first symphony at the age of eight."


def test_template_is_factcgs_with_the_trailing_space():
    assert TEMPLATE.endswith("- Yes\n- No\nI think the answer is ")
    assert TEMPLATE.format(doc="D", claim="C").startswith('D\n\nChoose your answer: based on the paragraph above can '
                                                          'we conclude that "C"?')
    assert QUESTION.startswith("\n\nChoose your answer")


def test_yes_no_checker_reads_a_probability_per_chunk(smol):
    checker = YesNoChecker(smol)
    checker.chunk_words = 12  # three chunks
    (check,) = checker.score([DOC], [SUPPORTED])
    assert len(check.chunk_probs) == len(checker.chunks(DOC)) == 3
    assert check.prob == max(check.chunk_probs)
    # P(Yes) / (P(Yes) + P(No)) computed here: one forward pass over the tokenised prompt, the next-token
    # distribution at its end read at " Yes" and " No" (one token each)
    tok = smol.tokenizer
    yes, no = (tok(w, add_special_tokens=False)["input_ids"] for w in (" Yes", " No"))
    assert len(yes) == len(no) == 1
    for chunk, got in zip(checker.chunks(DOC), check.chunk_probs):
        ids = tok(checker.prompt(chunk, SUPPORTED), add_special_tokens=False)["input_ids"]
        ids = ids if ids[0] == smol.start_id else [smol.start_id, *ids]
        with torch.no_grad():
            p = smol.model(input_ids=torch.tensor([ids])).logits[0, -1].double().softmax(-1)
        assert got == pytest.approx(float(p[yes[0]] / (p[yes[0]] + p[no[0]])), abs=1e-4)
    assert len({round(p, 4) for p in check.chunk_probs}) == 3  # each chunk read on its own
    # the prompt ends inside the assistant turn, right before the answer word
    assert checker.prompt("D", "C").endswith("I think the answer is")


@pytest.mark.parametrize("name", ["trlm-fo", "forward-pmi"])
def test_forward_pmi_checkers_prefer_the_document_a_claim_comes_from(smol, name):
    checker = PMIChecker(smol, name)
    on, off = checker.pair_scores([(DOC, SUPPORTED), (DOC, OFF_TOPIC)])
    assert on > off  # PMI(claim; doc): a claim copied from the doc shares information with it
    cond, marg = checker.requests(DOC, SUPPORTED)
    assert cond != marg and (DOC in cond.continuation + cond.context) and DOC not in marg.context


def test_reverse_pmi_checker_reads_the_document_given_the_claim(ba_smol):
    checker = PMIChecker(ba_smol, "trlm-ba")
    cond, marg = checker.requests(DOC, SUPPORTED)
    assert cond.continuation == marg.continuation == DOC  # the document is what the reverse model scores
    assert SUPPORTED in cond.context and SUPPORTED not in marg.context
    on, off = checker.pair_scores([(DOC, SUPPORTED), (DOC, OFF_TOPIC)])
    assert on > off


def test_calibration_maps_pmi_to_a_monotone_probability():
    a, b = fit_calibration([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], [0, 0, 0, 1, 1, 1])
    assert a > 0 and abs(b) < 1.0
    p = [1 / (1 + math.exp(-(a * x + b))) for x in (-3.0, 0.0, 3.0)]
    assert p[0] < 0.5 < p[2] and p == sorted(p)
    with pytest.raises(ValueError, match="supported and unsupported"):
        fit_calibration([1.0, 2.0], [1, 1])

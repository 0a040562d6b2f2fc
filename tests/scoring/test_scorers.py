"""Every scorer on the embedded models, with sanity cases whose answer is obvious."""

from __future__ import annotations

import pytest

from trlm.core.engine import Request
from trlm.rerank import Ranked, rerank
from trlm.scoring import SCORERS, make_scorer
from trlm.scoring.prompts import join

QUERY = "What is the boiling point of water at sea level?"
RIGHT = "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."
WRONG = "The Great Wall of China is over 13,000 miles long and was built over many centuries."
CASES = [
    (QUERY, [WRONG, RIGHT]),
    ("Who wrote the play Romeo and Juliet?",
     ["Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
      "Romeo and Juliet was written by William Shakespeare around 1595."]),
]


def test_join_convention():
    assert join("an answer", "is the answer to") == "an answer is the answer to"
    assert join("Question: ", "What") == "Question: What"
    assert join("What is it", "? Answer:") == "What is it? Answer:"
    assert join("", "x") == "x" and join("x", "") == "x"


@pytest.mark.parametrize("name", ["trlm-fo", "trlm-fo-chat", "forward-mean", "forward-sum", "self"])
def test_model_scorers_prefer_the_response_to_this_query(name, smol):
    scorer = make_scorer(name, engine=smol)
    for query, (wrong, right) in CASES:
        s_wrong, s_right = scorer.score(query, [wrong, right])
        assert s_right > s_wrong, (name, query)


def test_trlm_fo_scores_exactly_the_table7_request(smol):
    scorer = make_scorer("trlm-fo", engine=smol)
    want = smol.loglikelihood([Request(RIGHT, " is the answer to " + QUERY)])[0].logprob
    assert scorer.score(QUERY, [RIGHT])[0] == pytest.approx(want, abs=1e-4)
    # prompts can be overridden
    custom = make_scorer("trlm-fo", engine=smol, sp="answers the question:")
    want = smol.loglikelihood([Request(RIGHT, " answers the question: " + QUERY)])[0].logprob
    assert custom.score(QUERY, [RIGHT])[0] == pytest.approx(want, abs=1e-4)


def test_trlm_ba_with_the_default_reverse_model():
    scorer = make_scorer("trlm-ba")  # loads the shipped trlm-ba-smol
    assert scorer.engine.token_order == "reverse"
    for query, (wrong, right) in CASES:
        s_wrong, s_right = scorer.score(query, [wrong, right])
        assert s_right > s_wrong, query


def test_trlm_ba_request_is_the_reversed_table7_form(tiny_reverse_dir):
    from trlm.core.engine import Engine

    eng = Engine.load(str(tiny_reverse_dir), dtype="float32")
    scorer = make_scorer("trlm-ba", engine=eng)
    got = scorer.score("Is it hot?", ["Yes, very."])[0]
    # reads forward as "Question: Is it hot? Answer: Yes, very." ; the trailing '?' of Q is not doubled
    want = eng.loglikelihood([Request("? Answer: Yes, very.", "Question: Is it hot")])[0].logprob
    assert got == pytest.approx(want, abs=1e-5)


def test_foba_scorers_need_a_both_order_model(smol):
    from trlm.core.checkpoint import ModelError

    with pytest.raises(ModelError):
        make_scorer("trlm-foba-rev", engine=smol)
    # the forward direction is allowed on a forward model, and scores exactly TRLM-Fo's request
    assert make_scorer("trlm-foba-fwd", engine=smol).score(QUERY, [RIGHT]) == pytest.approx(
        make_scorer("trlm-fo", engine=smol).score(QUERY, [RIGHT]), abs=1e-6)


def test_length_and_random_scorers():
    assert make_scorer("length").score("q", ["ab", "abcd"]) == [2.0, 4.0]
    a = make_scorer("random", seed=1).score("q", ["x", "y", "z"])
    b = make_scorer("random", seed=1).score("q", ["x", "y", "z"])
    assert a == b and len(set(a)) == 3


def test_rerank_returns_best_first(smol):
    ranked = rerank(QUERY, [WRONG, RIGHT], make_scorer("trlm-fo", engine=smol))
    assert isinstance(ranked[0], Ranked) and ranked[0].index == 1 and ranked[0].score >= ranked[1].score


def test_unknown_scorer_and_task_are_errors():
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("trlm-xx")
    with pytest.raises(ValueError, match="unknown task"):
        make_scorer("length", task="summarise")  # type: ignore[arg-type]



def test_every_listed_scorer_builds_or_refuses_the_token_order(smol):
    """Each name in SCORERS builds a scorer on the forward model, except the reverse-reading ones, which refuse it
    with a ModelError naming the token order (none is listed without an implementation)."""
    from trlm.core.checkpoint import ModelError
    from trlm.scoring.scorers import REVERSE_SCORERS

    assert REVERSE_SCORERS == ("trlm-ba", "trlm-foba-rev")
    for name in SCORERS:
        if name in REVERSE_SCORERS:
            with pytest.raises(ModelError, match="reverse"):
                make_scorer(name, engine=smol)
        else:
            assert len(make_scorer(name, engine=smol).score(QUERY, [RIGHT, WRONG])) == 2


def test_empty_response_is_an_error_naming_it(smol):
    with pytest.raises(ValueError, match=r"query 1: response 2 is empty"):
        make_scorer("forward-mean", engine=smol).score_many([(QUERY, [RIGHT]), (QUERY, [RIGHT, WRONG, "  "])])
    with pytest.raises(ValueError, match=r"query 0: a query needs at least one response"):
        make_scorer("trlm-fo", engine=smol).score_many([(QUERY, [])])


def test_combine_is_forward_plus_alpha_times_backward_by_sum_or_per_token():
    from trlm.core.schema import LogLik
    from trlm.scoring.scorers import combine

    fw, ba = LogLik(-10.0, 5, False), LogLik(-4.0, 2, False)
    assert combine(fw, ba, 0.5, "sum") == pytest.approx(-12.0)
    assert combine(fw, ba, 0.5, "mean") == pytest.approx(-2.0 + 0.5 * -2.0)
    assert combine(fw, ba, 0.0, "sum") == pytest.approx(-10.0)  # α = 0 is the forward baseline


def test_combined_scorers_add_alpha_times_trlm_ba_to_the_forward_loglik(smol):
    responses = [RIGHT, WRONG]
    fw = make_scorer("forward-sum", engine=smol).logliks_many([(QUERY, responses)])[0]
    ba = make_scorer("trlm-ba").logliks_many([(QUERY, responses)])[0]
    got_sum = make_scorer("combined-sum", engine=smol, alpha=0.7).score(QUERY, responses)
    got_mean = make_scorer("combined-mean", engine=smol, alpha=0.7).score(QUERY, responses)
    assert got_sum == pytest.approx([f.logprob + 0.7 * b.logprob for f, b in zip(fw, ba)], abs=1e-4)
    assert got_mean == pytest.approx([f.mean + 0.7 * b.mean for f, b in zip(fw, ba)], abs=1e-4)


def test_the_spec_table_gives_each_scorer_its_reduction_servability_and_alpha():
    from trlm.scoring.scorers import COMBINED_ALPHA, DEFAULT_MODELS, SCORER_SPECS, SERVABLE_SCORERS

    assert SCORERS == tuple(SCORER_SPECS) and all(s.name == n for n, s in SCORER_SPECS.items())
    assert COMBINED_ALPHA == {"combined-sum": 0.1, "combined-mean": 0.5}
    assert SERVABLE_SCORERS == ("trlm-ba", "trlm-fo", "trlm-fo-chat", "trlm-foba-rev", "trlm-foba-fwd",
                                "forward-mean", "self")  # forward-sum, combined, length and random are not
    assert DEFAULT_MODELS["trlm-ba"] == "trlm-ba-smol" and DEFAULT_MODELS["trlm-fo"] == "smollm2-135m-instruct"
    assert "length" not in DEFAULT_MODELS
    assert [n for n, s in SCORER_SPECS.items() if s.reduce == "mean"] == ["combined-mean", "forward-mean", "self"]


def test_a_scorers_score_is_its_specs_score_of_its_logliks(smol):
    """score() == the spec's reduction of logliks_many(): per token for forward-mean, summed for trlm-fo."""
    from trlm.scoring.scorers import SCORER_SPECS

    for name in ("forward-mean", "trlm-fo"):
        sc = make_scorer(name, engine=smol)
        lls = sc.logliks_many([(QUERY, [RIGHT, WRONG])])[0]
        assert sc.score(QUERY, [RIGHT, WRONG]) == pytest.approx([SCORER_SPECS[name].score(ll) for ll in lls])
        assert [sc.score_loglik(ll) for ll in lls] == [SCORER_SPECS[name].score(ll) for ll in lls]
    assert SCORER_SPECS["forward-mean"].score(lls[0]) != SCORER_SPECS["forward-sum"].score(lls[0])

"""Judging steered answers: the rating parser, the harmonic mean with its zero rule, factor selection without
leakage, the LLM judge over an OpenAI-compatible endpoint, and the proxy judge's three ratings."""

import pytest

from trlm.core.llm import OpenAIClient
from trlm.steer.judge import LLMJudge, ProxyJudge, fluency_rating, harmonic, parse_rating
from trlm.steer.steering import select_factor


@pytest.mark.parametrize("text, want", [
    ("The concept is clearly there. Rating: [[2]]", 2.0),
    ("Rating: [[1]] ... on reflection, Rating: [[0]]", 0.0),  # the last Rating: counts
    ("Rating: 1", 1.0),
    ("Rating: [[1.5]]", 1.5),
    ("no rating here", 0.0),
    ("Rating: [[7]]", 0.0),
    ("Rating: excellent", 0.0),
])
def test_parse_rating_reads_the_text_after_the_last_rating(text, want):
    assert parse_rating(text) == want


def test_harmonic_mean_and_its_zero_rule():
    assert harmonic(2, 2, 2) == 2.0
    assert harmonic(1, 2, 2) == pytest.approx(3 / (1 + 0.5 + 0.5))
    assert harmonic(0, 2, 2) == 0.0 and harmonic(2, 2, 0) == 0.0


def test_factor_is_selected_on_the_first_half_and_reported_on_the_second():
    scores = {0.5: [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 2.0: [0, 0, 0, 0, 0, 2, 2, 2, 2, 2]}
    assert select_factor(scores) == (0.5, 0.0)  # 2.0 is best on the reported half, but that would be leakage
    assert select_factor({1.0: [1] * 10, 4.0: [1] * 10}) == (1.0, 1.0)  # ties: the smaller factor


def test_llm_judge_asks_three_questions_per_answer(chat_server):
    replies = iter(["ok Rating: [[2]]", "Rating: [[1]]", "Rating: [[2]]", "garbled", "Rating: [[2]]", "Rating: [[2]]"])
    chat_server.respond = lambda body: (200, next(replies))
    judge = LLMJudge(OpenAIClient(chat_server.url, "judge-model"))
    r = judge.rate("cats", ["Tell me a story.", "Describe Rome."], ["A cat story.", "Rome is old."])
    assert r == [(2.0, 1.0, 2.0), (0.0, 2.0, 2.0)]
    prompts = [b["messages"][0]["content"] for _, _, b in chat_server.seen]
    assert "Concept: cats" in prompts[0] and "Instruction: Tell me a story." in prompts[1] and "fluency" in prompts[2]


def test_proxy_judge_rates_concept_instruction_and_fluency():
    judge = ProxyJudge()
    pos = [f"The rocket launch {k} sent a satellite into orbit around the planet." for k in range(8)]
    neg = [f"My grandmother bakes bread {k} with butter every Sunday morning." for k in range(8)]
    judge.fit_concept("space flight", pos, neg)
    q = ["How do I bake bread?"]
    on = judge.rate("space flight", q, ["The rocket reached orbit after launch."], reference=["Mix flour and water."],
                    ppl=[5.0], reference_ppl=[5.0])[0]
    off = judge.rate("space flight", q, ["Mix flour, water and yeast, then bake."],
                     reference=["Mix flour and water."], ppl=[30.0], reference_ppl=[5.0])[0]
    assert on[0] > 1.0 > off[0]  # concept classifier
    assert off[1] > on[1]  # the bread answer stays on the instruction
    assert on[2] == 2.0 and off[2] == 0.0  # perplexity ratio 1 vs 6
    assert fluency_rating(1.5) == 2.0 and fluency_rating(3.0) == 1.0 and fluency_rating(4.1) == 0.0
    with pytest.raises(KeyError, match="fit_concept"):
        judge.rate("unknown", q, ["x"], reference=["y"], ppl=[1.0], reference_ppl=[1.0])

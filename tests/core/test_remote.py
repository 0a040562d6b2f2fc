"""The served engine (:mod:`trlm.core.remote`) against real vLLM servers, and its errors without one.

Tests marked ``vllm`` need the servers that ``scripts/vllm_test.sh`` (``make test-vllm``, run by ``.ci/run``)
starts: smollm2-135m-instruct (forward) and trlm-ba-smol (reverse, merged by ``trlm export``), both float32, so
the in-process float32 engine is the reference within float32 kernel tolerance. Without the servers they are
skipped — except under ``TRLM_REQUIRE_VLLM=1`` (what the script sets), where a missing server fails them.
"""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from trlm.cli import app
from trlm.core.checkpoint import ModelError
from trlm.core.engine import Engine, load_engine, require_in_process
from trlm.core.remote import RemoteEngine, ServerError
from trlm.core.schema import GenArgs, Request

# float32 on both sides; different kernels (vLLM's CPU attention vs PyTorch SDPA) still differ in the last bits
TOKEN_TOL = 2e-3

PAIRS = [Request("The capital of France is", " Paris, a city on the Seine."),
         Request("Q: Why is the sky blue?\nA:", " Because air scatters blue light more than red light."),
         Request("Translate to French: good morning.", " Bonjour."),
         Request("", "A sentence with no context at all.")]


@pytest.fixture(scope="module")
def fwd_url(vllm_url):
    return vllm_url


@pytest.fixture(scope="module")
def rev_url(vllm_reverse_url):
    return vllm_reverse_url


@pytest.fixture(scope="module")
def fwd(fwd_url):
    return RemoteEngine.connect(fwd_url)


@pytest.fixture(scope="module")
def rev(rev_url):
    return RemoteEngine.connect(rev_url)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- without a server


def test_a_server_that_is_down_is_one_error_naming_the_url_and_how_to_start_one():
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(ServerError) as e:
        RemoteEngine.connect(url, retries=0)
    msg = str(e.value)
    assert "\n" not in msg and f"{url}/models" in msg and "make vllm-serve" in msg


def test_cli_rerank_against_a_server_that_is_down_writes_nothing(tmp_path, one_line_error):
    out = tmp_path / "ranked.jsonl"
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    res = CliRunner().invoke(app, ["rerank", "examples/rerank_demo.jsonl", "--scorer", "trlm-fo", "--model", url,
                                   "--out", str(out)], env={"TRLM_REMOTE_RETRIES": "0"})
    assert "cannot reach" in one_line_error(res)
    assert not out.exists()


def test_what_needs_the_weights_refuses_a_served_model_in_one_line():
    with pytest.raises(ModelError, match="needs the weights in this process") as e:
        Engine.load("http://127.0.0.1:1/v1")
    assert "\n" not in str(e.value)


def test_speculative_generation_refuses_a_remote_engine_before_any_request():
    from trlm.speculative import speculative_generate

    eng = RemoteEngine.__new__(RemoteEngine)  # no server: the refusal must come before any request
    eng.name = "http://127.0.0.1:1/v1#m"
    with pytest.raises(ModelError, match="speculative decoding .*needs the model's weights in this process"):
        speculative_generate(eng, ["hi"], GenArgs(max_new_tokens=2), "ngram")
    with pytest.raises(ModelError, match="served model"):
        require_in_process(eng, "steering")


# ---------------------------------------------------------------- against the real servers


@pytest.mark.vllm
def test_connect_reads_name_token_order_context_window_and_special_tokens(fwd, rev, smol, ba_smol):
    assert (fwd.token_order, rev.token_order) == ("forward", "reverse")
    assert fwd.served == "smollm2-135m-instruct" and rev.served == "trlm-ba-smol"
    assert fwd.max_length == 8192 - 1  # the server's max_model_len, less the one token a completion must leave
    assert (fwd.start_id, fwd.eos_ids) == (smol.start_id, smol.eos_ids)
    assert fwd.chat_prompt("hi") == smol.chat_prompt("hi")


@pytest.mark.vllm
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_per_token_logprobs_equal_the_in_process_engine(direction, fwd, rev, smol, ba_smol):
    remote, local = (fwd, smol) if direction == "forward" else (rev, ba_smol)
    a = remote.loglikelihood(PAIRS, return_tokens=True)
    b = local.loglikelihood(PAIRS, return_tokens=True)
    for x, y in zip(a, b):
        assert x.num_tokens == y.num_tokens == len(x.token_logprobs)
        assert max(abs(u - v) for u, v in zip(x.token_logprobs, y.token_logprobs)) < TOKEN_TOL
        assert x.logprob == pytest.approx(y.logprob, abs=TOKEN_TOL * x.num_tokens)


@pytest.mark.vllm
def test_truncated_context_is_cut_as_in_process(fwd, smol):
    req = Request("word " * 9000, " the end.")
    with pytest.raises(ValueError, match="exceed the model's context window of 8191"):
        fwd.loglikelihood([req])
    assert fwd.encode_request(req, truncate="context") == \
        Engine.encode_request(_with_length(smol, fwd.max_length), req, truncate="context")


def _with_length(eng, n):
    import copy

    other = copy.copy(eng)
    other.max_length = n
    return other


@pytest.mark.vllm
@pytest.mark.parametrize("scorer", ["trlm-fo", "trlm-ba"])
def test_cli_rerank_on_a_served_model_gives_the_in_process_ranking(scorer, fwd_url, rev_url, tmp_path):
    served = fwd_url if scorer == "trlm-fo" else rev_url
    local = "smollm2-135m-instruct" if scorer == "trlm-fo" else "trlm-ba-smol"
    ranks = {}
    for name, model in (("served", served), ("local", local)):
        out = tmp_path / f"{name}.jsonl"
        res = CliRunner().invoke(app, ["rerank", "examples/rerank_demo.jsonl", "--scorer", scorer, "--model", model,
                                       "--out", str(out)])
        assert res.exit_code == 0, res.output
        ranks[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(ranks["served"]) == len(ranks["local"]) == 3
    for s, loc in zip(ranks["served"], ranks["local"]):
        assert s["ranking"] == loc["ranking"]
        # the local CLI runs in bf16 where the CPU has it (auto dtype), the test server in float32
        assert s["scores"] == pytest.approx(loc["scores"], abs=0.5)


@pytest.mark.vllm
def test_greedy_generation_equals_the_in_process_engine(fwd, rev, smol, ba_smol):
    args = GenArgs(max_new_tokens=24, temperature=0)
    prompts = [smol.chat_prompt("Name three colours."), "The quick brown fox"]
    for r, loc in zip(fwd.generate(prompts, args), smol.generate(prompts, args)):
        assert r[0].token_ids == loc[0].token_ids and r[0].text == loc[0].text
        assert r[0].finish_reason == loc[0].finish_reason
        assert r[0].logprob == pytest.approx(loc[0].logprob, abs=TOKEN_TOL * len(loc[0].token_ids))
    # reverse: the text generated is what precedes the prompt, in reading order
    back = rev.generate(["is the capital of France."], args)[0][0]
    assert back.token_ids == ba_smol.generate(["is the capital of France."], args)[0][0].token_ids


@pytest.mark.vllm
def test_stop_strings_cut_served_generation_as_in_process(fwd, smol):
    args = GenArgs(max_new_tokens=40, temperature=0, stop=(",", "\n"))
    prompt = [smol.chat_prompt("List four fruits separated by commas.")]
    r, loc = fwd.generate(prompt, args)[0][0], smol.generate(prompt, args)[0][0]
    assert (r.text, r.finish_reason, r.token_ids) == (loc.text, loc.finish_reason, loc.token_ids)
    assert r.finish_reason == "stop"


@pytest.mark.vllm
def test_seeded_sampling_on_the_server_repeats_for_the_same_seed(fwd):
    args = GenArgs(max_new_tokens=16, temperature=0.9, n=2, seed=7)
    a, b = fwd.generate(["Once upon a time"], args), fwd.generate(["Once upon a time"], args)
    assert [g.token_ids for g in a[0]] == [g.token_ids for g in b[0]]
    assert a[0][0].token_ids != a[0][1].token_ids  # the two samples of a prompt differ


@pytest.mark.vllm
def test_a_name_the_server_does_not_serve_lists_what_it_serves(fwd_url):
    with pytest.raises(ServerError, match="serves smollm2-135m-instruct, not 'nosuch'"):
        RemoteEngine.connect(fwd_url + "#nosuch")


@pytest.mark.vllm
def test_reverse_scorer_on_a_forward_served_model_is_refused_in_one_line(fwd_url, tmp_path, one_line_error):
    from trlm.scoring import make_scorer

    with pytest.raises(ModelError, match="token order 'forward'"):
        make_scorer("trlm-ba", model=fwd_url)
    out = tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["rerank", "examples/rerank_demo.jsonl", "--scorer", "trlm-ba", "--model", fwd_url,
                                   "--out", str(out)])
    assert "token order 'forward'" in one_line_error(res) and not out.exists()


@pytest.mark.vllm
def test_an_over_long_score_request_is_one_line_and_writes_nothing(fwd_url, tmp_path, one_line_error):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"context": "word " * 9000, "continuation": " end"}) + "\n")
    out = tmp_path / "scored.jsonl"
    res = CliRunner().invoke(app, ["score", str(pairs), "--model", fwd_url, "--out", str(out)])
    assert "context window of 8191" in one_line_error(res) and not out.exists()


@pytest.mark.vllm
def test_load_engine_gives_a_served_engine_for_a_url_and_scores_through_it(fwd_url, smol):
    eng = load_engine(fwd_url)
    assert isinstance(eng, RemoteEngine) and not eng.in_process
    got, want = eng.loglikelihood([PAIRS[0]])[0], smol.loglikelihood([PAIRS[0]])[0]
    assert got.num_tokens == want.num_tokens and got.logprob == pytest.approx(want.logprob, abs=0.02)

"""``trlm serve`` in front of real vLLM servers (``--model http://…/v1``), called with the official Cohere and
OpenAI clients. Marked ``vllm``: ``scripts/vllm_test.sh`` (``make test-vllm``) starts the servers."""

from __future__ import annotations


import pytest

from trlm.scoring import make_scorer

KEY = "vllm-test-key"
QUERY = "why is the sky blue"
DOCS = ["Paris is the capital and largest city of France.",
        "The sky is blue because air molecules scatter short blue wavelengths of sunlight (Rayleigh scattering).",
        "Blue light is scattered in all directions by the gases of the atmosphere."]

pytestmark = pytest.mark.vllm


def _serve(start, tmp_path, model: str, scorer: str):
    log = (tmp_path / f"serve-{scorer}.log").open("w+")
    return start(["--model", model, "--scorer", scorer, "--no-guard", "--api-key", KEY], log)


@pytest.mark.parametrize("scorer", ["trlm-fo", "trlm-ba"])
def test_cohere_rerank_through_trlm_serve_on_vllm_equals_the_in_process_scorer(scorer, tmp_path, smol, ba_smol,
                                                                               vllm_url, vllm_reverse_url,
                                                                               trlm_serve):
    import cohere

    served = vllm_url if scorer == "trlm-fo" else vllm_reverse_url
    url, proc = _serve(trlm_serve, tmp_path, served, scorer)
    try:
        local = smol if scorer == "trlm-fo" else ba_smol
        want = make_scorer(scorer, engine=local, task="retrieval", max_response_tokens=512).score(QUERY, DOCS)
        r = cohere.ClientV2(api_key=KEY, base_url=url).rerank(model=scorer, query=QUERY, documents=DOCS)
        assert [x.index for x in r.results] == sorted(range(len(DOCS)), key=lambda i: -want[i])
        raw = {x.index: x.raw_score for x in r.results}
        assert [raw[i] for i in range(len(DOCS))] == pytest.approx(want, abs=0.02)  # float32 server
    finally:
        proc.terminate()
        proc.wait(60)


def test_openai_chat_through_trlm_serve_on_vllm_is_the_in_process_greedy_answer(tmp_path, smol, vllm_url,
                                                                                 trlm_serve):
    import openai

    url, proc = _serve(trlm_serve, tmp_path, vllm_url, "trlm-fo")
    try:
        oa = openai.OpenAI(api_key=KEY, base_url=url + "/v1", max_retries=0)
        model = next(m.id for m in oa.models.list().data if m.id.startswith("http"))  # the served LM
        msgs = [{"role": "user", "content": "Name three colours."}]
        chat = oa.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
        from trlm.core.schema import GenArgs

        want = smol.generate([smol.render_chat(msgs)], GenArgs(max_new_tokens=16, temperature=0))[0][0]
        assert chat.choices[0].message.content == want.text.strip()
        stream = oa.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0, stream=True)
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == chat.choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(60)

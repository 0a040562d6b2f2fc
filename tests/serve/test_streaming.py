"""Streaming (OpenAI server-sent events) on /v1/completions and /v1/chat/completions, and the 422 for options the
server does not implement; in-process on the embedded model."""

from __future__ import annotations

import json

import pytest

from trlm.serve.app import create_app
from trlm.serve.generate import TextDelta

from .test_app import call, make_service


@pytest.fixture(scope="module")
def app(smol):
    return create_app(service=make_service(smol))


def events(r) -> tuple[list[dict], bool]:
    """The JSON chunks of an SSE body and whether it ended with [DONE]."""
    assert r.headers["content-type"].startswith("text/event-stream"), r.text
    datas = [line[len("data: "):] for line in r.text.split("\n") if line.startswith("data: ")]
    return [json.loads(d) for d in datas if d != "[DONE]"], bool(datas) and datas[-1] == "[DONE]"


def test_streamed_completions_concatenate_to_the_plain_texts_with_n_and_stop(app):
    body = {"prompt": ["One, two, three,", "The capital of France is"], "max_tokens": 16, "temperature": 0.9,
            "n": 2, "seed": 5, "stop": [" five", "."]}
    plain = call(app, "POST", "/v1/completions", json=body).json()
    r = call(app, "POST", "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    chunks, done = events(r)
    assert done
    texts, finish = {}, {}
    for c in chunks[:-1]:
        assert c["object"] == "text_completion" and c["id"] == chunks[0]["id"]
        (ch,) = c["choices"]
        texts[ch["index"]] = texts.get(ch["index"], "") + ch["text"]
        if ch["finish_reason"]:
            finish[ch["index"]] = ch["finish_reason"]
    want = {c["index"]: c for c in plain["choices"]}
    assert texts == {i: c["text"] for i, c in want.items()}
    assert finish == {i: c["finish_reason"] for i, c in want.items()}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert len(chunks) > 2 * len(want) + 1  # text arrived in more pieces than one per choice


def test_streamed_chat_is_the_plain_answer_role_first(app, smol):
    body = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 12, "temperature": 0}
    plain = call(app, "POST", "/v1/chat/completions", json=body).json()
    chunks, done = events(call(app, "POST", "/v1/chat/completions", json={**body, "stream": True}))
    assert done and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert "usage" not in chunks[-1]


def test_stream_errors_before_the_first_piece_are_plain_json(app):
    r = call(app, "POST", "/v1/completions", json={"prompt": "x", "max_tokens": 33, "stream": True})
    assert r.status_code == 422 and "'max_tokens'" in r.json()["message"]


@pytest.mark.parametrize("field,value", [("logit_bias", {"50256": -100}), ("echo", True), ("suffix", "end"),
                                         ("presence_penalty", 0.5), ("logprobs", 2), ("best_of", 3),
                                         ("min_p", 0.1)])
def test_unimplemented_completion_options_are_422_naming_them(app, field, value):
    r = call(app, "POST", "/v1/completions", json={"prompt": "Hello", "max_tokens": 2, field: value})
    assert r.status_code == 422, r.text
    assert f"field '{field}'" in r.json()["message"] and "not implemented" in r.json()["message"]


@pytest.mark.parametrize("field,value", [("tools", [{"type": "function", "function": {"name": "f"}}]),
                                         ("response_format", {"type": "json_object"}), ("logprobs", True),
                                         ("frequency_penalty", 1.0), ("tool_choice", "auto"), ("n_typo", 1)])
def test_unimplemented_or_unknown_chat_options_are_422_naming_them(app, field, value):
    r = call(app, "POST", "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                        "max_tokens": 2, field: value})
    assert r.status_code == 422, r.text
    assert f"field '{field}'" in r.json()["message"]


def test_noop_values_and_ignored_fields_are_accepted(app):
    body = {"messages": [{"role": "user", "content": "Hi", "name": "ann"}], "max_tokens": 2, "temperature": 0,
            "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "tools": [],
            "response_format": {"type": "text"}, "user": "u1", "metadata": {"a": "b"}, "store": False,
            "max_completion_tokens": 3}
    r = call(app, "POST", "/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 3  # max_completion_tokens wins over max_tokens
    r = call(app, "POST", "/v1/rerank", json={"query": "q", "documents": ["d"], "rank_fields": ["text"],
                                              "priority": 1})
    assert r.status_code == 200, r.text
    r = call(app, "POST", "/v1/rerank", json={"query": "q", "documents": [{"text": "d", "title": "t"}],
                                              "rank_fields": ["title"]})
    assert r.status_code == 422 and "field 'rank_fields'" in r.json()["message"]


def test_text_delta_holds_back_a_possible_stop_and_a_partial_character():
    d = TextDelta(stops=["END"])
    assert d.update("Hello E", False) == "Hello "  # "E" may start "END"
    assert d.update("Hello EN", False) == ""
    assert d.update("Hello ENOUGH", False) == "ENOUGH"
    assert d.update("Hello ENOUGH caf\ufffd", False) == " caf"
    assert d.update("Hello ENOUGH café", True) == "é"
    chat = TextDelta(strip=True)
    pieces = [chat.update(t, False) for t in ("  ", "  Hi", "  Hi  ", "  Hi  there ")]
    assert pieces == ["", "Hi", "", "  there"] and chat.update("  Hi  there \n", True) == ""


def test_a_stream_whose_job_ends_with_its_first_piece_still_streams(smol):
    """With --speculative each choice arrives in one piece, at the very end of its job (the piece and the job's
    result land together)."""
    app = create_app(service=make_service(smol, speculative="ngram"))
    body = {"prompt": "One, two, three, one, two,", "max_tokens": 6, "temperature": 0, "n": 2}
    plain = call(app, "POST", "/v1/completions", json=body).json()
    chunks, done = events(call(app, "POST", "/v1/completions", json={**body, "stream": True}))
    texts = {}
    for c in chunks:
        for ch in c["choices"]:
            texts[ch["index"]] = texts.get(ch["index"], "") + ch["text"]
    assert done and texts == {c["index"]: c["text"] for c in plain["choices"]}

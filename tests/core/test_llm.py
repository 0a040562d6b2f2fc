"""The chat-client interface: the engine client, the OpenAI-compatible HTTP client (retries, errors) and the cache."""

from __future__ import annotations

import pytest

from trlm.core.cache import ResultCache
from trlm.core.engine import GenArgs
from trlm.core.llm import CachedClient, ChatParams, EngineClient, LLMError, OpenAIClient, as_messages


def test_engine_client_is_the_engines_greedy_chat_generation(smol):
    client = EngineClient(smol)
    msgs = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"}]
    got = client.complete(msgs, ChatParams(max_tokens=8))
    want = smol.generate([smol.render_chat(msgs)], GenArgs(max_new_tokens=8, temperature=0.0))[0][0].text.strip()
    assert got == want and got
    assert client.complete_many(["Say hi.", msgs], ChatParams(max_tokens=8))[1] == got  # batched == single


def test_http_client_sends_the_request_and_parses_the_reply(chat_server):
    chat_server.respond = lambda body: (200, "  Paris.  ")
    c = OpenAIClient(chat_server.url, "m1", api_key="sk-x")
    assert c.complete("Capital of France?", ChatParams(max_tokens=5, temperature=0.5, stop=("\n",))) == "Paris."
    path, auth, body = chat_server.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-x"
    assert body == {"model": "m1", "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 5,
                    "temperature": 0.5, "top_p": 1.0, "seed": 0, "stop": ["\n"]}


def test_http_client_retries_overload_then_succeeds(chat_server):
    replies = iter([(503, {"error": "busy"}), (429, {"error": "slow down"}, {"Retry-After": "0"}), (200, "ok")])
    chat_server.respond = lambda body: next(replies)
    c = OpenAIClient(chat_server.url, "m", retries=2, backoff=0.01)
    assert c.complete("hi") == "ok" and len(chat_server.seen) == 3


def test_http_client_errors_say_what_happened(chat_server):
    chat_server.respond = lambda body: (400, {"error": {"message": "bad model"}})
    c = OpenAIClient(chat_server.url, "m", retries=3, backoff=0.01)
    with pytest.raises(LLMError, match="HTTP 400.*bad model"):
        c.complete("hi")
    assert len(chat_server.seen) == 1  # a 400 is not retried
    chat_server.respond = lambda body: (200, {"choices": []})
    with pytest.raises(LLMError, match="without choices"):
        c.complete("hi")
    chat_server.respond = lambda body: (503, {"error": "down"})
    with pytest.raises(LLMError, match="HTTP 503"):
        OpenAIClient(chat_server.url, "m", retries=1, backoff=0.01).complete("hi")
    with pytest.raises(LLMError, match="cannot reach .* after 2 attempts"):
        OpenAIClient("http://127.0.0.1:9/v1", "m", retries=1, backoff=0.01, timeout=2).complete("hi")
    with pytest.raises(ValueError, match="must start with http"):
        OpenAIClient("localhost:8000", "m")
    with pytest.raises(ValueError, match="message 0"):
        as_messages([{"role": "robot", "content": "x"}])


def test_cached_client_asks_once_per_conversation_and_params(chat_server, tmp_path):
    chat_server.respond = lambda body: (200, body["messages"][-1]["content"].upper())
    cache = ResultCache(tmp_path / "llm.jsonl", {"client": "stub"})
    c = CachedClient(OpenAIClient(chat_server.url, "m"), cache)
    assert c.complete_many(["a", "b", "a"]) == ["A", "B", "A"]
    assert c.complete("b") == "B" and len(chat_server.seen) == 2
    c.complete("b", ChatParams(temperature=0.7))  # other params: another entry
    assert len(chat_server.seen) == 3
    again = CachedClient(OpenAIClient(chat_server.url, "m"), ResultCache(tmp_path / "llm.jsonl", {"client": "stub"}))
    assert again.complete("a") == "A" and len(chat_server.seen) == 3  # resumed from disk


def test_cached_client_sends_uncached_conversations_chunk_at_a_time(tmp_path):
    """``chunk`` is the number of uncached conversations per client call (stored after each call); cached ones are
    not sent again, and a chunk below 1 is refused."""

    class Recorder:
        name = "rec"

        def __init__(self):
            self.sizes = []

        def complete_many(self, convs, params=None, progress=False):
            self.sizes.append(len(convs))
            return [c[-1]["content"] * 2 for c in convs]

    rec = Recorder()
    c = CachedClient(rec, ResultCache(tmp_path / "c.jsonl", {"client": "rec"}), chunk=3)
    assert c.complete_many([str(i) for i in range(7)]) == [str(i) * 2 for i in range(7)]
    assert rec.sizes == [3, 3, 1]
    c.complete_many([str(i) for i in range(9)])
    assert rec.sizes == [3, 3, 1, 2]
    with pytest.raises(ValueError, match="chunk"):
        CachedClient(rec, ResultCache(tmp_path / "d.jsonl", {"client": "rec"}), chunk=0)

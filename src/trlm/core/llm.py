"""One chat-client interface for every judge, generator and oracle: messages in, text out.

* :class:`EngineClient`  a local chat model run by the engine (its chat template, the engine's sampler).
* :class:`OpenAIClient`  any OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint (vLLM, llama.cpp
  server, ``trlm serve``, a hosted API), with a timeout, retries with exponential back-off on 429 / 5xx /
  connection errors, and errors that say what the endpoint answered.
* :class:`CachedClient`  wraps either one in a :class:`~trlm.core.cache.ResultCache`, so a judge or oracle is
  never asked the same thing twice (and a killed run resumes).

    >>> client = make_client("smollm2-135m-instruct")              # or "http" (TRLM_JUDGE_* variables)
    >>> client.complete([{"role": "user", "content": "Say hi."}], ChatParams(max_tokens=8))
    'Hi! How can I help you today?'
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol, Sequence, Union

from trlm.core.cache import ResultCache, cache_key

if TYPE_CHECKING:
    from trlm.core.engine import Engine

log = logging.getLogger(__name__)

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}
Messages = Union[str, Sequence[Message]]  # a bare string is one user turn
RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)


class LLMError(RuntimeError):
    """A chat endpoint failed, or answered something that is not a completion; the message says which."""


@dataclass(frozen=True)
class ChatParams:
    """Decoding settings of one completion. ``temperature=0`` is greedy."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1]; got {self.temperature}, {self.top_p}")


def as_messages(messages: Messages) -> list[Message]:
    """Validate a conversation; a bare string becomes one user message."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be {{'role': system|user|assistant, 'content': str}}, got {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    if not out:
        raise ValueError("a conversation needs at least one message")
    return out


class ChatClient(Protocol):
    name: str

    def complete(self, messages: Messages, params: ChatParams = ChatParams()) -> str: ...

    def complete_many(self, conversations: Sequence[Messages], params: ChatParams = ChatParams(),
                      progress: bool = False) -> list[str]: ...


class EngineClient:
    """A chat model run locally by the engine; ``complete_many`` batches all conversations in one call."""

    def __init__(self, engine: "Engine"):
        self.engine = engine
        self.name = f"engine:{engine.name}"

    def complete(self, messages: Messages, params: ChatParams = ChatParams()) -> str:
        return self.complete_many([messages], params)[0]

    def complete_many(self, conversations: Sequence[Messages], params: ChatParams = ChatParams(),
                      progress: bool = False) -> list[str]:
        from trlm.core.schema import GenArgs

        prompts = [self.engine.render_chat(as_messages(m)) for m in conversations]
        args = GenArgs(max_new_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                       seed=params.seed, stop=params.stop)
        gens = self.engine.generate(prompts, args, direction="forward", progress=progress)
        return [g[0].text.strip() for g in gens]


class OpenAIClient:
    """An OpenAI-compatible chat-completions endpoint (``base_url`` ends in ``/v1``)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 1.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base URL must start with http:// or https://, got {base_url!r}")
        if retries < 0 or timeout <= 0:
            raise ValueError(f"retries must be >= 0 and timeout > 0; got {retries}, {timeout}")
        self.base_url, self.model, self.api_key = base_url.rstrip("/"), model, api_key
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.name = f"http:{model}"

    @classmethod
    def from_env(cls, prefix: str = "TRLM_JUDGE") -> "OpenAIClient":
        """``{prefix}_BASE_URL`` (e.g. http://localhost:8000/v1), ``{prefix}_MODEL``, optional ``{prefix}_API_KEY``."""
        missing = [f"{prefix}_{k}" for k in ("BASE_URL", "MODEL") if not os.environ.get(f"{prefix}_{k}")]
        if missing:
            raise ValueError(f"the http client needs {' and '.join(missing)} set (base URL ending in /v1, model "
                             f"name); {prefix}_API_KEY is optional")
        return cls(os.environ[f"{prefix}_BASE_URL"], os.environ[f"{prefix}_MODEL"], os.environ.get(f"{prefix}_API_KEY"))

    def complete(self, messages: Messages, params: ChatParams = ChatParams()) -> str:
        body = {"model": self.model, "messages": as_messages(messages), "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}
        if params.stop:
            body["stop"] = list(params.stop)
        payload = self._post("/chat/completions", body)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"{self.base_url}/chat/completions answered without choices[0].message.content: "
                           f"{json.dumps(payload)[:300]}") from None
        if not isinstance(content, str):
            raise LLMError(f"{self.base_url}/chat/completions answered content {content!r}, not text")
        return content.strip()

    def complete_many(self, conversations: Sequence[Messages], params: ChatParams = ChatParams(),
                      progress: bool = False) -> list[str]:
        from tqdm.auto import tqdm

        return [self.complete(m, params) for m in tqdm(conversations, desc=self.name, leave=False,
                                                       disable=not progress or len(conversations) < 2)]

    def _post(self, route: str, body: dict) -> dict:
        import urllib.error
        import urllib.request

        url = self.base_url + route
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    text = resp.read().decode("utf-8")
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise LLMError(f"{url} did not answer JSON: {text[:200]!r}") from None
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                if e.code not in RETRY_STATUS or last:
                    raise LLMError(f"{url} answered HTTP {e.code}: {detail}") from None
                wait = _retry_after(e.headers.get("Retry-After")) or self.backoff * 2 ** attempt
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                if last:
                    raise LLMError(f"cannot reach {url} after {self.retries + 1} attempts: {reason}; check the base "
                                   "URL and that the server is running") from None
                wait = self.backoff * 2 ** attempt
            log.warning("%s: attempt %d failed; retrying in %.1f s", url, attempt + 1, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, float(value)) if value else None
    except ValueError:
        return None


class CachedClient:
    """Any chat client behind a :class:`ResultCache`: one call per distinct (conversation, params), ever.

    Uncached conversations go to the client ``chunk`` at a time, each chunk stored before the next: a killed run
    loses at most one chunk, and a larger chunk lets a local engine decode more rows per step."""

    def __init__(self, client: ChatClient, cache: ResultCache, chunk: int = 8):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.client, self.cache, self.chunk = client, cache, chunk
        self.name = client.name

    def complete(self, messages: Messages, params: ChatParams = ChatParams()) -> str:
        return self.complete_many([messages], params)[0]

    def complete_many(self, conversations: Sequence[Messages], params: ChatParams = ChatParams(),
                      progress: bool = False) -> list[str]:
        convs = [as_messages(m) for m in conversations]
        keys = [cache_key(self.client.name, m, asdict(params)) for m in convs]
        return self.cache.map(keys, convs, lambda part: self.client.complete_many(part, params), chunk=self.chunk,
                              desc=self.name, progress=progress)


def make_client(spec: str, *, env_prefix: str = "TRLM_JUDGE") -> ChatClient:
    """``http`` (an OpenAI-compatible endpoint from ``{env_prefix}_*`` variables) or a local model for the engine."""
    if spec == "http":
        return OpenAIClient.from_env(env_prefix)
    from trlm.core.engine import get_engine

    return EngineClient(get_engine(spec))

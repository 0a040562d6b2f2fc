"""Pydantic models of the OpenAI subset ``trlm serve`` speaks: ``/v1/completions``, ``/v1/chat/completions`` (with
trlm's per-request ``steer``) and ``/v1/models``. The shared rules (unknown fields, no-op values, blank texts)
are :mod:`trlm.serve.schemas`'s."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trlm.serve.schemas import _Body, _ignored, _noop, _refuse_unless


# ---------------------------------------------------------------------------------------------- generation


class SteerSpec(_Body):
    """Add ``factor x max_act[concept] x w[concept]`` to the residual stream at the directions' layer (the
    ``trlm steer generate`` intervention), for this request's rows only."""

    directions: str = Field(..., description="A directions set loaded with `trlm serve --directions NAME=DIR`.")
    concept: int = Field(..., description="A concept id of that set.")
    factor: float = Field(..., ge=-1000, le=1000, description="Steering strength: alpha = factor x max_act.")


class StreamOptions(_Body):
    include_usage: bool = Field(False, description="Send a last chunk with the usage and no choices.")
    include_obfuscation: Optional[Any] = _ignored("padding of stream chunks")


# (field, no-op values, what it would do): refused with a 422 unless absent or one of the no-op values
_REFUSED_GEN = {
    "suffix": ((), "text after the completion"),
    "echo": ((False,), "echoing the prompt"),
    "best_of": ((1,), "best-of-n selection"),
    "logprobs": ((False,), "log-probabilities in the answer"),
    "top_logprobs": ((0,), "log-probabilities in the answer"),
    "logit_bias": (({},), "logit bias"),
    "presence_penalty": ((0, 0.0), "presence penalty"),
    "frequency_penalty": ((0, 0.0), "frequency penalty"),
    "repetition_penalty": ((1, 1.0), "repetition penalty"),
    "min_p": ((0, 0.0), "min-p sampling"),
    "response_format": (({"type": "text"},), "structured output"),
    "tools": (([],), "tool calls"),
    "tool_choice": (("none",), "tool calls"),
    "functions": (([],), "function calls"),
    "function_call": (("none",), "function calls"),
    "modalities": ((["text"],), "non-text output"),
    "audio": ((), "audio output"),
    "prediction": ((), "predicted outputs"),
    "reasoning_effort": ((), "reasoning effort"),
    "web_search_options": ((), "web search"),
}
_COMPLETION_ONLY = ("suffix", "echo", "best_of")


DEFAULT_MAX_TOKENS = 64  # or the server's --max-new-tokens when smaller


class _GenBody(_Body):
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1, description=f"Default: {DEFAULT_MAX_TOKENS} or the server's "
                                      "limit when smaller.")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens (0: all).")
    n: int = Field(1, ge=1)
    seed: int = 0
    stop: Union[str, list[str], None] = None
    stream: bool = Field(False, description="Answer with server-sent events (OpenAI chunks, then [DONE]).")
    stream_options: Optional[StreamOptions] = None
    steer: Optional[list[SteerSpec]] = Field(None, description="Per-request steering (served --directions).")

    @field_validator(*[f for f in _REFUSED_GEN], mode="before", check_fields=False)
    @classmethod
    def _refused(cls, v, info):
        allowed, what = _REFUSED_GEN[info.field_name]
        return _refuse_unless(v, allowed, info.field_name, what)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_GenBody):
    prompt: Union[str, list[str]] = Field(..., json_schema_extra={"minItems": 1})
    user: Optional[Any] = _ignored("an end-user id")
    suffix: Optional[Any] = _noop(what=_REFUSED_GEN["suffix"][1])
    echo: Optional[Any] = _noop(False, what=_REFUSED_GEN["echo"][1])
    best_of: Optional[Any] = _noop(1, what=_REFUSED_GEN["best_of"][1])
    logprobs: Optional[Any] = _noop(what="log-probabilities in the answer")
    logit_bias: Optional[Any] = _noop({}, what="logit bias")
    presence_penalty: Optional[Any] = _noop(0, what="presence penalty")
    frequency_penalty: Optional[Any] = _noop(0, what="frequency penalty")
    repetition_penalty: Optional[Any] = _noop(1, what="repetition penalty")
    min_p: Optional[Any] = _noop(0, what="min-p sampling")

    @field_validator("logprobs", mode="before")
    @classmethod
    def _logprobs(cls, v):  # an integer in the completions API: any value asks for log-probabilities
        return _refuse_unless(v, (), "logprobs", "log-probabilities in the answer")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatTurn(ChatMessage):
    """A message of a request."""

    model_config = ConfigDict(extra="forbid")
    name: Optional[Any] = _ignored("a participant name")


class ChatRequest(_GenBody):
    messages: list[ChatTurn] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="The newer name of max_tokens (wins).")
    user: Optional[Any] = _ignored("an end-user id")
    metadata: Optional[Any] = _ignored("stored-completion metadata")
    store: Optional[Any] = _ignored("completions are not stored")
    service_tier: Optional[Any] = _ignored("a scheduling hint")
    parallel_tool_calls: Optional[Any] = _ignored("tools are not implemented")
    prompt_cache_key: Optional[Any] = _ignored("a cache hint")
    safety_identifier: Optional[Any] = _ignored("an end-user id")
    logprobs: Optional[Any] = _noop(False, what="log-probabilities in the answer")
    top_logprobs: Optional[Any] = _noop(0, what="log-probabilities in the answer")
    logit_bias: Optional[Any] = _noop({}, what="logit bias")
    presence_penalty: Optional[Any] = _noop(0, what="presence penalty")
    frequency_penalty: Optional[Any] = _noop(0, what="frequency penalty")
    repetition_penalty: Optional[Any] = _noop(1, what="repetition penalty")
    min_p: Optional[Any] = _noop(0, what="min-p sampling")
    response_format: Optional[Any] = _noop({"type": "text"}, what="structured output")
    tools: Optional[Any] = _noop([], what="tool calls")
    tool_choice: Optional[Any] = _noop("none", what="tool calls")
    functions: Optional[Any] = _noop([], what="function calls")
    function_call: Optional[Any] = _noop("none", what="function calls")
    modalities: Optional[Any] = _noop(["text"], what="non-text output")
    audio: Optional[Any] = _noop(what="audio output")
    prediction: Optional[Any] = _noop(what="predicted outputs")
    reasoning_effort: Optional[Any] = _noop(what="reasoning effort")
    web_search_options: Optional[Any] = _noop(what="web search")

    def model_post_init(self, _ctx) -> None:
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


# ---------------------------------------------------------------------------------------------- models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "trlm"
    kind: Literal["scorer", "generator", "checker"]
    routes: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

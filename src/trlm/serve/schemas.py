"""Pydantic models of every request and response body ``trlm serve`` speaks.

Field names follow the APIs clients already use, so no adapter is needed: the Cohere rerank shape (v1 and v2)
for ``/v1/rerank`` and ``/v2/rerank``, the OpenAI subset for ``/v1/completions`` and ``/v1/chat/completions``,
and the ``trlm score`` contract for ``/v1/score``. Unknown request fields are ignored (clients send options this
server does not implement, e.g. Cohere's ``rank_fields``); a field of the wrong type or a missing one is a 422
that names it.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _not_blank(v: str, what: str) -> str:
    if not v.strip():
        raise ValueError(f"{what} is empty (only whitespace); there is nothing to score")
    return v


# ---------------------------------------------------------------------------------------------- rerank


class RerankDocument(BaseModel):
    """A document object: ``text`` is scored; any other fields are returned unchanged with ``return_documents``."""

    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(_Body):
    model: Optional[str] = Field(None, description="A served scorer (GET /v1/models); default: the first one.")
    query: str = Field(..., min_length=1)
    documents: list[Union[str, RerankDocument]] = Field(..., min_length=1)
    top_n: Optional[int] = Field(None, ge=1, description="Return only the best top_n (default: all).")
    return_documents: bool = False
    max_tokens_per_doc: Optional[int] = Field(None, ge=1, description="Documents are cut to this many tokens "
                                              "(their start) before scoring; capped by the server's limit.")

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        return _not_blank(v, "query")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(BaseModel):
    index: int
    relevance_score: float = Field(..., description="exp(raw_score / n) in (0, 1]: see trlm.serve.service.")
    raw_score: float = Field(..., description="The scorer's score (a log-probability; higher is better).")
    truncated: bool = Field(False, description="The document was cut to max_tokens_per_doc before scoring.")
    document: Optional[RerankDocument] = None


class BilledUnits(BaseModel):
    search_units: int = 1
    input_tokens: int = 0


class ApiVersion(BaseModel):
    version: str


class RerankMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    warnings: list[str] = []


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: RerankMeta


# ---------------------------------------------------------------------------------------------- score


class ScorePair(_Body):
    context: str
    continuation: str

    @field_validator("continuation")
    @classmethod
    def _cont(cls, v: str) -> str:
        return _not_blank(v, "continuation")


class ScoreRequest(_Body):
    model: Optional[str] = Field(None, description="The served model (default: it).")
    pairs: list[ScorePair] = Field(..., min_length=1)
    direction: Optional[Literal["forward", "reverse"]] = None
    truncate: Literal["error", "context"] = Field("error", description="'context' drops the context tokens that "
                                                  "do not fit the window (farthest from the continuation first).")


class ScoreResult(BaseModel):
    logprob: float
    num_tokens: int
    is_greedy: bool


class ScoreResponse(BaseModel):
    id: str
    model: str
    results: list[ScoreResult]


# ---------------------------------------------------------------------------------------------- guard


class GuardRequest(_Body):
    query: str = Field(..., min_length=1)
    response: Optional[str] = Field(None, description="The model's answer; without it only the filter runs.")


class GuardResponse(BaseModel):
    id: str
    rejected: bool
    stage: Literal["filter", "trlm", "passed"]
    flagged: int = Field(..., description="Generated queries the filter flagged (Alg. 12 rejects when > tau).")
    tau: int
    queries: list[str] = Field(..., description="Queries generated back from the response.")


# ---------------------------------------------------------------------------------------------- generation


class _GenBody(_Body):
    model: Optional[str] = None
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    seed: int = 0
    stop: Union[str, list[str], None] = None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class CompletionRequest(_GenBody):
    prompt: Union[str, list[str]]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_GenBody):
    messages: list[ChatMessage] = Field(..., min_length=1)


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
    kind: Literal["scorer", "generator"]
    routes: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

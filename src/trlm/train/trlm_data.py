"""Training data: JSONL text (packed) and query/response pairs (TRLM template), in any token order.

Rows are either ``{"text": str}`` (pre-training; documents are packed into ``seq_len`` blocks) or
``{"query": str, "response": str}`` (instruction tuning; one sequence per pair). A file may mix both.

Pairs are rendered with the TRLM-Ba best-of-N template (:func:`trlm.scoring.prompts.pair_request`) — forward
reading text ``join("Question: ", Q') + join("? Answer:", A)`` with a trailing ``?`` of Q dropped — and tokenised by
:meth:`trlm.core.engine.Engine.encode_request`, so a reverse-order sequence is exactly what TRLM-Ba later scores:
``[start] + rev(tok(? Answer: A)) + rev(tok(Question: Q'))``. With ``mask_prompt`` only the scored part (the
question for reverse order, the answer for forward order) carries loss.

A pair row may name a ``task`` (``rerank``, ``retrieval`` or ``citation``): it is then rendered with Table 7's
prompts for that task, as the TRLM scorers read it — reverse order as ``trlm-ba`` / ``trlm-foba-rev`` score it
(``Rev(SP+Q)`` given ``Rev(CP+A)``), forward order as ``trlm-fo`` / ``trlm-foba-fwd`` do (``SP+Q`` after
``A+CP``). For ``rerank`` the reverse rendering is the pair template above.

Token order ``both`` (TRLM-FoBa, the paper's Alg. 4): even-indexed examples are reversed, odd-indexed ones
are read forward.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from trlm.core.engine import Engine, Request
from trlm.core.io import InputError, read_jsonl
from trlm.core.models import LoadedModel
from trlm.scoring.prompts import TASKS, backward_request, pair_request
from trlm.train.data import IGNORE, TokenExample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JsonlExamples:
    """A training file as an example source for :func:`trlm.train.loop.train`: rows are checked now, and
    tokenised (in the run's token order) once the model exists."""

    path: Path
    mask_prompt: bool = False  # pairs: loss only on the scored part (question in reverse, answer forward)

    def __post_init__(self):
        read_rows(self.path)  # a bad row fails before any model is loaded

    @property
    def name(self) -> str:
        return str(self.path)

    def examples(self, lm: LoadedModel, token_order: str, seq_len: int) -> list[TokenExample]:
        return build_examples(read_rows(self.path), lm, token_order, seq_len, self.mask_prompt, source=self.name)


def _direction(order: str, index: int) -> str:
    if order == "both":
        return "reverse" if index % 2 == 0 else "forward"
    return order


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a training file; each must hold ``text`` or both ``query`` and ``response`` (strings)."""
    rows = read_jsonl(path)
    path = Path(path)
    for n, row in _numbered(path, rows):
        if "text" in row:
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise InputError(f"{path}:{n}: field 'text' must be a non-empty string")
        elif "query" in row or "response" in row:
            for key in ("query", "response"):
                if key not in row:
                    raise InputError(f"{path}:{n}: missing field {key!r} (a pair row needs 'query' and 'response')")
                if not isinstance(row[key], str) or not row[key].strip():
                    raise InputError(f"{path}:{n}: field {key!r} must be a non-empty string")
            if "task" in row and row["task"] not in TASKS:
                raise InputError(f"{path}:{n}: field 'task' must be one of {', '.join(TASKS)}; got {row['task']!r}")
        else:
            raise InputError(f"{path}:{n}: a row needs 'text', or 'query' and 'response'; got keys {sorted(row)}")
    return rows


def _numbered(path: Path, rows: list[dict]):
    """(line number, row) pairs; blank lines are skipped by read_jsonl, so recount them here."""
    lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    return zip(lines, rows)


def _task_request(enc: Engine, row: dict, direction: str, seq_len: int) -> Request:
    """A pair in its task's Table 7 template; the response is cut (keeping its start) so the query fits."""
    budget = seq_len - 16 - len(enc.encode(row["query"]))
    response = enc.truncate(row["response"], budget) if budget > 0 else row["response"]
    return backward_request("ba" if direction == "reverse" else "fo", row["task"], row["query"], response)


def build_examples(rows: list[dict], lm: LoadedModel, order: str, seq_len: int, mask_prompt: bool = False,
                   source: str = "data") -> list[TokenExample]:
    """Tokenise rows in ``order`` (forward / reverse / both): pairs one sequence each, text packed."""
    if seq_len < 8:
        raise ValueError(f"--seq-len must be >= 8, got {seq_len}")
    enc = Engine(dataclasses.replace(lm, token_order=order), max_length=seq_len)  # tokeniser view in `order`
    examples: list[TokenExample] = []
    stream: list[int] = []
    skipped: list[int] = []
    for i, row in enumerate(rows):
        d = _direction(order, i)
        if "text" in row:
            ids = enc.encode(row["text"])
            stream += [enc.start_id, *(ids[::-1] if d == "reverse" else ids)]
            continue
        if "task" in row:
            req = _task_request(enc, row, d, seq_len)
        else:
            req = pair_request(row["query"], row["response"], d)
        if d == "forward" and "task" not in row:
            # keep the start of a long answer (as the scorers do); reverse cuts it in encode_request
            budget = seq_len - 1 - len(enc.encode(req.context.rstrip()))
            if budget > 0:
                req = Request(req.context, enc.truncate(req.continuation, budget))
        try:
            prefix, target = enc.encode_request(req, d, truncate="context")
        except ValueError:  # the scored part alone does not fit in seq_len
            skipped.append(i + 1)
            continue
        ids = prefix + target
        labels = [IGNORE] * len(prefix) + target if mask_prompt else [IGNORE, *ids[1:]]
        examples.append(TokenExample(tuple(ids), tuple(labels)))
    if skipped:
        log.warning("%s: skipped %d pair(s) whose scored part alone exceeds --seq-len %d (rows %s)", source,
                    len(skipped), seq_len, ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else ""))
    for k in range(0, len(stream) - seq_len + 1, seq_len):  # packing; a tail shorter than seq_len is dropped
        block = tuple(stream[k:k + seq_len])
        examples.append(TokenExample(block, block))
    if not examples:
        raise InputError(f"{source}: no training sequence (text shorter than --seq-len {seq_len}?)")
    return examples

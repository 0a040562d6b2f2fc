"""Chat-format training sequences: ``{"prompt", "response"}`` rows as the model sees them at generation time.

``[start] + tok(chat_template(prompt)) + tok(response) + [eos]`` — the prompt rendered exactly as
:meth:`trlm.core.engine.Engine.encode_prompt` feeds a chat prompt to ``generate``. ``completions_only`` puts the
loss on the response tokens (and the end-of-turn token) only; otherwise on every token after the first.
Used by distillation (:mod:`trlm.distill.data`) and by ReFT-r1 (:mod:`trlm.steer.reft`).
"""

from __future__ import annotations

import dataclasses
import logging

from trlm.core.engine import Engine
from trlm.core.io import InputError
from trlm.core.models import LoadedModel
from trlm.train.data import IGNORE, TokenExample

log = logging.getLogger(__name__)


def chat_examples(rows: list[dict], lm: LoadedModel, seq_len: int, completions_only: bool,
                  source: str = "data") -> list[TokenExample]:
    """One :class:`TokenExample` per row; responses are cut to fit ``seq_len``, rows whose prompt alone does not fit
    are skipped with a warning."""
    eng = Engine(dataclasses.replace(lm, token_order="forward"), max_length=seq_len)
    tok = lm.tokenizer  # the tokenizer's own EOS is the chat end-of-turn token of instruct models (<|im_end|> ...)
    eos = tok.eos_token_id if tok.eos_token_id is not None else (eng.eos_ids[0] if eng.eos_ids else None)
    out, skipped = [], []
    for i, row in enumerate(rows):
        prefix = eng.encode_prompt(eng.chat_prompt(row["prompt"]), "forward")
        body = eng.encode(row["response"]) + ([eos] if eos is not None else [])
        room = seq_len - len(prefix)
        if room < 1:
            skipped.append(i + 1)
            continue
        ids = prefix + body[:room]
        labels = [IGNORE] * len(prefix) + ids[len(prefix):] if completions_only else [IGNORE, *ids[1:]]
        out.append(TokenExample(tuple(ids), tuple(labels)))
    if skipped:
        log.warning("%s: skipped %d row(s) whose prompt alone exceeds --seq-len %d (rows %s)", source, len(skipped),
                    seq_len, ", ".join(map(str, skipped[:10])))
    if not out:
        raise InputError(f"{source}: no training sequence fits --seq-len {seq_len}")
    return out

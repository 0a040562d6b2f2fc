"""Grounded fact checkers with MiniCheck's interface: ``score(docs, claims) -> list[Check]``.

Every checker splits a document into sentence chunks (:mod:`trlm.factcheck.chunking`), scores the claim against
each chunk and keeps the **maximum**; ``Check.label`` is ``prob > threshold`` (0.5 unless the checker was tuned).
What differs is how one (chunk, claim) pair becomes P(supported):

===================  =======================================================================================
checker              P(supported) of one (chunk, claim)
===================  =======================================================================================
``minilm-features``  frozen MiniLM sentence similarities and lexical coverage through a logistic regression
                     fitted on CG2C data (:mod:`trlm.factcheck.features`; shipped, 2 KB)
``minilm``           a cross-encoder (all-MiniLM-L6-v2 + a 2-way head) trained here on CG2C data with FactCG's
                     template (``trlm factcheck train``); pass its directory. The name ``minilm`` loads a shipped
                     ``trlm-factcg-minilm``, which this version does not ship (see docs/factcheck.md)
``smollm2-yesno``    zero-shot: SmolLM2 reads FactCG's template; P(Yes) / (P(Yes) + P(No)) for the next word
``trlm-ba``          TRLM PMI, reading backwards with the reverse model ``trlm-ba-smol``:
                     log P(chunk | claim) - log P(chunk | no claim) in the citation template
                     ("{chunk} is summarized by {claim}"), through a logistic calibration
``trlm-fo``          the same PMI with the forward model reading "{claim} is a summary of {chunk}"
``forward-pmi``      the forward direction of the same PMI: log P(claim | chunk) - log P(claim | no chunk)
===================  =======================================================================================

The PMI checkers estimate the same quantity, PMI(claim; chunk), since log P(d | c) - log P(d) equals
log P(c | d) - log P(c) under an exact model; the TRLM ones read it backwards (the document given the claim), as
the TRLM scorers do for citation. Their raw PMI is mapped to a probability by ``sigmoid(a * pmi + b)``, with
``(a, b)`` fitted on CG2C-Doc training pairs (:data:`CALIBRATION`) or on any dev set with :meth:`calibrate`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from trlm.core.checkpoint import ModelError, read_meta
from trlm.core.engine import Engine, Request, get_engine
from trlm.factcheck.base import Check, FactChecker
from trlm.factcheck.features import SHIPPED, FeatureChecker

TEMPLATE = ('{doc}\n\nChoose your answer: based on the paragraph above can we conclude that "{claim}"?\n\n'
            "OPTIONS:\n- Yes\n- No\nI think the answer is ")
QUESTION = TEMPLATE.split("{doc}", 1)[1]  # what follows the document (holds {claim})
CHECKERS = ("minilm-features", "minilm", "smollm2-yesno", "trlm-ba", "trlm-fo", "forward-pmi")
SHIPPED_CHECKER = "trlm-factcg-minilm"
PMI_CHECKERS = ("trlm-ba", "trlm-fo", "forward-pmi")
# (a, b) of sigmoid(a * pmi + b): logistic regression of the label on the max-chunk PMI of 200 CG2C-Doc pairs
# (label-stratified, seed 1), fitted by `trlm bench factcheck --calibration-pairs 200` (runs/bench_factcheck30;
# 0.71 BAcc on those pairs). A PMI checker without a fitted entry uses (1, 0): supported iff the claim makes the
# document more likely (PMI > 0).
CALIBRATION: dict[str, tuple[float, float]] = {"trlm-ba": (0.03355, -2.053)}


# ----------------------------------------------------------------------------------------------- cross-encoder


def resolve_checker_dir(name_or_path: str) -> Path:
    from trlm.core.models import shipped_models

    shipped = shipped_models()
    if name_or_path in shipped:
        return shipped[name_or_path]
    p = Path(name_or_path).expanduser()
    if p.is_dir() and (p / "config.json").exists():
        return p
    if p.is_dir() and (p / "model" / "config.json").exists():  # a `trlm factcheck train --out` folder
        return p / "model"
    if name_or_path == SHIPPED_CHECKER:
        raise ModelError(f"the minilm checker needs trained weights and none ship ({SHIPPED_CHECKER} is not in this "
                         "version: the cross-encoder did not learn within the CPU budget, see docs/factcheck.md); "
                         "train one with `trlm factcheck train --data ... --out DIR` and pass --checker DIR, or "
                         "use the shipped feature checker `minilm-features`")
    raise ModelError(f"no fact-checker model at {name_or_path!r}: give a directory written by `trlm factcheck train`")


class CrossEncoderChecker(FactChecker):
    """A sequence-pair classifier (label 1 = supported) over (chunk, FactCG question about the claim)."""

    def __init__(self, name_or_path: str = SHIPPED_CHECKER, *, device: str | None = None, batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from trlm.core.device import resolve_device

        path = resolve_checker_dir(name_or_path)
        meta = read_meta(path) or {}
        if meta.get("kind", "factcheck") != "factcheck":
            raise ModelError(f"{path} is a {meta.get('kind')!r} model, not a fact checker")
        self.path, self.meta = path, meta
        self.name = meta.get("name", path.name if name_or_path != SHIPPED_CHECKER else "minilm")
        self.chunk_words = int(meta.get("chunk_words", 300))
        self.threshold = float(meta.get("threshold", 0.5))
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
        self.model.to(self.device).eval()
        self.max_length = int(meta.get("max_length", 512))
        self.batch_size = batch_size

    def pair_scores(self, pairs, progress=False):
        import torch
        from tqdm.auto import tqdm

        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]))
        out = [0.0] * len(pairs)
        starts = range(0, len(order), self.batch_size)
        for s in tqdm(starts, desc=f"checking ({self.name})", disable=not progress or len(starts) < 2, leave=False):
            idx = order[s:s + self.batch_size]
            enc = encode_pairs(self.tokenizer, [pairs[i] for i in idx], self.max_length)
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            for i, p in zip(idx, torch.softmax(logits, -1)[:, 1].tolist()):
                out[i] = p
        return out


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int, padding: bool = True):
    """Tokenised (chunk, question) pairs in FactCG's template (input_ids, attention_mask; no segment ids); the
    chunk is cut first when the pair is too long."""
    enc = tokenizer([d for d, _ in pairs], [QUESTION.format(claim=c) for _, c in pairs], truncation="longest_first",
                    max_length=max_length, padding=padding, return_tensors="pt" if padding else None)
    return {k: enc[k] for k in ("input_ids", "attention_mask")}


# ----------------------------------------------------------------------------------------------- LM checkers


class YesNoChecker(FactChecker):
    """Zero-shot: a chat LM answers FactCG's question; P(supported) = P(Yes) / (P(Yes) + P(No))."""

    def __init__(self, engine: Engine, name: str = "smollm2-yesno"):
        self.engine, self.name = engine, name

    def prompt(self, chunk: str, claim: str) -> str:
        if getattr(self.engine.tokenizer, "chat_template", None):
            question = TEMPLATE.format(doc=chunk, claim=claim).rsplit("\nI think", 1)[0]
            return self.engine.chat_prompt(question, assistant_prefix="I think the answer is")
        return TEMPLATE.format(doc=chunk, claim=claim).rstrip()

    def pair_scores(self, pairs, progress=False):
        reqs = [Request(self.prompt(ch, c), ans) for ch, c in pairs for ans in (" Yes", " No")]
        lls = self.engine.loglikelihood(reqs, direction="forward", truncate="context", progress=progress)
        return [1.0 / (1.0 + math.exp(lls[2 * i + 1].logprob - lls[2 * i].logprob)) for i in range(len(pairs))]


class PMIChecker(FactChecker):
    """PMI(claim; chunk) from two log-likelihoods through ``sigmoid(a * pmi + b)`` (see the module docstring)."""

    def __init__(self, engine: Engine, name: str, calibration: tuple[float, float] | None = None):
        from trlm.scoring import make_scorer

        if name not in PMI_CHECKERS:
            raise ValueError(f"unknown PMI checker {name!r}; choose from {', '.join(PMI_CHECKERS)}")
        self.engine, self.name = engine, name
        self.a, self.b = calibration or CALIBRATION.get(name, (1.0, 0.0))
        if name == "forward-pmi":
            self.direction = "forward"
        else:
            scorer = make_scorer(name, engine, task="citation", max_response_tokens=None)
            self.direction, self._build = scorer.direction, scorer.build

    def requests(self, chunk: str, claim: str) -> tuple[Request, Request]:
        """(conditional, marginal) requests whose log-likelihood difference is the PMI."""
        if self.name == "forward-pmi":
            return Request(chunk + "\n\nClaim:", " " + claim), Request("Claim:", " " + claim)
        return self._build(chunk, claim), self._build(chunk, "")

    def pair_scores(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[float]:
        """PMI(claim; chunk) in nats per pair."""
        reqs = [r for ch, c in pairs for r in self.requests(ch, c)]
        unique = list(dict.fromkeys(reqs))  # a chunk's marginal is shared by all its claims
        lls = self.engine.loglikelihood(unique, direction=self.direction, truncate="context", progress=progress)
        by = dict(zip(unique, (ll.logprob for ll in lls)))
        return [by[reqs[2 * i]] - by[reqs[2 * i + 1]] for i in range(len(pairs))]

    def prob(self, score: float) -> float:
        z = self.a * score + self.b
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def calibrate(self, pmis: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
        """Fit and set (a, b) by logistic regression of labels on (max-chunk) PMI values."""
        self.a, self.b = fit_calibration(pmis, labels)
        return self.a, self.b


class CachedChecker(FactChecker):
    """Any checker whose raw pair scores go through a :class:`~trlm.core.cache.ResultCache` (resumable runs)."""

    def __init__(self, checker: FactChecker, cache):
        self.inner, self.cache = checker, cache
        self.name, self.chunk_words, self.threshold = checker.name, checker.chunk_words, checker.threshold

    def pair_scores(self, pairs, progress=False):
        from trlm.core.cache import cache_key

        keys = [cache_key(ch, c) for ch, c in pairs]
        return self.cache.map(keys, list(pairs), lambda part: self.inner.pair_scores(part), chunk=16,
                              desc=f"checking ({self.name})", progress=progress)

    def prob(self, score: float) -> float:
        return self.inner.prob(score)


def fit_calibration(values: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """(a, b) of the logistic regression P(1 | x) = sigmoid(a x + b) (lightly regularised)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(values, dtype=float)[:, None]
    if len(set(labels)) < 2:
        raise ValueError("calibration needs supported and unsupported examples")
    scale = float(np.std(x)) or 1.0
    lr = LogisticRegression(C=10.0).fit(x / scale, np.asarray(labels, dtype=int))
    return float(lr.coef_[0, 0] / scale), float(lr.intercept_[0])


__all__ = ["CHECKERS", "Check", "FactChecker", "CrossEncoderChecker", "YesNoChecker", "PMIChecker", "CachedChecker",
           "make_checker", "fit_calibration", "resolve_checker_dir", "encode_pairs"]


def make_checker(name: str, model: str | None = None, *, device: str | None = None) -> FactChecker:
    """A checker by name (:data:`CHECKERS`) or a trained cross-encoder directory; ``model`` overrides the LM."""
    if name == "minilm-features" or (name.endswith(".json") and Path(name).is_file()) or (
            Path(name).expanduser().is_dir() and (Path(name).expanduser() / "checker.json").exists()):
        return FeatureChecker(SHIPPED if name == "minilm-features" else Path(name).expanduser())
    if name == "minilm":
        return CrossEncoderChecker(model or SHIPPED_CHECKER, device=device)
    if name == "smollm2-yesno":
        return YesNoChecker(get_engine(model or "smollm2-135m-instruct", device=device))
    if name in PMI_CHECKERS:
        default = {"trlm-ba": "trlm-ba-smol"}.get(name, "smollm2-135m-instruct")
        return PMIChecker(get_engine(model or default, device=device), name)
    p = Path(name).expanduser()
    if p.is_dir():
        return CrossEncoderChecker(str(p), device=device)
    raise ModelError(f"unknown checker {name!r}: choose from {', '.join(CHECKERS)} or give a checker directory "
                     "(or a feature checker's checker.json)")

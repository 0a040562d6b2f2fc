"""Drafters: who proposes the next tokens. None of them can change a DISD output, only how fast it comes.

* :class:`NgramDrafter` — prompt lookup: the continuation of the longest recent n-gram match in prompt +
  generated ids (model order). No model, no cost; it shines where the output copies from the prompt.
* :class:`ModelDrafter` — any engine with the target's tokenizer and token order (a distilled student, a
  layer-truncated copy of the target, the target itself for tests). It drafts with the target's own sampler and
  the same noise at the same absolute positions, so on a match the draft *is* the target's sample.

Both work on a batch of rows; :func:`make_drafter` builds one from a CLI spec.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, Sequence

import torch

from trlm.core.checkpoint import ModelError
from trlm.core.sampling import sampling_probs
from trlm.core.schema import GenArgs

if TYPE_CHECKING:
    from trlm.core.engine import Engine

log = logging.getLogger(__name__)

DRAFTERS: tuple[str, ...] = ("ngram", "ngram:<max n>", "early-exit:<layers>", "<model name or path>")


class Drafter(Protocol):
    name: str
    forwards: int  # model forwards spent so far (0 for model-free drafters)
    cost: float  # cost of drafting one token, in target decode steps (0 for the n-gram drafter)

    def begin(self, prefixes: list[list[int]]) -> None: ...

    def select(self, rows: torch.Tensor) -> None: ...

    def propose(self, history: list[list[int]], gammas: list[int], args: GenArgs, seed: torch.Tensor,
                sample: torch.Tensor, step: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor] | None]: ...

    def accepted(self, n_accepted: list[int]) -> None: ...


class NgramDrafter:
    """Prompt lookup decoding: match the last ``n`` ids (n = max_ngram .. 1) earlier in the row's history and
    propose what followed the match (none when nothing matches). The draft follows the match: at most twice as
    many tokens as the match is long (counted back up to ``MAX_SPAN`` ids), within the controller's gamma, so a
    row inside a long copied span drafts long and a one-token coincidence drafts two."""

    MAX_SPAN = 16

    forwards = 0
    cost = 0.0

    def __init__(self, max_ngram: int = 3, earliest: bool = True):
        if max_ngram < 1:
            raise ValueError(f"n-gram drafter: max n must be >= 1, got {max_ngram}")
        self.max_ngram, self.earliest = max_ngram, earliest
        self.name = f"ngram:{max_ngram}"

    def begin(self, prefixes: list[list[int]]) -> None:
        pass

    def select(self, rows: torch.Tensor) -> None:
        pass

    def accepted(self, n_accepted: list[int]) -> None:
        pass

    def propose(self, history, gammas, args, seed, sample, step):
        out = []
        for h, g in zip(history, gammas):
            draft, span = match(h, g, self.max_ngram, self.earliest, self.MAX_SPAN) if g else ([], 0)
            out.append(draft[:2 * span])
        return out, None


def lookup(ids: Sequence[int], gamma: int, max_ngram: int, earliest: bool = True) -> list[int]:
    """Up to ``gamma`` ids that followed an earlier occurrence of the longest suffix n-gram (n <= max_ngram): the
    first occurrence (in the prompt, where grounded text is copied from) or, with ``earliest=False``, the most
    recent one."""
    return match(ids, gamma, max_ngram, earliest)[0]


def match(ids: Sequence[int], gamma: int, max_ngram: int, earliest: bool = True,
          max_span: int = 0) -> tuple[list[int], int]:
    """:func:`lookup`'s draft and the length of its match: how many ids before the draft equal the ids before
    the end of ``ids`` (at least the n-gram's n; counted up to ``max_span``)."""
    n_ids = len(ids)
    for n in range(min(max_ngram, n_ids - 1), 0, -1):
        suffix = list(ids[n_ids - n:])
        starts = range(0, n_ids - n) if earliest else range(n_ids - n - 1, -1, -1)  # never the suffix itself
        for start in starts:
            if list(ids[start:start + n]) == suffix:
                out = list(ids[start + n:start + n + gamma])
                if out:
                    span = n
                    while span < max_span and start - (span - n) > 0 and \
                            ids[start - (span - n) - 1] == ids[n_ids - span - 1]:
                        span += 1
                    return out, span
    return [], 0


class ModelDrafter:
    """A small model (same tokenizer and token order as the target) drafting with the target's coupled sampler.

    Rows may sit rounds out (a draft length of 0): their committed ids are fed the next time they draft.
    """

    def __init__(self, engine: "Engine", target: "Engine", direction: str):
        check_compatible(engine, target, direction)
        self.engine, self.direction = engine, direction
        self.name = engine.name
        # a decode step is memory-bound: its cost is about the weights it reads (the shared embedding excluded)
        self.cost = _body_params(engine.model) / max(1, _body_params(target.model))
        self.vocab = target.model.get_output_embeddings().weight.shape[0]  # the target's logit width
        self.forwards = 0

    def begin(self, prefixes: list[list[int]]) -> None:
        # the cache will hold each row's prefix but its last id, which the first draft step feeds (it yields q_1);
        # it is filled on the first proposal, so a batch that never drafts never pays the drafter's prefill
        self.state, self.pending = None, [p[:-1] if len(p) > 1 else p for p in prefixes]
        self.fed = [len(p) for p in self.pending]  # history ids in the cache (once it is filled)

    def select(self, rows: torch.Tensor) -> None:
        if self.state is None:
            self.pending = [self.pending[int(r)] for r in rows]
        else:
            self.state.select(rows)
        self.fed = [self.fed[int(r)] for r in rows]

    def propose(self, history, gammas, args, seed, sample, step):
        """Drafts d_1..d_G (G = max gamma) for every row: d_k = S(q_k, noise at step + k) with the target's S.

        The first forward feeds every committed id the cache lacks (at least the last one), so rounds the drafter
        sat out cost one forward over the backlog, not one per token.
        """
        G = max(gammas)
        if self.state is None:
            self.state, _ = self.engine.prefill_shared(self.pending)
            self.forwards += 1
        feed = [h[f:] for h, f in zip(history, self.fed)]
        width = max(len(f) for f in feed)
        dev = self.engine.device
        tokens = torch.tensor([f + [0] * (width - len(f)) for f in feed], device=dev)
        valid = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in feed], device=dev)
        last = self.engine.decode_step(self.state, tokens, valid, last_only=True)[:, 0]  # (B, V_d): after the
        self.forwards += 1  # last fed id of each row
        drafts, qs = [], []
        for k in range(G):
            lg = self._widen(last)
            d = self.engine.sample(lg, args, seed, sample, step + 1 + k)  # (B,)
            drafts.append(d)
            qs.append(sampling_probs(lg, args))
            if k + 1 < G:
                last = self.engine.decode_step(self.state, d[:, None])[:, -1]
                self.forwards += 1
        self._round = (G, width, [len(f) for f in feed], [len(h) for h in history])
        d_all = torch.stack(drafts, 1).tolist()  # (B, G)
        q_all = torch.stack(qs, 1)  # (B, G, V)
        return [row[:g] for row, g in zip(d_all, gammas)], [q_all[b, :g] for b, g in enumerate(gammas)]

    def accepted(self, n_accepted: list[int]) -> None:
        """Keep the cache up to the accepted drafts (a G-th accepted draft was never fed: the next round feeds it)."""
        G, width, fed_now, hist = self._round
        keep = [f + min(a, G - 1) for f, a in zip(fed_now, n_accepted)]
        self.state.keep_tail(width + G - 1, torch.tensor(keep, device=self.engine.device))
        self.fed = [h + min(a, G - 1) for h, a in zip(hist, n_accepted)]

    def _widen(self, logits: torch.Tensor) -> torch.Tensor:
        """Drafter logits cut or padded (-inf) to the target's vocabulary width (pitfall A.5.4)."""
        V = logits.shape[-1]
        if V == self.vocab:
            return logits
        if V > self.vocab:
            return logits[:, :self.vocab]
        return torch.nn.functional.pad(logits.float(), (0, self.vocab - V), value=float("-inf"))


def _body_params(model: torch.nn.Module) -> int:
    """Parameters a decode step reads apart from the input embedding (which is a lookup)."""
    emb = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb) + (
        emb.numel() if getattr(model.config, "tie_word_embeddings", False) else 0)


def check_compatible(drafter: "Engine", target: "Engine", direction: str) -> None:
    """A drafter must read the target's token order and share its tokenizer (same ids for the same text)."""
    if not drafter.supports(direction):  # type: ignore[arg-type]
        raise ModelError(f"drafter {drafter.name} has token order {drafter.token_order!r}; the target "
                         f"{target.name} generates in the {direction!r} direction: use a drafter of that order")
    if drafter.tokenizer.get_vocab() != target.tokenizer.get_vocab() or drafter.start_id != target.start_id:
        raise ModelError(f"drafter {drafter.name} has another tokenizer than the target {target.name}; a drafter "
                         "must share the target's vocabulary")


def early_exit(target: "Engine", layers: int) -> "Engine":
    """The target's first ``layers`` transformer blocks with its final norm and output head, as an engine (a weak
    drafter that needs no training; it shares every weight tensor with the target, so it costs no memory)."""
    import copy

    from trlm.core.engine import Engine
    from trlm.core.models import LoadedModel

    blocks = target.model.model.layers
    if not 1 <= layers < len(blocks):
        raise ValueError(f"early-exit drafter: layers must be in [1, {len(blocks) - 1}], got {layers}")
    config = copy.deepcopy(target.model.config)
    config.num_hidden_layers = layers
    inner = copy.copy(target.model.model)  # shallow copies with their own module tables: the target is untouched
    inner._modules = dict(inner._modules)
    inner.layers = blocks[:layers]
    inner.config = config
    model = copy.copy(target.model)
    model._modules = dict(model._modules)
    model.model, model.config = inner, config
    lm = LoadedModel(model, target.tokenizer, f"{target.name}[:{layers}]", target.token_order, dict(target.lm.meta))
    return Engine(lm, max_batch_tokens=target.max_batch_tokens, max_batch_size=target.max_batch_size)


def make_drafter(spec: str, target: "Engine", direction: str, dtype: str | None = None) -> Drafter:
    """``ngram`` / ``ngram:N``, ``early-exit:K`` (first K layers of the target), or a model name or path."""
    if spec == "ngram" or spec.startswith("ngram:"):
        n = spec.partition(":")[2]
        if n and not n.isdigit():
            raise ValueError(f"drafter {spec!r}: ngram:N needs a whole number N")
        return NgramDrafter(int(n) if n else 3)
    if spec.startswith("early-exit:"):
        k = spec.partition(":")[2]
        if not k.isdigit():
            raise ValueError(f"drafter {spec!r}: early-exit:K needs a whole number of layers K")
        return ModelDrafter(early_exit(target, int(k)), target, direction)
    from trlm.core.engine import Engine

    return ModelDrafter(Engine.load(spec, dtype=dtype or str(target.lm.dtype).replace("torch.", "")), target,
                        direction)

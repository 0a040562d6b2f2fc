"""The in-process engine: the :class:`~trlm.core.base.BaseEngine` contract over a PyTorch causal LM.

It adds what only a model in this process has: batched scoring with a shared-prefix KV cache, the decoding steps
(:meth:`Engine.prefill`, :meth:`Engine.decode_step`, :meth:`Engine.sample`) that plain and speculative decoding
run on, and hidden states for steering. Tokenisation, token order and the generation outer loop are the
contract's (:mod:`trlm.core.base`), shared with the served engine (:mod:`trlm.core.remote`).

    >>> eng = Engine.load("smollm2-135m-instruct")
    >>> [r.logprob for r in eng.loglikelihood([Request("The capital of France is", " Paris")])]
    [-1.9...]
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Literal, Sequence

import torch

from trlm.core.base import BaseEngine, GenRow, _Item, progress_bar
from trlm.core.checkpoint import ModelError
from trlm.core.fastdecode import FastDecoder, KVBuffers, unsupported
from trlm.core.models import LoadedModel, decoder_layers, is_served, load_model
from trlm.core.sampling import sample_next, wmh_sample_logits
from trlm.core.schema import DecodeState, Direction, GenArgs, Generation, LogLik, Request

log = logging.getLogger(__name__)

__all__ = ["DecodeState", "Engine", "GenArgs", "Generation", "LogLik", "Request"]


class Engine(BaseEngine):
    """Batched log-likelihood and generation over one :class:`~trlm.core.models.LoadedModel`."""

    in_process = True

    def __init__(self, lm: LoadedModel, *, max_batch_tokens: int | None = None, max_batch_size: int = 64,
                 max_length: int | None = None, max_gen_batch_tokens: int | None = None, fast_decode: bool = True):
        self.lm = lm
        self.model = lm.model
        self.tokenizer = lm.tokenizer
        # padded tokens per forward pass: on CPU small batches stay in cache (1024 measured ~1.7x faster than 8192
        # on a 2-core AVX512-BF16 machine); accelerators want large batches
        self.max_batch_tokens = max_batch_tokens or (1024 if lm.device.type == "cpu" else 16384)
        # generation rows (prompt + max_new_tokens): a decode step reads every weight once whatever the batch, so on
        # CPU it is memory-bound and 8 rows cost little more than 2 (8 redteam prompts of ~400 tokens + 128 new:
        # 53.7 s at 8192 vs 92.3 s at 1024, one AVX2 thread, identical text: scripts/gen_batch_budget.py); the KV
        # cache is what this budget bounds
        self.max_gen_batch_tokens = max_gen_batch_tokens or (8192 if lm.device.type == "cpu" else 65536)
        self.max_batch_size = max_batch_size
        cfg_len = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = max_length or cfg_len
        self._init_special_tokens(getattr(getattr(self.model, "generation_config", None), "eos_token_id", None))
        # decoding steps without the module tree (core/fastdecode.py): Llama-architecture models on a CPU; built on
        # the first prefill (it prepacks or stacks weights); fast_decode=False keeps the module path
        self.fast_decode = fast_decode
        self._fast: FastDecoder | None = None

    @classmethod
    def load(cls, name_or_path: str, **kwargs) -> "Engine":
        load_kw = {k: kwargs.pop(k) for k in ("device", "dtype", "token_order") if k in kwargs}
        return cls(load_model(name_or_path, **load_kw), **kwargs)

    # ------------------------------------------------------------------ token order

    @property
    def name(self) -> str:
        return self.lm.name

    @property
    def token_order(self) -> str:
        return self.lm.token_order

    @property
    def device(self) -> torch.device:
        return self.lm.device

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def loglikelihood(
        self,
        requests: Sequence[Request],
        *,
        direction: str | None = None,
        return_tokens: bool = False,
        truncate: Literal["error", "context"] = "error",
        progress: bool = False,
    ) -> list[LogLik]:
        """Log P(continuation | context) for each request, in the input order.

        Requests sharing a context are scored against one cached forward pass of that context (prefix KV cache);
        the rest are batched by descending length with left padding, and the vocabulary projection runs only at
        continuation positions.
        """
        d = self.resolve_direction(direction)
        items = [self._encode_request(r, d, truncate, i) for i, r in enumerate(requests)]
        results: list[LogLik | None] = [None] * len(items)
        groups: dict[tuple[int, ...], list[_Item]] = {}
        for it in items:
            groups.setdefault(tuple(it.prefix), []).append(it)
        shared = [g for g in groups.values() if len(g) > 1 and len(g[0].prefix) > 1]
        singles = [it for g in groups.values() if not (len(g) > 1 and len(g[0].prefix) > 1) for it in g]
        bar = progress_bar(len(items), "scoring", progress)
        for group in shared:
            for it, ll in self._score_shared_prefix(group, return_tokens):
                results[it.index] = ll
            bar.update(len(group))
        for batch in self._batches(singles, lambda it: len(it.prefix) + len(it.target)):
            for it, ll in self._score_batch(batch, return_tokens):
                results[it.index] = ll
            bar.update(len(batch))
        bar.close()
        if d == "reverse" and return_tokens:
            results = [LogLik(r.logprob, r.num_tokens, r.is_greedy, r.token_logprobs[::-1]) for r in results]
        return results  # type: ignore[return-value]

    def _gather(self, logits: torch.Tensor, targets: torch.Tensor, n: int, return_tokens: bool) -> LogLik:
        """logits (n, V) predicting targets (n,) -> LogLik."""
        logp = logits.float().log_softmax(-1)  # (n, V)
        tok_lp = logp.gather(-1, targets[:, None]).squeeze(-1)  # (n,)
        greedy = bool((logp.argmax(-1) == targets).all())
        return LogLik(float(tok_lp.sum()), n, greedy, tuple(tok_lp.tolist()) if return_tokens else None)

    def _score_batch(self, batch: list[_Item], return_tokens: bool):
        seqs = [it.prefix + it.target for it in batch]
        ids, mask, pos = self._left_pad(seqs)
        T = ids.shape[1]
        k = max(len(it.target) for it in batch)
        keep = torch.arange(T - k - 1, T - 1, device=ids.device)  # positions whose logits predict targets
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep,
                            use_cache=False).logits  # (B, k, V)
        for b, it in enumerate(batch):
            n = len(it.target)
            yield it, self._gather(logits[b, k - n:], ids[b, T - n:], n, return_tokens)

    def _score_shared_prefix(self, group: list[_Item], return_tokens: bool):
        prefix = torch.tensor([group[0].prefix], device=self.device)
        P = prefix.shape[1]
        out = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
        base_cache, last = out.cache, out.logits[:, -1]  # last: (1, V)
        for batch in self._batches(group, lambda it: len(it.target)):
            B, S = len(batch), max(len(it.target) for it in batch)
            suffix = torch.full((B, S), self.pad_id, dtype=torch.long, device=self.device)
            smask = torch.zeros((B, S), dtype=torch.long, device=self.device)
            for b, it in enumerate(batch):
                suffix[b, : len(it.target)] = torch.tensor(it.target)
                smask[b, : len(it.target)] = 1
            cache = copy.deepcopy(base_cache)
            cache.batch_repeat_interleave(B)
            mask = torch.cat([torch.ones((B, P), dtype=torch.long, device=self.device), smask], dim=1)
            pos = torch.arange(P, P + S, device=self.device)[None].expand(B, S)
            keep = torch.arange(0, S - 1, device=self.device)  # suffix position j predicts suffix token j+1
            logits = self.model(input_ids=suffix, attention_mask=mask, position_ids=pos, cache=cache,
                                logits_to_keep=keep, use_cache=True).logits  # (B, S-1, V)
            full = torch.cat([last[:, None].expand(B, 1, -1).to(logits.dtype), logits], dim=1)  # (B, S, V)
            for b, it in enumerate(batch):
                n = len(it.target)
                yield it, self._gather(full[b, :n], suffix[b, :n], n, return_tokens)

    def _left_pad(self, seqs: list[list[int]]):
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, T - len(s):] = torch.tensor(s)
            mask[b, T - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    # ------------------------------------------------------------------ decoding steps

    def prefill(self, seqs: Sequence[Sequence[int]]) -> tuple[DecodeState, torch.Tensor]:
        """One forward over left-padded model-order id lists; returns the state and each row's last logits (B, V).

        The forward runs through the model's modules; the state's cache is a :class:`KVBuffers` for the fast
        decode step when the model takes it (:meth:`_fast_decoder`), else the model's own cache."""
        ids, mask, pos = self._left_pad([list(s) for s in seqs])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        fast = self._fast_decoder()
        cache = KVBuffers.from_cache(out.cache) if fast is not None else out.cache
        return DecodeState(cache, mask, pos[:, -1] + 1), out.logits[:, -1]

    def prefill_shared(self, seqs: Sequence[Sequence[int]]) -> tuple[DecodeState, torch.Tensor]:
        """:meth:`prefill` with one forward per distinct sequence, its cache rows copied to every row that repeats
        it (a prompt's n samples); the same state and logits as prefilling every row."""
        unique: dict[tuple[int, ...], int] = {}
        owner = torch.tensor([unique.setdefault(tuple(s), len(unique)) for s in seqs], device=self.device)
        state, logits = self.prefill(list(unique))
        if len(unique) < len(seqs):
            state.select(owner)
            logits = logits[owner]
        return state, logits

    def _fast_decoder(self) -> FastDecoder | None:
        """The fast decode step, if this model on this device takes it and no hook needs the module path."""
        if not self.fast_decode or self.device.type != "cpu" or unsupported(self.model):
            return None
        if self._fast is None:
            self._fast = FastDecoder(self.model)
            log.debug("%s: fast decode step (%s weights)", self.name, "prepacked" if self._fast.packed else "stacked")
        else:
            self._fast.refresh()  # (weights trained in place since the last call)
        return self._fast if self._fast.hooks_ok() else None

    @torch.inference_mode()
    def hidden_states(self, seqs: Sequence[Sequence[int]], layers: Sequence[int],
                      progress: bool = False) -> list[dict[int, torch.Tensor]]:
        """The residual stream after decoder blocks ``layers`` (0-based; the output of ``decoder_layers(model)[l]``,
        the site :func:`trlm.steer.steer` edits) at every position of each model-order id list: one
        ``{layer: (len, d) float32 CPU tensor}`` per sequence, in input order, batched by the token budget."""
        blocks = decoder_layers(self.model)
        bad = [l for l in layers if not 0 <= l < len(blocks)]
        if bad:
            raise ValueError(f"layer {bad[0]} does not exist: {self.name} has decoder blocks 0-{len(blocks) - 1}")
        captured: dict[int, torch.Tensor] = {}

        def grab(layer: int):
            def hook(_module, _inputs, output):
                captured[layer] = output[0] if isinstance(output, tuple) else output
            return hook

        handles = [blocks[l].register_forward_hook(grab(l)) for l in layers]
        out: list[dict[int, torch.Tensor] | None] = [None] * len(seqs)
        items = [_Item(i, list(s)) for i, s in enumerate(seqs)]
        bar = progress_bar(len(items), "activations", progress)
        try:
            for batch in self._batches(items, lambda it: len(it.prefix)):
                ids, mask, pos = self._left_pad([it.prefix for it in batch])
                self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)
                T = ids.shape[1]
                for b, it in enumerate(batch):
                    out[it.index] = {l: captured[l][b, T - len(it.prefix):].float().cpu().clone() for l in layers}
                bar.update(len(batch))
        finally:
            for h in handles:
                h.remove()
            bar.close()
        return out  # type: ignore[return-value]

    def decode_step(self, state: DecodeState, tokens: torch.Tensor, valid: torch.Tensor | None = None,
                    last_only: bool = False) -> torch.Tensor:
        """Append ``tokens`` (B, k) to every row of ``state``; one forward; logits (B, k, V) after each token.

        ``valid`` (B, k) marks the real tokens of ragged rows (the rest is padding: masked, no position used).
        ``last_only``: only the logits after each row's last real token, (B, 1, V) (a drafter catching up on a
        backlog needs no others).
        """
        B, k = tokens.shape
        v = torch.ones_like(tokens) if valid is None else valid.to(tokens.dtype)  # (B, k)
        state.mask = torch.cat([state.mask, v.to(state.mask.dtype)], 1)
        pos = state.next_pos[:, None] + v.cumsum(-1) - v  # (B, k): consecutive positions for the real tokens
        last = v.sum(-1) - 1 if last_only else None  # (B,) index of each row's last real token
        if isinstance(state.cache, KVBuffers):  # (hooks were checked at prefill: hook the model before generating)
            logits = self._fast.step(state.cache, tokens, state.mask, pos, keep=last)
        else:
            out = self.model(input_ids=tokens, attention_mask=state.mask, position_ids=pos, cache=state.cache,
                             use_cache=True)
            state.cache, logits = out.cache, out.logits
            if last is not None:
                logits = logits[torch.arange(B, device=logits.device), last][:, None]
        state.next_pos = state.next_pos + v.sum(-1)
        return logits

    def sample(self, logits: torch.Tensor, args: GenArgs, seed: torch.Tensor, sample: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        """The one sampler every generated token comes from: next ids (B,) from logits (B, V).

        Noise is keyed by (seed, sample index, step, token); ``seed``, ``sample`` and ``step`` are (B,) int64.
        ``args.sampler`` picks Gumbel-max (default) or Weighted MinHash over the same processed distribution.
        """
        kw = dict(seed=seed, seq=sample, pos=step, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
        return wmh_sample_logits(logits, **kw) if args.sampler == "wmh" else sample_next(logits, **kw)

    @torch.inference_mode()
    def _generate_batch(self, batch: list[_Item], args: GenArgs, d: Direction) -> list[Generation]:
        B = len(batch)
        state, logits = self.prefill_shared([it.prefix for it in batch])  # samples of one prompt: one prefill
        seed = torch.tensor([it.seed for it in batch], dtype=torch.long, device=self.device)
        sample = torch.tensor([it.sample for it in batch], dtype=torch.long, device=self.device)
        rows = [GenRow(self, args, d) for _ in batch]
        for step in range(args.max_new_tokens):
            logits = logits.float()  # once: the sampler and the log-prob both read float32 (the same bits)
            tok = self.sample(logits, args, seed, sample, torch.full((B,), step, dtype=torch.long, device=self.device))
            tok_lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
            for row, t, lp in zip(rows, tok.tolist(), tok_lp.tolist()):
                row.commit(t, lp)
            if all(r.reason is not None for r in rows):
                break  # (no forward after the last token: nothing would read its logits)
            logits = self.decode_step(state, tok[:, None])[:, -1]
        return [r.result() for r in rows]


def load_engine(model: str, device: str | None = None, dtype: str | None = "auto") -> BaseEngine:
    """The engine for a model reference: in-process for a name, directory, ``.gguf`` or hub id; served for a
    vLLM server's URL (``http://host:port/v1``, ``#NAME`` for one of several: :class:`~trlm.core.remote.RemoteEngine`,
    whose ``device`` and ``dtype`` are the server's business)."""
    if is_served(model):
        from trlm.core.remote import RemoteEngine

        return RemoteEngine.connect(model)
    return Engine.load(model, device=device, dtype=dtype)


def get_engine(model: str, device: str | None = None, dtype: str | None = "auto") -> BaseEngine:
    """:func:`load_engine`, shared within one process (one copy of each model in memory) by scorers, judges
    and clients: ``get_engine(m)``, ``get_engine(m, None, "auto")`` and ``get_engine(m, dtype="auto")`` are one
    engine."""
    return _shared_engine(model, device, dtype or "auto")


@functools.lru_cache(maxsize=4)
def _shared_engine(model: str, device: str | None, dtype: str) -> BaseEngine:
    return load_engine(model, device, dtype)


get_engine.cache_clear = _shared_engine.cache_clear  # type: ignore[attr-defined]  # forget the shared engines


def require_in_process(engine: BaseEngine, what: str) -> "Engine":
    """``engine`` if its weights are in this process; else a one-line error saying ``what`` needs them."""
    if not engine.in_process:
        raise ModelError(f"{what} needs the model's weights in this process, and {engine.name} is a served model: "
                         "pass an embedded name, a shipped model or a model directory instead")
    return engine  # type: ignore[return-value]

"""The engine: one scoring primitive and one generation primitive over a causal LM, in any token order.

Requests are always written in **forward reading order**: a ``context`` and a ``continuation`` whose
log-probability is wanted. The engine owns tokenisation and reversal, so callers never reverse anything:

* ``forward``  model input ``[start] + tok(context) + tok(continuation)``; the continuation tokens are scored.
* ``reverse``  model input ``[start] + rev(tok(context)) + rev(tok(continuation))`` — the TRLM-Ba score
  ``log P_Ba(Reverse(SP+Q) | Reverse(CP+A))`` with ``context = CP+A`` and ``continuation = SP+Q``.

Context and continuation are tokenised separately so that the boundary is exact; whitespace at the join
belongs to the piece that comes second in the model's reading order (the continuation for forward scoring,
the context for reverse scoring), as BPE tokenisers glue a leading space to the next word. ``start`` is the
tokenizer's BOS (else EOS); it is not added twice when the context already begins with it (chat templates).

    >>> eng = Engine.load("smollm2-135m-instruct")
    >>> [r.logprob for r in eng.loglikelihood([Request("The capital of France is", " Paris")])]
    [-1.9...]
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import torch

from trlm.core.checkpoint import ModelError
from trlm.core.models import LoadedModel, decoder_layers, load_model
from trlm.core.sampling import sample_next, wmh_sample_logits
from trlm.core.schema import DecodeState, Direction, GenArgs, Generation, LogLik, Request

log = logging.getLogger(__name__)

__all__ = ["DecodeState", "Engine", "GenArgs", "Generation", "LogLik", "Request"]


@dataclass
class _Item:
    index: int
    prefix: list[int]  # model-order ids before the scored / generated part
    target: list[int] = field(default_factory=list)  # model-order ids to score
    sample: int = 0  # generation: which of the prompt's n samples
    seed: int = 0  # generation: the prompt's seed



class Engine:
    """Batched log-likelihood and generation over one :class:`~trlm.models.LoadedModel`."""

    def __init__(self, lm: LoadedModel, *, max_batch_tokens: int | None = None, max_batch_size: int = 64,
                 max_length: int | None = None, max_gen_batch_tokens: int | None = None):
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
        tok = self.tokenizer
        self.start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if self.start_id is None:
            raise ModelError(f"{lm.name}: tokenizer has neither a BOS nor an EOS token to start sequences with")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.start_id
        eos = {tok.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        self.eos_ids = sorted(e for e in eos if e is not None)

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

    def supports(self, direction: Direction) -> bool:
        return self.token_order in (direction, "both")

    def resolve_direction(self, direction: str | None) -> Direction:
        """The reading direction for a call; a mismatch with the model's token order is an error."""
        if direction is None:
            if self.token_order == "both":
                raise ModelError(f"{self.name} was trained in both token orders: pass direction='forward' or 'reverse'")
            return self.token_order  # type: ignore[return-value]
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        if not self.supports(direction):  # type: ignore[arg-type]
            raise ModelError(f"{self.name} has token order {self.token_order!r}; it cannot be used in the "
                             f"{direction!r} direction. Use a {direction}-order (or 'both') checkpoint.")
        return direction  # type: ignore[return-value]

    # ------------------------------------------------------------------ tokenisation (the only place)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def truncate(self, text: str, max_tokens: int, keep: Literal["start", "end"] = "start") -> str:
        """Cut ``text`` to at most ``max_tokens`` tokens, keeping its start (or end)."""
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        return self.decode(ids[:max_tokens] if keep == "start" else ids[-max_tokens:])

    def chat_prompt(self, user: str, system: str | None = None, assistant_prefix: str = "") -> str:
        """The model's chat template around one user turn, ready for the assistant's reply."""
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.render_chat(msgs) + assistant_prefix

    def render_chat(self, messages: Sequence[dict]) -> str:
        """The model's chat template over a conversation, ready for the assistant's reply."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"{self.name} has no chat template; use a plain-text prompt instead")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def _split_ws(self, context: str, continuation: str, d: Direction) -> tuple[str, str]:
        if d == "forward":
            stripped = context.rstrip()
            return stripped, context[len(stripped):] + continuation
        stripped = continuation.rstrip()
        return continuation[len(stripped):] + context, stripped

    def _with_start(self, ids: list[int]) -> list[int]:
        return ids if ids[:1] == [self.start_id] else [self.start_id, *ids]

    def _encode_request(self, req: Request, d: Direction, truncate: str, i: int) -> _Item:
        if not isinstance(req.continuation, str) or not req.continuation.strip():
            raise ValueError(f"request {i}: continuation is empty; there is nothing to score")
        ctx, cont = self._split_ws(req.context, req.continuation, d)
        ctx_ids, cont_ids = self.encode(ctx), self.encode(cont)
        if d == "reverse":
            ctx_ids, cont_ids = ctx_ids[::-1], cont_ids[::-1]
        prefix = self._with_start(ctx_ids) if d == "forward" else [self.start_id, *ctx_ids]
        over = len(prefix) + len(cont_ids) - self.max_length
        if over > 0:
            if truncate != "context" or over >= len(prefix) - 1:
                raise ValueError(f"request {i}: {len(prefix) + len(cont_ids)} tokens exceed the model's context "
                                 f"window of {self.max_length} (continuation {len(cont_ids)} tokens); shorten it"
                                 + ("" if truncate == "context" else " or pass truncate='context'"))
            # drop context tokens farthest from the continuation (forward: its start; reverse: the far end)
            body = prefix[1:]
            # both orders: body[0] is the context token farthest from the continuation
            prefix = [prefix[0], *body[over:]]
        return _Item(i, prefix, cont_ids)

    def encode_request(self, req: Request, direction: str | None = None,
                       truncate: Literal["error", "context"] = "error") -> tuple[list[int], list[int]]:
        """(prefix, target) token ids in model order, exactly as :meth:`loglikelihood` feeds them."""
        it = self._encode_request(req, self.resolve_direction(direction), truncate, 0)
        return it.prefix, it.target

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
        bar = _progress(len(items), "scoring", progress)
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

    def _batches(self, items: list[_Item], length, budget: int | None = None) -> Iterable[list[_Item]]:
        """Descending length, cut by a token budget (default ``max_batch_tokens``; so an out-of-memory error
        happens on the first batch)."""
        budget = budget or self.max_batch_tokens
        items = sorted(items, key=length, reverse=True)
        batch: list[_Item] = []
        for it in items:
            longest = length(batch[0]) if batch else length(it)
            if batch and ((len(batch) + 1) * longest > budget or len(batch) >= self.max_batch_size):
                yield batch
                batch = []
            batch.append(it)
        if batch:
            yield batch

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
        """One forward over left-padded model-order id lists; returns the state and each row's last logits (B, V)."""
        ids, mask, pos = self._left_pad([list(s) for s in seqs])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        return DecodeState(out.cache, mask, pos[:, -1] + 1), out.logits[:, -1]

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
        bar = _progress(len(items), "activations", progress)
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

    def decode_step(self, state: DecodeState, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Append ``tokens`` (B, k) to every row of ``state``; one forward; logits (B, k, V) after each token.

        ``valid`` (B, k) marks the real tokens of ragged rows (the rest is padding: masked, no position used).
        """
        B, k = tokens.shape
        v = torch.ones_like(tokens) if valid is None else valid.to(tokens.dtype)  # (B, k)
        state.mask = torch.cat([state.mask, v.to(state.mask.dtype)], 1)
        pos = state.next_pos[:, None] + v.cumsum(-1) - v  # (B, k): consecutive positions for the real tokens
        out = self.model(input_ids=tokens, attention_mask=state.mask, position_ids=pos, cache=state.cache,
                         use_cache=True)
        state.cache, state.next_pos = out.cache, state.next_pos + v.sum(-1)
        return out.logits

    def sample(self, logits: torch.Tensor, args: GenArgs, seed: torch.Tensor, sample: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        """The one sampler every generated token comes from: next ids (B,) from logits (B, V).

        Noise is keyed by (seed, sample index, step, token); ``seed``, ``sample`` and ``step`` are (B,) int64.
        ``args.sampler`` picks Gumbel-max (default) or Weighted MinHash over the same processed distribution.
        """
        kw = dict(seed=seed, seq=sample, pos=step, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
        return wmh_sample_logits(logits, **kw) if args.sampler == "wmh" else sample_next(logits, **kw)

    def encode_prompt(self, prompt: str, direction: str | None = None) -> list[int]:
        """Model-order ids of a generation prompt: ``[start] + tok(prompt)`` (reversed for a reverse model)."""
        d = self.resolve_direction(direction)
        ids = self.encode(prompt)
        return self._with_start(ids) if d == "forward" else [self.start_id, *ids[::-1]]

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        args: GenArgs = GenArgs(),
        *,
        direction: str | None = None,
        seeds: Sequence[int] | None = None,
        progress: bool = False,
    ) -> list[list[Generation]]:
        """``args.n`` samples per prompt; returns one list of :class:`Generation` per prompt.

        For the reverse direction the prompt is the text that *follows* what is generated (e.g. ``CP + A``): the
        model reads it reversed, and the sampled tokens are flipped back into forward reading order. Sample ``j``
        of a prompt draws its token at step ``t`` with noise keyed by ``(seed, j, t, token)``, where ``seed`` is
        ``seeds[i]`` (default ``args.seed`` for every prompt). So a prompt's samples depend on the prompt, its
        seed and the settings only — not on the other prompts of the call, their order, or the batch size.
        """
        d = self.resolve_direction(direction)
        return self.run_generation(prompts, args, d, seeds, self._generate_batch, progress)

    def run_generation(self, prompts: Sequence[str], args: GenArgs, d: Direction, seeds: Sequence[int] | None,
                       run_batch, progress: bool = False, desc: str = "generating") -> list[list[Generation]]:
        """Encode prompts into one row per (prompt, sample), batch the rows by a token budget, and call
        ``run_batch(rows, args, d) -> [Generation]`` on each batch (plain or speculative decoding)."""
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts; pass one seed per prompt")
        items = []
        for i, p in enumerate(prompts):
            ids = self.encode_prompt(p, d)
            if len(ids) + args.max_new_tokens > self.max_length:
                raise ValueError(f"prompt {i}: {len(ids)} tokens + max_new_tokens {args.max_new_tokens} exceed the "
                                 f"context window of {self.max_length}")
            seed = args.seed if seeds is None else int(seeds[i])
            items += [_Item(i * args.n + j, ids, sample=j, seed=seed) for j in range(args.n)]
        out: list[Generation | None] = [None] * len(items)
        bar = _progress(len(items), desc, progress)
        for batch in self._batches(items, lambda it: len(it.prefix) + args.max_new_tokens, self.max_gen_batch_tokens):
            for it, g in zip(batch, run_batch(batch, args, d)):
                out[it.index] = g
            bar.update(len(batch))
        bar.close()
        return [out[i * args.n:(i + 1) * args.n] for i in range(len(prompts))]  # type: ignore[misc]

    def _generate_batch(self, batch: list[_Item], args: GenArgs, d: Direction) -> list[Generation]:
        B = len(batch)
        # samples of one prompt share its prefill: run each distinct prompt once, then copy its cache rows
        unique: dict[tuple[int, ...], int] = {}
        owner = torch.tensor([unique.setdefault(tuple(it.prefix), len(unique)) for it in batch], device=self.device)
        state, logits = self.prefill(list(unique))
        logits = logits[owner]  # (B, V)
        if len(unique) < B:
            state.select(owner)
        seed = torch.tensor([it.seed for it in batch], dtype=torch.long, device=self.device)
        sample = torch.tensor([it.sample for it in batch], dtype=torch.long, device=self.device)
        eos = torch.tensor(self.eos_ids, device=self.device)
        gen: list[list[int]] = [[] for _ in range(B)]
        lps = [0.0] * B
        reason: list[str | None] = [None] * B
        for step in range(args.max_new_tokens):
            tok = self.sample(logits, args, seed, sample, torch.full((B,), step, dtype=torch.long, device=self.device))
            tok_lp = logits.float().log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
            is_eos = torch.isin(tok, eos)
            for b in range(B):
                if reason[b] is not None:
                    continue
                if bool(is_eos[b]):
                    reason[b] = "eos"
                    continue
                gen[b].append(int(tok[b]))
                lps[b] += float(tok_lp[b])
                if args.stop and self.cut_stop(gen[b], args.stop, d)[1]:
                    reason[b] = "stop"
            if all(r is not None for r in reason) or step == args.max_new_tokens - 1:
                break  # (no forward after the last token: nothing would read its logits)
            logits = self.decode_step(state, tok[:, None])[:, -1]
        return [self.finish(gen[b], lps[b], reason[b] or "length", args, d) for b in range(B)]

    def finish(self, ids: list[int], logprob: float, reason: str, args: GenArgs, direction: Direction) -> Generation:
        """A :class:`Generation` from generated model-order ids: text cut at a stop string, ids in reading order."""
        text, _ = self.cut_stop(ids, args.stop, direction)
        return Generation(text, tuple(ids[::-1] if direction == "reverse" else ids), logprob, reason)  # type: ignore[arg-type]

    def cut_stop(self, ids: list[int], stop: Sequence[str], d: Direction) -> tuple[str, bool]:
        """Text of generated ids in reading order, cut at the first stop string in generation order."""
        text = self.decode(ids[::-1] if d == "reverse" else ids)
        hits = [(text.find(s), s) for s in stop if s in text] if d == "forward" else \
               [(text.rfind(s), s) for s in stop if s in text]
        if not hits:
            return text, False
        if d == "forward":
            i, _ = min(hits)
            return text[:i], True
        i, s = max(hits, key=lambda h: h[0] + len(h[1]))
        return text[i + len(s):], True


@functools.lru_cache(maxsize=4)
def get_engine(model: str, device: str | None = None, dtype: str | None = "auto") -> Engine:
    """Engines shared within one process (one copy of each model in memory) by scorers, judges and clients."""
    return Engine.load(model, device=device, dtype=dtype)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled or total < 2, leave=False)

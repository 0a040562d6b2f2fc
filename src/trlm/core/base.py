"""The engine contract: what every scorer and application calls, wherever the forward passes run.

Two implementations share this class:

* :class:`~trlm.core.engine.Engine`        the model in this process (PyTorch; the only one with decoding steps,
  hidden states and hooks, so speculative decoding, steering and training need it);
* :class:`~trlm.core.remote.RemoteEngine`  a model served by vLLM's OpenAI-compatible server (one GPU, tensor /
  pipeline / data parallel, several nodes: whatever the server runs on).

Everything that turns text into model-order token ids lives here, once: tokenisation, the start token, the
whitespace rule at the context / continuation join, the reversal for reverse-order models (TRLM-Ba, FoBa), the
chat template, the context window and its truncation rule, and the generation outer loop (one row per
(prompt, sample), batched by a token budget) with its stop-string rule. So a request becomes the same token ids
in either engine; a subclass only runs :meth:`loglikelihood` and ``_generate_batch`` on those ids.

Requests are written in **forward reading order**: a ``context`` and a ``continuation`` whose log-probability is
wanted.

* ``forward``  model input ``[start] + tok(context) + tok(continuation)``; the continuation tokens are scored.
* ``reverse``  model input ``[start] + rev(tok(context)) + rev(tok(continuation))`` — the TRLM-Ba score
  ``log P_Ba(Reverse(SP+Q) | Reverse(CP+A))`` with ``context = CP+A`` and ``continuation = SP+Q``.

Context and continuation are tokenised separately so that the boundary is exact; whitespace at the join
belongs to the piece that comes second in the model's reading order (the continuation for forward scoring,
the context for reverse scoring), as BPE tokenisers glue a leading space to the next word. ``start`` is the
tokenizer's BOS (else EOS); it is not added twice when the context already begins with it (chat templates).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

from trlm.core.checkpoint import ModelError
from trlm.core.schema import Direction, GenArgs, Generation, LogLik, Request


@dataclass
class _Item:
    index: int
    prefix: list[int]  # model-order ids before the scored / generated part
    target: list[int] = field(default_factory=list)  # model-order ids to score
    sample: int = 0  # generation: which of the prompt's n samples
    seed: int = 0  # generation: the prompt's seed


class BaseEngine(ABC):
    """Tokenisation, token order, chat template and context window; scoring and generation are the subclass's.

    A subclass sets ``name``, ``token_order``, ``tokenizer``, ``max_length`` and the batch budgets, calls
    :meth:`_init_special_tokens`, and implements :meth:`loglikelihood` and ``_generate_batch``.
    """

    name: str
    token_order: str
    tokenizer: object
    max_length: int  # tokens per sequence the model accepts (prompt + continuation or new tokens)
    max_batch_tokens: int  # padded tokens per scoring batch
    max_batch_size: int
    max_gen_batch_tokens: int  # generation rows (prompt + max_new_tokens) per batch
    in_process: bool = False  # weights in this process: decoding steps, hidden states and hooks are available

    def _init_special_tokens(self, generation_eos) -> None:
        """``start_id`` (BOS, else EOS), ``pad_id`` and ``eos_ids`` (the tokenizer's EOS and the generation
        config's, which may be a list) from the tokenizer."""
        tok = self.tokenizer
        self.start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if self.start_id is None:
            raise ModelError(f"{self.name}: tokenizer has neither a BOS nor an EOS token to start sequences with")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.start_id
        eos = {tok.eos_token_id}
        eos |= set(generation_eos) if isinstance(generation_eos, (list, tuple)) else {generation_eos}
        self.eos_ids = sorted(e for e in eos if e is not None)

    # ------------------------------------------------------------------ token order

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
            # drop context tokens farthest from the continuation (forward: its start; reverse: the far end);
            # in both orders body[0] is the context token farthest from the continuation
            body = prefix[1:]
            prefix = [prefix[0], *body[over:]]
        return _Item(i, prefix, cont_ids)

    def encode_request(self, req: Request, direction: str | None = None,
                       truncate: Literal["error", "context"] = "error") -> tuple[list[int], list[int]]:
        """(prefix, target) token ids in model order, exactly as :meth:`loglikelihood` feeds them."""
        it = self._encode_request(req, self.resolve_direction(direction), truncate, 0)
        return it.prefix, it.target

    def encode_prompt(self, prompt: str, direction: str | None = None) -> list[int]:
        """Model-order ids of a generation prompt: ``[start] + tok(prompt)`` (reversed for a reverse model)."""
        d = self.resolve_direction(direction)
        ids = self.encode(prompt)
        return self._with_start(ids) if d == "forward" else [self.start_id, *ids[::-1]]

    # ------------------------------------------------------------------ scoring

    @abstractmethod
    def loglikelihood(self, requests: Sequence[Request], *, direction: str | None = None,
                      return_tokens: bool = False, truncate: Literal["error", "context"] = "error",
                      progress: bool = False) -> list[LogLik]:
        """Log P(continuation | context) for each request, in the input order (``token_logprobs`` in forward
        reading order when ``return_tokens``)."""

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

    # ------------------------------------------------------------------ generation

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

    @abstractmethod
    def _generate_batch(self, batch: list[_Item], args: GenArgs, d: Direction) -> list[Generation]:
        """One :class:`Generation` per row of ``batch`` (model-order prompt ids in ``prefix``)."""

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
        bar = progress_bar(len(items), desc, progress)
        for batch in self._batches(items, lambda it: len(it.prefix) + args.max_new_tokens, self.max_gen_batch_tokens):
            for it, g in zip(batch, run_batch(batch, args, d)):
                out[it.index] = g
            bar.update(len(batch))
        bar.close()
        return [out[i * args.n:(i + 1) * args.n] for i in range(len(prompts))]  # type: ignore[misc]

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


class GenRow:
    """One (prompt, sample) row's generated model-order ids, log-prob and finish reason, and **the** commit rule
    that every decoder (plain, speculative, served) applies to each token it produces, in generation order:

    an EOS ends the row ("eos", not appended); else the token is appended and its log-prob counted; a stop string
    in the text so far ends the row ("stop"); ``max_new_tokens`` tokens end it ("length").
    """

    def __init__(self, engine: BaseEngine, args: GenArgs, direction: Direction):
        self.engine, self.args, self.d = engine, args, direction
        self.gen: list[int] = []
        self.logprob: float = 0.0
        self.reason: str | None = None

    @property
    def step(self) -> int:
        return len(self.gen)

    def commit(self, tok: int, lp: float) -> int:
        """Apply the rule to one sampled token; returns 1 if it was taken (0 once the row has finished)."""
        if self.reason is not None:
            return 0
        if tok in self.engine.eos_ids:
            self.reason = "eos"
            return 1
        self.gen.append(tok)
        self.logprob += lp
        if self.args.stop and self.engine.cut_stop(self.gen, self.args.stop, self.d)[1]:
            self.reason = "stop"
        elif len(self.gen) == self.args.max_new_tokens:
            self.reason = "length"
        return 1

    def result(self) -> Generation:
        return self.engine.finish(self.gen, self.logprob, self.reason or "length", self.args, self.d)


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled or total < 2, leave=False)

"""Generation jobs of ``/v1/completions`` and ``/v1/chat/completions``: what one batcher call runs, steering
directions served with ``--directions NAME=DIR``, and the incremental text of a streamed choice.

One call of :func:`run_generate` takes the jobs of several requests. Jobs with the same sampling settings share one
``run_generation`` over all their prompts, decoded by :func:`~trlm.serve.decode.decode_batch`: each row keeps its
request's steering, stream sink and cancellation flag, so a steered, a streamed and a plain request are rows of the
same forward passes, and each row's text is what it would be alone. With ``--speculative`` or a remote engine the
rows go through that engine's own ``generate`` (no per-row steering; a stream then gets each text in one piece).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from trlm.core.schema import GenArgs, Generation

log = logging.getLogger(__name__)


class PayloadTooLarge(ValueError):
    """A request is within the body limit but too long for the model (answered 413)."""


class Cancelled(RuntimeError):
    """The job's client went away; its rows stopped at the next step."""


@dataclass(frozen=True, eq=False)
class GenJob:
    prompts: tuple[str, ...]
    args: GenArgs
    seeds: tuple[int, ...]
    steer: Mapping[int, torch.Tensor] = field(default_factory=dict)  # layer -> (d,) addition, every row of the job
    on_text: Optional[Callable[[int, str, Optional[str]], None]] = None  # (choice, text so far, finish reason)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class GenOutcome:
    generations: list[list[Generation]]
    prompt_tokens: int


# ---------------------------------------------------------------------------------------------- steering


@dataclass(frozen=True)
class DirectionSet:
    """One ``--directions NAME=DIR``: the concept directions of ``trlm steer fit`` at one layer."""

    name: str
    layer: int
    model: str
    directions: dict  # concept id -> trlm.steer.detect.Direction

    @classmethod
    def load(cls, name: str, path: str | Path, engine) -> "DirectionSet":
        from trlm.core.models import decoder_layers
        from trlm.steer.detect import load_directions

        meta, dirs = load_directions(path)
        n = len(decoder_layers(engine.model))
        if not 0 <= int(meta["layer"]) < n:
            raise ValueError(f"--directions {name}={path}: layer {meta['layer']} does not exist in {engine.name} "
                             f"(decoder blocks 0-{n - 1})")
        width = int(engine.model.config.hidden_size)
        bad = [c for c, d in dirs.items() if d.w.numel() != width]
        if bad:
            raise ValueError(f"--directions {name}={path}: concept {bad[0]} has {dirs[bad[0]].w.numel()} dimensions; "
                             f"{engine.name}'s residual stream has {width}")
        if meta.get("model") and meta["model"] != engine.name:
            log.warning("--directions %s: fitted on %s, served on %s", name, meta["model"], engine.name)
        return cls(name, int(meta["layer"]), str(meta.get("model", "")), dirs)


def resolve_steer(sets: Mapping[str, DirectionSet], specs: Sequence) -> dict[int, torch.Tensor]:
    """``{layer: summed (d,) addition}`` of a request's ``steer`` list; ValueError naming the bad field."""
    from trlm.steer.hooks import Additive

    out: dict[int, torch.Tensor] = {}
    for i, s in enumerate(specs):
        if s.directions not in sets:
            served = ", ".join(sets) or "none (start trlm serve with --directions NAME=DIR)"
            raise ValueError(f"field 'steer.{i}.directions': {s.directions!r} is not served; served: {served}")
        ds = sets[s.directions]
        if s.concept not in ds.directions:
            raise ValueError(f"field 'steer.{i}.concept': {ds.name} holds concepts {sorted(ds.directions)}")
        if not math.isfinite(s.factor):
            raise ValueError(f"field 'steer.{i}.factor': must be a finite number")
        d = ds.directions[s.concept]
        v = Additive.row(d.w, s.factor * d.max_act)
        out[ds.layer] = out[ds.layer] + v if ds.layer in out else v
    return out


# ---------------------------------------------------------------------------------------------- the batcher's run


def run_generate(engine, jobs: list[GenJob], drafter=None, gamma: int = 4) -> list[GenOutcome | Exception]:
    """One result (or exception) per job, each as if the job were alone (module docstring)."""
    from trlm.core.engine import Engine
    from trlm.serve.decode import CANCELLED, RowPlan, decode_batch

    limit = engine.max_length
    results: list[GenOutcome | Exception | None] = [None] * len(jobs)
    lengths = [0] * len(jobs)
    groups: dict[GenArgs, list[int]] = defaultdict(list)
    for ji, job in enumerate(jobs):
        if job.cancel.is_set():
            results[ji] = Cancelled("the client went away before its job ran")
            continue
        n = [len(engine.encode_prompt(p, "forward")) for p in job.prompts]
        too_long = [i for i, k in enumerate(n) if k + job.args.max_new_tokens > limit]
        if too_long:
            i = too_long[0]
            results[ji] = PayloadTooLarge(f"prompt[{i}]: {n[i]} tokens + max_tokens {job.args.max_new_tokens} "
                                          f"exceed the model's context window of {limit}")
            continue
        lengths[ji] = sum(n)
        groups[job.args].append(ji)
    local = isinstance(engine, Engine) and drafter is None
    for args, members in groups.items():  # one engine call per distinct setting (seeds are per prompt)
        owners = [(ji, pi) for ji in members for pi in range(len(jobs[ji].prompts))]
        prompts = [jobs[ji].prompts[pi] for ji, pi in owners]
        seeds = [jobs[ji].seeds[pi] for ji, pi in owners]
        if local:
            def plan(item, a):
                ji, pi = owners[item.index // a.n]
                job, choice = jobs[ji], pi * a.n + item.index % a.n
                sink = (lambda text, reason, j=job, c=choice: j.on_text(c, text, reason)) if job.on_text else None
                return RowPlan(dict(job.steer), sink, job.cancel.is_set)

            gens = engine.run_generation(prompts, args, "forward", seeds,
                                         lambda batch, a, d: decode_batch(engine, batch, a, d,
                                                                          [plan(it, a) for it in batch]))
        else:
            if drafter is None:
                gens = engine.generate(prompts, args, direction="forward", seeds=seeds)
            else:
                from trlm.speculative import speculative_generate

                gens, _ = speculative_generate(engine, prompts, args, drafter, gamma=gamma, direction="forward",
                                               seeds=seeds)
            for (ji, pi), gs in zip(owners, gens):  # no per-step text here: each choice in one piece
                if jobs[ji].on_text:
                    for j, g in enumerate(gs):
                        jobs[ji].on_text(pi * args.n + j, g.text, g.finish_reason)
        i = 0
        for ji in members:
            k = len(jobs[ji].prompts)
            part = gens[i:i + k]
            cancelled = any(g.finish_reason == CANCELLED for gs in part for g in gs)
            results[ji] = Cancelled("the client went away") if cancelled else GenOutcome(part, lengths[ji])
            i += k
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- streamed text


class TextDelta:
    """The new part of a choice's text at each step, holding back what may still change: a tail that could be
    the start of a stop string (cut from the final text if the stop completes), an incomplete UTF-8 character, and
    (chat) surrounding whitespace, which the non-streamed answer strips. The pieces concatenate to the final text."""

    def __init__(self, stops: Sequence[str] = (), strip: bool = False):
        self.stops, self.strip = tuple(s for s in stops if s), strip
        self.sent = ""

    def _safe(self, text: str) -> str:
        if self.strip:
            text = text.lstrip()
        for s in self.stops:  # the longest tail that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    text = text[:-k]
                    break
        text = text.rstrip("\ufffd")
        return text.rstrip() if self.strip else text

    def update(self, text: str, final: bool) -> str:
        """The piece to send now (``final``: the text is the choice's final text)."""
        safe = (text.strip() if self.strip else text) if final else self._safe(text)
        if not safe.startswith(self.sent):
            if final:
                log.warning("streamed text %r is not a prefix of the final text %r", self.sent, safe)
            return ""
        piece, self.sent = safe[len(self.sent):], safe
        return piece

"""Steering evaluation (AxBench): generate with each method at each factor, judge, select the factor without leakage.

Per concept, 10 AlpacaEval instructions (a seeded, per-concept choice): the answer is sampled at temperature 1.0
(seeded) with ``h + α·w`` added at the direction's layer, ``α = factor × max_act[c]``; the **prompt** baseline
instead puts a steering instruction in the chat turn (``" {steering prompt}\\n\\nQuestion: {instruction}"``, as
AxBench feeds it; the steering prompt is the template :func:`steering_prompt`, where AxBench had gpt-4o-mini
write one per concept). Each answer gets the judge's three ratings and their harmonic mean. **Factor selection**:
per concept and method the factor with the best mean on instructions 0-4 is chosen and the mean on 5-9 reported.

AxBench's full grid is :data:`FULL_FACTORS` at 128 tokens; :data:`FACTORS` (4 factors, 64 tokens) is the default
here (hours vs minutes on 2 CPU cores).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from trlm.core.cache import ResultCache, cache_key
from trlm.core.schema import GenArgs, Request
from trlm.steer.detect import Direction

FACTORS = (0.5, 1.0, 2.0, 4.0)
FULL_FACTORS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0)
N_INSTRUCTIONS = 10  # per concept: the first half selects the factor, the second half is reported


def steering_prompt(concept: str) -> str:
    return f"Make sure your answer clearly includes content about {concept}."


def instructions_for(data: Path, concept_ids: Sequence[int], seed: int = 0) -> dict[int, list[str]]:
    """10 AlpacaEval instructions per concept: a draw from the eval set seeded by the concept id (so a concept gets
    the same instructions whichever other concepts run)."""
    import json

    from trlm.core.io import require_path
    from trlm.data.alpaca import REFERENCE_FILE

    rows = json.loads(require_path(Path(data) / REFERENCE_FILE, "AlpacaEval eval set").read_text(encoding="utf-8"))
    pool = sorted({r["instruction"] for r in rows if len(r["instruction"]) < 300})
    if len(pool) < N_INSTRUCTIONS:
        raise ValueError(f"{REFERENCE_FILE}: {len(pool)} usable instructions, {N_INSTRUCTIONS} needed per concept")
    return {c: random.Random(f"{seed}:{c}").sample(pool, N_INSTRUCTIONS) for c in concept_ids}


def generate(engine, instructions: Sequence[str], *, direction: Direction | None = None, layer: int | None = None,
             factor: float = 0.0, prompt: str | None = None, max_new_tokens: int = 64, seed: int = 0) -> list[str]:
    """Answers to ``instructions``: steered by ``direction`` at ``layer`` (α = factor × max_act), prompted with
    ``prompt``, or plain."""
    from contextlib import nullcontext

    from trlm.steer.hooks import Additive, steer

    users = [f" {prompt}\n\nQuestion: {q}" if prompt else q for q in instructions]
    args = GenArgs(max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
    ctx = (steer(engine.model, {layer: Additive(direction.w, factor * direction.max_act)})
           if direction is not None and factor else nullcontext())
    with ctx:
        gens = engine.generate([engine.chat_prompt(u) for u in users], args,
                               seeds=[seed + i for i in range(len(users))])
    return [g[0].text for g in gens]


def perplexities(engine, instructions: Sequence[str], answers: Sequence[str]) -> list[float]:
    """Per-token perplexity of each answer given its instruction under the (unsteered) engine; inf if empty."""
    import math

    idx = [k for k, a in enumerate(answers) if a.strip()]
    out = [float("inf")] * len(answers)
    lls = engine.loglikelihood([Request(engine.chat_prompt(instructions[k]), answers[k]) for k in idx])
    for k, ll in zip(idx, lls):
        out[k] = math.exp(-ll.logprob / max(1, ll.num_tokens))
    return out


def select_factor(scores_by_factor: dict[float, Sequence[float]],
                  half: int = N_INSTRUCTIONS // 2) -> tuple[float, float]:
    """(factor, reported score): the factor with the best mean on the first ``half`` instructions, and its mean on
    the rest (ties: the smaller factor)."""
    best = max(sorted(scores_by_factor), key=lambda f: sum(scores_by_factor[f][:half]) / half)
    rest = scores_by_factor[best][half:]
    return best, sum(rest) / len(rest)


def evaluate_method(engine, judge, concept: str, cid: int, instructions: list[str], method: str, *,
                    direction: Direction | None, layer: int | None, factors: Sequence[float], max_new_tokens: int,
                    reference: list[str], reference_ppl: list[float], cache: ResultCache) -> dict:
    """Scores of one method on one concept: per factor the ratings, then the selected factor and its score."""
    by_factor: dict[float, list[float]] = {}
    per: dict[str, dict] = {}
    for f in (factors if method != "prompt" else [0.0]):
        key = cache_key("steer", method, layer, cid, f, max_new_tokens, judge.name, instructions)
        hit = cache.get(key)
        if hit is None:
            answers = generate(engine, instructions, direction=direction, layer=layer, factor=f,
                               prompt=steering_prompt(concept) if method == "prompt" else None,
                               max_new_tokens=max_new_tokens)
            ppl = perplexities(engine, instructions, answers)
            ratings = judge.rate(concept, instructions, answers, reference=reference, ppl=ppl,
                                 reference_ppl=reference_ppl)
            from trlm.steer.judge import harmonic

            hit = {"answers": answers, "ratings": ratings, "scores": [harmonic(*r) for r in ratings]}
            cache.put(key, hit)
        by_factor[f] = hit["scores"]
        per[str(f)] = {"mean": sum(hit["scores"]) / len(hit["scores"]),
                       "concept": sum(r[0] for r in hit["ratings"]) / len(hit["ratings"]),
                       "instruction": sum(r[1] for r in hit["ratings"]) / len(hit["ratings"]),
                       "fluency": sum(r[2] for r in hit["ratings"]) / len(hit["ratings"]),
                       "example": hit["answers"][N_INSTRUCTIONS // 2]}
    factor, score = select_factor(by_factor)
    return {"factor": factor, "score": score, "by_factor": per}

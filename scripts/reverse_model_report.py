"""Quality report and training curve for a shipped reverse model (``trlm-ba-smol``) or both-orders model
(``trlm-foba-smol``: ``--model trlm-foba-smol --compare trlm-ba-smol`` also reads it forward, and scores the same
pairs with the compared model).

    .venv/bin/python scripts/reverse_model_report.py --run runs/trlm-ba-smol --n 100 \\
        --out runs/trlm-ba-smol/quality.json --plot docs/reverse_model_curve.png

On ``--n`` held-out pairs (``RUN/data/eval.jsonl``: AlpacaEval instructions with ``instruction_id % 5 == 3``,
never trained on), each rendered as the TRLM-Ba text ``Question: Q? Answer: A`` with A cut to its first
``--max-answer-tokens`` tokens, it reports per-token perplexities computed with ``Engine.loglikelihood``:

* ``full``:     the whole text;  ``question``: the ``Question: Q`` part given the answer (what TRLM-Ba scores).
* models: (a) ``trlm-ba-smol`` read in reverse; (b) the untrained forward model fed reversed text (its weights
  with token order ``reverse``); (c) the forward model reading forward (``full`` only: forward reading scores
  the question before the answer, so a ``question | answer`` number does not exist for it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
from pathlib import Path

from trlm.core.engine import Engine, Request
from trlm.core.io import read_jsonl, write_json
from trlm.scoring.prompts import pair_request


def perplexities(engine: Engine, pairs: list[tuple[str, str]], direction: str) -> dict[str, float]:
    full = [Request("", pair_request(q, a, "forward").context + pair_request(q, a, "forward").continuation)
            for q, a in pairs]
    out = {"full": _ppl(engine.loglikelihood(full, direction=direction, progress=True))}
    if direction == "reverse":
        out["question"] = _ppl(engine.loglikelihood([pair_request(q, a, "reverse") for q, a in pairs],
                                                    direction="reverse", progress=True))
    return out


def _ppl(lls) -> float:
    return round(math.exp(-sum(x.logprob for x in lls) / sum(x.num_tokens for x in lls)), 3)


def plot_curve(metrics: Path, png: Path, refs: dict[str, float] | None = None, title: str = "") -> None:
    """Train / held-out loss against tokens; ``refs`` adds horizontal lines (label -> nats/token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    tok = [r["tokens"] / 1000 for r in rows]
    loss = [r["loss"] for r in rows]
    k = 10
    smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
    ev = [(r["tokens"] / 1000, r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tok, loss, color="0.8", lw=0.8, label="train loss (per step)")
    ax.plot(tok, smooth, color="C0", label=f"train loss ({k}-step mean)")
    if ev:
        ax.plot(*zip(*ev), "o-", color="C3", label="held-out loss (id % 5 == 3)")
    for (label, value), style in zip((refs or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, ls=style, color="0.3", lw=1)
        ax.text(tok[-1], value, label, ha="right", va="bottom", fontsize=8, color="0.3")
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("cross-entropy in the run's token order (nats/token)")
    ax.set_title(title or "trlm-ba-smol: LoRA r=32 on SmolLM2-135M-Instruct, reverse token order")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--model", default="trlm-ba-smol")
    p.add_argument("--base", default="smollm2-135m-instruct")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--max-answer-tokens", type=int, default=200)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    p.add_argument("--compare", default=None, help="another reverse / both-orders model scored on the same pairs")
    a = p.parse_args()
    rows = read_jsonl(a.run / "data" / "eval.jsonl", {"query": str, "response": str})
    rows = random.Random(0).sample(rows, min(a.n, len(rows)))
    fwd = Engine.load(a.base, dtype="float32")
    pairs = [(r["query"], fwd.truncate(r["response"], a.max_answer_tokens)) for r in rows]
    untrained_rev = Engine(dataclasses.replace(fwd.lm, token_order="reverse"))
    results = {
        "n_pairs": len(pairs), "max_answer_tokens": a.max_answer_tokens,
        "data": f"{a.run / 'data' / 'eval.jsonl'} (AlpacaEval instruction_id % 5 == 3, held out)",
        "forward_model_forward": perplexities(fwd, pairs, "forward"),
        "forward_model_reversed_text": perplexities(untrained_rev, pairs, "reverse"),
    }
    del fwd, untrained_rev
    trained = Engine.load(a.model, dtype="float32")
    results["trained_reverse_model"] = perplexities(trained, pairs, "reverse")
    if trained.token_order == "both":
        results["trained_model_forward"] = perplexities(trained, pairs, "forward")
    results["model"] = a.model
    del trained
    if a.compare:
        results["compare"] = {"model": a.compare,
                              "reverse": perplexities(Engine.load(a.compare, dtype="float32"), pairs, "reverse")}
    write_json(a.out, results)
    if a.plot:
        title = ("" if a.model == "trlm-ba-smol" else
                 f"{a.model}: LoRA on SmolLM2-135M-Instruct, token order(s) of the run")
        plot_curve(a.run / "metrics.jsonl", a.plot, {
            "untrained forward model on reversed text (100 held-out pairs)":
                math.log(results["forward_model_reversed_text"]["full"]),
            "forward model on forward text (same pairs)": math.log(results["forward_model_forward"]["full"])},
            title=title)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

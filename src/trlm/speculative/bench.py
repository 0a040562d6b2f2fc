"""``trlm bench speculative``: speed and exactness of speculative decoding against plain decoding, in one run.

    trlm bench speculative --limit 3 --out runs/speculative
    trlm bench speculative --drafters ngram,early-exit:8 --schemes gumbel,wmh,leviathan --gamma 4 --out DIR

Workloads (from ``--data``, default ``../shared/data``), all on the embedded SmolLM2-135M-Instruct in float32:

* ``grounded``  summarise a SummaC (SummEval, CNN/DM) article, chat template: the output copies from the prompt;
* ``open``      AlpacaEval dev instructions, chat template: little to copy;
* ``reverse``   the guard's query regeneration: ``trlm-ba-smol`` reads "? Answer: {XSTest response}" backwards,
  n = 8 samples per response (one batch; its rows accept independently).

``grounded`` and ``open`` run at temperature 0 and 0.8, one prompt at a time (batch 1); ``reverse`` at 0.8.
Every method decodes the same prompts with the same seed, in one process, prompt by prompt with every method in
turn (so drift in machine load hits all methods alike). Per drafter x scheme: tokens/s, speed-up over plain,
tokens per target call, acceptance by draft
position, the closed-form acceptance for model drafters (Gumbel collision, WMH lower bound, 1 - TV) beside the
measured one, and ``identical_to_plain`` (the share of outputs byte-identical to plain seeded sampling with the
same sampler; 1.0 is the DISD guarantee for gumbel / wmh; leviathan is not drafter-invariant). Peers at greedy,
batch 1: Hugging Face ``generate`` plain, with ``prompt_lookup_num_tokens`` and with ``assistant_model`` (the
early-exit drafter), their speed-up over HF greedy and whether their output equals HF greedy.

Each finished (workload, method, prompt) is kept in ``DIR/cache.jsonl``: a rerun resumes (its timings are those
of the run that measured them).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

from trlm.core.cache import ResultCache, cache_key
from trlm.core.io import InputError, require_path, write_text
from trlm.core.report import fmt, write_results
from trlm.speculative.drafters import ModelDrafter

log = logging.getLogger(__name__)

TARGET, REVERSE_TARGET = "smollm2-135m-instruct", "trlm-ba-smol"


def grounded_prompts(data: Path, limit: int, max_doc_tokens: int, eng) -> list[str]:
    path = require_path(data / "summac_subsets" / "summeval.json", "SummaC summeval.json")
    docs = list(dict.fromkeys(r["document"] for r in json.loads(path.read_text(encoding="utf-8")).values()))
    return [eng.chat_prompt("Summarize the following article in three sentences.\n\n"
                            + eng.truncate(d, max_doc_tokens)) for d in docs[:limit]]


def open_prompts(data: Path, limit: int, eng) -> list[str]:
    path = require_path(data / "alpaca_eval" / "eval_set_with_reference_gpt4_1106_preview.json", "AlpacaEval")
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [eng.chat_prompt(r["instruction"]) for r in rows[:limit]]


def reverse_prompts(data: Path, limit: int, eng) -> list[str]:
    from trlm.data.xstest import xstest, xstest_completions

    comp = xstest_completions(data, "gpt4")
    rows = [r for r in xstest(data, "odd", "safe") if int(r["id"]) in comp][:limit]
    return ["? Answer:" + eng.truncate(comp[int(r["id"])], 128) for r in rows]


def _timed(cache: ResultCache, key: str, run) -> dict:
    """``run() -> (ids per sample, stats dict | None)``, timed and cached under ``key``."""
    hit = cache.get(key)
    if hit is None:
        t0 = time.perf_counter()
        ids, stats = run()
        hit = {"ids": ids, "seconds": time.perf_counter() - t0, "stats": stats}
        cache.put(key, hit)
    return hit


def _sum_stats(rows: list[dict]) -> dict:
    """Add up per-prompt speculative statistics (derived rates included)."""
    from trlm.speculative.decode import SpecStats

    return SpecStats.total(rows).as_dict()


def run_speculative_bench(out: str | Path, data: str | Path, *, limit: int = 3,
                          drafters: Sequence[str] = ("ngram", "early-exit:8"),
                          schemes: Sequence[str] = ("gumbel", "wmh", "leviathan"), gamma: int = 4,
                          max_new_tokens: int = 64, hf_peers: bool = True, progress: bool = True) -> dict:
    """Run every workload and method; write ``results.json``, ``report.md`` and ``speculative.png``."""
    from tqdm.auto import tqdm

    from trlm.core.engine import Engine, GenArgs
    from trlm.speculative.decode import SCHEMES, speculative_generate
    from trlm.speculative.drafters import make_drafter

    bad = [s for s in schemes if s not in SCHEMES]
    if bad:
        raise InputError(f"--schemes: unknown {', '.join(bad)}; choose from {', '.join(SCHEMES)}")
    if limit < 1 or gamma < 1:
        raise InputError(f"--limit and --gamma must be >= 1; got {limit}, {gamma}")
    out, data = Path(out), Path(data)
    config = {"limit": limit, "gamma": gamma, "max_new_tokens": max_new_tokens, "dtype": "float32", "seed": 0}
    cache = ResultCache(out / "cache.jsonl", config)
    fwd = Engine.load(TARGET, dtype="float32")
    rev = Engine.load(REVERSE_TARGET, dtype="float32")
    workloads = [("grounded", fwd, grounded_prompts(data, limit, 320, fwd), (0.0, 0.8), 1),
                 ("open", fwd, open_prompts(data, limit, fwd), (0.0, 0.8), 1),
                 ("reverse", rev, reverse_prompts(data, limit, rev), (0.8,), 8)]
    results: dict = {}
    bar = tqdm(total=sum(len(w[2]) * len(w[3]) for w in workloads), desc="bench speculative", disable=not progress)
    for name, eng, prompts, temps, n in workloads:
        direction = eng.token_order
        made = {spec: make_drafter(spec, eng, direction) for spec in drafters}
        for temp in temps:
            wl = f"{name}/t={temp}"
            runners, base = {}, {}  # method -> run(prompt); method -> the plain method it is compared with
            for sampler in dict.fromkeys("gumbel" if s == "leviathan" else s for s in schemes):
                args = GenArgs(max_new_tokens=max_new_tokens, temperature=temp, n=n, seed=0, sampler=sampler)
                runners[f"plain/{sampler}"] = lambda p, a=args: ([list(g.token_ids) for g in eng.generate([p], a)[0]],
                                                                None)
            for d in made.values():
                for scheme in schemes:
                    sampler = "gumbel" if scheme == "leviathan" else scheme
                    args = GenArgs(max_new_tokens=max_new_tokens, temperature=temp, n=n, seed=0, sampler=sampler)

                    def run(p, a=args, d=d, s=scheme):
                        gens, st = speculative_generate(eng, [p], a, d, gamma=gamma, scheme=s,
                                                        track_coupling=isinstance(d, ModelDrafter))
                        return [list(g.token_ids) for g in gens[0]], st.as_dict()

                    runners[f"{d.name}/{scheme}"], base[f"{d.name}/{scheme}"] = run, f"plain/{sampler}"
            if hf_peers and temp == 0.0 and n == 1:
                for key, kw in _hf_peers(eng, gamma, made).items():
                    runners[key] = lambda p, kw=kw: _hf_generate(eng, p, max_new_tokens, **kw)
            # prompt by prompt, every method in turn: drift in machine load hits all methods alike
            hits: dict[str, list[dict]] = {m: [] for m in runners}
            for i, p in enumerate(prompts):
                for m, run in runners.items():
                    hits[m].append(_timed(cache, cache_key(wl, m, i, p), lambda run=run, p=p: run(p)))
            res = {m: _aggregate(h) for m, h in hits.items()}
            for m, plain in base.items():
                res[m]["speedup_vs_plain"] = res[m]["tokens_per_s"] / res[plain]["tokens_per_s"]
                res[m]["identical_to_plain"] = _same(res[m], res[plain])
            for m in [m for m in res if m.startswith("hf-")]:
                res[m]["speedup_vs_hf_greedy"] = res[m]["tokens_per_s"] / res["hf-greedy"]["tokens_per_s"]
                res[m]["identical_to_hf_greedy"] = _same(res[m], res["hf-greedy"])
                res[m]["identical_to_trlm_greedy"] = _same(res[m], res["plain/gumbel"])
            for r in res.values():
                r.pop("outputs", None)
            results[wl] = res
            bar.update(len(prompts))
            _write(out, results, config)
    bar.close()
    return results


def _aggregate(hits: list[dict]) -> dict:
    """Tokens, seconds and tokens/s of one method over the prompts (+ summed speculative statistics)."""
    tokens = sum(len(x) for h in hits for x in h["ids"])
    seconds = sum(h["seconds"] for h in hits)
    row = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9),
           "outputs": [h["ids"] for h in hits]}
    if hits[0]["stats"] is not None:
        row.update(_sum_stats([h["stats"] for h in hits]))
        for k in ("proposed", "accepted", "expected"):
            row.pop(k)
    return row


def _same(a: dict, b: dict) -> float:
    """Share of prompts whose outputs (every sample's token ids) are identical in two methods."""
    return sum(x == y for x, y in zip(a["outputs"], b["outputs"])) / len(a["outputs"])


def _hf_peers(eng, gamma: int, made: dict) -> dict[str, dict]:
    """Hugging Face ``generate`` settings at greedy, batch 1: plain, prompt lookup, assisted by each model drafter."""
    peers = {"hf-greedy": {}, f"hf-prompt-lookup:{gamma}": {"prompt_lookup_num_tokens": gamma}}
    peers.update({f"hf-assisted:{d.name}": {"assistant_model": d.engine.model} for d in made.values()
                  if isinstance(d, ModelDrafter)})
    return peers


def _hf_generate(eng, prompt: str, max_new_tokens: int, **kw) -> tuple[list[list[int]], None]:
    import torch

    ids = torch.tensor([eng.encode_prompt(prompt, "forward")])
    with torch.inference_mode():
        o = eng.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=eng.pad_id, **kw)
    gen = o[0, ids.shape[1]:].tolist()
    cut = next((k for k, t in enumerate(gen) if t in eng.eos_ids), len(gen))
    return [gen[:cut]], None


def _write(out: Path, results: dict, config: dict) -> None:
    write_results(out, {"config": config, "workloads": results})
    _plot(out / "speculative.png", results)
    write_text(out / "report.md", _report(results, config))


def _plot(path: Path, results: dict) -> None:
    from trlm.core.report import new_figure, save_figure

    fig, (ax, ax2) = new_figure(1, 2, figsize=(12, 4))
    wls = list(results)
    methods = list(dict.fromkeys(m for r in results.values() for m in r if not m.startswith(("plain/", "hf-greedy"))))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        vals = [results[w].get(m, {}).get("speedup_vs_plain", results[w].get(m, {}).get("speedup_vs_hf_greedy", 0))
                for w in wls]
        ax.bar([i + j * width for i in range(len(wls))], vals, width, label=m)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))], wls, rotation=15, fontsize=8)
    ax.set_ylabel("speed-up vs plain (HF peers: vs HF greedy)")
    ax.legend(fontsize=6, ncol=2)
    for w in wls:
        for m, r in results[w].items():
            if m.endswith("/gumbel") and not m.startswith("plain") and r.get("acceptance_by_position"):
                ax2.plot(range(1, len(r["acceptance_by_position"]) + 1), r["acceptance_by_position"], marker="o",
                         label=f"{w} {m}")
    ax2.set_xlabel("draft position")
    ax2.set_ylabel("acceptance (gumbel)")
    ax2.set_ylim(0, 1.05)
    ax2.legend(fontsize=6)
    save_figure(fig, path)


def _report(results: dict, config: dict) -> str:
    lines = ["# Speculative decoding benchmark", "",
             f"SmolLM2-135M-Instruct (grounded, open) and trlm-ba-smol (reverse, n = 8), float32, seed 0, "
             f"{config['limit']} prompts per workload, up to {config['max_new_tokens']} new tokens, gamma "
             f"{config['gamma']} (adaptive). Speed-ups are against plain `Engine.generate` with the same sampler in "
             "the same run; HF peers against HF greedy. identical = share of outputs byte-identical to plain.", "",
             "![speculative](speculative.png)", "",
             "| workload | method | tokens/s | speed-up | tokens / target call | acceptance (measured / closed form) "
             "| acceptance by position | identical |", "|---|---|---|---|---|---|---|---|"]
    for w, res in results.items():
        for m, r in res.items():
            speed = r.get("speedup_vs_plain", r.get("speedup_vs_hf_greedy"))
            ident = r.get("identical_to_plain", r.get("identical_to_hf_greedy"))
            acc = f"{fmt(r['acceptance'], 2)} / {fmt(r.get('expected_acceptance'), 2)}" if "acceptance" in r else "–"
            pos = " ".join(f"{a:.2f}" for a in r.get("acceptance_by_position", [])) or "–"
            lines.append(f"| {w} | {m} | {r['tokens_per_s']:.1f} | {fmt(speed, 2)} | "
                         f"{fmt(r.get('tokens_per_target_call'), 2)} "
                         f"| {acc} | {pos} | {fmt(ident, 2)} |")
    return "\n".join(lines) + "\n"

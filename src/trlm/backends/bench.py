"""The in-process engine against a vLLM server on the same workloads, one after the other (``trlm bench backends``).

    make vllm-serve MODEL=smollm2-135m-instruct PORT=8011 &   make vllm-serve MODEL=trlm-ba-smol PORT=8012 &
    trlm bench backends --server http://127.0.0.1:8011/v1 --reverse-server http://127.0.0.1:8012/v1 \\
        --out runs/backends

(a) scoring: TRLM-Fo (forward server) and TRLM-Ba (reverse server) over AlpacaEval dev instructions' judged
    candidates (``--pairs`` (instruction, response) pairs, whole instructions): tokens/s each way, mean and max
    |Δ log-prob| per scored token, and the share of instructions whose candidate order is identical;
(b) generation: ``--prompts`` chat prompts (dev instructions) x ``--max-new-tokens`` greedy, one at a time and all
    at once (the in-process engine batches them; the server gets them concurrently): tokens/s and greedy agreement;
(c) ``trlm bench serve`` (rerank, ``--clients`` clients) with the in-process engine and with the server behind
    ``trlm serve``: documents/s and p50 / p99, batching on and off.

Every stage runs alone (the server idles while the in-process engine works, and the other way round).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

from trlm.core.engine import Engine, load_engine
from trlm.core.io import InputError, default_data_dir, require_path, write_text
from trlm.core.report import new_figure, save_figure, write_results
from trlm.core.schema import GenArgs

log = logging.getLogger(__name__)

LOCAL = {"trlm-fo": "smollm2-135m-instruct", "trlm-ba": "trlm-ba-smol"}


def _dev(data: Path):
    from trlm.data.alpaca import JUDGED_FILE, REFERENCE_FILE, load_judged

    return load_judged(require_path(data / JUDGED_FILE, "AlpacaEval judged candidates"),
                       require_path(data / REFERENCE_FILE, "AlpacaEval reference answers"), dev=True)


def dev_items(data: Path, pairs: int) -> list[tuple[str, list[str]]]:
    """Whole dev instructions (not held out) with their candidates until ``pairs`` pairs are reached."""
    items, n = [], 0
    for inst in _dev(data):
        if n >= pairs:
            break
        items.append((inst.instruction, [c.output for c in inst.candidates]))
        n += len(inst.candidates)
    if n < pairs:
        raise InputError(f"--pairs {pairs}: the dev instructions hold only {n} pairs")
    return items


def _requests(scorer, eng, items):
    """The scorer's engine requests, exactly as ``LikelihoodScorer.logliks_many`` builds them."""
    return [scorer.build(q, eng.truncate(r, scorer.max_response_tokens)) for q, rs in items for r in rs]


def score_stage(name: str, local, remote, items, progress: bool) -> dict:
    from trlm.scoring import make_scorer

    out, lls = {}, {}
    for which, eng in (("local", local), ("vllm", remote)):
        scorer = make_scorer(name, eng, task="rerank")
        reqs = _requests(scorer, eng, items)
        eng.loglikelihood(reqs[:2], direction=scorer.direction, truncate="context")  # warm-up
        t0 = time.perf_counter()
        lls[which] = eng.loglikelihood(reqs, direction=scorer.direction, return_tokens=True, truncate="context",
                                       progress=progress)
        sec = time.perf_counter() - t0
        scored = sum(ll.num_tokens for ll in lls[which])
        total = sum(sum(len(x) for x in eng.encode_request(r, scorer.direction, "context")) for r in reqs)
        out[which] = {"seconds": sec, "scored_tokens_per_s": scored / sec, "tokens_per_s": total / sec}
    deltas = [abs(a - b) for x, y in zip(lls["local"], lls["vllm"]) for a, b in zip(x.token_logprobs, y.token_logprobs)]
    same, top1, taus, i = 0, 0, [], 0
    for _, rs in items:
        a = [ll.logprob for ll in lls["local"][i:i + len(rs)]]
        b = [ll.logprob for ll in lls["vllm"][i:i + len(rs)]]
        same += _order(a) == _order(b)
        top1 += _order(a)[0] == _order(b)[0]
        taus.append(_kendall(a, b))
        i += len(rs)
    return {**out, "pairs": len(lls["local"]), "queries": len(items), "identical_order_share": same / len(items),
            "same_top1_share": top1 / len(items), "mean_kendall_tau": sum(taus) / len(taus),
            "mean_abs_delta_per_token": sum(deltas) / len(deltas), "max_abs_delta_per_token": max(deltas),
            "vllm_over_local": out["vllm"]["tokens_per_s"] / out["local"]["tokens_per_s"],
            "local_over_vllm": out["local"]["tokens_per_s"] / out["vllm"]["tokens_per_s"]}


def _kendall(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic) if len(a) > 1 else 1.0


def _order(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda k: (-scores[k], k))


def generate_stage(local: Engine, remote, prompts: list[str], max_new_tokens: int) -> dict:
    args = GenArgs(max_new_tokens=max_new_tokens, temperature=0)
    res, gens = {}, {}
    for which, eng in (("local", local), ("vllm", remote)):
        eng.generate(prompts[:1], GenArgs(max_new_tokens=4, temperature=0))  # warm-up
        t0 = time.perf_counter()
        one = [eng.generate([p], args)[0][0] for p in prompts]
        t1 = time.perf_counter()
        many = [g[0] for g in eng.generate(prompts, args)]
        t2 = time.perf_counter()
        gens[which] = one
        res[which] = {"one_at_a_time_tokens_per_s": sum(g.num_tokens for g in one) / (t1 - t0),
                      f"batch_{len(prompts)}_tokens_per_s": sum(g.num_tokens for g in many) / (t2 - t1),
                      "batch_equals_one_at_a_time": [g.token_ids for g in one] == [g.token_ids for g in many]}
    prefix = [_common_prefix(a.token_ids, b.token_ids) / max(1, len(a.token_ids))
              for a, b in zip(gens["local"], gens["vllm"])]
    res["greedy_identical_share"] = sum(a.token_ids == b.token_ids for a, b in zip(gens["local"], gens["vllm"])) \
        / len(prompts)
    res["greedy_mean_common_prefix_share"] = sum(prefix) / len(prefix)
    return res


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def serve_stage(out: Path, data: Path, server: str, clients: int, requests: int, documents: int, dtype: str) -> dict:
    from trlm.serve.bench import run_serve_bench

    res = {}
    for which, model in (("local", LOCAL["trlm-fo"]), ("vllm", server)):
        r = run_serve_bench(out / f"serve_{which}", data, scorer="trlm-fo", model=model, clients=clients,
                            requests=requests, documents=documents, soak=0, dtype=dtype,
                            gen_requests=2, gen_max_tokens=8, factcheck_requests=2)  # only the rerank rows are read
        res[which] = {mode: {k: r[f"batching_{mode}"][k] for k in ("documents_per_s", "p50_s", "p99_s")}
                      for mode in ("off", "on")}
    return res


def run_backends_bench(out: str | Path, *, server: str, reverse_server: str, data: str | Path | None = None,
                       pairs: int = 200, prompts: int = 16, max_new_tokens: int = 64, clients: int = 16,
                       requests: int = 2, documents: int = 20, dtype: str = "auto", stages: Sequence[str] = "abc",
                       server_dtype: str = "bfloat16", progress: bool = True) -> dict:
    out, data = Path(out), Path(data or default_data_dir())
    items = dev_items(data, pairs)
    remote = {"trlm-fo": load_engine(server), "trlm-ba": load_engine(reverse_server)}
    res: dict = {"config": {"server": server, "reverse_server": reverse_server, "pairs": pairs, "prompts": prompts,
                            "max_new_tokens": max_new_tokens, "local_dtype": dtype, "server_dtype": server_dtype,
                            "clients": clients,
                            "command": _command(out, server, reverse_server, pairs, prompts, stages, dtype,
                                                server_dtype)}}
    if "a" in stages:
        res["scoring"] = {}
        for name in ("trlm-fo", "trlm-ba"):
            local = Engine.load(LOCAL[name], dtype=dtype)
            res["scoring"][name] = score_stage(name, local, remote[name], items, progress)
            res["config"].setdefault("local_dtypes", {})[name] = str(local.lm.dtype).replace("torch.", "")
            log.info("scoring %s: %s", name, json.dumps(res["scoring"][name]))
            write_results(out, res)
    if "b" in stages:
        local = Engine.load(LOCAL["trlm-fo"], dtype=dtype)
        chats = [local.chat_prompt(inst.instruction) for inst in _dev(data)[:prompts]]
        res["generation"] = generate_stage(local, remote["trlm-fo"], chats, max_new_tokens)
        write_results(out, res)
    if "c" in stages:
        res["serve"] = serve_stage(out, data, server, clients, requests, documents,
                                   "float32" if dtype == "auto" else dtype)
    write_results(out, res)
    write_text(out / "report.md", report(res))
    _plot(out / "backends.png", res)
    return res


def _command(out, server, reverse, pairs, prompts, stages, dtype, server_dtype) -> str:
    return (f"trlm bench backends --server {server} --reverse-server {reverse} --pairs {pairs} --prompts {prompts} "
            f"--stages {''.join(stages)} --dtype {dtype} --server-dtype {server_dtype} --out {out}")


def report(res: dict) -> str:
    c = res["config"]
    lines = ["# In-process engine vs vLLM server", "", f"`{c['command']}`", "",
             f"In-process dtype: {c.get('local_dtypes') or c['local_dtype']}; servers' dtype: {c['server_dtype']}. "
             "Ratios are vLLM / in-process (> 1: vLLM faster; the inverse is in results.json).", ""]
    if "scoring" in res:
        lines += ["## (a) Scoring AlpacaEval dev pairs", "",
                  "| scorer | pairs | in-process tok/s | vLLM tok/s | vLLM / in-process | mean abs Δ/token | "
                  "max abs Δ/token | identical order | same top 1 | Kendall τ |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, s in res["scoring"].items():
            lines.append(f"| {name} | {s['pairs']} | {s['local']['tokens_per_s']:.0f} | {s['vllm']['tokens_per_s']:.0f}"
                         f" | {s['vllm_over_local']:.2f} | {s['mean_abs_delta_per_token']:.2g} | "
                         f"{s['max_abs_delta_per_token']:.2g} | {s['identical_order_share']:.1%} "
                         f"of {s['queries']} | {s['same_top1_share']:.1%} | {s['mean_kendall_tau']:.3f} |")
        lines.append("")
    if "generation" in res:
        g = res["generation"]
        b = next(k for k in g["local"] if k.startswith("batch_"))
        lines += ["## (b) Greedy generation", "", f"| engine | one at a time tok/s | {b.replace('_', ' ')} |",
                  "|---|---:|---:|"]
        for which in ("local", "vllm"):
            lines.append(f"| {which} | {g[which]['one_at_a_time_tokens_per_s']:.1f} | {g[which][b]:.1f} |")
        lines += ["", f"Greedy output identical on {g['greedy_identical_share']:.0%} of prompts; mean common prefix "
                  f"{g['greedy_mean_common_prefix_share']:.0%} of the in-process tokens.", ""]
    if "serve" in res:
        lines += ["## (c) `trlm bench serve` (rerank, trlm-fo)", "",
                  "| engine behind trlm serve | batching | documents/s | p50 s | p99 s |", "|---|---|---:|---:|---:|"]
        for which, runs in res["serve"].items():
            for mode, s in runs.items():
                lines.append(f"| {which} | {mode} | {s['documents_per_s']:.1f} | {s['p50_s']:.2f} | "
                             f"{s['p99_s']:.2f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _plot(path: Path, res: dict) -> None:
    if "scoring" not in res:
        return
    fig, ax = new_figure(figsize=(6, 3.2))
    names = list(res["scoring"])
    for j, which in enumerate(("local", "vllm")):
        ax.bar([i + (j - 0.5) * 0.38 for i in range(len(names))],
               [res["scoring"][n][which]["tokens_per_s"] for n in names], 0.38,
               label="in-process" if which == "local" else "vLLM server")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("scoring tokens/s")
    ax.legend()
    save_figure(fig, path)

"""``trlm bench generate``: decode speed of the in-process engine against its peers and the memory limit, in one run.

    trlm bench generate --out runs/generate
    trlm bench generate --vllm http://127.0.0.1:8011/v1 --prompts 16 --batch1-prompts 4 --out runs/generate

The same chat prompts (AlpacaEval dev instructions, ``--data``), greedy, ``--max-new-tokens`` new tokens, on the
embedded SmolLM2-135M-Instruct; rows:

* ``engine/<dtype>``            ``Engine.generate`` (bf16 and float32), its decode step the fast one
                                (:mod:`trlm.core.fastdecode`) where the model takes it;
* ``engine/<dtype>/modules``    the same through the model's modules (``fast_decode=False``; ``--module-path``);
* ``engine/<dtype>+<drafter>``  ``speculative_generate`` with that drafter (``--speculative``; same text as plain);
* ``hf/<dtype>``                Hugging Face ``model.generate`` on the same weights (greedy, left-padded batch);
* ``vllm``                      a vLLM server (``--vllm URL``; requests one at a time, then all at once).

Batch 1 runs ``--batch1-prompts`` prompts one call each, every method in turn prompt by prompt; batch B runs all
``--prompts`` prompts in one call per method, ``--repeats`` times, methods in turn (so drift in machine load hits
all rows alike). Tokens/s counts generated tokens (EOS excluded) over wall time.

The memory limit: a decode step reads every weight of the linear layers (output head included) once, whatever
the batch, so it cannot run faster than ``bandwidth / weight bytes`` steps per second; the bandwidth is a
``torch.sum`` over 512 MB on the engine's threads (best of 5, before and after the rows). Each row's share = its
steps/s over that limit.
The profile (fast step and module path): one decode step's wall time split into its weight products (the same
products on the same shapes, alone) and the rest (attention, norms, rotary, cache, Python), and torch.profiler's
top operators.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from trlm.core.io import InputError, require_path, write_text
from trlm.core.report import fmt, new_figure, save_figure, write_results
from trlm.core.schema import GenArgs

TARGET = "smollm2-135m-instruct"


def bench_prompts(data: Path, limit: int, max_prompt_tokens: int, eng) -> list[str]:
    """The first ``limit`` AlpacaEval instructions, cut to ``max_prompt_tokens``, in the chat template."""
    path = require_path(data / "alpaca_eval" / "eval_set_with_reference_gpt4_1106_preview.json", "AlpacaEval")
    rows = json.loads(path.read_text(encoding="utf-8"))
    if len(rows) < limit:
        raise InputError(f"--prompts {limit}: {path} holds only {len(rows)} instructions")
    return [eng.chat_prompt(eng.truncate(r["instruction"], max_prompt_tokens)) for r in rows[:limit]]


def bandwidth_gbs(mb: int = 512, reps: int = 5) -> float:
    """Memory read bandwidth in GB/s: the best of ``reps`` ``torch.sum`` over ``mb`` MB of float32."""
    x = torch.ones(mb * 2**20 // 4)
    x.sum()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decode step reads from weights: every linear layer's (the output head included)."""
    return sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, torch.nn.Linear))


@torch.inference_mode()
def hf_generate(eng, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
    """Hugging Face ``generate``, greedy, one left-padded batch; ids up to the first EOS."""
    ids, mask, _ = eng._left_pad([eng.encode_prompt(p, "forward") for p in prompts])
    o = eng.model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=eng.pad_id)
    out = []
    for row in o[:, ids.shape[1]:].tolist():
        cut = next((k for k, t in enumerate(row) if t in eng.eos_ids), len(row))
        out.append(row[:cut])
    return out


@torch.inference_mode()
def profile_step(eng, prompt: str, steps: int, top: int = 8) -> dict:
    """One decode step of ``eng`` at batch 1 after ``prompt``: wall ms, its linear layers' ms, top operators; and
    the sampler's ms at temperature 0.8 (greedy needs only an argmax)."""
    from torch.profiler import ProfilerActivity, profile

    state, logits = eng.prefill([eng.encode_prompt(prompt)])
    tok = logits.argmax(-1)[:, None]
    for _ in range(2):
        eng.decode_step(state, tok)
    t0 = time.perf_counter()
    for _ in range(steps):
        eng.decode_step(state, tok)
    step_ms = (time.perf_counter() - t0) / steps * 1e3
    fast = eng._fast_decoder()  # the products the step runs: stacked / prepacked (fast step) or the modules
    lins = fast.products() if fast is not None else [m for m in eng.model.modules() if isinstance(m, torch.nn.Linear)]
    xs = [torch.randn(1, 1, m.in_features, dtype=eng.lm.dtype) for m in lins]
    for m, x in zip(lins, xs):
        m(x)
    t0 = time.perf_counter()
    for _ in range(steps):
        for m, x in zip(lins, xs):
            m(x)
    linear_ms = (time.perf_counter() - t0) / steps * 1e3
    one = torch.zeros(1, dtype=torch.long)  # the sampler at temperature 0.8: keyed noise over the vocabulary
    hot = GenArgs(temperature=0.8)
    eng.sample(logits, hot, one, one, one)
    t0 = time.perf_counter()
    for k in range(steps):
        eng.sample(logits, hot, one, one, one + k)
    sample_ms = (time.perf_counter() - t0) / steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            eng.decode_step(state, tok)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return {"step_ms": step_ms, "linear_ms": linear_ms, "rest_ms": step_ms - linear_ms, "linears": len(lins),
            "sample_ms": sample_ms,
            "top_ops": [{"op": e.key, "calls_per_step": e.count / steps, "self_ms_per_step":
                         e.self_cpu_time_total / 1e3 / steps, "share": e.self_cpu_time_total / total}
                        for e in ops[:top]]}


def run_generate_bench(out: str | Path, data: str | Path, *, prompts: int = 16, batch1_prompts: int = 4,
                       max_new_tokens: int = 64, max_prompt_tokens: int = 256,
                       dtypes: Sequence[str] = ("bfloat16", "float32"), speculative: Sequence[str] = ("ngram",),
                       hf: bool = True, vllm: str | None = None, repeats: int = 1, profile_steps: int = 16,
                       threads: int | None = None, module_path: bool = True) -> dict:
    """Time every row at batch 1 and batch ``prompts``; write ``results.json``, ``report.md`` and ``generate.png``."""
    from trlm.core.engine import Engine, load_engine
    from trlm.speculative.decode import speculative_generate

    bad = [d for d in dtypes if d not in ("bfloat16", "float32")]
    if bad:
        raise InputError(f"--dtypes: unknown {', '.join(bad)}; choose from bfloat16, float32")
    if min(prompts, batch1_prompts, max_new_tokens, repeats, profile_steps) < 1 or batch1_prompts > prompts:
        raise InputError("--prompts, --batch1-prompts (<= --prompts), --max-new-tokens, --repeats and "
                         "--profile-steps must be >= 1")
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    out, data = Path(out), Path(data)
    engines = {dt: Engine.load(TARGET, dtype=dt) for dt in dtypes}
    modules = {dt: Engine(e.lm, fast_decode=False) for dt, e in engines.items()} if module_path else {}
    texts = bench_prompts(data, prompts, max_prompt_tokens, next(iter(engines.values())))
    args = GenArgs(max_new_tokens=max_new_tokens, temperature=0)
    runners = {}  # row -> run(list of prompts) -> generated ids per prompt
    for dt, eng in engines.items():
        runners[f"engine/{dt}"] = lambda ps, e=eng: [list(g[0].token_ids) for g in e.generate(ps, args)]
        if dt in modules:  # the same engine through the model's modules (the decode step before core/fastdecode)
            runners[f"engine/{dt}/modules"] = lambda ps, e=modules[dt]: [
                list(g[0].token_ids) for g in e.generate(ps, args)]
        for spec in speculative:
            runners[f"engine/{dt}+{spec}"] = lambda ps, e=eng, s=spec: [
                list(g[0].token_ids) for g in speculative_generate(e, ps, args, s)[0]]
        if hf:
            runners[f"hf/{dt}"] = lambda ps, e=eng: hf_generate(e, ps, max_new_tokens)
    if vllm:
        remote = load_engine(vllm)
        runners["vllm"] = lambda ps: [list(g[0].token_ids) for g in remote.generate(ps, args)]
    for run in runners.values():  # warm-up (first-call allocation, lazy imports, server connection)
        run(texts[:1])
    bw_before = bandwidth_gbs()
    timed: dict[str, dict[str, list]] = {b: {m: [] for m in runners} for b in ("batch_1", f"batch_{prompts}")}
    for p in texts[:batch1_prompts]:  # prompt by prompt, every row in turn
        for m, run in runners.items():
            t0 = time.perf_counter()
            ids = run([p])
            timed["batch_1"][m].append((time.perf_counter() - t0, ids))
    for _ in range(repeats):
        for m, run in runners.items():
            t0 = time.perf_counter()
            ids = run(texts)
            timed[f"batch_{prompts}"][m].append((time.perf_counter() - t0, ids))

    eng0 = next(iter(engines.values()))
    bw = max(bw_before, bandwidth_gbs())  # before and after the rows: the better of the two
    wbytes = {dt: weight_bytes(e.model) for dt, e in engines.items()}
    wbytes.setdefault("bfloat16", weight_bytes(eng0.model) * 2 // eng0.model.dtype.itemsize)
    rows: dict[str, dict] = {}
    for b, by_row in timed.items():
        B = 1 if b == "batch_1" else prompts
        for m, hits in by_row.items():
            tokens = sum(len(x) for _, ids in hits for x in ids)
            sec = sum(s for s, _ in hits)
            dt = "bfloat16" if m == "vllm" else m.split("/")[1].split("+")[0]
            limit = B * bw * 1e9 / wbytes[dt]  # tokens/s if a step only read the weights
            ref = f"engine/{dt}" if f"engine/{dt}" in by_row else None
            same = _same([ids for _, ids in hits], [ids for _, ids in by_row[ref]]) if ref else None
            rows.setdefault(b, {})[m] = {
                "tokens": tokens, "seconds": sec, "tokens_per_s": tokens / sec, "limit_tokens_per_s": limit,
                "share_of_limit": tokens / sec / limit, "dtype": dt, "identical_to": ref, "identical_share": same}
    profile = {dt: profile_step(e, texts[0], profile_steps) for dt, e in engines.items()}
    profile.update({f"{dt}/modules": profile_step(e, texts[0], profile_steps) for dt, e in modules.items()})
    machine = {"threads": torch.get_num_threads(), "bandwidth_gbs": bw, "weight_bytes": wbytes,
               "load_average": _loadavg()}
    config = {"model": TARGET, "prompts": prompts, "batch1_prompts": batch1_prompts, "max_new_tokens": max_new_tokens,
              "max_prompt_tokens": max_prompt_tokens, "dtypes": list(dtypes), "speculative": list(speculative),
              "hf": hf, "vllm": vllm, "repeats": repeats, "profile_steps": profile_steps, "module_path": module_path,
              "threads": torch.get_num_threads()}
    results = {"config": config, "machine": machine, "rows": rows, "profile": profile}
    write_results(out, results)
    _plot(out / "generate.png", rows)
    write_text(out / "report.md", _report(results))
    return results


def _same(a: list[list[list[int]]], b: list[list[list[int]]]) -> float:
    """Share of outputs (over every call's prompts) identical in two rows."""
    pairs = [(x, y) for ca, cb in zip(a, b) for x, y in zip(ca, cb)]
    return sum(x == y for x, y in pairs) / max(1, len(pairs))


def _loadavg() -> list[float] | None:
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _plot(path: Path, rows: dict) -> None:
    fig, axes = new_figure(1, len(rows), figsize=(6 * len(rows), 4))
    for ax, (b, res) in zip(axes if len(rows) > 1 else [axes], rows.items()):
        names = list(res)
        ax.barh(names, [r["tokens_per_s"] for r in res.values()], color="tab:blue")
        for dt in dict.fromkeys(r["dtype"] for r in res.values()):
            lim = next(r["limit_tokens_per_s"] for r in res.values() if r["dtype"] == dt)
            ax.axvline(lim, ls="--", lw=0.8, color="tab:red" if dt == "bfloat16" else "tab:grey",
                       label=f"memory limit {dt} ({lim:.0f})")
        ax.set_xlabel("tokens/s")
        ax.set_title(b.replace("_", " "))
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _report(r: dict) -> str:
    c, mach = r["config"], r["machine"]
    lines = ["# Generation speed", "",
             f"`{c['model']}`, greedy, {c['max_new_tokens']} new tokens, AlpacaEval chat prompts (cut to "
             f"{c['max_prompt_tokens']} tokens): batch 1 = {c['batch1_prompts']} prompts one call each; batch "
             f"{c['prompts']} = all prompts in one call, {c['repeats']} time(s). Every row ran in this process, side "
             f"by side (prompt by prompt, rows in turn), on {mach['threads']} threads; load average at the end "
             f"{mach['load_average']} (other jobs shared the machine: compare rows, not runs). identical = share of "
             "outputs equal to the engine's in the same dtype.", "",
             f"Memory limit: bandwidth {mach['bandwidth_gbs']:.1f} GB/s (torch.sum over 512 MB, best of 5 before and "
             "after the rows); weights "
             "read per step " + ", ".join(f"{dt} {b / 1e6:.0f} MB" for dt, b in mach["weight_bytes"].items())
             + "; limit = batch x bandwidth / weight bytes.", "", "![generate](generate.png)", "",
             "| batch | row | tokens/s | limit tokens/s | share of limit | identical |",
             "|---|---|---:|---:|---:|---:|"]
    for b, res in r["rows"].items():
        for m, x in res.items():
            lines.append(f"| {b.split('_')[1]} | {m} | {x['tokens_per_s']:.1f} | {x['limit_tokens_per_s']:.0f} | "
                         f"{x['share_of_limit']:.2f} | {fmt(x['identical_share'], 2)} |")
    lines += ["", "## Where a decode step's time goes (batch 1)", "",
              "| dtype | step ms | linear layers ms (weights) | rest ms (attention, norms, rotary, cache, Python) "
              "| sampler ms at T=0.8 |", "|---|---:|---:|---:|---:|"]
    for dt, p in r["profile"].items():
        lines.append(f"| {dt} | {p['step_ms']:.1f} | {p['linear_ms']:.1f} ({p['linears']} layers) | "
                     f"{p['rest_ms']:.1f} | {p['sample_ms']:.1f} |")
    for dt, p in r["profile"].items():
        lines += ["", f"torch.profiler, {dt}, self CPU time per step:", "",
                  "| operator | calls / step | ms / step | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{o['op']}` | {o['calls_per_step']:.0f} | {o['self_ms_per_step']:.2f} | {o['share']:.2f} |"
                  for o in p["top_ops"]]
    return "\n".join(lines) + "\n"

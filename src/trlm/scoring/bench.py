"""Scoring throughput of the engine against the loop most scripts write.

    trlm bench throughput --pairs 200 --out runs/throughput

Pairs come from AlpacaEval's judged candidates: the response is the context and the instruction the
continuation (the TRLM direction). "Naive" is one pair at a time, fp32, full-vocabulary logits at every
position, no cache. ``fraction_of_peak`` = 2 * params * tokens/s / the best matmul FLOP/s measured in this run
for the engine's dtype.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from trlm.core.device import cpu_name
from trlm.core.engine import Engine, Request
from trlm.core.io import InputError, default_data_dir, require_path, write_text
from trlm.core.models import load_model
from trlm.core.report import write_results
from trlm.data.alpaca import JUDGED_FILE


def load_pairs(data: Path, n: int, max_context_tokens: int | None = None) -> list[Request]:
    """``n`` pairs spread evenly over the judged candidates (every k-th row), response -> instruction."""
    path = require_path(Path(data) / JUDGED_FILE, "AlpacaEval judged candidates")
    rows = [json.loads(line) for line in path.open()]
    if n > len(rows):
        raise InputError(f"--pairs {n} exceeds the {len(rows)} rows of {path}")
    step = len(rows) // n
    return [Request(rows[i * step]["output"], rows[i * step]["instruction"]) for i in range(n)]


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 1.0) -> float:
    """Best FLOP/s of square and model-shaped matmuls in ``dtype`` (the machine's practical peak)."""
    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (4096, 576, 1536), (1024, 4096, 4096)):
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        for _ in range(2):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            a @ b
            reps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0))
    return best


@torch.inference_mode()
def naive_loglikelihood(model, eng: Engine, reqs: list[Request]) -> tuple[list[float], list[list[float]], int]:
    """One pair at a time, full logits at every position, log_softmax over the whole sequence."""
    sums, toks, n_tok = [], [], 0
    for r in reqs:
        prefix, t_ids = eng.encode_request(r, "forward")  # exactly the ids the engine scores
        ids = torch.tensor([prefix + t_ids], device=model.device)
        logp = model(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)[0]  # (T, V)
        per = logp[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)[-len(t_ids):]
        sums.append(float(per.sum()))
        toks.append(per.tolist())
        n_tok += ids.shape[1]
    return sums, toks, n_tok


def run_throughput_bench(out: Path, pairs: int = 200, model: str = "smollm2-135m-instruct",
                         data: Path | None = None, naive_pairs: int | None = None, progress: bool = True) -> dict:
    """Measure engine vs naive scoring; write ``out/results.json`` and ``out/report.md``."""
    reqs = load_pairs(Path(data or default_data_dir()), pairs)
    eng = Engine.load(model)  # auto dtype: bf16 where the hardware has it
    naive_model = load_model(model, dtype="float32", device=str(eng.device)).model
    n_naive = min(naive_pairs or pairs, pairs)

    eng.loglikelihood(reqs[:4])  # warm-up
    t0 = time.perf_counter()
    fast = eng.loglikelihood(reqs, return_tokens=True, progress=progress)
    fast_s = time.perf_counter() - t0
    n_tokens = sum(len(eng.encode_request(r, "forward")[0]) + ll.num_tokens for r, ll in zip(reqs, fast))

    naive_loglikelihood(naive_model, eng, reqs[:2])  # warm-up
    t0 = time.perf_counter()
    n_sums, n_toks, n_naive_tokens = naive_loglikelihood(naive_model, eng, reqs[:n_naive])
    naive_s = time.perf_counter() - t0

    tok_diff = max(abs(a - b) for ll, nt in zip(fast, n_toks) for a, b in zip(ll.token_logprobs, nt))
    sum_diff = max(abs(ll.logprob - s) for ll, s in zip(fast, n_sums))
    mean_tok_diff = (sum(abs(a - b) for ll, nt in zip(fast, n_toks) for a, b in zip(ll.token_logprobs, nt))
                     / sum(len(nt) for nt in n_toks))
    params = eng.lm.num_params
    tps, naive_tps = n_tokens / fast_s, n_naive_tokens / naive_s
    peak = matmul_peak(eng.lm.dtype, eng.device)
    res = {
        "model": eng.name, "dtype": str(eng.lm.dtype).replace("torch.", ""), "device": str(eng.device),
        "cpu": cpu_name(), "threads": torch.get_num_threads(),
        "pairs": pairs, "naive_pairs": n_naive, "tokens": n_tokens, "params": params,
        "tokens_per_s": tps, "naive_tokens_per_s": naive_tps, "speedup_vs_naive": tps / naive_tps,
        "max_abs_logprob_diff": tok_diff, "mean_abs_token_logprob_diff": mean_tok_diff,
        "max_abs_sum_logprob_diff": sum_diff,
        "matmul_peak_flops": peak, "model_flops": 2 * params * tps, "fraction_of_peak": 2 * params * tps / peak,
        "seconds": {"engine": fast_s, "naive": naive_s},
    }
    out = Path(out)
    write_results(out, res)
    write_text(out / "report.md", _report(res))
    return res


def _report(r: dict) -> str:
    sec = r["seconds"]
    engine_row = (f"| trlm engine (batched, {r['dtype']}, logits only at continuation positions, prefix cache) "
                  f"| {r['tokens_per_s']:.0f} | {sec['engine']:.1f} |")
    naive_row = (f"| naive loop (one pair at a time, fp32, full logits, no cache; {r['naive_pairs']} pairs) "
                 f"| {r['naive_tokens_per_s']:.0f} | {sec['naive']:.1f} |")
    return f"""# Scoring throughput

`trlm bench throughput --pairs {r['pairs']}` on {r['cpu']} ({r['threads']} threads), model `{r['model']}`
({r['params'] / 1e6:.1f} M parameters), engine dtype {r['dtype']}.

| | tokens/s | seconds |
|---|---:|---:|
{engine_row}
{naive_row}

- speed-up vs naive: **{r['speedup_vs_naive']:.2f}x**
- log-prob agreement with the naive fp32 loop: max |Δ| per token {r['max_abs_logprob_diff']:.4f},
  mean |Δ| per token {r['mean_abs_token_logprob_diff']:.4f}, max |Δ| of a pair's sum {r['max_abs_sum_logprob_diff']:.3f}
- matmul peak measured in this run ({r['dtype']}): {r['matmul_peak_flops'] / 1e9:.0f} GFLOP/s;
  model FLOP/s (2 x params x tokens/s): {r['model_flops'] / 1e9:.0f} GFLOP/s;
  **fraction of peak {r['fraction_of_peak']:.2f}**
"""

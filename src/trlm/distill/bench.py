"""``trlm bench distill``: TAID against baseline losses at equal tokens, on one student, data and seed.

    trlm bench distill --steps 60 --out runs/bench_distill

Per method (default ``taid,fkl,rkl,tvd,skew-fkl,sft``) a student of the teacher's blocks (``--student-layers``,
default 6 of 30) is distilled for ``--steps`` optimizer steps of ``--batch-size`` x ``--seq-len`` on the same
AlpacaEval dev candidates (instructions with ``instruction_id % 5 != 3``, one candidate each, all tokens
distilled), same seed, lr and batch order. The untrained student (``init``) is reported beside them. Evaluation on
held-out instructions (``instruction_id % 5 == 3``), against the teacher's greedy answers:

* ``teacher_kl``   mean per-token KL(teacher ‖ student) over the answer tokens (teacher forced);
* ``student_ppl``  exp of the student's mean NLL on those tokens;
* ``rouge_l``      ROUGE-L F1 (stemmed) of the student's greedy answer against the teacher's;
* ``acceptance`` / ``tokens_per_target_call`` / speed-up: the student as a model drafter for the teacher
  (greedy, Gumbel DISD, gamma 4, batch 1, float32), against plain teacher decoding of the same prompts.

Training resumes from each run's checkpoints (``OUT/runs/<method>``) and finished evaluations are kept in
``OUT/cache.jsonl``, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import torch

from trlm.core.cache import ResultCache, cache_key
from trlm.core.io import InputError, write_jsonl, write_text
from trlm.core.report import fmt, new_figure, save_figure, write_results

log = logging.getLogger(__name__)


def run_distill_bench(out: Path, data: Path, *, teacher: str = "smollm2-135m-instruct",
                      methods: Sequence[str] = ("taid", "fkl", "rkl", "tvd", "skew-fkl", "sft"),
                      student_layers: str = "6", steps: int = 60, batch_size: int = 4, seq_len: int = 256,
                      lr: float = 3e-4, eval_prompts: int = 16, max_new_tokens: int = 64, drafter_prompts: int = 4,
                      threads: int = 0) -> dict:
    from trlm.core.engine import Engine
    from trlm.core.models import load_model
    from trlm.distill.data import alpaca_rows
    from trlm.distill.losses import METHODS
    from trlm.distill.run import DistillSpec, distill
    from trlm.train.loop import TrainArgs

    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InputError(f"--methods: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    config = {"teacher": teacher, "layers": student_layers, "steps": steps, "batch_size": batch_size,
              "seq_len": seq_len, "lr": lr, "eval_prompts": eval_prompts, "max_new_tokens": max_new_tokens,
              "drafter_prompts": drafter_prompts}
    cache = ResultCache(out / "cache.jsonl", config)
    train_file = out / "data" / "train.jsonl"
    if not train_file.exists():
        write_jsonl(train_file, alpaca_rows(data))
    held = alpaca_rows(data, heldout=True)
    held = sorted(held, key=lambda r: r["instruction_id"])[:eval_prompts]
    t_eng = Engine(load_model(teacher, device="cpu", dtype=torch.float32))
    answers = _teacher_answers(t_eng, [r["prompt"] for r in held], max_new_tokens, cache)
    plain = _plain_decoding(t_eng, [r["prompt"] for r in held][:drafter_prompts], max_new_tokens, cache)

    results: dict[str, dict] = {}
    curves: dict[str, list[dict]] = {}
    for method in ["init", *methods]:
        run = out / "runs" / method
        if method != "init":
            spec = DistillSpec(teacher, student_layers, method, completions_only=False, save_dtype="bfloat16")
            args = TrainArgs(out=run, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                             warmup=max(1, steps // 10), eval_every=0, save_every=max(1, steps // 6),
                             seed=0, threads=threads)
            key = cache_key("eval", method)
            if cache.get(key) is None:
                distill(spec, args, train_file)
            curves[method] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
        key = cache_key("eval", method)
        hit = cache.get(key)
        if hit is None:
            student = _student_engine(teacher, student_layers, run / "model" if method != "init" else None)
            hit = evaluate_student(student, t_eng, held, answers, max_new_tokens, drafter_prompts)
            cache.put(key, hit)
        if method != "init":
            hit["tokens"] = curves[method][-1]["tokens"]
        hit["speedup"] = plain["seconds"] / hit["drafter_seconds"] if hit.get("drafter_seconds") else None
        results[method] = hit
        log.warning("%s: teacher KL %.3f, ppl %.1f, ROUGE-L %.1f, acceptance %.3f", method, hit["teacher_kl"],
                    hit["student_ppl"], hit["rouge_l"], hit["acceptance"])
    summary = {"config": config, "plain_teacher": plain, "methods": results,
               "teacher_answers": [{"prompt": r["prompt"], "answer": a} for r, a in zip(held, answers)]}
    write_results(out, summary)
    _plot(curves, results, out / "distill.png")
    write_text(out / "report.md", _report(summary))
    return summary


def _student_engine(teacher: str, layers: str, model_dir: Path | None):
    from trlm.core.engine import Engine
    from trlm.core.models import LoadedModel, load_model
    from trlm.distill.run import DistillSpec, student_args
    from trlm.distill.student import build_student

    if model_dir is not None:
        return Engine(load_model(str(model_dir), device="cpu", dtype=torch.float32))
    t = load_model(teacher, device="cpu", dtype=torch.float32)
    margs = student_args(DistillSpec(teacher, layers))
    model = build_student(t, margs.layers).eval()
    return Engine(LoadedModel(model, t.tokenizer, "init", t.token_order, {}))


def _teacher_answers(eng, prompts: list[str], max_new_tokens: int, cache: ResultCache) -> list[str]:
    from trlm.core.schema import GenArgs

    key = cache_key("teacher_answers", prompts)
    hit = cache.get(key)
    if hit is None:
        gens = eng.generate([eng.chat_prompt(p) for p in prompts], GenArgs(max_new_tokens=max_new_tokens,
                                                                          temperature=0.0), progress=True)
        hit = [g[0].text for g in gens]
        cache.put(key, hit)
    return hit


def _plain_decoding(eng, prompts: list[str], max_new_tokens: int, cache: ResultCache) -> dict:
    """Plain greedy teacher decoding at batch 1 (the speed-up baseline of the drafter rows)."""
    from trlm.core.schema import GenArgs

    key = cache_key("plain", prompts)
    hit = cache.get(key)
    if hit is None:
        t0, tokens = time.perf_counter(), 0
        for p in prompts:
            g = eng.generate([eng.chat_prompt(p)], GenArgs(max_new_tokens=max_new_tokens, temperature=0.0))[0][0]
            tokens += g.num_tokens
        secs = time.perf_counter() - t0
        hit = {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs}
        cache.put(key, hit)
    return hit


@torch.no_grad()
def evaluate_student(student, teacher, held: list[dict], answers: list[str], max_new_tokens: int,
                     drafter_prompts: int) -> dict:
    """teacher KL, perplexity and ROUGE-L on the held-out answers, and drafting for the teacher."""
    from rouge_score import rouge_scorer

    from trlm.core.schema import GenArgs
    from trlm.distill.data import build_examples
    from trlm.distill.losses import kl_per_token, log_probs
    from trlm.speculative import speculative_generate
    from trlm.speculative.decode import SpecStats
    from trlm.speculative.drafters import ModelDrafter
    from trlm.train.data import collate
    from trlm.train.losses import logits_at, loss_positions

    rows = [{"prompt": r["prompt"], "response": a} for r, a in zip(held, answers) if a.strip()]
    examples = build_examples(rows, teacher.lm, "forward", 1024, completions_only=True, source="held-out answers")
    kl_sum = nll_sum = n = 0.0
    for k in range(0, len(examples), 4):
        batch = collate(examples[k:k + 4], teacher.pad_id)
        at = loss_positions(batch)
        labels = batch["labels"][:, 1:][batch["labels"][:, 1:] != -100]
        ls = log_probs(logits_at(student.model, batch, at))
        lt = log_probs(logits_at(teacher.model, batch, at))
        kl_sum += float(kl_per_token(lt, ls).sum())
        nll_sum += float(-ls.gather(-1, labels[:, None]).sum())
        n += len(labels)
    greedy = GenArgs(max_new_tokens=max_new_tokens, temperature=0.0)
    gens = student.generate([student.chat_prompt(r["prompt"]) for r in held], greedy)
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rl = [rouge.score(a, g[0].text)["rougeL"].fmeasure for a, g in zip(answers, gens)]
    prompts = [teacher.chat_prompt(r["prompt"]) for r in held[:drafter_prompts]]
    drafter = ModelDrafter(student, teacher, "forward")
    t0 = time.perf_counter()  # batch 1, as the speculative benchmark
    stats = SpecStats.total([speculative_generate(teacher, [p], greedy, drafter, gamma=4, scheme="gumbel")[1]
                             for p in prompts])
    secs = time.perf_counter() - t0
    return {"teacher_kl": kl_sum / n, "student_ppl": math.exp(nll_sum / n), "rouge_l": 100 * sum(rl) / len(rl),
            "acceptance": stats.acceptance, "acceptance_by_position": stats.acceptance_by_position,
            "tokens_per_target_call": stats.tokens_per_target_call, "drafter_seconds": secs,
            "drafter_tokens": stats.tokens, "drafter_cost": drafter.cost, "eval_tokens": int(n),
            "sample_answer": gens[0][0].text}


def _plot(curves: dict[str, list[dict]], results: dict[str, dict], path: Path) -> None:
    fig, (ax1, ax2, ax3) = new_figure(1, 3, figsize=(15, 4.2))
    for m, rows in curves.items():
        ax1.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=m)
    ax1.set(xlabel="optimizer step", ylabel="training loss (own objective)", yscale="log", title="loss")
    ax1.legend(fontsize=8)
    if "taid" in curves:
        rows = curves["taid"]
        ax2.plot([r["step"] for r in rows], [r.get("t") for r in rows], label="TAID t (adaptive)")
        steps = rows[-1]["step"]
        ax2.plot([0, steps], [0.4, 1.0], "--", label="linear floor")
        ax2.legend(fontsize=8)
    ax2.set(xlabel="optimizer step", ylabel="t", title="TAID interpolation t")
    names = [m for m in results if m != "init"]  # the untrained student (far higher) is in the title
    ax3.bar(names, [results[m]["teacher_kl"] for m in names], color="tab:blue")
    init = results.get("init", {}).get("teacher_kl")
    ax3.set(ylabel="KL(teacher ‖ student), nats/token",
            title="held-out teacher KL (lower is better)" + (f"; untrained {init:.1f}" if init else ""))
    ax3.tick_params(axis="x", rotation=30)
    save_figure(fig, path)


def _report(s: dict) -> str:
    c, plain = s["config"], s["plain_teacher"]
    lines = [f"# Distillation: TAID vs baselines ({c['teacher']} → {c['layers']}-block student)", "",
             f"{c['steps']} steps x {c['batch_size']} x {c['seq_len']} tokens per method, lr {c['lr']}, same data, "
             f"seed and order; evaluated on {c['eval_prompts']} held-out AlpacaEval instructions (id % 5 == 3) "
             f"against the teacher's greedy answers ({c['max_new_tokens']} tokens). Drafting: greedy, Gumbel DISD, "
             f"gamma 4, batch 1, {c['drafter_prompts']} prompts; plain teacher {fmt(plain['tokens_per_s'], 1)} tok/s.",
             "", "| method | tokens | teacher KL ↓ | student ppl ↓ | ROUGE-L ↑ | acceptance ↑ | tokens / target call ↑ "
             "| speed-up vs plain |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, r in s["methods"].items():
        lines.append(f"| {m} | {r.get('tokens', 0)} | {fmt(r['teacher_kl'])} | {fmt(r['student_ppl'], 1)} | "
                     f"{fmt(r['rouge_l'], 1)} | {fmt(r['acceptance'])} | {fmt(r['tokens_per_target_call'], 2)} | "
                     f"{fmt(r['speedup'], 2)}x |")
    lines += ["", "![curves](distill.png)", ""]
    return "\n".join(lines)

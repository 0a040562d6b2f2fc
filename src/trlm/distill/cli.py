"""``trlm distill train|data`` and ``trlm bench distill``.

    trlm distill data --out runs/distill/train.jsonl
    trlm distill train --teacher smollm2-135m-instruct --loss taid --data runs/distill/train.jsonl \\
        --out runs/distill/taid --steps 60 --batch-size 4 --seq-len 256 --all-tokens
    trlm bench distill --steps 60 --out runs/bench_distill
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import default_data_dir, split_list
from trlm.core.options import echo_report
from trlm.distill.run import DistillSpec
from trlm.train.cli import Loop
from trlm.train.loop import TrainArgs

_D, _T = DistillSpec, TrainArgs
distill_app = typer.Typer(help="TAID distillation into a student made of the teacher's own blocks: make the data, "
                          "train.", no_args_is_help=True)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    distill_app.command("data")(data_cmd)
    distill_app.command("train")(train_cmd)
    app.add_typer(distill_app, name="distill")
    bench.command("distill")(bench_distill_cmd)


def train_cmd(
    teacher: str = typer.Option(..., help="Teacher model (embedded name, shipped model, dir, hub id)."),
    data: Path = typer.Option(..., help='Training JSONL of {"prompt": str, "response": str} rows.'),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints/, model/, metrics.jsonl."),
    all_tokens: bool = typer.Option(not _D.completions_only, "--all-tokens/--completions-only",
                                    help="Distil every token (official TAID; the default) or the response tokens "
                                         "only (TRL GKD)."),
    loss: str = typer.Option(_D.loss, help="taid, fkl, rkl, tvd, skew-fkl, skew-rkl, gjs or sft."),
    student_layers: str = typer.Option(_D.student_layers, help="Teacher blocks the student keeps: a count (evenly "
                                       "spaced, first and last kept; 6 of 30 = 0,6,12,17,23,29) or indices 0,1,29."),
    eval: Optional[Path] = typer.Option(None, "--eval", help="Held-out JSONL (same format) for eval loss."),
    steps: int = Loop.steps,
    batch_size: int = Loop.batch_size,
    grad_accum: int = Loop.grad_accum,
    seq_len: int = typer.Option(_T.seq_len, help="Sequences are cut to this many tokens."),
    lr: float = Loop.lr,
    warmup: int = Loop.warmup,
    clip: float = Loop.clip,
    taid_t_start: float = typer.Option(_D.t_start, help="TAID: initial t (0.4; 0.2 for a large capacity gap)."),
    taid_t_end: float = typer.Option(_D.t_end, help="TAID: final t."),
    taid_alpha: str = typer.Option("auto", help="TAID: step size of the adaptive update; 'auto' = 5e-4 x 15600 / "
                                   "steps (the official value at the official run length, scaled to this run)."),
    taid_beta: float = typer.Option(_D.beta, help="TAID: momentum of the relative loss decrease."),
    taid_linear: bool = typer.Option(False, help="TAID without the adaptive update (t follows the linear floor)."),
    teacher_topk: int = typer.Option(0, help="> 0: use the teacher's top-k log-probs, computed once and cached "
                                     "(an approximation: the rest of the mass is spread uniformly)."),
    teacher_cache: Optional[Path] = typer.Option(None, help="Top-k cache directory (default OUT/teacher_topk); "
                                                 "share it across runs on the same data."),
    train_embeddings: bool = typer.Option(False, help="Also train the embedding and head (then they are saved; by "
                                          "default they stay the teacher's and the student stores only its "
                                          "blocks)."),
    save_dtype: str = typer.Option(_D.save_dtype, help="dtype of the exported OUT/model: float32 or bfloat16."),
    gjs_beta: float = typer.Option(_D.gjs_beta, help="--loss gjs: mixture weight beta (0 = FKL, 1 = RKL)."),
    eval_every: int = Loop.eval_every,
    eval_batches: int = Loop.eval_batches,
    save_every: int = Loop.save_every,
    seed: int = Loop.seed,
    precision: str = Loop.precision,
    device: Optional[str] = Loop.device,
    threads: int = Loop.threads,
    time_limit: float = Loop.time_limit,
    resume: bool = Loop.resume,
):
    """Distil a teacher into a student made of a subset of its own blocks (TAID or a baseline loss).

    Same loop as `trlm train`: AdamW + cosine, atomic checkpoints with exact resume (TAID's t included),
    data-parallel under `torchrun`. The student keeps the teacher's tokenizer and token order.
    """
    from trlm.distill.run import distill

    alpha = None if taid_alpha == "auto" else _float(taid_alpha, "--taid-alpha")
    spec = DistillSpec(teacher, student_layers, loss, not all_tokens, taid_t_start, taid_t_end, alpha, taid_beta,
                       not taid_linear, teacher_topk, teacher_cache, train_embeddings, save_dtype, gjs_beta)
    args = TrainArgs(out=out, steps=steps, batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len, lr=lr,
                     warmup=warmup, clip=clip, eval_every=eval_every, eval_batches=eval_batches,
                     save_every=save_every, seed=seed, precision=precision, device=device, threads=threads,
                     time_limit=time_limit, resume=resume)
    r = distill(spec, args, data, eval)
    typer.echo(f"distilled {r.steps} steps ({loss}), {r.tokens} tokens at {r.tokens_per_s:.0f} tokens/s; "
               f"train loss {r.train_loss:.4f}" + (f", eval loss {r.eval_loss:.4f}" if r.eval_loss is not None else "")
               + f"; student in {r.model_dir}")


def _float(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag} must be a number or 'auto', got {text!r}") from None


def data_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file to write."),
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA)."),
    per_instruction: int = typer.Option(1, help="AlpacaEval candidates per instruction (of 24 models)."),
    teacher_samples: Optional[str] = typer.Option(None, help="Instead: this teacher's own greedy answers."),
    max_new_tokens: int = typer.Option(128, help="With --teacher-samples: tokens per answer."),
    limit: Optional[int] = typer.Option(None, help="Keep the first N rows."),
    seed: int = typer.Option(0),
):
    """Distillation rows from the AlpacaEval dev candidates (never instruction_id % 5 == 3, held out)."""
    from trlm.core.io import write_jsonl
    from trlm.distill.data import alpaca_rows, teacher_rows

    rows = alpaca_rows(data or default_data_dir(), per_instruction=per_instruction, seed=seed)[:limit]
    if teacher_samples:
        from trlm.core.engine import get_engine
        from trlm.core.schema import GenArgs

        rows = teacher_rows(get_engine(teacher_samples), [r["prompt"] for r in rows],
                            GenArgs(max_new_tokens=max_new_tokens, temperature=0.0), seed)
    write_jsonl(out, rows)
    typer.echo(f"wrote {len(rows)} rows to {out}")


def bench_distill_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Writes results.json, report.md, distill.png, runs/."),
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA)."),
    teacher: str = typer.Option("smollm2-135m-instruct", help="Teacher model."),
    methods: str = typer.Option("taid,fkl,rkl,tvd,skew-fkl,sft", help="Comma-separated losses to compare."),
    student_layers: str = typer.Option(_D.student_layers, help="Student blocks (count or indices)."),
    steps: int = typer.Option(60, help="Optimizer steps per method (same data, seed and tokens for all)."),
    batch_size: int = typer.Option(4),
    seq_len: int = typer.Option(256),
    lr: float = typer.Option(3e-4),
    eval_prompts: int = typer.Option(16, help="Held-out instructions (instruction_id % 5 == 3)."),
    max_new_tokens: int = typer.Option(64, help="Teacher / student greedy answer length."),
    drafter_prompts: int = typer.Option(4, help="Held-out prompts decoded speculatively with each student."),
    threads: int = typer.Option(0, help="CPU threads (0 = torch default)."),
):
    """TAID vs FKL / RKL / TVD / skew-FKL / SFT at equal tokens: teacher KL, perplexity, ROUGE-L, drafting."""
    from trlm.distill.bench import run_distill_bench

    run_distill_bench(out, data or default_data_dir(), teacher=teacher,
                      methods=split_list(methods, "--methods"), student_layers=student_layers,
                      steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, eval_prompts=eval_prompts,
                      max_new_tokens=max_new_tokens, drafter_prompts=drafter_prompts, threads=threads)
    echo_report(out)

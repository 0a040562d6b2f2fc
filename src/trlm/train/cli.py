"""``trlm train`` and ``trlm bench train``.

    trlm train runs/ba/data/train.jsonl --eval runs/ba/data/eval.jsonl --out runs/ba --order reverse \\
        --init smollm2-135m-instruct --lora-r 32
    torchrun --nproc_per_node 2 -m trlm.cli train data.jsonl --out runs/x --order both --layers 2
    trlm bench train --out runs/bench_train
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


from trlm.train.loop import TrainArgs
from trlm.train.model import ModelArgs

_M, _T = ModelArgs, TrainArgs  # flag defaults come from the config dataclasses


class Loop:
    """The training loop's flags, shared by `trlm train` and `trlm distill train` (typer option objects)."""

    steps = typer.Option(_T.steps, help="Optimizer steps.")
    batch_size = typer.Option(_T.batch_size, help="Sequences per micro-batch, per process.")
    grad_accum = typer.Option(_T.grad_accum, help="Micro-batches per optimizer step.")
    lr = typer.Option(_T.lr)
    warmup = typer.Option(_T.warmup, help="Linear warmup steps.")
    clip = typer.Option(_T.clip, help="Max gradient norm (0 = off).")
    eval_every = typer.Option(_T.eval_every, help="Steps between held-out evaluations (0 = at the end).")
    eval_batches = typer.Option(_T.eval_batches, help="Micro-batches per evaluation.")
    save_every = typer.Option(_T.save_every, help="Steps between checkpoints (0 = at the end).")
    seed = typer.Option(_T.seed)
    precision = typer.Option(_T.precision, help="auto (bf16 autocast where supported), bf16 or fp32.")
    device = typer.Option(None, help="cuda, mps or cpu (default: auto-detect).")
    threads = typer.Option(_T.threads, help="CPU threads (0 = torch default).")
    time_limit = typer.Option(_T.time_limit, help="Minutes; stop with a checkpoint once exceeded (0 = no limit).")
    resume = typer.Option(_T.resume, help="Continue from the newest checkpoint in OUT if there is one.")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("train")(train_cmd)
    bench.command("train")(bench_train_cmd)


def train_cmd(
    data: Path = typer.Argument(..., help='Training JSONL: {"text": ...} rows (packed) and/or '
                                          '{"query": ..., "response": ...} rows (TRLM template).'),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints/, model/, metrics.jsonl."),
    eval: Optional[Path] = typer.Option(None, "--eval", help="Held-out JSONL (same format) for eval loss."),
    order: str = typer.Option(_T.token_order, "--order", help="Token order: forward, reverse or both (FoBa)."),
    init: Optional[str] = typer.Option(None, help="Start from this model (embedded name, shipped model, dir, hub "
                                                  "id); omit to train from scratch."),
    tokenizer: str = typer.Option(_M.tokenizer, help="From scratch: take the tokenizer of this model."),
    layers: int = typer.Option(_M.layers, help="From scratch: transformer blocks."),
    width: int = typer.Option(_M.width, help="From scratch: hidden size."),
    heads: int = typer.Option(_M.heads, help="From scratch: attention heads."),
    lora_r: int = typer.Option(_M.lora_r, help="LoRA rank (0 = full fine-tuning); needs --init."),
    lora_alpha: int = typer.Option(_M.lora_alpha, help="LoRA alpha (0 = 2 x rank)."),
    lora_dropout: float = typer.Option(_M.lora_dropout),
    lora_targets: str = typer.Option(_M.lora_targets, help="'all-linear' or comma-separated module names."),
    steps: int = Loop.steps,
    batch_size: int = Loop.batch_size,
    grad_accum: int = Loop.grad_accum,
    seq_len: int = typer.Option(_T.seq_len, help="Packing length for text; pairs are cut to it."),
    lr: float = Loop.lr,
    min_lr_ratio: float = typer.Option(_T.min_lr_ratio, help="Cosine decays to lr x this."),
    warmup: int = Loop.warmup,
    weight_decay: float = typer.Option(_T.weight_decay),
    clip: float = Loop.clip,
    mask_prompt: bool = typer.Option(False, help="Pairs: loss only on the scored part (question when reversed)."),
    eval_every: int = Loop.eval_every,
    eval_batches: int = Loop.eval_batches,
    save_every: int = Loop.save_every,
    keep_checkpoints: int = typer.Option(_T.keep_checkpoints),
    seed: int = Loop.seed,
    precision: str = Loop.precision,
    device: Optional[str] = Loop.device,
    threads: int = Loop.threads,
    time_limit: float = Loop.time_limit,
    resume: bool = Loop.resume,
):
    """Train a causal LM in forward, reverse or both token orders (full fine-tuning or LoRA).

    Runs data-parallel under `torchrun --nproc_per_node N` or `accelerate launch` (DDP; gloo on CPU).
    Checkpoints are atomic and resumable: rerunning the same command continues exactly where it stopped.
    """
    from trlm.train.loop import train
    from trlm.train.trlm_data import JsonlExamples

    margs = ModelArgs(init=init, tokenizer=tokenizer, layers=layers, width=width, heads=heads, lora_r=lora_r,
                      lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_targets=lora_targets)
    args = TrainArgs(out=out, token_order=order, steps=steps, batch_size=batch_size, grad_accum=grad_accum,
                     seq_len=seq_len, lr=lr, min_lr_ratio=min_lr_ratio, warmup=warmup, weight_decay=weight_decay,
                     clip=clip, eval_every=eval_every, eval_batches=eval_batches, save_every=save_every,
                     keep_checkpoints=keep_checkpoints, seed=seed, precision=precision, device=device,
                     threads=threads, time_limit=time_limit, resume=resume)
    r = train(margs, args, JsonlExamples(data, mask_prompt), JsonlExamples(eval, mask_prompt) if eval else None)
    typer.echo(f"trained {r.steps} steps, {r.tokens} tokens at {r.tokens_per_s:.0f} tokens/s; "
               f"train loss {r.train_loss:.4f}" + (f", eval loss {r.eval_loss:.4f}" if r.eval_loss is not None else "")
               + f"; model in {r.model_dir}")


def bench_train_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Writes OUT/results.json and OUT/report.md."),
    steps: int = typer.Option(3, help="Timed optimizer steps per trainer (after warm-up steps)."),
    threads: int = typer.Option(0, help="CPU threads (0 = torch default)."),
):
    """Training tokens/s of trlm's loop vs a plain Hugging Face Trainer on the same model, data and batch."""
    from trlm.train.bench import run_bench

    r = run_bench(out, steps=steps, threads=threads)
    typer.echo(f"trlm {r['tokens_per_s']:.0f} tokens/s, HF Trainer {r['hf_trainer_tokens_per_s']:.0f} tokens/s, "
               f"speedup {r['speedup']:.2f}x; wrote {out}/results.json")

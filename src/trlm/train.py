"""Train causal LMs in forward, reverse or both token orders (TRLM-Fo / TRLM-Ba / TRLM-FoBa).

One self-contained loop: AdamW, linear warmup + cosine decay, gradient accumulation, bf16 autocast where the
hardware has it, gradient clipping, held-out eval loss, a progress bar with loss and tokens/s, atomic
checkpoints with exact resume, and data parallelism under ``torchrun`` / ``accelerate launch`` (DDP; gloo on
CPU). The loss is a hook, ``loss_fn(model, batch) -> loss``, so other stages (distillation) reuse the loop.

    # a reverse-order LoRA on the embedded forward model (how trlm-ba-smol was trained; see docs/reverse_model.md)
    trlm train runs/ba/train.jsonl --eval runs/ba/eval.jsonl --out runs/ba --order reverse \\
        --init smollm2-135m-instruct --lora-r 32 --steps 400 --batch-size 8 --seq-len 512
    # from scratch, both orders, 2 processes
    torchrun --nproc_per_node 2 -m trlm.cli train data.jsonl --out runs/foba --order both --layers 4 --width 256

Checkpoints: ``OUT/checkpoints/step-NNNNNN/{model/, state.pt}`` where ``model/`` loads with
:func:`trlm.models.load_model` (``trlm.json`` records the token order) and ``state.pt`` holds optimizer,
scheduler, RNG and data position. ``OUT/model/`` is the final model, ``OUT/metrics.jsonl`` the curve.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from trlm.models import (TOKEN_ORDERS, LoadedModel, cpu_has_bf16, load_model, replace_dir, resolve_device,
                         save_pretrained, write_meta)

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


@dataclass(frozen=True)
class ModelArgs:
    """Which model to train. ``init`` set: start from that checkpoint; else from scratch with the sizes below."""

    init: str | None = None  # embedded name, shipped model, HF dir or hub id; None = from scratch
    tokenizer: str = "smollm2-135m-instruct"  # from scratch: tokenizer (and BOS/EOS) of this model
    layers: int = 4  # from scratch: transformer blocks
    width: int = 256  # from scratch: hidden size
    heads: int = 4  # from scratch: attention heads (width must divide evenly)
    lora_r: int = 0  # 0 = full fine-tuning; > 0 = LoRA rank (needs --init)
    lora_alpha: int = 0  # LoRA scale numerator; 0 = 2 * lora_r
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"  # peft target_modules: "all-linear" or comma-separated module names

    def __post_init__(self):
        if self.init is None:
            if min(self.layers, self.width, self.heads) < 1:
                raise ValueError("--layers, --width and --heads must be >= 1")
            if self.width % self.heads:
                raise ValueError(f"--width {self.width} must be divisible by --heads {self.heads}")
            if self.lora_r:
                raise ValueError("--lora-r needs --init (LoRA adapts an existing model, not a random one)")
        if self.lora_r < 0:
            raise ValueError(f"--lora-r must be >= 0, got {self.lora_r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass(frozen=True)
class TrainArgs:
    """Loop settings. ``batch_size`` is per process; a step sees batch_size x grad_accum x world_size sequences."""

    out: Path
    token_order: str = "reverse"  # forward | reverse | both (FoBa: even-indexed examples reversed)
    steps: int = 100  # optimizer steps
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 512  # packing block for text; pairs are cut to this length
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup: int = 10  # linear warmup steps
    weight_decay: float = 0.0
    clip: float = 1.0  # max gradient norm; 0 = off
    mask_prompt: bool = False  # pairs: loss only on the scored part (question in reverse, answer forward)
    eval_every: int = 50  # steps between held-out evaluations; 0 = only at the end
    eval_batches: int = 8  # micro-batches of held-out data per evaluation
    save_every: int = 50  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast where supported) | bf16 | fp32
    device: str | None = None
    group_by_length: bool = True  # batch pairs of similar length (less padding)
    threads: int = 0  # CPU threads for torch; 0 = torch's default (1 is fastest on an oversubscribed CPU)
    time_limit: float = 0.0  # minutes; > 0 stops early (with a checkpoint) once exceeded
    resume: bool = True  # continue from the newest checkpoint in OUT/checkpoints if there is one
    progress: bool = True

    def __post_init__(self):
        if self.token_order not in TOKEN_ORDERS:
            raise ValueError(f"--order must be one of {', '.join(TOKEN_ORDERS)}, got {self.token_order!r}")
        for name in ("steps", "batch_size", "grad_accum", "eval_batches", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"--lr must be > 0 and --min-lr-ratio in [0, 1]; got {self.lr}, {self.min_lr_ratio}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"--precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.clip < 0 or self.time_limit < 0 or self.threads < 0:
            raise ValueError("--clip, --time-limit and --threads must be >= 0")


@dataclass(frozen=True)
class TrainResult:
    out: Path
    model_dir: Path
    steps: int
    tokens: int  # loss-bearing tokens seen (all processes)
    train_loss: float  # mean loss of the last logged step
    eval_loss: float | None
    tokens_per_s: float  # this run's training throughput (all processes), excluding evaluation


# --------------------------------------------------------------------------------------------------
# pure helpers


def lr_at(step: int, args: TrainArgs) -> float:
    """Multiplier of ``args.lr`` at optimizer step ``step`` (0-based): linear warmup, then cosine."""
    if step < args.warmup:
        return (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not IGNORE (-100).

    The vocabulary projection runs only at loss-bearing positions (not at padding, nor at masked prompt
    tokens): a pre-hook on the output layer hands it just those hidden states.
    """
    labels = batch["labels"][:, 1:]  # (B, T-1): hidden state t predicts token t+1
    keep = labels != -100
    at = torch.nn.functional.pad(keep, (0, 1))  # (B, T)
    head = _unwrap(model).get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda _m, inputs: (inputs[0][at][None],))  # (1, N, H)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]  # (N, V)
    finally:
        hook.remove()
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _use_bf16(args: TrainArgs, device: torch.device) -> bool:
    if args.precision != "auto":
        return args.precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


# --------------------------------------------------------------------------------------------------
# model


def build_model(margs: ModelArgs, args: TrainArgs, device: torch.device, bf16: bool) -> LoadedModel:
    """The model to train, as a LoadedModel whose token order is the training order."""
    if margs.init is not None:
        lm = load_model(margs.init, device=str(device), dtype=torch.float32)
        if lm.meta.get("token_order", "forward") != args.token_order:
            log.info("training %s (token order %s) in %s order", margs.init, lm.token_order, args.token_order)
    else:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from trlm.models import resolve_path

        path, _ = resolve_path(margs.tokenizer)
        tok = AutoTokenizer.from_pretrained(str(path) if path is not None else margs.tokenizer)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=margs.width, intermediate_size=4 * margs.width,
                          num_hidden_layers=margs.layers, num_attention_heads=margs.heads,
                          num_key_value_heads=margs.heads, max_position_embeddings=max(2048, args.seq_len),
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(cfg).to(device)
        lm = LoadedModel(model, tok, f"scratch-{margs.layers}x{margs.width}", "forward", {})
    model = lm.model
    if margs.lora_r:
        from peft import LoraConfig, get_peft_model

        if bf16:  # frozen base weights stay in bf16: no per-step cast of 100M+ weights under autocast
            model.to(torch.bfloat16)
        targets = margs.lora_targets if margs.lora_targets == "all-linear" else margs.lora_targets.split(",")
        cfg = LoraConfig(r=margs.lora_r, lora_alpha=margs.lora_alpha or 2 * margs.lora_r,
                         lora_dropout=margs.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)  # adapter weights are kept in fp32
    model.train()
    meta = {"base_model": margs.init} if margs.init else {}
    return LoadedModel(model, lm.tokenizer, lm.name, args.token_order, meta)


def export_model(lm: LoadedModel, margs: ModelArgs, args: TrainArgs, path: Path, **meta) -> Path:
    """Write a loadable model directory (full weights, or a LoRA adapter) with ``trlm.json``, atomically."""
    model = lm.model
    scratch_only = ("tokenizer", "layers", "width", "heads")
    model_args = {k: v for k, v in asdict(margs).items() if not (margs.init and k in scratch_only)}
    info = {"trained_with": "trlm train", "model_args": _jsonable(model_args), **meta}
    if margs.lora_r:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        tmp.chmod(0o755)
        model.save_pretrained(str(tmp))
        base = str(Path(margs.init).resolve()) if Path(margs.init).exists() else margs.init  # loadable from anywhere
        write_meta(tmp, args.token_order, adapter=True, base_model=base, **info)
        replace_dir(tmp, path)
        return path
    return save_pretrained(model, lm.tokenizer, path, args.token_order, **info)


def _load_weights(lm: LoadedModel, margs: ModelArgs, model_dir: Path) -> None:
    from safetensors.torch import load_file

    if margs.lora_r:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(lm.model, load_file(model_dir / "adapter_model.safetensors"))
        return
    missing, unexpected = lm.model.load_state_dict(load_file(model_dir / "model.safetensors"), strict=False)
    tied = getattr(lm.model.config, "tie_word_embeddings", False)
    if unexpected or [k for k in missing if not (tied and k.endswith("lm_head.weight"))]:
        raise RuntimeError(f"{model_dir}: checkpoint does not match the model (missing {missing}, "
                           f"unexpected {unexpected})")


def _jsonable(d: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


# --------------------------------------------------------------------------------------------------
# distributed


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str | None) -> tuple[_Dist, torch.device]:
    """Under torchrun / accelerate launch (WORLD_SIZE > 1) join the process group: NCCL on CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist(), resolve_device(device)
    import torch.distributed as td

    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return _Dist(td.get_rank(), td.get_world_size(), local), dev


def _all_sum(values: list[float], dist: _Dist, device: torch.device) -> list[float]:
    if dist.world == 1:
        return values
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return t.tolist()


def _barrier(dist: _Dist) -> None:
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()


# --------------------------------------------------------------------------------------------------
# checkpoints


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((Path(out) / "checkpoints").glob("step-*[0-9]"))
    return ckpts[-1] if ckpts else None


# arguments that may change between an interrupted run and its resumption
_RESUMABLE = {"threads", "steps", "time_limit", "eval_every", "save_every", "keep_checkpoints", "resume", "progress",
              "device", "out"}


def _check_resume(saved: dict, margs: ModelArgs, args: TrainArgs, path: Path) -> None:
    now = {"model": _jsonable(asdict(margs)), "train": _jsonable(asdict(args))}
    for group in ("model", "train"):
        for k, v in now[group].items():
            if group == "train" and k in _RESUMABLE:
                continue
            if saved[group].get(k) != v:
                raise ValueError(f"cannot resume from {path}: --{k.replace('_', '-')} was {saved[group].get(k)!r}, "
                                 f"now {v!r}; use the same settings or a new --out")


# --------------------------------------------------------------------------------------------------
# the loop


def train(margs: ModelArgs, args: TrainArgs, train_path: str | Path, eval_path: str | Path | None = None,
          loss_fn: LossFn = causal_lm_loss) -> TrainResult:
    """Train and return a :class:`TrainResult`; the model is written to ``args.out / "model"``."""
    threads = torch.get_num_threads()
    try:
        return _train(margs, args, train_path, eval_path, loss_fn)
    finally:
        torch.set_num_threads(threads)


def _train(margs: ModelArgs, args: TrainArgs, train_path, eval_path, loss_fn: LossFn) -> TrainResult:
    from contextlib import nullcontext

    from trlm.train_data import build_examples, collate, micro_batches, read_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    dist, device = _init_distributed(args.device)
    bf16 = _use_bf16(args, device)
    log.info("precision: %s", "bf16 autocast" if bf16 else "fp32")
    out = Path(args.out)
    lm = build_model(margs, args, device, bf16)
    model = lm.model
    train_ex = build_examples(read_rows(train_path), lm, args.token_order, args.seq_len, args.mask_prompt,
                              source=str(train_path))
    eval_ex = build_examples(read_rows(eval_path), lm, args.token_order, args.seq_len, args.mask_prompt,
                             source=str(eval_path)) if eval_path else []
    lengths = [len(e.input_ids) for e in train_ex] if args.group_by_length else None
    per_step = args.grad_accum * dist.world
    steps_per_epoch = len(train_ex) // args.batch_size // per_step
    if steps_per_epoch < 1:
        raise ValueError(f"{train_path}: {len(train_ex)} sequences are too few for one step of "
                         f"{args.batch_size} x {args.grad_accum} x {dist.world} processes; lower --batch-size")
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, args))
    torch.manual_seed(args.seed + dist.rank)
    random.seed(args.seed + dist.rank)
    start, tokens, train_time = 0, 0, 0.0
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not args.resume:
        raise FileExistsError(f"{out} already holds checkpoints ({ckpt.name}); resume (the default), or delete "
                              f"{out / 'checkpoints'} or choose a new --out to start over")
    if ckpt is not None:
        state = torch.load(ckpt / "state.pt", weights_only=False)
        _check_resume(state["args"], margs, args, ckpt)
        _load_weights(lm, margs, ckpt / "model")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][dist.rank])
        start, tokens, train_time = state["step"], state["tokens"], state["train_time"]
        log.warning("resuming from %s (step %d)", ckpt, start)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        _trim_metrics(out / "metrics.jsonl", start)
    wrapped = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext

    def save(step: int) -> None:
        rngs = [None] * dist.world
        if dist.world > 1:
            import torch.distributed as td

            td.all_gather_object(rngs, _rng_state())
        else:
            rngs = [_rng_state()]
        if dist.main:
            state = {"step": step, "epoch": step // steps_per_epoch, "batch_in_epoch": step % steps_per_epoch,
                     "tokens": tokens, "train_time": train_time, "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "rng": rngs,
                     "args": {"model": _jsonable(asdict(margs)), "train": _jsonable(asdict(args))}}
            _save_checkpoint(out / "checkpoints", step, lm, margs, args, state)
        _barrier(dist)

    from tqdm.auto import tqdm

    bar = tqdm(total=args.steps, initial=start, desc=f"train ({args.token_order})", disable=not (args.progress and dist.main))
    epoch_batches: tuple[int, list] = (-1, [])
    loss_val, eval_loss, t_run = float("nan"), None, time.perf_counter()
    step = start
    for step in range(start, args.steps):
        epoch, k = divmod(step, steps_per_epoch)
        if epoch_batches[0] != epoch:
            epoch_batches = (epoch, micro_batches(len(train_ex), args.batch_size, args.seed, epoch, lengths))
        mbs = epoch_batches[1][k * per_step:(k + 1) * per_step]
        t0 = time.perf_counter()
        loss_sum, ntok = 0.0, 0
        for a in range(args.grad_accum):
            batch = {n: t.to(device) for n, t in collate([train_ex[i] for i in mbs[a * dist.world + dist.rank]],
                                                             pad_id).items()}
            sync = wrapped.no_sync() if dist.world > 1 and a < args.grad_accum - 1 else nullcontext()
            with sync:
                with autocast():
                    loss = loss_fn(wrapped, batch) / args.grad_accum
                loss.backward()
            loss_sum += float(loss.detach())
            ntok += int(batch["attention_mask"].sum())
        if args.clip:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_sum, ntok_all = _all_sum([loss_sum, float(ntok)], dist, device)
        loss_val, dt = loss_sum / dist.world, time.perf_counter() - t0
        tokens += int(ntok_all)
        train_time += dt
        done = step + 1
        row = {"step": done, "loss": round(loss_val, 5), "lr": sched.get_last_lr()[0], "tokens": tokens,
               "tokens_per_s": round(ntok_all / dt, 1)}
        if eval_ex and (done == args.steps or (args.eval_every and done % args.eval_every == 0)):
            eval_loss = evaluate(model, eval_ex, args, pad_id, device, autocast, dist)
            row["eval_loss"] = round(eval_loss, 5)
        stop = bool(args.time_limit) and _all_sum([float(time.perf_counter() - t_run > args.time_limit * 60)],
                                                  dist, device)[0] > 0
        if dist.main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tokens / max(train_time, 1e-9):.0f}",
                        **({"eval": f"{eval_loss:.3f}"} if eval_loss is not None else {}))
        bar.update(1)
        if done == args.steps or stop or (args.save_every and done % args.save_every == 0):
            save(done)
        if stop:
            log.warning("time limit of %.1f min reached at step %d; stopping (resume with the same command)",
                        args.time_limit, done)
            break
    bar.close()
    step = step + 1 if args.steps > start else start
    model_dir = out / "model"
    if dist.main:
        export_model(lm, margs, args, model_dir, steps=step, tokens=tokens, eval_loss=eval_loss)
    _barrier(dist)
    return TrainResult(out, model_dir, step, tokens, loss_val, eval_loss, tokens / max(train_time, 1e-9))


@torch.no_grad()
def evaluate(model, examples, args: TrainArgs, pad_id: int, device, autocast, dist: _Dist) -> float:
    """Token-weighted mean LM loss on the first ``eval_batches`` fixed micro-batches, sharded over processes."""
    from trlm.train_data import collate

    was_training = model.training
    model.eval()
    loss_sum, ntok = 0.0, 0.0
    batches = [list(range(k, min(k + args.batch_size, len(examples))))
               for k in range(0, len(examples), args.batch_size)][:args.eval_batches]
    for idx in batches[dist.rank::dist.world]:
        batch = {n: t.to(device) for n, t in collate([examples[i] for i in idx], pad_id).items()}
        n = float((batch["labels"][:, 1:] != -100).sum())
        with autocast():
            loss_sum += float(causal_lm_loss(model, batch)) * n
        ntok += n
    loss_sum, ntok = _all_sum([loss_sum, ntok], dist, device)
    model.train(was_training)
    return loss_sum / ntok


def _save_checkpoint(root: Path, step: int, lm: LoadedModel, margs: ModelArgs, args: TrainArgs, state: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}."))
    tmp.chmod(0o755)
    try:
        export_model(lm, margs, args, tmp / "model", steps=step)
        torch.save(state, tmp / "state.pt")
        replace_dir(tmp, root / f"step-{step:06d}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(root.glob("step-*[0-9]"))[:-args.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return root / f"step-{step:06d}"


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop curve rows logged after the checkpoint (they are recomputed)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    from trlm.io import atomic_open

    with atomic_open(path) as f:
        f.write("".join(r + "\n" for r in rows))

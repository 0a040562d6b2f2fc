"""Train causal LMs in forward, reverse or both token orders (TRLM-Fo / TRLM-Ba / TRLM-FoBa).

One self-contained loop: AdamW, linear warmup + cosine decay, gradient accumulation, bf16 autocast where the
hardware has it, gradient clipping, held-out eval loss, a progress bar with loss and tokens/s, atomic
checkpoints with exact resume, and data parallelism under ``torchrun`` / ``accelerate launch`` (DDP; gloo on
CPU). The loop knows no TRLM: it takes examples (or an example source that tokenises once the model is
built) and a loss, ``loss_fn(model, batch) -> loss``, used for training and for the held-out evaluation alike,
so other stages (distillation, whose loss also runs a teacher) reuse it. The TRLM pair template is the data
source's business (:class:`trlm.train.trlm_data.JsonlExamples`).

    # a reverse-order LoRA on the embedded forward model (how trlm-ba-smol was trained; see docs/reverse_model.md)
    trlm train runs/ba/train.jsonl --eval runs/ba/eval.jsonl --out runs/ba --order reverse \\
        --init smollm2-135m-instruct --lora-r 32 --steps 400 --batch-size 8 --seq-len 512
    # from scratch, both orders, 2 processes
    torchrun --nproc_per_node 2 -m trlm.cli train data.jsonl --out runs/foba --order both --layers 4 --width 256

Checkpoints: ``OUT/checkpoints/step-NNNNNN/{model/, state.pt}`` where ``model/`` loads with
:func:`trlm.core.models.load_model` (``trlm.json`` records the token order) and ``state.pt`` holds optimizer,
scheduler, RNG and data position. ``OUT/model/`` is the final model, ``OUT/metrics.jsonl`` the curve.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence, Union

import torch

from trlm.core.checkpoint import TOKEN_ORDERS, replace_dir
from trlm.core.device import bf16_supported
from trlm.core.models import LoadedModel
from trlm.core.parallel import Dist, all_sum, barrier, init_distributed
from trlm.train.data import TokenExample, collate, micro_batches
from trlm.train.losses import causal_lm_loss
from trlm.train.model import jsonable

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


class ModelSpec(Protocol):
    """What to train: builds the model, writes it out, and reads a checkpoint's weights back (for resume).
    A dataclass (its fields are checked on resume). :class:`~trlm.train.model.ModelArgs` is the plain one; a
    distillation student (:class:`trlm.distill.student.StudentArgs`) is another."""

    def build(self, token_order: str, seq_len: int, seed: int, device: torch.device, bf16: bool) -> LoadedModel: ...

    def export(self, lm: LoadedModel, token_order: str, path: Path, *, final: bool = False, **meta) -> Path: ...

    def load_weights(self, lm: LoadedModel, model_dir: Path) -> None: ...


class Objective(Protocol):
    """A loss with state (e.g. distillation's TAID schedule): called like a :data:`LossFn`, told the step's loss
    once per optimizer step, and saved in checkpoints so a resumed run continues bit-identically."""

    def __call__(self, model: torch.nn.Module, batch: dict) -> torch.Tensor: ...

    def after_step(self, loss: float, step: int, total_steps: int) -> dict:
        """``loss``: the step's training loss averaged over micro-batches and processes; ``step``: optimizer steps
        done. Returns extra values for the step's metrics row (e.g. ``{"t": ...}``)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ExampleSource(Protocol):
    """Training data that is tokenised once the model (hence the tokenizer) exists."""

    name: str

    def examples(self, lm: LoadedModel, token_order: str, seq_len: int) -> list[TokenExample]: ...


TrainData = Union[Sequence[TokenExample], ExampleSource]


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


def _check_resume(saved: dict, margs: ModelSpec, args: TrainArgs, path: Path) -> None:
    now = {"model": jsonable(asdict(margs)), "train": jsonable(asdict(args))}
    for group in ("model", "train"):
        for k, v in now[group].items():
            if group == "train" and k in _RESUMABLE:
                continue
            if saved[group].get(k) != v:
                raise ValueError(f"cannot resume from {path}: --{k.replace('_', '-')} was {saved[group].get(k)!r}, "
                                 f"now {v!r}; use the same settings or a new --out")


# --------------------------------------------------------------------------------------------------
# the loop


def train(margs: ModelSpec, args: TrainArgs, data: TrainData, eval_data: TrainData | None = None,
          loss_fn: LossFn | Objective = causal_lm_loss) -> TrainResult:
    """Train and return a :class:`TrainResult`; the model is written to ``args.out / "model"``.

    ``margs``: what to train (:class:`~trlm.train.model.ModelArgs`, or any :class:`ModelSpec`).
    ``data`` / ``eval_data``: a list of :class:`~trlm.train.data.TokenExample` (model-order ids and labels), or an
    :class:`ExampleSource` that builds them with the model's tokenizer. ``loss_fn`` is the training loss and the
    evaluation loss (token-weighted over each batch's loss-bearing labels); an :class:`Objective` also gets
    ``after_step`` once per optimizer step and has its state checkpointed.
    """
    threads = torch.get_num_threads()
    try:
        return _train(margs, args, data, eval_data, loss_fn)
    finally:
        torch.set_num_threads(threads)


def _examples(data: TrainData | None, lm: LoadedModel, args: TrainArgs) -> list[TokenExample]:
    if data is None:
        return []
    if isinstance(data, Sequence):
        return list(data)
    return data.examples(lm, args.token_order, args.seq_len)


def _train(margs: ModelSpec, args: TrainArgs, data: TrainData, eval_data: TrainData | None,
           loss_fn: LossFn | Objective) -> TrainResult:
    from contextlib import nullcontext

    dist, device = init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    bf16 = bf16_supported(device)[0] if args.precision == "auto" else args.precision == "bf16"
    log.info("precision: %s", "bf16 autocast" if bf16 else "fp32")
    out = Path(args.out)
    lm = margs.build(args.token_order, args.seq_len, args.seed, device, bf16)
    model = lm.model
    train_ex, eval_ex = _examples(data, lm, args), _examples(eval_data, lm, args)
    lengths = [len(e.input_ids) for e in train_ex] if args.group_by_length else None
    per_step = args.grad_accum * dist.world
    steps_per_epoch = len(train_ex) // args.batch_size // per_step
    if steps_per_epoch < 1:
        raise ValueError(f"{getattr(data, 'name', 'training data')}: {len(train_ex)} sequences are too few for one "
                         f"step of {args.batch_size} x {args.grad_accum} x {dist.world} processes; lower --batch-size")
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, args))
    torch.manual_seed(args.seed + dist.rank)
    random.seed(args.seed + dist.rank)
    start, tokens, train_time = 0, 0, 0.0
    stateful = hasattr(loss_fn, "after_step")
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not args.resume:
        raise FileExistsError(f"{out} already holds checkpoints ({ckpt.name}); resume (the default), or delete "
                              f"{out / 'checkpoints'} or choose a new --out to start over")
    if ckpt is not None:
        state = torch.load(ckpt / "state.pt", weights_only=False)
        _check_resume(state["args"], margs, args, ckpt)
        margs.load_weights(lm, ckpt / "model")
        if stateful:
            loss_fn.load_state_dict(state["objective"])
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
                     "args": {"model": jsonable(asdict(margs)), "train": jsonable(asdict(args))}}
            if stateful:
                state["objective"] = loss_fn.state_dict()
            _save_checkpoint(out / "checkpoints", step, lm, margs, args, state)
        barrier(dist)

    from tqdm.auto import tqdm

    bar = tqdm(total=args.steps, initial=start, desc=f"train ({args.token_order})",
               disable=not (args.progress and dist.main))
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
        loss_sum, ntok_all = all_sum([loss_sum, float(ntok)], dist, device)
        loss_val, dt = loss_sum / dist.world, time.perf_counter() - t0
        tokens += int(ntok_all)
        train_time += dt
        done = step + 1
        row = {"step": done, "loss": round(loss_val, 5), "lr": sched.get_last_lr()[0], "tokens": tokens,
               "tokens_per_s": round(ntok_all / dt, 1)}
        if stateful:
            row.update(loss_fn.after_step(loss_val, done, args.steps))
        if eval_ex and (done == args.steps or (args.eval_every and done % args.eval_every == 0)):
            eval_loss = evaluate(model, eval_ex, args, pad_id, device, autocast, dist, loss_fn)
            row["eval_loss"] = round(eval_loss, 5)
        stop = bool(args.time_limit) and all_sum([float(time.perf_counter() - t_run > args.time_limit * 60)],
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
        margs.export(lm, args.token_order, model_dir, final=True, steps=step, tokens=tokens, eval_loss=eval_loss)
    barrier(dist)
    return TrainResult(out, model_dir, step, tokens, loss_val, eval_loss, tokens / max(train_time, 1e-9))


@torch.no_grad()
def evaluate(model, examples, args: TrainArgs, pad_id: int, device, autocast, dist: Dist,
             loss_fn: LossFn = causal_lm_loss) -> float:
    """Token-weighted mean of ``loss_fn`` on the first ``eval_batches`` fixed micro-batches, sharded over processes."""

    was_training = model.training
    model.eval()
    loss_sum, ntok = 0.0, 0.0
    batches = [list(range(k, min(k + args.batch_size, len(examples))))
               for k in range(0, len(examples), args.batch_size)][:args.eval_batches]
    for idx in batches[dist.rank::dist.world]:
        batch = {n: t.to(device) for n, t in collate([examples[i] for i in idx], pad_id).items()}
        n = float((batch["labels"][:, 1:] != -100).sum())
        with autocast():
            loss_sum += float(loss_fn(model, batch)) * n
        ntok += n
    loss_sum, ntok = all_sum([loss_sum, ntok], dist, device)
    model.train(was_training)
    return loss_sum / ntok


def _save_checkpoint(root: Path, step: int, lm: LoadedModel, margs: ModelSpec, args: TrainArgs, state: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}."))
    tmp.chmod(0o755)
    try:
        margs.export(lm, args.token_order, tmp / "model", steps=step)
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
    from trlm.core.io import atomic_open

    with atomic_open(path) as f:
        f.write("".join(r + "\n" for r in rows))

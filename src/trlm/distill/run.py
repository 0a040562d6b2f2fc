"""One distillation run on the project's training loop: teacher, student blocks, loss, data, schedule.

    from trlm.distill.run import DistillSpec, distill
    r = distill(DistillSpec("smollm2-135m-instruct", "6", "taid"), TrainArgs(out=Path("runs/d"), steps=60,
                batch_size=4, seq_len=256, lr=2e-4), Path("runs/d/train.jsonl"))
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from trlm.core.models import load_model
from trlm.distill.data import DistillExamples
from trlm.distill.losses import METHODS
from trlm.distill.objective import DistillObjective, TeacherTopK
from trlm.distill.schedule import TAIDSchedule, scaled_alpha
from trlm.distill.student import StudentArgs, parse_layers
from trlm.train.loop import TrainArgs, TrainResult, train

log = logging.getLogger(__name__)

DEFAULT_LAYERS = "6"  # of SmolLM2's 30 blocks: 0 6 12 17 23 29 (first and last kept, the rest evenly spaced)


@dataclass(frozen=True)
class DistillSpec:
    """Everything about a run that is not the training loop's business."""

    teacher: str
    student_layers: str = DEFAULT_LAYERS  # a count (evenly spaced) or comma-separated block indices
    loss: str = "taid"  # one of METHODS
    completions_only: bool = False  # loss on response tokens only (TRL GKD) vs all tokens (official TAID)
    t_start: float = 0.4
    t_end: float = 1.0
    alpha: float | None = None  # None = scaled_alpha(steps): the official 5e-4 at 15.6k steps, scaled to the run
    beta: float = 0.99
    adaptive: bool = True  # False = "TAID w/o adaptive update" (linear t)
    teacher_topk: int = 0  # > 0: approximate the teacher by cached top-k log-probs (see objective.TeacherTopK)
    teacher_cache: Path | None = None  # where the top-k live (default OUT/teacher_topk)
    train_embeddings: bool = False  # False: embedding and head frozen, shared with the teacher, not saved
    save_dtype: str = "float32"
    gjs_beta: float = 0.5  # --loss gjs: the mixture weight (0.1 in the TAID scripts' GKD)

    def __post_init__(self):
        if self.loss not in METHODS:
            raise ValueError(f"--loss must be one of {', '.join(METHODS)}, got {self.loss!r}")
        if self.teacher_topk < 0:
            raise ValueError(f"--teacher-topk must be >= 0, got {self.teacher_topk}")


def make_objective(spec: DistillSpec, steps: int, out: Path, device: str | None = None) -> DistillObjective:
    """The loss object for ``spec`` (loads the teacher unless the loss is SFT)."""
    teacher = None
    if spec.loss != "sft":  # on the CPU: each process moves it to its own device at the first batch
        teacher = load_model(spec.teacher, device="cpu", dtype=torch.float32)
    schedule = None
    if spec.loss == "taid":
        alpha = spec.alpha if spec.alpha is not None else scaled_alpha(steps)
        schedule = TAIDSchedule(spec.t_start, spec.t_end, alpha, spec.beta, spec.adaptive)
        log.info("TAID: t_start %.2f, t_end %.2f, alpha %.3g, beta %.3g, %s", spec.t_start, spec.t_end, alpha,
                 spec.beta, "adaptive" if spec.adaptive else "linear")
    topk = None
    if spec.teacher_topk and teacher is not None:
        topk = TeacherTopK(spec.teacher_cache or out / "teacher_topk", spec.teacher, spec.teacher_topk)
    return DistillObjective(spec.loss, teacher, schedule, topk, completions_only=spec.completions_only,
                            taid_alpha="auto" if spec.alpha is None else spec.alpha, gjs_beta=spec.gjs_beta)


def student_args(spec: DistillSpec) -> StudentArgs:
    from transformers import AutoConfig

    from trlm.core.models import resolve_path

    path, _ = resolve_path(spec.teacher)
    try:
        n = AutoConfig.from_pretrained(str(path) if path is not None else spec.teacher).num_hidden_layers
    except OSError:  # a LoRA adapter directory: its base model holds the config
        n = load_model(spec.teacher, device="cpu", dtype=torch.float32).model.config.num_hidden_layers
    return StudentArgs(spec.teacher, parse_layers(spec.student_layers, n), spec.train_embeddings, spec.save_dtype)


def _token_order(name: str) -> str:
    from trlm.core.checkpoint import read_meta
    from trlm.core.models import resolve_path

    path, _ = resolve_path(name)
    meta = read_meta(path) if path is not None and path.is_dir() else None
    return (meta or {}).get("token_order", "forward")


def distill(spec: DistillSpec, args: TrainArgs, data: Path, eval_data: Path | None = None) -> TrainResult:
    """Train a student of ``spec.teacher`` into ``args.out`` (resumable; the model lands in ``OUT/model``)."""
    train_src = DistillExamples(data, spec.completions_only)  # bad rows fail before any model is loaded
    eval_src = DistillExamples(eval_data, spec.completions_only) if eval_data else None
    margs = student_args(spec)
    order = _token_order(spec.teacher)
    if args.token_order != order:
        args = dataclasses.replace(args, token_order=order)  # a student reads its teacher's token order
    objective = make_objective(spec, args.steps, Path(args.out), args.device)
    return train(margs, args, train_src, eval_src, objective)

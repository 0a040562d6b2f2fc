"""The distillation objective the training loop calls: runs the teacher, applies a loss, keeps TAID's schedule.

:class:`DistillObjective` is a loss with state for :func:`trlm.train.loop.train` (its ``Objective`` protocol): for
each batch the teacher (eval mode, no gradient) and the student produce logits at the loss-bearing positions only,
and the chosen loss of :mod:`trlm.distill.losses` compares them; ``after_step`` advances the TAID schedule once
per optimizer step from the loop's all-process loss, and the schedule's state rides in every checkpoint.

Teacher top-k (``TeacherTopK``): the teacher's k largest log-probabilities per position, computed once and kept in
a directory keyed by the example's tokens, so baseline sweeps over one data set pay the teacher forward once. It
is an **approximation**: the teacher distribution is rebuilt with its top-k log-probabilities exact and the
remaining mass spread uniformly over the other V − k tokens. Every loss sees that rebuilt distribution — for TAID
the interpolated target's tail is then a blend of the student's tail and a flat one, not the teacher's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import torch

from trlm.core.io import InputError, atomic_open
from trlm.core.models import LoadedModel
from trlm.distill.losses import LOSSES, METHODS, gjs, taid
from trlm.distill.schedule import TAIDSchedule
from trlm.train.losses import causal_lm_loss, logits_at, loss_positions


class TeacherTopK:
    """Per-example teacher top-k log-probabilities in ``root/<sha1 of the example>.pt`` (torch, atomic writes)."""

    def __init__(self, root: Path, teacher: str, k: int):
        if k < 1:
            raise ValueError(f"--teacher-topk must be >= 1, got {k}")
        self.root, self.k = Path(root), k
        self.root.mkdir(parents=True, exist_ok=True)
        cfg, f = {"teacher": teacher, "k": k}, self.root / "config.json"
        if f.exists():
            saved = json.loads(f.read_text())
            if saved != cfg:
                raise InputError(f"{self.root} holds teacher top-k for {saved}, not {cfg}; use another "
                                 "--teacher-cache directory")
        else:
            with atomic_open(f) as fh:
                fh.write(json.dumps(cfg))

    @staticmethod
    def key(ids: torch.Tensor, at: torch.Tensor) -> str:
        h = hashlib.sha1(ids.cpu().numpy().astype("int64").tobytes())
        h.update(at.cpu().numpy().tobytes())
        return h.hexdigest()

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        f = self.root / f"{key}.pt"
        if not f.exists():
            return None
        d = torch.load(f, weights_only=True)
        return d["index"].long(), d["logprob"].float()

    def put(self, key: str, index: torch.Tensor, logprob: torch.Tensor) -> None:
        with atomic_open(self.root / f"{key}.pt", "wb") as fh:
            torch.save({"index": index.to(torch.int32).cpu(), "logprob": logprob.float().cpu()}, fh)


def dense_from_topk(index: torch.Tensor, logprob: torch.Tensor, vocab: int) -> torch.Tensor:
    """(N, V) log-probabilities: the top-k exact, the rest of the mass uniform over the other V − k tokens."""
    k = index.shape[-1]
    rest = (1.0 - logprob.exp().sum(-1, keepdim=True)).clamp_min(1e-12) / max(1, vocab - k)
    out = rest.log().expand(index.shape[0], vocab).clone()
    return out.scatter_(-1, index, logprob)


class DistillObjective:
    """``loss(student, batch)`` for one method of :data:`trlm.distill.losses.METHODS`."""

    def __init__(self, method: str, teacher: LoadedModel | None = None, schedule: TAIDSchedule | None = None,
                 topk: TeacherTopK | None = None, **settings):
        """``settings``: other choices that shape the run (e.g. ``completions_only``), checked on resume."""
        if method not in METHODS:
            raise ValueError(f"--loss must be one of {', '.join(METHODS)}, got {method!r}")
        if method != "sft" and teacher is None:
            raise ValueError(f"--loss {method} needs a teacher")
        self.method, self.teacher, self.topk = method, teacher, topk
        self.schedule = schedule if schedule is not None else (TAIDSchedule() if method == "taid" else None)
        if teacher is not None:
            teacher.model.eval().requires_grad_(False)
        self.config = {"method": method, "teacher": teacher.name if teacher is not None else None,
                       "teacher_topk": topk.k if topk is not None else None,
                       "schedule": dataclasses.asdict(self.schedule) if self.schedule is not None else None, **settings}

    @property
    def t(self) -> float | None:
        return self.schedule.t if self.schedule is not None else None

    def __call__(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        if self.method == "sft":
            return causal_lm_loss(model, batch)
        at = loss_positions(batch)
        student = logits_at(model, batch, at)
        teacher = self.teacher_logits(batch, at, student.shape[-1])
        mask = torch.ones(student.shape[0], dtype=torch.bool, device=student.device)
        if self.method == "taid":
            return taid(student, teacher, mask, t=self.schedule.t)
        if self.method == "gjs":
            return gjs(student, teacher, mask, beta=self.config.get("gjs_beta", 0.5))
        return LOSSES[self.method](student, teacher, mask)

    @torch.no_grad()
    def teacher_logits(self, batch: dict, at: torch.Tensor, vocab: int) -> torch.Tensor:
        """(N, V) teacher logits (or rebuilt log-probs under top-k) at the positions ``at``."""
        model = self.teacher.model
        if next(model.parameters()).device != batch["input_ids"].device:
            model.to(batch["input_ids"].device)
        if self.topk is None:
            return self._check_vocab(logits_at(model, batch, at), vocab)
        rows = []
        for b in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][b].sum())
            key = TeacherTopK.key(batch["input_ids"][b, :n], at[b, :n])
            hit = self.topk.get(key)
            if hit is None:
                one = {k: v[b:b + 1, :n] for k, v in batch.items()}
                lp = torch.log_softmax(self._check_vocab(logits_at(model, one, at[b:b + 1, :n]), vocab).float(), -1)
                val, idx = lp.topk(self.topk.k, dim=-1)
                self.topk.put(key, idx, val)
                hit = (idx, val)
            rows.append(dense_from_topk(hit[0].to(at.device), hit[1].to(at.device), vocab))
        return torch.cat(rows)

    def _check_vocab(self, logits: torch.Tensor, vocab: int) -> torch.Tensor:
        if logits.shape[-1] != vocab:
            raise ValueError(f"teacher {self.teacher.name} has {logits.shape[-1]} output rows, the student {vocab}: "
                             "distillation needs one shared vocabulary")
        return logits

    # the loop's Objective protocol
    def after_step(self, loss: float, step: int, total_steps: int) -> dict:
        if not math.isfinite(loss):
            raise ValueError(f"the {self.method} loss is {loss} at step {step}; lower --lr (or check the data)")
        if self.schedule is None:
            return {}
        return {"t": round(self.schedule.step(loss, step, total_steps), 6)}

    def state_dict(self) -> dict:
        return {"config": self.config, "schedule": self.schedule.state_dict() if self.schedule else None}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("config", {})
        for k in sorted(set(saved) | set(self.config)):
            if saved.get(k) != self.config.get(k):
                hint = (" (--taid-alpha auto scales alpha with --steps: give the old alpha explicitly to change "
                        "--steps)" if k == "schedule" and self.config.get("taid_alpha") == "auto" else "")
                raise ValueError(f"cannot resume: the checkpoint was trained with {k} = {saved.get(k)!r}, now "
                                 f"{self.config.get(k)!r}{hint}; use the same settings or a new --out")
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])

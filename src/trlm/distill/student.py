"""The student: a subset of the teacher's own transformer blocks, with the teacher's tokenizer, embeddings and head.

Built by copying the chosen blocks (e.g. 6 of SmolLM2's 30) into a model of the teacher's architecture with
``num_hidden_layers`` set to their number, so student and teacher share one vocabulary by construction (no resized
or zero-padded rows). With ``train_embeddings=False`` (the default) the embedding and output head stay frozen and
equal to the teacher's: the exported student then holds only its blocks and final norm, and its ``trlm.json``
names the model those shared tensors come from (``shared_from``), which :func:`trlm.core.models.load_model`
reattaches on load. That keeps a 6-block SmolLM2 student at ~21 M stored parameters (≈ 42 MB in bf16).

The student reads its teacher's token order: a student of ``trlm-ba-smol`` (reverse) is a reverse model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from trlm.core.checkpoint import save_pretrained
from trlm.core.models import LoadedModel, load_model

log = logging.getLogger(__name__)

SHARED = ("model.embed_tokens.weight", "lm_head.weight")  # tensors a frozen-embedding student borrows


def default_layers(n_teacher: int, n_student: int) -> tuple[int, ...]:
    """``n_student`` blocks spread evenly over the teacher's, first and last included (30 → 6: 0 6 12 17 23 29)."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"a student needs between 1 and {n_teacher} blocks, got {n_student}")
    if n_student == 1:
        return (0,)
    return tuple(round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student))


def parse_layers(spec: str, n_teacher: int) -> tuple[int, ...]:
    """``--student-layers``: a count (``6``: :func:`default_layers`) or comma-separated block indices (``0,1,2,29``)."""
    spec = spec.strip()
    if spec.isdigit():
        try:
            return default_layers(n_teacher, int(spec))
        except ValueError as e:
            raise ValueError(f"--student-layers {spec}: {e} (the teacher has {n_teacher})") from None
    try:
        layers = tuple(int(x) for x in spec.split(","))
    except ValueError:
        raise ValueError(f"--student-layers must be a count or comma-separated block indices, got {spec!r}") from None
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad or len(set(layers)) != len(layers):
        raise ValueError(f"--student-layers {spec!r}: indices must be distinct and in [0, {n_teacher - 1}]")
    return layers


def build_student(teacher: LoadedModel, layers: Sequence[int], train_embeddings: bool = False) -> torch.nn.Module:
    """A model of the teacher's architecture holding copies of the teacher's blocks ``layers`` (in that order)."""
    from transformers import AutoModelForCausalLM

    t_model = teacher.model
    n = t_model.config.num_hidden_layers
    if not layers or any(not 0 <= i < n for i in layers):
        raise ValueError(f"student layers {list(layers)} must be indices in [0, {n - 1}]")
    config = copy.deepcopy(t_model.config)
    config.num_hidden_layers = len(layers)
    if isinstance(getattr(config, "layer_types", None), list):  # per-block attention kinds (e.g. Gemma 3)
        config.layer_types = [config.layer_types[i] for i in layers]
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    prefix = "model.layers."
    state = {}
    for k, v in t_model.state_dict().items():
        if k.startswith(prefix):
            i, rest = k[len(prefix):].split(".", 1)
            if int(i) not in layers:
                continue
            k = f"{prefix}{list(layers).index(int(i))}.{rest}"
        state[k] = v.detach().clone().float()
    missing, unexpected = student.load_state_dict(state, strict=False)
    tied = getattr(config, "tie_word_embeddings", False)
    if unexpected or [k for k in missing if not (tied and k == "lm_head.weight")]:
        raise RuntimeError(f"student of {teacher.name}: weights do not map "
                           f"(missing {missing}, unexpected {unexpected})")
    if not train_embeddings:
        for m in (student.get_input_embeddings(), student.get_output_embeddings()):
            m.weight.requires_grad_(False)
    return student


@dataclass(frozen=True)
class StudentArgs:
    """What ``trlm distill train`` trains (the training loop's ModelSpec): blocks of ``teacher``.

    ``save_dtype`` applies to the final ``OUT/model`` only; checkpoints stay float32 for an exact resume.
    """

    teacher: str
    layers: tuple[int, ...]
    train_embeddings: bool = False
    save_dtype: str = "float32"  # float32 | bfloat16

    def __post_init__(self):
        if self.save_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--save-dtype must be float32 or bfloat16, got {self.save_dtype!r}")

    def build(self, token_order: str, seq_len: int, seed: int, device: torch.device, bf16: bool) -> LoadedModel:
        teacher = load_model(self.teacher, device="cpu", dtype=torch.float32)
        if teacher.token_order != token_order:
            raise ValueError(f"the student reads its teacher's token order: {self.teacher} is {teacher.token_order!r},"
                             f" not {token_order!r}")
        model = build_student(teacher, self.layers, self.train_embeddings).to(device)
        model.train()
        return LoadedModel(model, teacher.tokenizer, f"student-of-{self.teacher}", token_order,
                           {"student_of": self.teacher})

    def export(self, lm: LoadedModel, token_order: str, path: Path, *, final: bool = False, **meta) -> Path:
        model = lm.model
        dtype = getattr(torch, self.save_dtype) if final else torch.float32
        skip = () if self.train_embeddings else SHARED
        donor = str(Path(self.teacher).resolve()) if Path(self.teacher).exists() else self.teacher  # loadable anywhere
        info = {"trained_with": "trlm distill train", "student_of": donor, "teacher_layers": list(self.layers),
                **({"shared_from": donor, "shared_tensors": list(SHARED)} if skip else {}), **meta}
        return save_pretrained(model, lm.tokenizer, path, token_order, drop=skip, dtype=dtype, **info)

    def load_weights(self, lm: LoadedModel, model_dir: Path) -> None:
        from safetensors.torch import load_file

        missing, unexpected = lm.model.load_state_dict(load_file(model_dir / "model.safetensors"), strict=False)
        allowed = set(SHARED) if not self.train_embeddings else {"lm_head.weight"}
        if unexpected or set(missing) - allowed:
            raise RuntimeError(f"{model_dir}: checkpoint does not match the student (missing {missing}, "
                               f"unexpected {unexpected})")

"""ReFT-r1 (AxBench): one rank-1 vector w per concept, trained for detection and steering at once.

    a_t  = ReLU(h_t · w)                                            detection latent
    Φ(h) = h_t + ((1/k) Σ_{j ∈ TopK(a)} a_j) · w                     k = 8, one scalar per sequence, all positions
    L    = LM loss on response tokens + λ_t · mean_{t ∉ TopK, t real} a_t,   λ_t = λ · step / steps, λ = 0.005

trained on the concept's positives **and** negatives (on negatives any activation hurts the likelihood, which
drives a_t → 0 off-concept), base model frozen, w initialised to 0.01 everywhere. After every optimizer step the
gradient component parallel to w has been removed (a hook on w's gradient, applied before clipping — AxBench clips
first; with one parameter the two orders differ only in the clipping scale) and w is renormalised to unit length.

It runs on the project's training loop: :class:`ReftSpec` is the loop's ModelSpec (the frozen model with the
intervention attached to decoder block ``layer``), :class:`ReftObjective` its loss with state. Defaults follow
AxBench's 2B recipe (lr 0.01, batch 6, wd 0) except the schedule (the loop's cosine, no warmup, instead of linear)
and the epochs (``epochs``; AxBench uses 3 — on 2 CPU cores that is ~4 min per concept for SmolLM2-135M).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trlm.core.io import write_json
from trlm.core.models import LoadedModel, decoder_layers, load_model
from trlm.steer.hooks import TopKMean, residual_hook
from trlm.train.losses import causal_lm_loss, unwrap


@dataclass(frozen=True)
class ReftSpec:
    """The training loop's ModelSpec: ``model`` frozen, a :class:`TopKMean` on block ``layer`` is all that trains."""

    model: str
    layer: int
    k: int = 8

    def build(self, token_order: str, seq_len: int, seed: int, device: torch.device, bf16: bool) -> LoadedModel:
        lm = load_model(self.model, device=str(device), dtype=torch.float32)
        model = lm.model.requires_grad_(False)
        blocks = decoder_layers(model)
        if not 0 <= self.layer < len(blocks):
            raise ValueError(f"--layer {self.layer}: {self.model} has decoder blocks 0-{len(blocks) - 1}")
        torch.manual_seed(seed)
        module = TopKMean(model.config.hidden_size, self.k).to(device)
        model.add_module("reft_r1", module)  # its one parameter is what the loop's optimizer sees
        blocks[self.layer].register_forward_hook(residual_hook(module))
        model.train()
        return LoadedModel(model, lm.tokenizer, f"{self.model}+reft-r1@{self.layer}", token_order, {})

    def export(self, lm: LoadedModel, token_order: str, path: Path, *, final: bool = False, **meta) -> Path:
        """``path/reft_r1.safetensors`` (w) and ``path/reft_r1.json``, written into a temporary sibling first."""
        import shutil
        import tempfile

        from safetensors.torch import save_file

        from trlm.core.checkpoint import replace_dir

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            save_file({"w": lm.model.reft_r1.w.detach().cpu().contiguous()}, tmp / "reft_r1.safetensors")
            write_json(tmp / "reft_r1.json", {"model": self.model, "layer": self.layer, "k": self.k, **meta})
            tmp.chmod(0o755)
            replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def load_weights(self, lm: LoadedModel, model_dir: Path) -> None:
        from safetensors.torch import load_file

        with torch.no_grad():
            lm.model.reft_r1.w.copy_(load_file(model_dir / "reft_r1.safetensors")["w"])


class ReftObjective:
    """LM loss on the responses plus the annealed L1 on non-top-k latents; w's gradient is kept orthogonal to w and
    w renormalised after each optimizer step."""

    def __init__(self, total_steps: int, lam: float = 0.005):
        self.total, self.lam, self.step = total_steps, lam, 0
        self.module: TopKMean | None = None

    def __call__(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        module: TopKMean = unwrap(model).reft_r1
        if module is not self.module:  # first call: keep the gradient orthogonal to w from now on
            self.module = module
            module.w.register_hook(_orthogonal_to(module.w))
        mask = batch["attention_mask"].bool()
        module.mask = mask
        lm_loss = causal_lm_loss(model, batch)
        a = module.last_latents  # (B, T) of this forward
        top = torch.zeros_like(mask)
        top.scatter_(1, a.masked_fill(~mask, -1.0).topk(min(module.k, a.shape[1]), dim=1).indices, True)
        rest = mask & ~top
        l1 = ((a * rest).sum(1) / mask.sum(1).clamp_min(1)).mean()  # (1/|mask|) Σ_{t ∉ TopK}, then the batch mean
        return lm_loss + self._lam_now() * l1

    def _lam_now(self) -> float:
        """λ_t = λ · step / steps, step = optimizer steps done before this one (0 at the first)."""
        return self.lam * self.step / self.total

    # the loop's Objective protocol
    def after_step(self, loss: float, step: int, total_steps: int) -> dict:
        used = self._lam_now()
        self.step = step
        if self.module is not None:
            with torch.no_grad():
                self.module.w.div_(self.module.w.norm().clamp_min(1e-12))
        return {"lambda": round(used, 6)}  # the λ this step trained with

    def state_dict(self) -> dict:
        return {"lam": self.lam, "total": self.total, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        if (state["lam"], state["total"]) != (self.lam, self.total):
            raise ValueError(f"cannot resume: the checkpoint was trained with lambda {state['lam']} over "
                             f"{state['total']} steps, now {self.lam} over {self.total}")
        self.step = int(state["step"])


def _orthogonal_to(w: torch.Tensor):
    def project(g: torch.Tensor) -> torch.Tensor:
        u = w.detach() / w.detach().norm().clamp_min(1e-12)
        return g - (g @ u) * u
    return project


def fit_reft(model: str, layer: int, examples, out: Path, *, epochs: int = 1, lr: float = 0.01,
             batch_size: int = 6, seq_len: int = 256, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Train ReFT-r1 on a concept's training examples (:class:`trlm.steer.data.ConceptExample`, positives and negatives;
    loss on responses) into ``out`` (resumable) and return the unit direction w."""
    import math

    from safetensors.torch import load_file

    from trlm.train.chat_data import chat_examples
    from trlm.train.loop import TrainArgs, train

    spec = ReftSpec(model, layer)
    rows = [{"prompt": e.prompt, "response": e.response} for e in examples if e.response.strip()]
    steps = epochs * math.ceil(len(rows) / batch_size)

    class Source:  # tokenised once the model (and so the tokenizer) exists
        name = "reft-r1 examples"

        def examples(self, lm, token_order, seq_len_):
            return chat_examples(rows, lm, seq_len_, completions_only=True, source=self.name)

    args = TrainArgs(out=Path(out), token_order="forward", steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                     warmup=0, weight_decay=0.0, clip=1.0, eval_every=0, save_every=0, seed=seed, progress=progress)
    r = train(spec, args, Source(), None, ReftObjective(steps))
    w = load_file(r.model_dir / "reft_r1.safetensors")["w"]
    return w / w.norm()

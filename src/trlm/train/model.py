"""The model a training run starts from (a checkpoint, optionally with LoRA, or a fresh Llama) and its export.

An exported model is a loadable directory whose ``trlm.json`` records the token order it was trained in; a LoRA
run exports only its adapter, with the base model named in the metadata.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trlm.core.checkpoint import replace_dir, save_pretrained, write_meta
from trlm.core.models import LoadedModel, load_model, peft_warnings, resolve_path

log = logging.getLogger(__name__)


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

    # the training loop's ModelSpec interface
    def build(self, token_order: str, seq_len: int, seed: int, device: torch.device, bf16: bool) -> LoadedModel:
        return build_model(self, token_order, seq_len, seed, device, bf16)

    def export(self, lm: LoadedModel, token_order: str, path: Path, *, final: bool = False, **meta) -> Path:
        return export_model(lm, self, token_order, path, **meta)

    def load_weights(self, lm: LoadedModel, model_dir: Path) -> None:
        load_weights(lm, self, model_dir)


def build_model(margs: ModelArgs, token_order: str, seq_len: int, seed: int, device: torch.device,
                bf16: bool) -> LoadedModel:
    """The model to train, as a LoadedModel whose token order is the training order."""
    if margs.init is not None:
        lm = load_model(margs.init, device=str(device), dtype=torch.float32)
        if lm.meta.get("token_order", "forward") != token_order:
            log.info("training %s (token order %s) in %s order", margs.init, lm.token_order, token_order)
    else:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        path, _ = resolve_path(margs.tokenizer)
        tok = AutoTokenizer.from_pretrained(str(path) if path is not None else margs.tokenizer)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=margs.width, intermediate_size=4 * margs.width,
                          num_hidden_layers=margs.layers, num_attention_heads=margs.heads,
                          num_key_value_heads=margs.heads, max_position_embeddings=max(2048, seq_len),
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
        torch.manual_seed(seed)
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
        with peft_warnings():
            model = get_peft_model(model, cfg)  # adapter weights are kept in fp32
    model.train()
    meta = {"base_model": margs.init} if margs.init else {}
    return LoadedModel(model, lm.tokenizer, lm.name, token_order, meta)  # type: ignore[arg-type]


def export_model(lm: LoadedModel, margs: ModelArgs, token_order: str, path: Path, **meta) -> Path:
    """Write a loadable model directory (full weights, or a LoRA adapter) with ``trlm.json``, atomically."""
    model = lm.model
    scratch_only = ("tokenizer", "layers", "width", "heads")
    model_args = {k: v for k, v in asdict(margs).items() if not (margs.init and k in scratch_only)}
    info = {"trained_with": "trlm train", "model_args": jsonable(model_args), **meta}
    if margs.lora_r:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        tmp.chmod(0o755)
        model.save_pretrained(str(tmp))
        base = str(Path(margs.init).resolve()) if Path(margs.init).exists() else margs.init  # loadable from anywhere
        write_meta(tmp, token_order, adapter=True, base_model=base, **info)
        replace_dir(tmp, path)
        return path
    return save_pretrained(model, lm.tokenizer, path, token_order, **info)


def load_weights(lm: LoadedModel, margs: ModelArgs, model_dir: Path) -> None:
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


def jsonable(d: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

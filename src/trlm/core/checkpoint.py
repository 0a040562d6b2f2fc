"""Checkpoint metadata: every trlm model directory carries its **token order** in ``trlm.json``.

``forward``, ``reverse`` or ``both`` (TRLM-FoBa). A directory without ``trlm.json`` is a plain Hugging Face model
and therefore ``forward``. Checkpoints are written atomically: into a sibling temporary directory that then
replaces the target, so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal, Sequence

from trlm.core.io import write_text

TokenOrder = Literal["forward", "reverse", "both"]
TOKEN_ORDERS: tuple[str, ...] = ("forward", "reverse", "both")
META_FILE = "trlm.json"
META_VERSION = 1


class ModelError(RuntimeError):
    """A model could not be found or used as asked; the message says how to fix it."""


def read_meta(path: Path) -> dict | None:
    f = Path(path) / META_FILE
    if not f.exists():
        return None
    meta = json.loads(f.read_text())
    order = meta.get("token_order")
    if order not in TOKEN_ORDERS:
        raise ModelError(f"{f}: token_order must be one of {TOKEN_ORDERS}, got {order!r}")
    return meta


def write_meta(path: Path, token_order: str, **extra) -> dict:
    if token_order not in TOKEN_ORDERS:
        raise ValueError(f"token_order must be one of {TOKEN_ORDERS}, got {token_order!r}")
    meta = {"format_version": META_VERSION, "token_order": token_order, **extra}
    write_text(Path(path) / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def replace_dir(tmp: Path, path: Path) -> None:
    """Move a fully written directory ``tmp`` into place at ``path`` (replacing any old one)."""
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _plain_permissions(root: Path) -> None:
    """Give a directory written through mkdtemp the permissions a plain ``mkdir`` / ``open`` would."""
    from trlm.core.io import UMASK

    root.chmod(0o777 & ~UMASK)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~UMASK)


def save_pretrained(model, tokenizer, path: str | Path, token_order: str, *, drop: Sequence[str] = (),
                    dtype=None, **meta) -> Path:
    """Write weights (safetensors), config, tokenizer and ``trlm.json`` into ``path``, atomically.

    ``drop``: state-dict keys left out (tensors the loader takes from another model, see ``shared_from``);
    ``dtype``: cast floating-point weights to it (e.g. ``torch.bfloat16`` to halve a shipped model).
    The files are written into a sibling temporary directory which then replaces ``path``, so a crash never
    leaves a half-written checkpoint behind.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in drop}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        if getattr(model.config, "tie_word_embeddings", False):
            out = model.get_output_embeddings()
            for k in [k for k in state if k.endswith("lm_head.weight")]:
                if out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr():
                    del state[k]
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        config = model.config
        if getattr(config, "quantization_config", None) is not None:
            del config.quantization_config
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_meta(tmp, token_order, **meta)
        _plain_permissions(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path

"""Shared fixtures: the embedded default model (fp32, loaded once) and a tiny random reverse-order model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smol():
    from trlm.engine import Engine

    return Engine.load("smollm2-135m-instruct", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def tiny_reverse_dir(tmp_path_factory, smol):
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer, saved as a reverse-order checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trlm.models import save_pretrained

    torch.manual_seed(0)
    tok = smol.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-reverse"
    save_pretrained(model, tok, path, "reverse", description="test fixture")
    return path

"""Model loading: embedded cache, checkpoints with token order, clear errors for bad references."""

from __future__ import annotations

import json

import pytest
import torch

from trlm.core.checkpoint import ModelError, read_meta, save_pretrained
from trlm.core.models import EMBEDDED, list_models, load_model, resolve_path


def test_embedded_model_is_cached_as_a_forward_checkpoint(smol):
    path, kind = resolve_path("smollm2-135m-instruct")
    assert kind == "embedded" and (path / "model.safetensors").exists()
    assert read_meta(path)["token_order"] == "forward"
    assert smol.lm.num_params == 134_515_008
    rows = {r["name"]: r for r in list_models()}
    assert rows["smollm2-135m-instruct"]["cached"] and rows["smollm2-135m-instruct"]["token_order"] == "forward"
    assert set(EMBEDDED) <= set(rows)


def test_save_and_reload_roundtrip_keeps_weights_and_order(tmp_path, tiny_reverse_dir):
    a = load_model(str(tiny_reverse_dir), dtype="float32")
    out = save_pretrained(a.model, a.tokenizer, tmp_path / "copy", "reverse", note="roundtrip")
    b = load_model(str(out), dtype="float32", token_order="reverse")
    assert b.meta["note"] == "roundtrip" and b.token_order == "reverse"
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert not list(tmp_path.glob(".copy*"))  # no temporary directory left behind


def test_plain_hf_directory_is_forward(tmp_path, tiny_reverse_dir):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_reverse_dir, plain)
    (plain / "trlm.json").unlink()
    lm = load_model(str(plain), dtype="float32")
    assert lm.token_order == "forward"
    with pytest.raises(ModelError, match="cannot be used in the other order"):
        load_model(str(plain), token_order="reverse")


def test_bad_references_fail_loudly(tmp_path):
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="holds no config.json"):
        load_model(str(empty))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "trlm.json").write_text(json.dumps({"token_order": "sideways"}))
    with pytest.raises(ModelError, match="token_order must be one of"):
        load_model(str(bad))
    with pytest.raises(ValueError, match="--dtype"):
        load_model("smollm2-135m-instruct", dtype="float8")

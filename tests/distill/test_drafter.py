"""The shipped student ``trlm-draft-smol``: listed by ``trlm models``, small on disk, loadable with the teacher's
shared tensors, and as a drafter it leaves seeded outputs unchanged (drafter-invariant decoding)."""

import json

import torch

from trlm.core.models import list_models, load_model, shipped_models


def test_shipped_drafter_is_listed_small_and_reattaches_the_teachers_embedding(smol):
    row = {r["name"]: r for r in list_models()}["trlm-draft-smol"]
    assert row["kind"] == "shipped" and row["token_order"] == "forward" and row["size_mb"] <= 50
    path = shipped_models()["trlm-draft-smol"]
    assert (path / "model.safetensors").stat().st_size <= 50 * 2**20
    meta = json.loads((path / "trlm.json").read_text())
    assert meta["shared_from"] == "smollm2-135m-instruct" and len(meta["teacher_layers"]) == 6
    lm = load_model("trlm-draft-smol", device="cpu", dtype=torch.float32)
    assert lm.model.config.num_hidden_layers == 6
    assert torch.equal(lm.model.get_input_embeddings().weight, smol.model.get_input_embeddings().weight)


def test_generate_with_the_shipped_drafter_equals_plain_generation(smol, tmp_path):
    from typer.testing import CliRunner

    from trlm.cli import app

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Name three colours."}\n{"prompt": "What is the capital of Italy?"}\n')
    common = ["generate", str(prompts), "--chat", "--max-new-tokens", "12", "--temperature", "0.8", "--seed", "3",
              "--dtype", "float32"]
    plain = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "plain.jsonl")])
    spec = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "spec.jsonl"), "--speculative", "trlm-draft-smol",
                                    "--stats"])
    assert plain.exit_code == 0 and spec.exit_code == 0, plain.output + spec.output
    assert "drafter trlm-draft-smol" in spec.output
    gens = lambda f: [json.loads(x)["generations"] for x in (tmp_path / f).read_text().splitlines()]  # noqa: E731
    assert gens("spec.jsonl") == gens("plain.jsonl") and all(g[0] for g in gens("plain.jsonl"))

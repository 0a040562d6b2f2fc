"""``trlm bench generate`` on two hand-written instructions (AlpacaEval-shaped, written here), float32, 3 tokens:
the files, the rows at batch 1 and 2, the memory limit from the measured bandwidth, and the profile."""

from __future__ import annotations

import json

import pytest

from trlm.speculative.bench_generate import bandwidth_gbs, weight_bytes


@pytest.fixture
def data(tmp_path):
    rows = [{"instruction": "Name three colours.", "output": "", "generator": "x", "dataset": "x"},
            {"instruction": "What is two plus two?", "output": "", "generator": "x", "dataset": "x"}]
    (tmp_path / "alpaca_eval").mkdir()
    (tmp_path / "alpaca_eval" / "eval_set_with_reference_gpt4_1106_preview.json").write_text(json.dumps(rows))
    return tmp_path


def test_bench_generate_writes_rows_limits_and_profile(tmp_path, data):
    from typer.testing import CliRunner

    from trlm.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", "generate", "--out", str(out), "--data", str(data), "--prompts", "2",
                                   "--batch1-prompts", "1", "--max-new-tokens", "3", "--dtypes", "float32",
                                   "--profile-steps", "2"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert set(r["rows"]) == {"batch_1", "batch_2"}
    for b, rows in r["rows"].items():
        assert set(rows) == {"engine/float32", "engine/float32/modules", "engine/float32+ngram", "hf/float32"}
        for m, x in rows.items():
            assert x["tokens"] > 0 and x["tokens_per_s"] == pytest.approx(x["tokens"] / x["seconds"])
            B = 1 if b == "batch_1" else 2
            limit = B * r["machine"]["bandwidth_gbs"] * 1e9 / r["machine"]["weight_bytes"]["float32"]
            assert x["limit_tokens_per_s"] == pytest.approx(limit)
            assert x["share_of_limit"] == pytest.approx(x["tokens_per_s"] / limit)
        assert rows["engine/float32+ngram"]["identical_share"] == 1.0  # speculation: the same greedy text
        assert rows["hf/float32"]["identical_share"] == 1.0  # HF greedy on the same float32 weights
        assert rows["engine/float32/modules"]["identical_share"] == 1.0  # the fast step: the same text
    for key, products in (("float32", 121), ("float32/modules", 211)):  # q,k,v and gate,up stacked: 4 per block
        p = r["profile"][key]
        assert p["linears"] == products and 0 < p["linear_ms"]
        assert p["rest_ms"] == pytest.approx(p["step_ms"] - p["linear_ms"])
        assert any(o["op"] == "aten::mm" for o in p["top_ops"]) and p["sample_ms"] > 0
    report = (out / "report.md").read_text()
    assert "| 1 | engine/float32 |" in report and "| 1 | engine/float32/modules |" in report
    assert "aten::mm" in report and (out / "generate.png").stat().st_size
    assert "engine/float32" in res.output


def test_weight_bytes_and_bandwidth(smol):
    # SmolLM2-135M: 30 blocks x 7 linear layers + the (tied) output head, in float32
    assert weight_bytes(smol.model) == 4 * sum(p.numel() for n, p in smol.model.named_parameters()
                                               if "norm" not in n)
    assert bandwidth_gbs(mb=16, reps=2) > 0.1


def test_bench_generate_rejects_a_bad_dtype(tmp_path, data, one_line_error):
    from typer.testing import CliRunner

    from trlm.cli import app

    res = CliRunner().invoke(app, ["bench", "generate", "--out", str(tmp_path / "o"), "--data", str(data),
                                   "--dtypes", "float16"])
    assert "--dtypes" in one_line_error(res)

"""The CLI in-process (typer's CliRunner) and the data-parallel path under torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trlm.cli import app
runner = CliRunner()

PAIRS = [
    {"context": "The capital of France is", "continuation": " Paris"},
    {"context": "The capital of France is", "continuation": " London"},
    {"context": "Water boils at 100 degrees", "continuation": " Celsius."},
    {"context": "One, two, three,", "continuation": " four, five"},
    {"context": "", "continuation": "Hello world"},
]


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_command_on_embedded_model(tmp_path, smol):
    src = _write(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", str(src), "--out", str(out), "--dtype", "float32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["continuation"] for r in rows] == [p["continuation"] for p in PAIRS]
    from trlm.core.engine import Request

    want = smol.loglikelihood([Request(p["context"], p["continuation"]) for p in PAIRS])
    for r, w in zip(rows, want):
        assert r["logprob"] == pytest.approx(w.logprob, abs=1e-3) and r["num_tokens"] == w.num_tokens


def test_score_command_on_reverse_checkpoint(tmp_path, tiny_reverse_dir, one_line_error):
    """The CLI's reverse scores are the reverse engine's (log P(rev(continuation) | rev(context)), per-token values
    in reading order), and a forward direction on a reverse model is a one-line error."""
    from trlm.core.engine import Engine, Request

    src = _write(tmp_path / "pairs.jsonl", PAIRS[:3])
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", str(src), "--out", str(out), "--model", str(tiny_reverse_dir),
                              "--dtype", "float32", "--tokens"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    eng = Engine.load(str(tiny_reverse_dir), dtype="float32")
    want = eng.loglikelihood([Request(p["context"], p["continuation"]) for p in PAIRS[:3]], return_tokens=True)
    for r, w in zip(rows, want):
        assert r["num_tokens"] == w.num_tokens == len(r["token_logprobs"])
        assert r["logprob"] == pytest.approx(w.logprob, abs=1e-4)
        assert r["token_logprobs"] == pytest.approx(list(w.token_logprobs), abs=1e-4)
    assert rows[0]["logprob"] != pytest.approx(rows[1]["logprob"], abs=1e-3)  # the values depend on the text
    res = runner.invoke(app, ["score", str(src), "--out", str(out), "--model", str(tiny_reverse_dir),
                              "--direction", "forward"])
    assert "token order 'reverse'" in one_line_error(res)


def test_malformed_jsonl_names_the_line_and_writes_nothing(tmp_path, one_line_error):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(PAIRS[0]) + "\n" + '{"context": "x", "continuation": \n')
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", str(src), "--out", str(out)])
    assert f"{src}:2: not valid JSON" in one_line_error(res)
    assert not out.exists()
    src.write_text(json.dumps({"context": "x"}) + "\n")
    res = runner.invoke(app, ["score", str(src), "--out", str(out)])
    assert "bad.jsonl:1: missing field 'continuation'" in one_line_error(res)
    assert not out.exists()


def test_empty_continuation_writes_no_partial_output(tmp_path, one_line_error):
    src = _write(tmp_path / "pairs.jsonl", [PAIRS[0], {"context": "x", "continuation": ""}])
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", str(src), "--out", str(out), "--dtype", "float32"])
    assert "request 1: continuation is empty" in one_line_error(res)
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_user_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path, one_line_error):
    src = _write(tmp_path / "pairs.jsonl", PAIRS[:1])
    res = runner.invoke(app, ["score", str(src), "--out", str(tmp_path / "o.jsonl"), "--model", "no-such-model"])
    assert "unknown model 'no-such-model'" in one_line_error(res)
    res = runner.invoke(app, ["score", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert "missing.jsonl: no such file" in one_line_error(res)
    prompts = _write(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}])
    res = runner.invoke(app, ["generate", str(prompts), "--out", str(tmp_path / "g.jsonl"), "--temperature", "-1"])
    assert "temperature must be >= 0" in one_line_error(res)
    res = runner.invoke(app, ["--verbose", "score", str(tmp_path / "missing.jsonl"), "--out", "o.jsonl"])
    assert res.exit_code == 1 and "no such file" in str(res.exception)  # the exception itself, for debugging


def test_the_installed_command_reports_user_errors_in_one_line(tmp_path, one_line_error):
    proc = subprocess.run([sys.executable, "-m", "trlm.cli", "score", str(tmp_path / "nope.jsonl"), "--out", "x"],
                          capture_output=True, text=True, timeout=120)
    assert one_line_error(proc) == f"trlm: error: {tmp_path / 'nope.jsonl'}: no such file"


def test_cli_reference_in_docs_is_current():
    """docs/cli.md is generated from every command's --help; regenerate it with `make docs` after a CLI change."""
    from trlm.cli import cli_reference

    doc = Path(__file__).parent.parent / "docs" / "cli.md"
    assert doc.read_text() == cli_reference(), "docs/cli.md is stale: run `make docs`"
    for cmd in ("## trlm score", "## trlm generate", "## trlm bench rerank", "## trlm guard train-filter"):
        assert cmd in doc.read_text()


def test_rerank_command_puts_the_matching_answer_first(tmp_path):
    src = Path(__file__).parent.parent / "examples" / "rerank_demo.jsonl"
    out = tmp_path / "ranked.jsonl"
    res = runner.invoke(app, ["rerank", str(src), "--out", str(out), "--scorer", "trlm-fo", "--table"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # each demo row has exactly one candidate that answers the query: index 1, 1, 0
    assert [r["ranking"][0] for r in rows] == [1, 1, 0]
    assert "rank" in res.output


def test_help_lists_key_commands_and_flags():
    res = runner.invoke(app, ["--help"])
    for cmd in ("score", "generate", "rerank", "best-of-n", "models", "bench"):
        assert cmd in res.output
    res = runner.invoke(app, ["score", "--help"])
    assert "--direction" in res.output and "--truncate" in res.output


def test_generate_command_is_reproducible(tmp_path):
    src = _write(tmp_path / "p.jsonl", [{"prompt": "Name a color."}])
    outs = []
    for k in range(2):
        out = tmp_path / f"g{k}.jsonl"
        res = runner.invoke(app, ["generate", str(src), "--out", str(out), "--chat", "--n", "2",
                                  "--max-new-tokens", "8", "--temperature", "0.8", "--seed", "5", "--dtype", "float32"])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(out.read_text())["generations"])
    assert outs[0] == outs[1] and len(outs[0]) == 2


@pytest.mark.slow
def test_data_parallel_score_matches_single_process(tmp_path):
    src = _write(tmp_path / "pairs.jsonl", PAIRS)
    single, multi = tmp_path / "single.jsonl", tmp_path / "multi.jsonl"
    res = runner.invoke(app, ["score", str(src), "--out", str(single), "--dtype", "float32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "trlm.cli", "score", str(src), "--out", str(multi), "--dtype", "float32", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = [json.loads(x) for x in single.read_text().splitlines()]
    b = [json.loads(x) for x in multi.read_text().splitlines()]
    assert [r["continuation"] for r in b] == [r["continuation"] for r in a]  # input order restored
    for x, y in zip(a, b):
        assert y["logprob"] == pytest.approx(x["logprob"], abs=1e-3)


def test_comma_lists_are_split_by_one_parser_that_names_the_flag():
    from trlm.core.io import InputError, split_list

    assert split_list("a, b,,c ", "--x") == ["a", "b", "c"] and split_list(None, "--x") == []
    assert split_list("0,1.5", "--alphas", float) == [0.0, 1.5] and split_list("2,4", "--taus", int) == [2, 4]
    with pytest.raises(InputError, match=r"--taus must be comma-separated integers, got '2,x'"):
        split_list("2,x", "--taus", int)


def test_distill_without_a_token_flag_distils_every_token():
    """No required boolean flag: --all-tokens is the default, and --help says so."""
    import typer

    params = {p.name: p for p in typer.main.get_command(app).commands["distill"].commands["train"].params}
    assert params["all_tokens"].default is True and not params["all_tokens"].required


def test_rerank_benches_default_to_the_shared_judged_file_and_its_reference():
    from trlm.core.io import default_data_dir
    from trlm.data.alpaca import JUDGED_FILE, REFERENCE_FILE, judged_paths

    data, ref = judged_paths()
    assert data == default_data_dir() / JUDGED_FILE and ref == default_data_dir() / REFERENCE_FILE
    assert judged_paths("/x/j.jsonl")[1].parent.as_posix() == "/x"

"""``trlm serve`` / ``trlm bench serve`` flags (no model): registered, documented, defaults from ServeConfig."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from trlm.serve.cli import register
from trlm.serve.service import ServeConfig


def _app() -> typer.Typer:
    app, bench = typer.Typer(), typer.Typer()
    app.add_typer(bench, name="bench")
    register(app, bench)
    return app


def test_serve_help_lists_the_key_flags():
    res = CliRunner().invoke(_app(), ["serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    for flag in ("--model", "--scorer", "--host", "--port", "--api-key", "--batching", "--max-wait-ms",
                 "--max-batch-tokens", "--max-queue", "--cache-size", "--max-body-bytes", "--speculative",
                 "--rate-limit", "--rate-burst", "--checker", "--cite-scorer", "--directions", "--max-claims"):
        assert flag in res.output
    assert "127.0.0.1" in res.output and "trlm-fo,forward-mean" in res.output


def test_bench_serve_help():
    res = CliRunner().invoke(_app(), ["bench", "serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0 and "--clients" in res.output and "--out" in res.output


@pytest.mark.parametrize("kw,flag", [({"scorers": ("length",)}, "--scorer"), ({"max_queue": 0}, "--max-queue"),
                                     ({"api_keys": ("",)}, "--api-key"), ({"scorers": ()}, "--scorer"),
                                     ({"rate_limit": -1.0}, "--rate-limit"), ({"rate_burst": 0}, "--rate-burst"),
                                     ({"directions": (("a", "x"), ("a", "y"))}, "--directions"),
                                     ({"cite_scorers": ("nope",)}, "--cite-scorer"), ({"checkers": ()}, "--checker")])
def test_config_errors_name_the_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        ServeConfig(**kw)

"""The ``trlm`` command line: the root app, which mounts each system's ``cli.py``.

Each system registers module-level command functions that load, call one library function and save:

    trlm models | export | score                                   trlm.core.cli
    trlm bench throughput                                          trlm.scoring.cli
    trlm generate | bench speculative                              trlm.speculative.cli
    trlm rerank | best-of-n | bench rerank                         trlm.rerank.cli
    trlm retrieve | bench retrieve                                 trlm.retrieve.cli
    trlm cite | bench cite                                         trlm.cite.cli
    trlm guard check|train-filter | bench guard                    trlm.guard.cli
    trlm train | bench train                                       trlm.train.cli
    trlm distill train|data | bench distill                        trlm.distill.cli
    trlm steer fit|detect|generate | bench steer                   trlm.steer.cli
    trlm factcheck score|synth|train | bench factcheck             trlm.factcheck.cli
    trlm redteam generate|run|judge|report|pipeline|train-oracle | bench redteam    trlm.redteam.cli
    trlm serve | bench serve                                       trlm.serve.cli
    trlm bench backends                                            trlm.backends.cli

A user error (bad input file, unknown model, token-order mismatch, missing file, bad setting) prints one line
``trlm: error: <message>`` to stderr and exits with status 2; ``--verbose`` shows the traceback instead.
``docs/cli.md`` is generated from the ``--help`` texts (``make docs``) and a test keeps it current.
"""

from __future__ import annotations

import logging
import os

import typer
from typer.core import TyperGroup

from trlm.backends import cli as backends_cli
from trlm.cite import cli as cite_cli
from trlm.core import cli as core_cli
from trlm.core.checkpoint import ModelError
from trlm.core.io import InputError
from trlm.core.llm import LLMError
from trlm.distill import cli as distill_cli
from trlm.factcheck import cli as factcheck_cli
from trlm.guard import cli as guard_cli
from trlm.redteam import cli as redteam_cli
from trlm.rerank import cli as rerank_cli
from trlm.retrieve import cli as retrieve_cli
from trlm.scoring import cli as scoring_cli
from trlm.serve import cli as serve_cli
from trlm.speculative import cli as speculative_cli
from trlm.steer import cli as steer_cli
from trlm.train import cli as train_cli

# What a user can cause and fix: reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (InputError, ModelError, LLMError, ValueError, FileNotFoundError, FileExistsError)
_state = {"verbose": False}


class _Group(TyperGroup):
    """Reports user errors from any subcommand as ``trlm: error: ...`` with exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            if _state["verbose"]:
                raise
            typer.echo(f"trlm: error: {e}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(name="trlm", cls=_Group,
                  help="Time-reversed language models: scoring, generation, re-ranking and benchmarks.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
bench = typer.Typer(help="Benchmarks: each writes DIR/results.json, DIR/report.md and DIR/machine.json.",
                    no_args_is_help=True)
app.add_typer(bench, name="bench")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log decisions (dtype, caching) and show "
                                                                       "tracebacks of errors.")):
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


for _system in (core_cli, scoring_cli, speculative_cli, rerank_cli, retrieve_cli, cite_cli, guard_cli, train_cli,
                distill_cli, steer_cli, factcheck_cli, redteam_cli, serve_cli, backends_cli):
    _system.register(app, bench)


def cli_reference(width: int = 100) -> str:
    """Markdown of every command's ``--help``, in the order ``trlm --help`` lists them (``docs/cli.md``)."""
    from typer.testing import CliRunner

    runner = CliRunner()
    root = typer.main.get_command(app)

    def paths(cmd, prefix: list[str]):
        yield prefix
        if isinstance(cmd, TyperGroup):
            for name in cmd.commands:
                yield from paths(cmd.commands[name], [*prefix, name])

    parts = ["# trlm command-line reference", "",
             "Generated from `--help` by `make docs` (a test checks it is current). Do not edit by hand.", ""]
    for p in paths(root, []):
        res = runner.invoke(app, [*p, "--help"], terminal_width=width, env={"COLUMNS": str(width), "NO_COLOR": "1",
                                                                             "TERMINAL_WIDTH": str(width)})
        if res.exit_code != 0:
            raise RuntimeError(f"trlm {' '.join(p)} --help failed: {res.output}")
        text = "\n".join(line.rstrip() for line in res.output.strip("\n").splitlines())
        parts += [f"## trlm {' '.join(p)}".rstrip(), "", "```", text, "```", ""]
    return "\n".join(parts)


def write_cli_reference(path: str = "docs/cli.md") -> None:
    from trlm.core.io import write_text

    write_text(path, cli_reference())


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()

"""``trlm guard check|train-filter`` and ``trlm bench guard``.

    trlm guard check pairs.jsonl --out verdicts.jsonl --filter minilm-lr --trlm trlm-fo --n 8 --tau 2
    trlm guard train-filter --out src/trlm/guard/minilm_lr.json
    trlm bench guard --out runs/guard --trlm trlm-fo --n 8 --taus 0,1,2,4,6 --limit 60
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import split_list
from trlm.guard.defense import DefenseArgs

_D = DefenseArgs  # flag defaults come from the config dataclass
FilterOpt = typer.Option("minilm-lr", "--filter", help="minilm-lr, a filter .json, judge, judge:<model>, chat:<model> "
                         "or http (TRLM_JUDGE_BASE_URL, TRLM_JUDGE_MODEL, TRLM_JUDGE_API_KEY).")
DataOpt = typer.Option(None, help="Shared data folder (default: ../shared/data or $TRLM_DATA).")
guard_app = typer.Typer(help="The TRLM safety guard (Alg. 12): check query/response pairs, train the input filter.",
                        no_args_is_help=True)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    guard_app.command("check")(check_cmd)
    guard_app.command("train-filter")(train_filter_cmd)
    app.add_typer(guard_app, name="guard")
    bench.command("guard")(bench_guard_cmd)


def check_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"query": str, "response": str} per line.'),
    out: Path = typer.Option(..., "--out", "-o", help="Input rows plus rejected, stage, n_flagged, queries."),
    filter: str = FilterOpt,
    trlm: str = typer.Option("trlm-fo", help="trlm-fo (embedded forward model), trlm-ba (trlm-ba-smol), "
                                             "trlm-foba-fwd or trlm-foba-rev (trlm-foba-smol)."),
    model: Optional[str] = typer.Option(None, help="Generator model (default per variant)."),
    n: int = typer.Option(_D.n, help="Queries generated back from each response."),
    tau: int = typer.Option(_D.tau, help="Reject when strictly more than tau generated queries are flagged."),
    temperature: float = typer.Option(_D.temperature),
    seed: int = typer.Option(_D.seed),
    max_new_tokens: int = typer.Option(_D.max_new_tokens, help="Tokens per generated query."),
    max_response_tokens: int = typer.Option(_D.max_response_tokens, help="Responses are cut to this many tokens."),
):
    """Alg. 12: reject a query the filter flags, or whose response regenerates more than tau flagged queries."""
    from trlm.core.io import read_jsonl, write_jsonl
    from trlm.guard.defense import TRLMDefense
    from trlm.guard.filters import make_filter

    rows = read_jsonl(input, {"query": str, "response": str})
    args = DefenseArgs(n=n, tau=tau, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens,
                       max_response_tokens=max_response_tokens)
    defense = TRLMDefense(make_filter(filter), trlm, args, model=model)
    verdicts = defense([r["query"] for r in rows], [r["response"] for r in rows], progress=True)
    write_jsonl(out, ({**r, "rejected": v.rejected, "stage": v.stage, "n_flagged": v.n_flagged,
                       "queries": list(v.queries)} for r, v in zip(rows, verdicts)))
    typer.echo(f"rejected {sum(v.rejected for v in verdicts)} of {len(rows)}; wrote {out}")


def train_filter_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Filter file to write (JSON)."),
    data: Optional[Path] = DataOpt,
    c: float = typer.Option(1.0, help="Inverse L2 strength of the logistic regression."),
    val_frac: float = typer.Option(0.2, help="Share of the pool held out to choose the threshold."),
    seed: int = typer.Option(0),
    max_fpr: Optional[float] = typer.Option(None, help="Operating point: the lowest threshold flagging at most this "
                                            "share of the dev safe prompts (even-id XSTest, out of fold); default: "
                                            "best balanced accuracy on the validation split."),
):
    """Train the MiniLM + logistic-regression input filter (even-id XSTest, ASTRAL, AlpacaEval dev)."""
    import json

    from trlm.core.io import default_data_dir
    from trlm.guard.data import train_embedding_filter

    cmd = f"trlm guard train-filter --out {out} --c {c} --val-frac {val_frac} --seed {seed}" + \
        (f" --max-fpr {max_fpr}" if max_fpr is not None else "")
    filt, report = train_embedding_filter(data or default_data_dir(), val_frac=val_frac, c=c, seed=seed,
                                          max_fpr=max_fpr, command=cmd, progress=True)
    filt.save(out)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "train_sources"}, indent=2))


def bench_guard_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    artifacts: Optional[Path] = typer.Option(None, help="JailbreakBench artifacts "
                                             "(default: DATA/jailbreakbench_artifacts)."),
    data: Optional[Path] = DataOpt,
    filter: str = FilterOpt,
    trlm: str = typer.Option("trlm-fo", help="Comma-separated TRLM variants: trlm-fo, trlm-ba, trlm-foba-fwd, "
                                             "trlm-foba-rev."),
    n: int = typer.Option(_D.n, help="Queries generated back from each response."),
    taus: str = typer.Option("0,1,2,4,6", help="Comma-separated thresholds τ."),
    limit: Optional[int] = typer.Option(None, help="Cap on filter-passing attacks and on each safe set."),
    temperature: float = typer.Option(_D.temperature),
    seed: int = typer.Option(_D.seed),
    max_new_tokens: int = typer.Option(_D.max_new_tokens, help="Tokens per generated query."),
    max_response_tokens: int = typer.Option(128, help="Responses are cut to this many tokens (the bench's own "
                                                      "default, shorter than the defense's)."),
    xstest_model: str = typer.Option("gpt4", help="Which XSTest completions file supplies the safe responses."),
    attacks: Optional[str] = typer.Option(None, help="Comma-separated attacks to read (default: every "
                                          "<attack>/<type>/<model>.json in the artifacts folder)."),
):
    """FNR on filter-passing jailbreaks and FPR on safe prompts, for the filter alone and with the defense."""
    from trlm.core.io import default_data_dir
    from trlm.guard.bench import run_guard_bench

    data_dir = data or default_data_dir()
    res = run_guard_bench(artifacts or data_dir / "jailbreakbench_artifacts", out, data_dir, filter=filter,
                          variants=split_list(trlm, "--trlm"), n=n,
                          taus=split_list(taus, "--taus", int), limit=limit, temperature=temperature, seed=seed,
                          max_new_tokens=max_new_tokens, max_response_tokens=max_response_tokens,
                          xstest_model=xstest_model,
                          attacks=split_list(attacks, "--attacks") or None)
    typer.echo(f"filter fpr {res['filter']['fpr']:.3f}; wrote {out}/results.json and {out}/report.md")

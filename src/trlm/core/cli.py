"""The engine's commands: ``trlm models``, ``trlm score``, ``trlm generate`` and ``trlm bench throughput``.

    trlm models
    trlm export trlm-ba-smol                 # one directory vLLM can serve (adapters merged)
    trlm score pairs.jsonl --out scored.jsonl [--model trlm-ba-smol] [--tokens]
    trlm generate prompts.jsonl --out gens.jsonl --chat --n 4 --temperature 0.8 --seed 0
    trlm bench throughput --pairs 200 --out runs/throughput
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.models import DEFAULT_MODEL
from trlm.core.schema import GenArgs

_G = GenArgs  # flag defaults come from the config dataclass
ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m",
                        help="Embedded name, shipped trlm model, HF dir, .gguf, hub id, or a vLLM server's URL "
                             "(http://host:port/v1[#NAME]).")
DeviceOpt = typer.Option(None, help="cuda, mps or cpu (default: auto-detect).")
DtypeOpt = typer.Option("auto", help="auto (bf16 where fast), float32 or bfloat16.")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("models")(models_cmd)
    app.command("export")(export_cmd)
    app.command("score")(score_cmd)
    app.command("generate")(generate_cmd)
    bench.command("throughput")(bench_throughput_cmd)


def models_cmd():
    """List embedded, shipped and cached models with their token order and size."""
    from rich.console import Console
    from rich.table import Table

    from trlm.core.models import list_models

    table = Table("name", "kind", "token order", "cached", "MB", "description")
    for r in list_models():
        table.add_row(r["name"], r["kind"], str(r["token_order"]), "yes" if r["cached"] else "no",
                      f"{r['size_mb']:.0f}", r["description"])
    Console().print(table)


def export_cmd(
    model: str = typer.Argument(..., help="Embedded name, shipped trlm model, HF dir or .gguf."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory to write (default: trlm's cache; a "
                                       "model that already is one directory is used as it is)."),
):
    """Write a model as one full checkpoint directory (weights, config, tokenizer, trlm.json) and print its path.

    LoRA adapters (the shipped reverse models trlm-ba-smol, trlm-foba-smol) are merged into their base, so vLLM
    can serve them: `make vllm-serve MODEL=trlm-ba-smol` runs this first.
    """
    from trlm.core.models import export_model

    typer.echo(str(export_model(model, out)))


def score_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"context": str, "continuation": str} per line.'),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: input rows plus logprob and num_tokens."),
    model: str = ModelOpt,
    direction: Optional[str] = typer.Option(None, help="forward or reverse; required for 'both'-order models."),
    tokens: bool = typer.Option(False, help="Also write per-token log-probs (token_logprobs)."),
    truncate: str = typer.Option("error", help="error, or 'context' to drop context tokens that do not fit."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
):
    """Score continuations given contexts (log P(continuation | context)).

    Runs data-parallel under `torchrun --nproc_per_node N` or `accelerate launch`: each rank scores its shard
    and rank 0 writes the merged output in input order.
    """
    from trlm.core.parallel import score_file

    score_file(input, out, model=model, direction=direction, return_tokens=tokens, truncate=truncate,
               device=device, dtype=dtype)


def generate_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"prompt": str} per line (optional "seed": int per row).'),
    out: Path = typer.Option(..., "--out", "-o"),
    model: str = ModelOpt,
    n: int = typer.Option(_G.n, help="Samples per prompt."),
    max_new_tokens: int = typer.Option(_G.max_new_tokens),
    temperature: float = typer.Option(_G.temperature, help="0 for greedy."),
    top_p: float = typer.Option(_G.top_p),
    top_k: int = typer.Option(_G.top_k),
    seed: int = typer.Option(_G.seed, help="Noise is keyed by (seed, sample, position): same seed, same text, "
                                           "whatever else is in the file. A row's own 'seed' overrides it."),
    stop: list[str] = typer.Option([], help="Stop strings (repeatable)."),
    chat: bool = typer.Option(False, help="Wrap each prompt in the model's chat template."),
    direction: Optional[str] = typer.Option(None, help="forward or reverse (for 'both'-order models)."),
    sampler: str = typer.Option(_G.sampler, help="gumbel (Gumbel-max) or wmh (Weighted MinHash)."),
    speculative: Optional[str] = typer.Option(None, help="Speculative decoding with this drafter: ngram, ngram:N, "
                                              "early-exit:K or a model name/path (same tokenizer and token order)."),
    gamma: int = typer.Option(4, help="Draft length (adapted per row after accepts / rejections)."),
    scheme: Optional[str] = typer.Option(None, help="gumbel or wmh (drafter-invariant: the same text as without "
                                         "--speculative with that --sampler) or leviathan (ratio test). "
                                         "Default: --sampler."),
    stats: bool = typer.Option(False, help="Print speculative decoding statistics."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
):
    """Sample continuations; for a reverse model the text generated is what precedes the prompt.

    With --speculative the drafter proposes tokens and the model verifies them in one forward; with the gumbel
    or wmh scheme every token is still the model's own seeded sample, so the output does not change.
    """
    from trlm.core.engine import load_engine
    from trlm.core.io import InputError, read_jsonl, write_jsonl

    rows = read_jsonl(input, {"prompt": str})
    for k, r in enumerate(rows, 1):
        if "seed" in r and not (isinstance(r["seed"], int) and not isinstance(r["seed"], bool)):
            raise InputError(f"{input}: row {k}: field 'seed' must be an integer")
    args = GenArgs(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, n=n,
                   seed=seed, stop=tuple(stop), sampler=sampler)
    if speculative is None and (scheme is not None or stats):
        raise InputError("--scheme and --stats go with --speculative DRAFTER")
    if gamma < 1:
        raise InputError(f"--gamma must be >= 1, got {gamma}")
    eng = load_engine(model, device=device, dtype=dtype)
    prompts = [eng.chat_prompt(r["prompt"]) if chat else r["prompt"] for r in rows]
    seeds = [r.get("seed", seed) for r in rows]
    if speculative is None:
        gens = eng.generate(prompts, args, direction=direction, seeds=seeds, progress=True)
    else:
        from trlm.speculative import SCHEMES, speculative_generate

        from trlm.core.io import check_choice

        gens, st = speculative_generate(eng, prompts, args, speculative, gamma=gamma,
                                        scheme=check_choice(scheme or sampler, SCHEMES, "--scheme"),
                                        direction=direction, seeds=seeds, progress=True)
        if stats:
            typer.echo(format_stats(st))
    write_jsonl(out, ({**r, "generations": [g.text for g in gs], "finish_reasons": [g.finish_reason for g in gs]}
                      for r, gs in zip(rows, gens)))
    typer.echo(f"wrote {len(rows)} rows to {out}")


def format_stats(st) -> str:
    """Speculative decoding statistics as a few readable lines."""
    by_pos = " ".join(f"{a:.2f}" for a in st.acceptance_by_position)
    return (f"drafter {st.drafter}, scheme {st.scheme}, gamma {st.gamma}: {st.tokens} tokens, "
            f"{st.target_calls} target forwards, {st.drafter_calls} drafter forwards, "
            f"{st.tokens_per_target_call:.2f} tokens per target call per row\n"
            f"acceptance {st.acceptance:.3f}; by draft position: {by_pos or '-'}; "
            f"mean accepted per round {st.mean_accepted_per_round:.2f}")


def bench_throughput_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json and report.md."),
    pairs: int = typer.Option(200, help="Number of (response -> instruction) pairs."),
    naive_pairs: Optional[int] = typer.Option(None, help="Pairs for the slow naive loop (default: all)."),
    model: str = ModelOpt,
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data)."),
):
    """Engine scoring throughput vs a naive one-pair-at-a-time fp32 loop, and fraction of matmul peak."""
    from trlm.core.bench import run_throughput_bench

    r = run_throughput_bench(out, pairs=pairs, model=model, data=data, naive_pairs=naive_pairs)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"speedup_vs_naive={r['speedup_vs_naive']:.2f} fraction_of_peak={r['fraction_of_peak']:.2f}")

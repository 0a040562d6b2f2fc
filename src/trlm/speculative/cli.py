"""``trlm generate`` (plain, or speculative with ``--speculative DRAFTER``) and ``trlm bench speculative``.

    trlm generate prompts.jsonl --out gens.jsonl --chat --n 4 --temperature 0.8 --seed 0
    trlm generate prompts.jsonl --out gens.jsonl --speculative ngram --stats
    trlm bench speculative --limit 3 --out runs/speculative
    trlm bench generate --vllm http://127.0.0.1:8011/v1 --out runs/generate
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import default_data_dir, split_list
from trlm.core.options import DeviceOpt, DtypeOpt, ModelOpt, echo_report
from trlm.core.schema import GenArgs

_G = GenArgs  # flag defaults come from the config dataclass


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
    bench.command("speculative")(bench_speculative_cmd)
    bench.command("generate")(bench_generate_cmd)


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
    gamma: int = typer.Option(4, help="Starting draft length (then one length per batch, from measured round "
                              "times and acceptance)."),
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
        from trlm.core.io import check_choice
        from trlm.speculative import SCHEMES, speculative_generate

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


def bench_speculative_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, report.md and speculative.png."),
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA)."),
    limit: int = typer.Option(3, help="Prompts (responses, for reverse) per workload."),
    drafters: str = typer.Option("ngram,early-exit:8", help="Comma-separated drafters: ngram, ngram:N, "
                                 "early-exit:K, or a model name/path."),
    schemes: str = typer.Option("gumbel,wmh,leviathan", help="Comma-separated: gumbel, wmh, leviathan."),
    gamma: int = typer.Option(4, help="Starting draft length (then adapted per batch)."),
    max_new_tokens: int = typer.Option(64, help="New tokens per output."),
    hf_peers: bool = typer.Option(True, help="Also time Hugging Face generate (greedy, prompt lookup, assisted)."),
):
    """Speculative vs plain decoding (same run): speed-up, tokens per target call, acceptance, exactness."""
    from trlm.speculative.bench import run_speculative_bench

    run_speculative_bench(out, data or default_data_dir(), limit=limit,
                          drafters=split_list(drafters, "--drafters"),
                          schemes=split_list(schemes, "--schemes"), gamma=gamma,
                          max_new_tokens=max_new_tokens, hf_peers=hf_peers)
    echo_report(out)


def bench_generate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, report.md and generate.png."),
    data: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA)."),
    prompts: int = typer.Option(16, help="Prompts; the batched rows run all of them in one call."),
    batch1_prompts: int = typer.Option(4, help="Prompts the batch-1 rows run, one call each."),
    max_new_tokens: int = typer.Option(64, help="New tokens per output (greedy)."),
    max_prompt_tokens: int = typer.Option(256, help="Instructions are cut to this many tokens."),
    dtypes: str = typer.Option("bfloat16,float32", help="Comma-separated engine dtypes: bfloat16, float32."),
    speculative: str = typer.Option("ngram", help="Comma-separated drafters for speculative rows ('' for none)."),
    hf: bool = typer.Option(True, help="Also time Hugging Face generate on the same weights."),
    vllm: Optional[str] = typer.Option(None, help="A vLLM server's URL (http://host:port/v1) to time beside."),
    repeats: int = typer.Option(1, help="Times the batched rows run."),
    profile_steps: int = typer.Option(16, help="Decode steps timed and profiled per dtype."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: torch's, one per core); on a machine "
                                          "other jobs share, 1 avoids OpenMP threads waiting on each other."),
    module_path: bool = typer.Option(True, help="Also time the engine through the model's modules (no fast decode "
                                     "step), side by side."),
):
    """Decode tokens/s of the engine (bf16, float32, speculative) vs HF generate and vLLM, and the memory limit."""
    from trlm.speculative.bench_generate import run_generate_bench

    run_generate_bench(out, data or default_data_dir(), prompts=prompts, batch1_prompts=batch1_prompts,
                       max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                       dtypes=split_list(dtypes, "--dtypes"),
                       speculative=split_list(speculative, "--speculative"),
                       hf=hf, vllm=vllm, repeats=repeats, profile_steps=profile_steps,
                       threads=threads, module_path=module_path)
    echo_report(out)

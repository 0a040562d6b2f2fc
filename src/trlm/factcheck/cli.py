"""``trlm factcheck score|synth|train`` and ``trlm bench factcheck``.

    trlm factcheck score pairs.jsonl --checker trlm-ba --out checked.jsonl
    trlm factcheck synth --docs docs.jsonl --out runs/fc/offline.jsonl --mode offline --client smollm2-135m-instruct
    trlm factcheck train --data ../shared/data/factcg_cg2c/CG2C_doc.json --data runs/fc/offline.jsonl --out runs/fc/m
    trlm bench factcheck --out runs/bench_factcheck --checkers minilm,smollm2-yesno,trlm-ba --limit 200
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trlm.core.io import InputError, default_data_dir, split_list
from trlm.core.options import echo_report

factcheck_app = typer.Typer(help="Grounded fact checking (FactCG): score claims, synthesise CG2C data, train.",
                            no_args_is_help=True)
CheckerHelp = ("minilm-features, trlm-ba, trlm-fo, forward-pmi, smollm2-yesno, or a checker directory from "
               "`trlm factcheck train`.")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    factcheck_app.command("score")(score_cmd)
    factcheck_app.command("synth")(synth_cmd)
    factcheck_app.command("train")(train_cmd)
    app.add_typer(factcheck_app, name="factcheck")
    bench.command("factcheck")(bench_factcheck_cmd)


def score_cmd(
    input: Path = typer.Argument(..., help='JSONL with {"doc": str, "claim": str} per line (extra fields kept).'),
    out: Path = typer.Option(..., "--out", "-o", help="Input rows plus prob, label, best_chunk, chunk_probs."),
    checker: str = typer.Option("trlm-ba", help=CheckerHelp),
    model: Optional[str] = typer.Option(None, help="LM of an LM checker (default: the checker's own)."),
    threshold: Optional[float] = typer.Option(None, help="label = prob > threshold (default: the checker's, 0.5)."),
    chunk_words: Optional[int] = typer.Option(None, help="Chunk size in words (default: the checker's)."),
):
    """P(supported) of each claim given its document: max over sentence chunks."""
    from trlm.core.io import read_jsonl, write_jsonl
    from trlm.factcheck.checkers import make_checker

    rows = read_jsonl(input, {"doc": str, "claim": str})
    for n, r in enumerate(rows, 1):
        if not r["doc"].strip() or not r["claim"].strip():
            raise InputError(f"{input}: row {n}: empty doc or claim")
    c = make_checker(checker, model)
    if chunk_words:
        c.chunk_words = chunk_words
    checks = c.score([r["doc"] for r in rows], [r["claim"] for r in rows], threshold=threshold, progress=True)
    write_jsonl(out, ({**r, "prob": k.prob, "label": k.label, "best_chunk": k.best_chunk,
                       "chunk_probs": list(k.chunk_probs)} for r, k in zip(rows, checks)))
    typer.echo(f"wrote {len(rows)} rows to {out}; {sum(k.label for k in checks)} supported")


def _read_docs(path: Path) -> list[str]:
    """Documents from .txt (one per line), or JSONL rows with a "text", "doc" or "text_a" field."""
    import json

    if not path.exists():
        raise InputError(f"{path}: no such file")
    docs = []
    for n, line in enumerate(path.open(encoding="utf-8"), 1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            docs.append(line.strip())
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        text = next((row[k] for k in ("text", "doc", "text_a") if isinstance(row, dict) and k in row), None)
        if not isinstance(text, str):
            raise InputError(f'{path}:{n}: a document row needs a string field "text", "doc" or "text_a"')
        if "orig_label" in row and str(row["orig_label"]) == "0":
            continue  # a CG2C file: its negatives are rewrites of its positives' documents
        docs.append(text)
    return list(dict.fromkeys(d for d in docs if d.strip()))


def synth_cmd(
    docs: Path = typer.Option(..., help='Documents: .txt (one per line) or JSONL with "text", "doc" or "text_a".'),
    out: Path = typer.Option(..., "--out", "-o", help="CG2C JSONL (FactCG's schema); provenance in OUT.meta.jsonl."),
    mode: str = typer.Option("offline", help="offline (entity extractor + sentence deletion) or llm (the paper's "
                                             "steps through the client)."),
    client: str = typer.Option("smollm2-135m-instruct", help="Chat model for the engine, or http (an OpenAI-"
                               "compatible endpoint from TRLM_JUDGE_BASE_URL / _MODEL / _API_KEY)."),
    claim_writer: str = typer.Option("llm", help="offline mode: llm (the client writes the claim) or extract "
                                                 "(the chain's sentences are the claim; needs no model)."),
    hops: str = typer.Option("2,3", help="Chain lengths (edges), drawn uniformly per document."),
    limit: Optional[int] = typer.Option(None, help="First N documents."),
    repeat: int = typer.Option(1, help="Chains sampled per document (each a new claim)."),
    filter_checker: Optional[str] = typer.Option(None, help="Keep only pairs this checker gets wrong (FactCG's "
                                                 "hard-example filter). " + CheckerHelp),
    seed: int = typer.Option(0),
):
    """CG2C: multi-hop claims from context graphs; supported / not-supported pairs by construction."""
    from trlm.core.cache import ResultCache
    from trlm.core.io import write_jsonl
    from trlm.core.llm import CachedClient, make_client
    from trlm.factcheck.synth import SynthArgs, synthesize

    hop_list = tuple(split_list(hops, "--hops", int))
    args = SynthArgs(mode=mode, hops=hop_list, claim_writer=claim_writer, seed=seed)
    texts = _read_docs(docs)[:limit] if limit else _read_docs(docs)
    if not texts:
        raise InputError(f"{docs}: no documents")
    chat = None
    if mode == "llm" or claim_writer == "llm":
        chat = CachedClient(make_client(client), ResultCache(out.with_suffix(".cache.jsonl"), {"client": client}))
    res = synthesize(texts * repeat, chat, args, progress=True)
    rows, meta = res.rows, res.meta
    if filter_checker and rows:
        from trlm.factcheck.checkers import make_checker

        checks = make_checker(filter_checker).score([r["text_a"] for r in rows], [r["text_b"][0] for r in rows],
                                                    progress=True)
        keep = [i for i, (r, k) in enumerate(zip(rows, checks)) if k.label != r["orig_label"]]
        res.stats["filtered_out_rows"] = len(rows) - len(keep)
        rows, meta = [rows[i] for i in keep], [meta[i] for i in keep]
    write_jsonl(out, rows)
    write_jsonl(out.with_suffix(".meta.jsonl"), meta)
    stats = ", ".join(f"{k} {v}" for k, v in sorted(res.stats.items()))
    typer.echo(f"wrote {len(rows)} rows ({sum(r['orig_label'] for r in rows)} supported) to {out}; documents: {stats}")


def train_cmd(
    data: List[Path] = typer.Option(..., "--data", help="CG2C JSONL or {doc, claim, label} JSONL; repeat the flag."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints/, model/, metrics.jsonl "
                             "(--kind features: checker.json)."),
    kind: str = typer.Option("cross-encoder", help="cross-encoder (MiniLM + 2-way head on the training loop) or "
                             "features (frozen MiniLM + lexical features, a logistic regression: minutes on a CPU)."),
    epochs: float = typer.Option(1.0, help="Passes over the training pairs (FactCG: 1 per stage)."),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(1e-4, help="Peak learning rate (6 % linear warmup, then cosine to 0)."),
    init: str = typer.Option("all-minilm-l6-v2", help="Backbone: all-minilm-l6-v2 or a checker directory (a second "
                                                      "stage)."),
    chunk_words: Optional[int] = typer.Option(None, help="Chunk size the checker is used with, saved with it "
                                              "(default: 300 for the cross-encoder, 550 for features)."),
    limit_per_file: Optional[int] = typer.Option(None, help="At most N pairs per file (label-stratified)."),
    max_length: int = typer.Option(512, help="Word pieces per training pair (the document is cut first)."),
    save_every: int = typer.Option(100, help="Steps between checkpoints."),
    seed: int = typer.Option(0),
    time_limit: float = typer.Option(0.0, help="Minutes; stop with a checkpoint once exceeded (0 = no limit)."),
    threads: int = typer.Option(0, help="CPU threads (0 = torch default)."),
    device: Optional[str] = typer.Option(None, help="cuda, mps or cpu (default: auto-detect)."),
):
    """Train a checker: a cross-encoder on the project's loop (rerun to resume) or a feature checker."""
    from trlm.core.io import check_choice

    check_choice(kind, ("cross-encoder", "features"), "--kind")
    if kind == "features":
        from trlm.factcheck.data import training_pairs
        from trlm.factcheck.features import fit_features

        pairs = training_pairs(data, limit_per_file, seed)
        spec = fit_features(pairs, out, chunk_words=chunk_words or 550,
                            sources=[str(f) for f in data])
        t = spec["training"]
        typer.echo(f"fitted a feature checker on {t['pairs']} pairs ({t['supported']} supported); in-sample BAcc "
                   f"{t['bacc_in_sample']:.3f}; wrote {out / 'checker.json'}")
        return
    from trlm.factcheck.train import train_checker

    r = train_checker(data, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, init=init,
                      chunk_words=chunk_words or 300, limit_per_file=limit_per_file, max_length=max_length,
                      save_every=save_every,
                      time_limit=time_limit, threads=threads, device=device)
    typer.echo(f"trained {r.steps} steps; train loss {r.train_loss:.4f}"
               + (f", held-out loss {r.eval_loss:.4f}" if r.eval_loss is not None else "")
               + f"; model in {r.model_dir}")


def bench_factcheck_cmd(
    out: Path = typer.Option(Path("runs/bench_factcheck"), "--out", "-o"),
    data: Optional[List[Path]] = typer.Option(None, "--data", help="A dataset file (SummaC JSON, WiCE, Factcheck-GPT, "
                                              "CG2C or {doc, claim, label} JSONL) or the shared data folder; repeat."),
    data_dir: Optional[Path] = typer.Option(None, help="Shared data folder (default ../shared/data or $TRLM_DATA)."),
    checkers: str = typer.Option("smollm2-yesno,trlm-ba,trlm-fo,forward-pmi",
                                 help="Comma-separated checkers; NAME=DIR shows a trained checker as NAME."),
    limit: Optional[int] = typer.Option(None, help="N pairs per dataset, label-stratified (default: all)."),
    calibration_pairs: int = typer.Option(400, help="CG2C-Doc pairs the PMI checkers are calibrated on (0 = "
                                                    "use the built-in calibration)."),
    fgpt_irrelevant: str = typer.Option("drop", help="Factcheck-GPT irrelevant evidence: drop or unsupported."),
    seed: int = typer.Option(0),
):
    """Balanced accuracy (fixed and tuned threshold) per dataset and checker; results.json, report.md, bacc.png."""
    from trlm.core.io import check_choice
    from trlm.factcheck.bench import run_bench

    check_choice(fgpt_irrelevant, ("drop", "unsupported"), "--fgpt-irrelevant")
    names = split_list(checkers, "--checkers")
    if not names:
        raise InputError("--checkers: give at least one checker")
    run_bench(out, data_dir or default_data_dir(), names, files=data or (), limit=limit, seed=seed,
              calibration_pairs=calibration_pairs, fgpt_irrelevant=fgpt_irrelevant)
    echo_report(out)

"""Citation benchmark: WiCE (gold supporting sentences) or CNN/DM highlights (unsupervised similarity).

    trlm bench cite --data ../shared/data/wice/entailment_retrieval_claim/dev.jsonl --out runs/cite \\
        --scorers trlm-fo,forward-mean --searches linear --limit 60
    trlm bench cite --data ../shared/data/cnndm_realsumm --out runs/cite_cnndm --limit 5

**WiCE.** Claims labelled supported or partially_supported (not_supported ones have no gold sentences).
``top1`` = the first citation lies in any gold set; ``recall@3`` = the best, over the gold sets, fraction of
a set's sentences found among the top 3 citations. For binary search the top-1 is its final one-sentence
span and the "top 3" the widest span of at most 3 sentences on its path. Baselines rank sentences by BM25
(``bm25s`` over the claim's source) and by MiniLM cosine to the claim. ``results.json``:
``{"<search>/<scorer>": {"top1", "recall@3", "n_claims", "supported": {...}, "partially_supported": {...}},
"bm25": {...}, "minilm": {...}}``; ``per_claim.json`` holds every claim's metrics per method, and the report
adds each scorer's top-1 minus forward-mean's and BM25's on the same claims with a paired bootstrap 95 % CI.

**CNN/DM** (the paper's protocol, no gold labels). Each highlight sentence is cited by linear search over
the article's sentences; reported are the mean MiniLM cosine and ROUGE-L F1 (``rouge_score``, stemmed)
between the highlight and its citation, x100. The ``minilm`` baseline picks by that same cosine, so it is an
upper bound on the cosine column. Results are rewritten after each method, so a cut run keeps what finished.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from trlm.cite.attribution import SEARCHES, binary_search, exclusion_search, linear_search, linear_search_many
from trlm.core.io import InputError, read_jsonl, require_path, write_json, write_text
from trlm.core.report import fmt, paired_diff_ci, write_results

log = logging.getLogger(__name__)
LABELS = ("supported", "partially_supported")


@dataclass(frozen=True)
class Claim:
    claim: str
    sentences: tuple[str, ...]
    gold: tuple[frozenset[int], ...]  # alternative sets of supporting sentence indices (0-based)
    label: str


def load_wice(path: str | Path, limit: int | None = None, max_source_sentences: int | None = None,
              skip: int = 0) -> list[Claim]:
    """Supported and partially supported WiCE claims, in file order: ``limit`` of those that qualify, after the
    first ``skip`` (a long run split into shards, or finished after its cache was lost)."""
    rows = read_jsonl(require_path(path, "WiCE file"),
                      {"claim": str, "evidence": list, "supporting_sentences": list, "label": str})
    out = []
    for n, r in enumerate(rows, 1):
        if r["label"] not in LABELS:
            continue
        sents = tuple(s if s.strip() else "(empty)" for s in r["evidence"])
        gold = tuple(frozenset(int(i) for i in g) for g in r["supporting_sentences"] if g)
        if not gold:
            raise InputError(f"{path}: row {n}: a {r['label']} claim without supporting_sentences")
        if any(i < 0 or i >= len(sents) for g in gold for i in g):
            raise InputError(f"{path}: row {n}: a supporting sentence index is outside evidence[0:{len(sents)}]")
        if max_source_sentences and len(sents) > max_source_sentences:
            continue
        if skip > 0:
            skip -= 1
            continue
        out.append(Claim(r["claim"], sents, gold, r["label"]))
        if limit and len(out) >= limit:
            break
    if not out:
        raise InputError(f"{path}: no supported or partially_supported claims selected")
    return out


def claim_metrics(ranked: Sequence[int], gold: Sequence[frozenset[int]]) -> tuple[float, float]:
    """(top1, recall@3) of one ranked citation list against alternative gold sets."""
    top1 = float(bool(ranked) and any(ranked[0] in g for g in gold))
    top3 = set(ranked[:3])
    return top1, max(len(g & top3) / len(g) for g in gold)


def _summary(per_claim: list[tuple[str, float, float]]) -> dict:
    def agg(rows):
        return {"top1": float(np.mean([r[1] for r in rows])) if rows else None,  # None: no claim of that label
                "recall@3": float(np.mean([r[2] for r in rows])) if rows else None, "n_claims": len(rows)}

    out = agg(per_claim)
    for lab in LABELS:
        out[lab] = agg([r for r in per_claim if r[0] == lab])
    return out


def _bm25_rank(query: str, sentences: Sequence[str]) -> list[int]:
    from trlm.retrieve.first_stage import BM25Index

    # every sentence, best first; ties (often several at score 0) in source order
    return [h.index for h in BM25Index({str(i): s for i, s in enumerate(sentences)}).search([query], len(sentences))[0]]


def _minilm_rank(query: str, sentences: Sequence[str]) -> tuple[list[int], np.ndarray]:
    from trlm.core.embed import embed

    e = embed([query, *sentences])
    sims = e[1:] @ e[0]  # (N,)
    return [int(i) for i in np.argsort(-sims, kind="stable")], sims


def run_bench_cite(
    data: str | Path,
    out: str | Path,
    *,
    scorers: Sequence[str] = ("trlm-fo", "forward-mean"),
    searches: Sequence[str] = ("linear",),
    limit: int | None = None,
    max_source_sentences: int | None = None,
    pick: str = "lowest",
    chunk: int = 5,
    skip: int = 0,
) -> dict[str, dict]:
    """WiCE when ``data`` is a JSONL file, CNN/DM when it is a folder; writes results and returns them."""
    bad = [s for s in searches if s not in SEARCHES]
    if bad:
        raise ValueError(f"unknown search {bad}; choose from {', '.join(SEARCHES)}")
    if skip < 0:
        raise ValueError(f"skip (--skip) must be >= 0, got {skip}")
    data = require_path(data, "citation data")
    if data.is_dir():
        return _run_cnndm(data, Path(out), scorers, limit, skip)
    return _run_wice(data, Path(out), scorers, searches, limit, max_source_sentences, pick, chunk, skip)


def _cached_scorer(name: str, out: Path, max_tokens: int):
    """A citation scorer whose scores are kept in ``out/scores_<name>_<max_tokens>.jsonl``: a killed run resumes
    without rescoring (its timing then counts only the new calls)."""
    from trlm.core.cache import CachedScorer, ResultCache
    from trlm.scoring import make_scorer
    from trlm.scoring.scorers import DEFAULT_MODELS, FORWARD_DEFAULT

    config = {"scorer": name, "task": "citation", "max_response_tokens": max_tokens,
              "model": DEFAULT_MODELS.get(name, FORWARD_DEFAULT)}
    return CachedScorer(make_scorer(name, task="citation", max_response_tokens=max_tokens),
                        ResultCache(out / f"scores_{name}_{max_tokens}.jsonl", config))


def _run_wice(data, out, scorers, searches, limit, max_source_sentences, pick, chunk, skip) -> dict[str, dict]:
    from tqdm.auto import tqdm

    claims = load_wice(data, limit, max_source_sentences, skip)
    config = {"data": str(data), "n_claims": len(claims), "skip": skip, "limit": limit, "pick": pick,
              "max_source_sentences": max_source_sentences, "sentences": sum(len(c.sentences) for c in claims)}
    results: dict[str, dict] = {}
    speed: dict[str, dict] = {}

    def save(key, per_claim, dt, calls):
        results[key] = _summary(per_claim)
        speed[key] = {"seconds": dt, "claims_per_s": len(per_claim) / dt if dt else 0.0,
                      "calls_per_s": calls / dt if dt else 0.0, "calls": calls}
        per = {k: v[0] for k, v in state.items()}
        write_results(out, results)
        write_json(out / "throughput.json", {"config": config, "throughput": speed})
        write_json(out / "per_claim.json", {k: [{"label": lab, "top1": t, "recall@3": r} for lab, t, r in v]
                                            for k, v in per.items() if v})
        write_text(out / "report.md", _report(results, speed, config, paired_top1(per)))

    methods: dict[str, tuple[str, object]] = {"bm25": ("baseline", _bm25_rank),
                                               "minilm": ("baseline", lambda q, s: _minilm_rank(q, s)[0])}
    for search in searches:
        for name in scorers:
            # linear scores single sentences; binary and exclusion score long spans, so allow them more tokens
            methods[f"{search}/{name}"] = (search, _cached_scorer(name, out, 256 if search == "linear" else 4096))
    state = {key: ([], [0.0, 0]) for key in methods}  # per-claim metrics, [seconds, scorer calls]
    bar = tqdm(total=len(claims) * len(methods), desc="citing", leave=False)
    # Methods advance together, a chunk of claims at a time, so a run cut short compares them on the same claims.
    for s in range(0, len(claims), chunk):
        part = claims[s:s + chunk]
        for key, (search, sc) in methods.items():
            per, cost = state[key]
            computed0 = 0 if search == "baseline" else sc.computed
            t0 = time.perf_counter()
            if search == "baseline":
                ranks = [sc(c.claim, c.sentences) for c in part]
            elif search == "linear":
                ranks = [[x.index for x in r] for r in linear_search_many([(c.claim, c.sentences) for c in part], sc)]
            elif search == "binary":
                ranks = []
                for c in part:
                    span = binary_search(c.claim, c.sentences, sc)
                    s3, e3 = span.within(3)
                    ranks.append([span.start] + [i for i in range(s3, e3) if i != span.start])
            else:
                ranks = [[x.index for x in exclusion_search(c.claim, c.sentences, sc, pick=pick)] for c in part]
            cost[0] += time.perf_counter() - t0
            if search != "baseline":  # responses actually scored: a resumed run's cached scores cost nothing
                cost[1] += sc.computed - computed0
            per += [(c.label, *claim_metrics(r, c.gold)) for c, r in zip(part, ranks)]
            save(key, per, *cost)
            bar.update(len(part))
        log.info("%d/%d claims: %s", len(state["bm25"][0]), len(claims),
                 {k: round(r["top1"], 3) for k, r in results.items()})
    bar.close()
    return results


def paired_top1(per_claim: dict[str, list[tuple[str, float, float]]],
                baselines: Sequence[str] = ("linear/forward-mean", "bm25")) -> list[dict]:
    """Top-1 of each scorer method minus each baseline's on the claims both have (methods advance together, so
    these are the same first claims), with a paired bootstrap 95 % CI."""
    rows = []
    for base in baselines:
        for key, per in per_claim.items():
            if key == base or key in ("bm25", "minilm") or not per or not per_claim.get(base):
                continue
            n = min(len(per), len(per_claim[base]))
            d, lo, hi = paired_diff_ci([r[1] for r in per[:n]], [r[1] for r in per_claim[base][:n]])
            rows.append({"method": key, "baseline": base, "diff": d, "ci95": [lo, hi], "n_claims": n})
    return rows


def _report(results: dict, speed: dict, config: dict, paired: Sequence[dict] = ()) -> str:
    lines = ["# Citation benchmark (WiCE)", "",
             f"Data `{config['data']}`: {config['n_claims']} supported / partially supported claims "
             + (f"(after the first {config['skip']}) " if config.get("skip") else "")
             + f"({config['sentences']} source sentences"
             + (f"; sources of at most {config['max_source_sentences']} sentences" if config["max_source_sentences"]
                else "") + f"). Exclusion search picks the `{config['pick']}` score after removal.", "",
             "| method | top1 | recall@3 | claims | top1 supported | top1 partial | r@3 supported | r@3 partial "
             "| seconds | scorer calls/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    f = fmt
    for k, r in results.items():
        s, p, sp = r["supported"], r["partially_supported"], speed.get(k, {})
        lines.append(f"| {k} | {f(r['top1'])} | {f(r['recall@3'])} | {r['n_claims']} | {f(s['top1'])} "
                     f"({s['n_claims']}) | {f(p['top1'])} ({p['n_claims']}) | {f(s['recall@3'])} | "
                     f"{f(p['recall@3'])} | {sp.get('seconds', 0):.0f} | {_rate(k, sp)} |")
    if paired:
        lines += ["", "Top-1 differences on the same claims (paired bootstrap 95 % CI; `per_claim.json` has every "
                  "claim's metrics):", "", "| method | minus | top1 difference | 95 % CI | claims |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['baseline']} | {r['diff']:+.3f} | {r['ci95'][0]:+.3f} to "
                  f"{r['ci95'][1]:+.3f} | {r['n_claims']} |" for r in paired]
    return "\n".join(lines) + "\n"


def _rate(method: str, speed: dict) -> str:
    """Scorer calls per second; "cached" for a scorer whose scores all came from the run folder's cache."""
    if "/" not in method:
        return "–"
    return f"{speed['calls_per_s']:.2f}" if speed.get("calls") else "cached"


def split_cnndm(text: str) -> list[str]:
    """Sentences of a REALSumm line (lower-cased, tokenised; ``<t> ... </t>`` markers, " ." ends sentences)."""
    text = re.sub(r"</?t>", " ", text)
    parts = re.split(r"(?<=\s[.!?])(?:\s+|(?=\S))", " " + text.strip())
    return [p.strip() for p in parts if re.search(r"\w", p)]


def _run_cnndm(data: Path, out: Path, scorers: Sequence[str], limit: int | None, skip: int) -> dict[str, dict]:
    from rouge_score import rouge_scorer
    from tqdm.auto import tqdm

    from trlm.core.embed import embed

    arts = require_path(data / "src_articles.txt", "src_articles.txt").read_text(encoding="utf-8").splitlines()
    highs = require_path(data / "ref_highlights.txt", "ref_highlights.txt").read_text(encoding="utf-8").splitlines()
    if len(arts) != len(highs):
        raise InputError(f"{data}: {len(arts)} articles but {len(highs)} highlight lines; they must align")
    docs = [(split_cnndm(a), split_cnndm(h)) for a, h in list(zip(arts, highs))[skip:][:limit]]
    if not docs:
        raise InputError(f"{data}: no articles after skipping {skip} of {len(arts)}")
    pairs = [(h, sents) for sents, hs in docs for h in hs]
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    config = {"data": str(data), "skip": skip, "n_articles": len(docs), "n_highlights": len(pairs)}
    results: dict[str, dict] = {}
    speed: dict[str, float] = {}
    per: dict[str, dict[str, list]] = {}  # method -> metric (and the pick) -> one value per highlight

    def save(key: str, picks: list[int], dt: float) -> None:
        cited = [sents[j] for (_, sents), j in zip(pairs, picks)]
        hl = [h for h, _ in pairs]
        e = embed(hl + cited)
        cos = (e[: len(hl)] * e[len(hl):]).sum(-1)  # (H,) cosine of unit vectors
        rl = [rouge.score(h, c)["rougeL"].fmeasure for h, c in zip(hl, cited)]
        per[key] = {"minilm_cos": [100 * float(x) for x in cos], "rouge_l": [100 * float(x) for x in rl],
                    "pick": [int(j) for j in picks]}
        results[key] = {"minilm_cos": float(np.mean(per[key]["minilm_cos"])),
                        "rouge_l": float(np.mean(per[key]["rouge_l"])),
                        "n_highlights": len(pairs), "n_articles": len(docs)}
        speed[key] = dt
        paired = paired_cnndm(per)
        write_results(out, results)
        write_json(out / "throughput.json", {"config": config, "seconds": speed})
        write_json(out / "per_highlight.json", {"highlights": hl, "methods": per, "paired": paired})
        write_text(out / "report.md", _cnndm_report(config, results, speed, paired))

    for key, rank in (("bm25", _bm25_rank), ("minilm", lambda q, s: _minilm_rank(q, s)[0])):
        t0 = time.perf_counter()
        save(key, [rank(h, sents)[0] for h, sents in pairs], time.perf_counter() - t0)
    for name in scorers:
        sc = _cached_scorer(name, out, 256)
        t0, picks = time.perf_counter(), []
        for h, sents in tqdm(pairs, desc=f"linear/{name}", leave=False):
            picks.append(linear_search(h, sents, sc)[0].index)
        save(f"linear/{name}", picks, time.perf_counter() - t0)
    return results


def _cnndm_report(config: dict, results: dict, speed: dict, paired: Sequence[dict]) -> str:
    lines = ["# Citation benchmark (CNN/DM, unsupervised)", "",
             f"`{config['data']}`: {config['n_articles']} articles"
             + (f" (after the first {config['skip']})" if config["skip"] else "")
             + f", {config['n_highlights']} highlight sentences. Each highlight sentence is cited by linear search; "
             "columns are the mean similarity (x100) of highlight and citation. `minilm` picks by that cosine "
             "(its upper bound).", "",
             "| method | MiniLM cosine | ROUGE-L F1 | highlights | seconds |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {r['minilm_cos']:.1f} | {r['rouge_l']:.1f} | {r['n_highlights']} | {speed[k]:.0f} |"
              for k, r in results.items()]
    if paired:
        lines += ["", "Differences on the same highlights (paired bootstrap 95 % CI; `per_highlight.json` has "
                  "every highlight's values):", "",
                  "| method | minus | MiniLM cosine | 95 % CI | ROUGE-L F1 | 95 % CI |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['baseline']} | {r['minilm_cos'][0]:+.1f} | {r['minilm_cos'][1]:+.1f} to "
                  f"{r['minilm_cos'][2]:+.1f} | {r['rouge_l'][0]:+.1f} | {r['rouge_l'][1]:+.1f} to "
                  f"{r['rouge_l'][2]:+.1f} |" for r in paired]
    return "\n".join(lines) + "\n"


def paired_cnndm(per: dict[str, dict[str, list[float]]],
                 baselines: Sequence[str] = ("linear/forward-mean", "bm25")) -> list[dict]:
    """Each scorer method's per-highlight cosine and ROUGE-L minus each baseline's, as
    ``(mean difference, CI low, CI high)`` from a paired bootstrap (every method cites the same highlights)."""
    return [{"method": key, "baseline": base,
             **{m: list(paired_diff_ci(v[m], per[base][m])) for m in ("minilm_cos", "rouge_l")}}
            for base in baselines if base in per for key, v in per.items() if "/" in key and key != base]

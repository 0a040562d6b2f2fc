"""``trlm bench steer``: AxBench concept detection on an AxBench setting, per method and layer.

    trlm bench steer --out runs/steer                       # Concept10 (2B L10 texts), SmolLM2-135M, layers 10,20
    trlm bench steer --model gemma-3-270m --layers 6,12 --out runs/steer_gemma

For every layer the activations of all training and evaluation texts are collected in one pass (chat template,
prefix dropped), then per concept each method fits a direction on the concept's 72 positives and 72 genre-matched
shared negatives and scores the concept's 36 + 36 evaluation texts (max over tokens of h·w): ROC AUC, hard-negative
accuracy and max_act. Bag-of-words logistic regression reads the response texts; ``prompt`` asks an LLM judge
(default: the model itself, through the chat client) AxBench's 0-2 concept-relevance question about each text.
ReFT-r1 trains its vector on the
same 144 texts with the LM loss (:mod:`trlm.steer.reft`; ``reft_epochs`` epochs, AxBench: 3). Directions are saved to
``OUT/directions/<method>_L<layer>/`` (usable with ``trlm steer generate``); finished (method, layer, concept)
results are kept in ``OUT/cache.jsonl`` so a rerun resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from trlm.core.cache import ResultCache, cache_key
from trlm.core.io import InputError, write_text
from trlm.core.report import fmt, new_figure, save_figure, write_results

log = logging.getLogger(__name__)

PAPER_STEER = {"prompt": 0.698, "reft-r1": 0.633, "diffmean": 0.297, "lat": 0.117, "pca": 0.107, "probe": 0.095}
PAPER_AUC = {"prompt": 0.910, "reft-r1": 0.952, "diffmean": 0.948, "probe": 0.940, "bow": 0.909, "lat": 0.742,
             "pca": 0.714}  # 2B L10, Concept500


def run_steer_bench(out: Path, setting_dir: Path, *, model: str = "smollm2-135m-instruct",
                    layers: Sequence[int] = (10, 20), methods: Sequence[str] | None = None,
                    concepts: Sequence[int] | None = None, detection_only: bool = False,
                    steer_methods: Sequence[str] = ("prompt", "reft-r1", "diffmean"),
                    factors: Sequence[float] | None = None,
                    judge: str = "proxy", max_new_tokens: int = 64, data_root: Path | None = None,
                    reft_epochs: int = 1, reft_layers: Sequence[int] | None = None,
                    detection_judge: str | None = None, progress: bool = True) -> dict:
    """Detection for every method x layer; then (unless ``detection_only``) steering at the first layer."""
    import torch

    from trlm.core.engine import Engine
    from trlm.steer.activations import collect
    from trlm.steer.data import load_setting
    from trlm.steer.detect import Direction, detection, fit_concept, roc_auc, save_directions
    from trlm.steer.methods import DETECTION_METHODS, DIRECTION_METHODS, bow_scores

    allowed = (*DETECTION_METHODS, "reft-r1", "prompt")
    methods = list(methods or allowed)
    bad = [m for m in methods if m not in allowed]
    if bad:
        raise InputError(f"--methods: unknown {bad[0]!r}; choose from {', '.join(allowed)}")
    setting = load_setting(setting_dir)
    cids = list(concepts) if concepts else [c.id for c in setting.concepts]
    out = Path(out)
    cache = ResultCache(out / "cache.jsonl", {"setting": str(setting_dir), "model": model, "reft_epochs": reft_epochs})
    reft_layers = list(reft_layers or layers[:1])  # ReFT-r1 trains through the model: by default only where we steer
    if set(reft_layers) - set(layers):
        raise InputError(f"--reft-layers {reft_layers} must be among --layers {list(layers)}")

    def layers_of(m: str) -> list:
        return [None] if m in ("bow", "prompt") else reft_layers if m == "reft-r1" else list(layers)

    todo = [(m, layer, c) for m in methods for layer in layers_of(m) for c in cids
            if cache.get(cache_key(m, layer, c)) is None]
    eng = None
    if any(m not in ("bow", "prompt") for m, _, _ in todo):
        eng = Engine.load(model, dtype="float32", device="cpu")
        train = sorted({e for c in cids for e in setting.training_set(c)}, key=setting.train.index)
        evals = [e for c in cids for e in setting.eval_set(c, hard=False)]
        evals += [e for c in cids for e in setting.eval_set(c, hard=True) if e.label == "hard negative"]
        log.warning("collecting %s activations of %d training and %d evaluation texts at layers %s", model,
                    len(train), len(evals), list(layers))
        train_acts = collect(eng, train, layers, progress=progress)
        eval_acts = collect(eng, evals, layers, progress=progress)
        t_index = {e: i for i, e in enumerate(train)}
        for m, layer, c in todo:
            if m in ("bow", "prompt"):
                continue
            tr = setting.training_set(c)
            if m == "reft-r1":
                from trlm.steer.reft import fit_reft

                w = fit_reft(model, layer, tr, out / "reft" / f"L{layer}_c{c}", epochs=reft_epochs, progress=progress)
            else:
                pos = [t_index[e] for e in tr if e.label == "positive"]
                neg = [t_index[e] for e in tr if e.label != "positive"]
                w = fit_concept(m, train_acts, layer, pos, neg)
            rows = [i for i, e in enumerate(evals) if e.concept_id == c]
            sub = type(eval_acts)(eval_acts.layers, {layer: [eval_acts.tokens[layer][i] for i in rows]})
            res = detection(w, sub, layer, [evals[i].label for i in rows], relu=m == "reft-r1")
            cache.put(cache_key(m, layer, c), {**res, "w": w.tolist()})
    for m, layer, c in todo:
        if m != "prompt":
            continue
        from trlm.core.llm import make_client
        from trlm.steer.judge import concept_relevance

        ev = setting.eval_set(c)
        scores = concept_relevance(make_client(detection_judge or model), setting.concept(c).description,
                                   [e.response for e in ev])
        cache.put(cache_key(m, layer, c), {"auc": roc_auc(scores, [int(e.label == "positive") for e in ev]),
                                           "ratings": scores})
    for m, layer, c in todo:
        if m != "bow":
            continue
        tr, ev = setting.training_set(c), setting.eval_set(c)
        p = bow_scores([e.response for e in tr], [int(e.label == "positive") for e in tr], [e.response for e in ev])
        cache.put(cache_key(m, layer, c), {"auc": roc_auc(p, [int(e.label == "positive") for e in ev])})

    detection_out: dict[str, dict] = {}
    for m in methods:
        m_layers = layers_of(m)
        per = {str(layer): {str(c): cache.get(cache_key(m, layer, c))["auc"] for c in cids} for layer in m_layers}
        by_layer = {k: sum(v.values()) / len(v) for k, v in per.items()}
        hard = [cache.get(cache_key(m, layer, c)).get("hard_negative_accuracy") for layer in m_layers for c in cids]
        hard = [h for h in hard if h is not None]
        detection_out[m] = {"auc": sum(by_layer.values()) / len(by_layer), "by_layer": by_layer, "per_concept": per,
                            "hard_negative_accuracy": sum(hard) / len(hard) if hard else None}
        if m in (*DIRECTION_METHODS, "reft-r1"):
            for layer in m_layers:
                ds = [Direction(c, torch.tensor(cache.get(cache_key(m, layer, c))["w"]),
                                cache.get(cache_key(m, layer, c))["max_act"]) for c in cids]
                save_directions(out / "directions" / f"{m}_L{layer}", m, layer, model, ds)
    summary = {"setting": str(setting_dir), "model": model, "layers": list(layers), "concepts": cids,
               "detection": detection_out, "paper_2b_l10_auc": PAPER_AUC}
    if not detection_only:
        from trlm.core.io import default_data_dir

        eng = eng or Engine.load(model, dtype="float32", device="cpu")
        summary["steering"] = _steering(eng, setting, cache, cids, layers[0], steer_methods, factors, judge,
                                        max_new_tokens, data_root or default_data_dir())
        summary["steering_judge"] = judge + (" (PROXY: MiniLM concept classifier, MiniLM instruction similarity, "
                                             "perplexity-ratio fluency; not the AxBench LLM judge)"
                                             if judge == "proxy" else "")
        _plot_factors(summary["steering"], out / "steer_factors.png")
    write_results(out, summary)
    _plot(detection_out, layers, out / "steer_detection.png")
    write_text(out / "report.md", _report(summary))
    return summary


def _steering(eng, setting, cache: ResultCache, cids, layer: int, methods, factors, judge_spec: str,
              max_new_tokens: int, data_root: Path) -> dict:
    import torch
    from tqdm.auto import tqdm

    from trlm.steer.detect import Direction
    from trlm.steer.judge import LLMJudge, ProxyJudge
    from trlm.steer.steering import FACTORS, evaluate_method, generate, instructions_for, perplexities

    bad = [m for m in methods if m != "prompt" and cache.get(cache_key(m, layer, cids[0])) is None]
    if bad:
        raise InputError(f"--steer-methods: {bad[0]!r} needs its detection run at layer {layer} (add it to --methods)")
    factors = list(factors or FACTORS)
    if judge_spec == "proxy":
        judge = ProxyJudge()
    else:
        from trlm.core.llm import make_client

        judge = LLMJudge(make_client(judge_spec))
    instr = instructions_for(data_root, cids)
    per: dict[str, dict] = {m: {} for m in methods}
    for c in tqdm(cids, desc="steering", leave=False):
        concept = setting.concept(c).description
        if isinstance(judge, ProxyJudge):
            tr = setting.training_set(c)
            judge.fit_concept(concept, [e.response for e in tr if e.label == "positive"],
                              [e.response for e in tr if e.label != "positive"])
        key = cache_key("reference", c, max_new_tokens, instr[c])
        ref = cache.get(key)
        if ref is None:
            answers = generate(eng, instr[c], max_new_tokens=max_new_tokens)
            ref = {"answers": answers, "ppl": perplexities(eng, instr[c], answers)}
            cache.put(key, ref)
        for m in methods:
            d = None
            if m != "prompt":
                hit = cache.get(cache_key(m, layer, c))
                d = Direction(c, torch.tensor(hit["w"]), hit["max_act"])
            per[m][str(c)] = evaluate_method(eng, judge, concept, c, instr[c], m, direction=d, layer=layer,
                                             factors=factors, max_new_tokens=max_new_tokens, reference=ref["answers"],
                                             reference_ppl=ref["ppl"], cache=cache)
    out = {}
    for m, rows in per.items():
        curve = {f: sum(r["by_factor"][f]["mean"] for r in rows.values()) / len(rows)
                 for f in next(iter(rows.values()))["by_factor"]}
        out[m] = {"score": sum(r["score"] for r in rows.values()) / len(rows),
                  "factor": sum(r["factor"] for r in rows.values()) / len(rows),
                  "layer": layer if m != "prompt" else None,
                  "factor_curve": curve, "per_concept": rows}
    return out


def _plot_factors(steering: dict, path: Path) -> None:
    fig, ax = new_figure(figsize=(7, 4))
    for m, r in steering.items():
        xs = [float(f) for f in r["factor_curve"]]
        ys = list(r["factor_curve"].values())
        if m == "prompt":
            ax.axhline(ys[0], ls="--", color="black", label="prompt")
        else:
            ax.plot(xs, ys, marker="o", label=m)
    ax.set(xscale="log", xlabel="factor (α = factor × max_act)", ylabel="mean harmonic score (0-2), all 10 instr.",
           title="steering: score vs factor")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _plot(det: dict, layers: Sequence[int], path: Path) -> None:
    fig, ax = new_figure(figsize=(8, 4))
    names = list(det)
    width = 0.8 / (len(layers) + 1)
    for k, layer in enumerate(layers):
        ax.bar([i + k * width for i in range(len(names))], [det[m]["by_layer"].get(str(layer), float("nan"))
                                                             if m != "bow" else float("nan") for m in names],
               width, label=f"layer {layer}")
    ax.bar([i + len(layers) * width for i in range(len(names))],
           [det[m]["by_layer"]["None"] if m in ("bow", "prompt") else float("nan") for m in names], width,
           label="text (BoW, prompt)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks([i + width * len(layers) / 2 for i in range(len(names))], names)
    ax.set(ylabel="mean ROC AUC over concepts", ylim=(0.4, 1.0), title="concept detection")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _report(s: dict) -> str:
    det, layers = s["detection"], s["layers"]
    head = ("| method | " + " | ".join(f"AUC L{layer}" for layer in layers)
            + " | mean AUC | hard-neg acc | paper 2B L10 |")
    lines = [f"# Concept detection ({s['model']}, {len(s['concepts'])} concepts of {s['setting']})", "",
             "ROC AUC of max-over-tokens latents, 36 positives vs 36 negatives per concept, averaged over concepts. "
             "Hard-negative accuracy: mean of positive and hard-negative accuracy at the Youden threshold.", "",
             head, "|---|" + "---:|" * (len(layers) + 3)]
    for m, r in det.items():
        cells = [fmt(r["by_layer"].get(str(layer))) for layer in layers]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {fmt(r['auc'])} | {fmt(r['hard_negative_accuracy'])} | "
                     f"{fmt(s['paper_2b_l10_auc'].get(m))} |")
    lines += ["", "![detection](steer_detection.png)", ""]
    if "steering" in s:
        lines += ["## Steering", "", f"Judge: {s['steering_judge']}. Per concept the factor is chosen on 5 "
                  "instructions and the mean harmonic score (0-2) reported on the other 5; averaged over concepts.", "",
                  "| method | score | mean selected factor | paper 2B L10 |", "|---|---:|---:|---:|"]
        for m, r in s["steering"].items():
            lines.append(f"| {m} | {fmt(r['score'])} | {fmt(r['factor'], 2) if m != 'prompt' else '–'} | "
                         f"{fmt(PAPER_STEER.get(m))} |")
        lines += ["", "![factors](steer_factors.png)", ""]
    return "\n".join(lines)

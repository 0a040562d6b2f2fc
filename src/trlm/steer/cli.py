"""``trlm steer fit|detect|generate`` and ``trlm bench steer``.

    trlm steer fit --method diffmean --layer 10 --out runs/steer/diffmean_L10
    trlm steer detect --directions runs/steer/diffmean_L10
    trlm steer generate --directions runs/steer/diffmean_L10 --concept 3 --factor 1.0 --prompt "Tell me about Rome."
    trlm bench steer --out runs/steer
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trlm.core.io import default_data_dir, split_list
from trlm.core.options import echo_report

steer_app = typer.Typer(help="Concept directions (AxBench): fit, detect, steer generation.", no_args_is_help=True)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    steer_app.command("fit")(fit_cmd)
    steer_app.command("detect")(detect_cmd)
    steer_app.command("generate")(generate_cmd)
    app.add_typer(steer_app, name="steer")
    bench.command("steer")(bench_steer_cmd)


def _setting(data: Optional[Path]) -> Path:
    from trlm.steer.data import DEFAULT_SETTING

    return data or default_data_dir() / DEFAULT_SETTING


def _concepts(text: Optional[str]) -> Optional[list[int]]:
    return split_list(text, "--concepts", int) or None


def fit_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for directions.json + directions.safetensors."),
    method: str = typer.Option("diffmean", help="diffmean, pca, lat, probe or reft-r1 (trains through the model)."),
    layer: int = typer.Option(..., help="Decoder block whose output (residual stream) is read."),
    data: Optional[Path] = typer.Option(None, help="AxBench setting directory (default: Concept10 2B L10)."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model whose activations are read."),
    concepts: Optional[str] = typer.Option(None, help="Comma-separated concept ids (default: all)."),
    reft_epochs: int = typer.Option(3, help="reft-r1: training epochs per concept (AxBench: 3)."),
):
    """Fit one direction per concept on its training texts; max_act comes from its evaluation texts."""
    from trlm.core.engine import Engine
    from trlm.steer.activations import collect
    from trlm.steer.data import load_setting
    from trlm.steer.detect import Direction, detection, fit_concept, save_directions
    from trlm.steer.methods import DIRECTION_METHODS

    if method not in (*DIRECTION_METHODS, "reft-r1"):
        raise ValueError(f"--method must be one of {', '.join(DIRECTION_METHODS)}, reft-r1 (bow reads text; see "
                         "bench steer)")
    setting = load_setting(_setting(data))
    eng = Engine.load(model, dtype="float32", device="cpu")
    dirs = []
    for c in _concepts(concepts) or [c.id for c in setting.concepts]:
        tr, ev = setting.training_set(c), setting.eval_set(c)
        if method == "reft-r1":
            from trlm.steer.reft import fit_reft

            w = fit_reft(model, layer, tr, out / "reft" / f"c{c}", epochs=reft_epochs, progress=True)
        else:
            acts = collect(eng, tr, [layer], progress=True)
            w = fit_concept(method, acts, layer, [i for i, e in enumerate(tr) if e.label == "positive"],
                            [i for i, e in enumerate(tr) if e.label != "positive"])
        res = detection(w, collect(eng, ev, [layer]), layer, [e.label for e in ev], relu=method == "reft-r1")
        dirs.append(Direction(c, w, res["max_act"]))
        typer.echo(f"concept {c}: AUC {res['auc']:.3f}, max_act {res['max_act']:.2f}")
    save_directions(out, method, layer, model, dirs)
    typer.echo(f"wrote {len(dirs)} directions to {out}")


def detect_cmd(
    directions: Path = typer.Option(..., help="Directory written by `trlm steer fit`."),
    data: Optional[Path] = typer.Option(None, help="AxBench setting directory (default: Concept10 2B L10)."),
):
    """Score each concept's evaluation texts with its saved direction; print ROC AUC per concept."""
    from trlm.core.engine import Engine
    from trlm.steer.activations import collect
    from trlm.steer.data import load_setting
    from trlm.steer.detect import detection, load_directions

    meta, dirs = load_directions(directions)
    setting = load_setting(_setting(data))
    eng = Engine.load(meta["model"], dtype="float32", device="cpu")
    aucs = []
    for c, d in dirs.items():
        ev = setting.eval_set(c) + [e for e in setting.eval_set(c, hard=True) if e.label == "hard negative"]
        res = detection(d.w, collect(eng, ev, [meta["layer"]]), meta["layer"], [e.label for e in ev],
                        relu=meta["method"] == "reft-r1")
        aucs.append(res["auc"])
        typer.echo(f"concept {c}: AUC {res['auc']:.3f}")
    typer.echo(f"mean AUC {sum(aucs) / len(aucs):.3f} ({meta['method']}, layer {meta['layer']}, {meta['model']})")


def generate_cmd(
    directions: Path = typer.Option(..., help="Directory written by `trlm steer fit` or `trlm bench steer`."),
    concept: int = typer.Option(..., help="Concept id to steer toward."),
    prompt: str = typer.Option(..., help="The instruction (rendered with the chat template)."),
    factor: float = typer.Option(1.0, help="Steering strength: alpha = factor x max_act of the concept."),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(0.0),
    seed: int = typer.Option(0),
):
    """Generate with h + alpha * w added at the direction's layer (every position, first token included)."""
    from trlm.core.engine import Engine
    from trlm.core.schema import GenArgs
    from trlm.steer import Additive, steer
    from trlm.steer.detect import load_directions

    meta, dirs = load_directions(directions)
    if concept not in dirs:
        raise ValueError(f"--concept {concept}: {directions} holds concepts {sorted(dirs)}")
    d = dirs[concept]
    eng = Engine.load(meta["model"], dtype="float32", device="cpu")
    with steer(eng.model, {meta["layer"]: Additive(d.w, factor * d.max_act)}):
        g = eng.generate([eng.chat_prompt(prompt)], GenArgs(max_new_tokens=max_new_tokens, temperature=temperature,
                                                            seed=seed))[0][0]
    typer.echo(g.text)


def bench_steer_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Writes results.json, report.md, steer_detection.png."),
    data: Optional[Path] = typer.Option(None, help="AxBench setting directory (default: Concept10 2B L10)."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model whose activations are read."),
    layers: str = typer.Option("10,20", help="Comma-separated decoder blocks."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated: diffmean, pca, lat, probe, bow, reft-r1, "
                                          "prompt (default all)."),
    concepts: Optional[str] = typer.Option(None, help="Comma-separated concept ids (default: all)."),
    detection_only: bool = typer.Option(False, help="Skip the steering evaluation."),
    steer_methods: str = typer.Option("prompt,reft-r1,diffmean", help="Steering: prompt and/or detection methods."),
    factors: Optional[str] = typer.Option(None, help="Comma-separated steering factors (default 0.5,1,2,4)."),
    full_grid: bool = typer.Option(False, help="AxBench's 14 factors at 128 tokens (hours on a CPU)."),
    judge: str = typer.Option("proxy", help="proxy (offline, labelled a proxy), http (OpenAI-compatible endpoint "
                              "from TRLM_JUDGE_* variables) or a local model name."),
    max_new_tokens: int = typer.Option(64, help="Tokens per steered answer."),
    reft_epochs: int = typer.Option(1, help="ReFT-r1 training epochs per concept (AxBench: 3)."),
    reft_layers: Optional[str] = typer.Option(None, help="Layers ReFT-r1 trains at (default: the first of --layers, "
                                              "where steering is evaluated)."),
    detection_judge: Optional[str] = typer.Option(None, help="Judge of prompt-based detection: a local model (default: "
                                                  "--model) or http (TRLM_JUDGE_* endpoint)."),
):
    """Concept detection (mean ROC AUC per method and layer) and steering (judged score at the selected factor)."""
    from trlm.steer.bench import run_steer_bench

    try:
        lay = split_list(layers, "--layers", int)
    except ValueError:
        raise ValueError(f"--layers must be comma-separated integers, got {layers!r}") from None
    from trlm.steer.steering import FULL_FACTORS

    try:
        fs = FULL_FACTORS if full_grid else split_list(factors, "--factors", float) or None
    except ValueError:
        raise ValueError(f"--factors must be comma-separated numbers, got {factors!r}") from None
    run_steer_bench(out, _setting(data), model=model, layers=lay,
                    methods=split_list(methods, "--methods") or None,
                    concepts=_concepts(concepts), detection_only=detection_only,
                    steer_methods=split_list(steer_methods, "--steer-methods"), factors=fs,
                    judge=judge, max_new_tokens=128 if full_grid else max_new_tokens, reft_epochs=reft_epochs,
                    reft_layers=split_list(reft_layers, "--reft-layers", int) or None,
                    detection_judge=detection_judge)
    echo_report(out)

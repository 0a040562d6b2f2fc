"""Fit concept directions, score detection, and save / load directions with their ``max_act``.

Detection metric (AxBench): per concept, ROC AUC of the example scores with positives = 1 and negatives = 0
(min-max normalisation does not change an AUC), averaged over concepts. Hard negatives: the Youden-J threshold
of positives vs negatives, then the mean of the positives' and the hard negatives' accuracy at it.
``max_act[c]``: the largest latent of w over c's detection-evaluation examples (50 if it is ≤ 0), the unit of the
steering factor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from trlm.core.io import InputError, atomic_open, write_json
from trlm.steer.activations import Activations
from trlm.steer.methods import example_scores, fit_direction


@dataclass(frozen=True)
class Direction:
    concept_id: int
    w: torch.Tensor  # (d,) unit
    max_act: float


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(list(labels), list(scores)))


def hard_negative_accuracy(pos: Sequence[float], neg: Sequence[float], hard: Sequence[float]) -> float | None:
    """Mean of positive and hard-negative accuracy at the Youden-J threshold of positives vs negatives."""
    from sklearn.metrics import roc_curve

    if not hard:
        return None
    fpr, tpr, thr = roc_curve([1] * len(pos) + [0] * len(neg), [*pos, *neg])
    cut = thr[int((tpr - fpr).argmax())]
    return 0.5 * (sum(p >= cut for p in pos) / len(pos) + sum(h < cut for h in hard) / len(hard))


def max_act(scores: Sequence[float]) -> float:
    m = max(scores)
    return float(m) if m > 0 else 50.0


def fit_concept(method: str, train_acts: Activations, layer: int, pos_rows: Sequence[int], neg_rows: Sequence[int],
                seed: int = 0) -> torch.Tensor:
    tok = train_acts.tokens[layer]
    return fit_direction(method, [tok[i] for i in pos_rows], [tok[i] for i in neg_rows], seed)


def detection(w: torch.Tensor, eval_acts: Activations, layer: int, labels: Sequence[str], relu: bool = False) -> dict:
    """Scores and metrics of one concept's evaluation rows (``labels``: positive / negative / hard negative);
    ``max_act`` over the positives and negatives. ``relu``: latents ReLU(h·w) (ReFT-r1's)."""
    scores = example_scores(eval_acts.tokens[layer], w, relu).tolist()
    by = {k: [s for s, lab in zip(scores, labels) if lab == k] for k in ("positive", "negative", "hard negative")}
    auc = roc_auc(by["positive"] + by["negative"], [1] * len(by["positive"]) + [0] * len(by["negative"]))
    return {"auc": auc, "hard_negative_accuracy": hard_negative_accuracy(by["positive"], by["negative"],
                                                                          by["hard negative"]),
            "max_act": max_act(by["positive"] + by["negative"])}


def save_directions(path: str | Path, method: str, layer: int, model: str, directions: Sequence[Direction]) -> None:
    """``path/directions.safetensors`` (one (d,) tensor per concept) and ``path/directions.json`` (the rest)."""
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    blob = save({str(d.concept_id): d.w.contiguous().float() for d in directions})
    with atomic_open(path / "directions.safetensors", "wb") as f:
        f.write(blob)
    write_json(path / "directions.json", {"method": method, "layer": layer, "model": model,
                                          "concepts": {str(d.concept_id): {"max_act": d.max_act} for d in directions}})


def load_directions(path: str | Path) -> tuple[dict, dict[int, Direction]]:
    """(metadata, {concept_id: Direction}) from :func:`save_directions`'s folder."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_f, w_f = path / "directions.json", path / "directions.safetensors"
    if not meta_f.exists() or not w_f.exists():
        raise InputError(f"{path} holds no directions (directions.json + directions.safetensors); "
                         "make them with `trlm steer fit`")
    meta = json.loads(meta_f.read_text())
    ws = load_file(w_f)
    return meta, {int(k): Direction(int(k), ws[k], float(v["max_act"])) for k, v in meta["concepts"].items()}

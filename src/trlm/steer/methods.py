"""Concept directions from token activations: pure tensor functions, one per AxBench method.

Inputs are float32 token activations h_t ∈ R^d of a concept's positive examples (``pos``, (N⁺, d)) and negative
examples (``neg``, (N⁻, d)) with the chat prefix already dropped; every function returns a unit vector w (d,).
The detection latent of a token is h_t · w (no ReLU) and an example's score is its maximum over tokens
(:func:`example_scores`). Signs are fixed so that positives project higher than negatives (PCA and LAT have no
sign of their own; llama.cpp#8724 is what a random sign does to steering).

The bag-of-words baseline (:func:`bow_scores`) reads text, not activations.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _unit(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm().clamp_min(1e-12)


def _toward_positives(w: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None) -> torch.Tensor:
    """Flip ``w`` if negatives (or, without them, the origin) project above the positives on average."""
    ref = (neg @ w).mean() if neg is not None and len(neg) else torch.tensor(0.0)
    return w if (pos @ w).mean() >= ref else -w


def diffmean(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """w = (h̄⁺ − h̄⁻) / ‖h̄⁺ − h̄⁻‖, the means over all tokens of positive and of negative examples."""
    return _unit(pos.mean(0) - neg.mean(0))


def _first_pc(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0)
    return torch.linalg.svd(x.double(), full_matrices=False).Vh[0].float()


def pca(pos: torch.Tensor, neg: torch.Tensor | None = None) -> torch.Tensor:
    """w = the first principal component of the positives' token activations, signed toward the positives."""
    return _toward_positives(_unit(_first_pc(pos)), pos, neg)


def lat(pos: torch.Tensor, neg: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Linear artificial tomography: shuffle the positives' tokens, take differences of random pairs (first half
    minus second half), L2-normalise each difference, w = their first principal component, signed toward the
    positives."""
    g = torch.Generator().manual_seed(seed)
    x = pos[torch.randperm(len(pos), generator=g)]
    half = len(x) // 2
    if half < 1:
        raise ValueError("LAT needs at least two positive tokens")
    d = x[:half] - x[half:2 * half]
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return _toward_positives(_unit(_first_pc(d)), pos, neg)


def probe(x: torch.Tensor, y: torch.Tensor, owner: torch.Tensor, *, epochs: int = 24, lr: float = 5e-3,
          weight_decay: float = 1e-3, batch_size: int = 12, grad_accum: int = 4, seed: int = 0) -> torch.Tensor:
    """Linear probe σ(h_t · w + b) on token labels ``y`` (the example's label broadcast to its tokens), BCE,
    AxBench's recipe: AdamW (lr 5e-3, weight decay 1e-3), 24 epochs, batches of 12 examples (``owner`` maps each
    token to its example), gradient accumulation 4; before each step the gradient component parallel to w is
    removed, after it w is renormalised to unit length."""
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(_unit(torch.randn(x.shape[1], generator=g)))
    b = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
    examples = owner.unique()
    rows = {int(e): (owner == e).nonzero().flatten() for e in examples}
    y = y.float()
    for _ in range(epochs):
        order = examples[torch.randperm(len(examples), generator=g)]
        batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        for k, batch in enumerate(batches):
            idx = torch.cat([rows[int(e)] for e in batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x[idx] @ w + b, y[idx])
            (loss / grad_accum).backward()
            if (k + 1) % grad_accum == 0 or k == len(batches) - 1:
                with torch.no_grad():
                    u = _unit(w)
                    w.grad -= (w.grad @ u) * u
                opt.step()
                opt.zero_grad()
                with torch.no_grad():
                    w.copy_(_unit(w))
    return _unit(w.detach())


def example_scores(tokens: Sequence[torch.Tensor], w: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Each example's detection score: the maximum over its tokens of the latent h_t · w (ReLU(h_t · w) with
    ``relu``, ReFT-r1's latent: examples whose tokens all project below 0 then tie at 0)."""
    s = torch.stack([(t @ w).max() if len(t) else torch.tensor(float("-inf")) for t in tokens])
    return s.clamp_min(0.0) if relu else s


def bow_scores(train_texts: Sequence[str], train_labels: Sequence[int], texts: Sequence[str]) -> list[float]:
    """Bag-of-words logistic regression (L2, C = 100) fit on the training texts; P(concept) of ``texts``."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer()
    clf = LogisticRegression(C=100.0, max_iter=2000)
    clf.fit(vec.fit_transform(train_texts), list(train_labels))
    return clf.predict_proba(vec.transform(texts))[:, 1].tolist()


DIRECTION_METHODS = ("diffmean", "pca", "lat", "probe")
DETECTION_METHODS = (*DIRECTION_METHODS, "bow")


def fit_direction(method: str, pos_tokens: Sequence[torch.Tensor], neg_tokens: Sequence[torch.Tensor],
                  seed: int = 0, probe_epochs: int = 24) -> torch.Tensor:
    """A unit direction for ``method`` from per-example token activations of positives and negatives."""
    pos, neg = torch.cat(list(pos_tokens)), torch.cat(list(neg_tokens))
    if method == "diffmean":
        return diffmean(pos, neg)
    if method == "pca":
        return pca(pos, neg)
    if method == "lat":
        return lat(pos, neg, seed)
    if method == "probe":
        x = torch.cat([pos, neg])
        y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        owner = torch.cat([torch.full((len(t),), i) for i, t in enumerate([*pos_tokens, *neg_tokens])])
        return probe(x, y, owner, epochs=probe_epochs, seed=seed)
    raise ValueError(f"--method must be one of {', '.join(DIRECTION_METHODS)}, got {method!r}")

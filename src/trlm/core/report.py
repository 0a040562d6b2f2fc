"""Helpers every benchmark report shares: number formatting, a bootstrap CI, and writing a matplotlib figure
atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def fmt(x: float | None, nd: int = 3) -> str:
    """``x`` with ``nd`` decimals; ``–`` for a missing value."""
    return "–" if x is None else f"{x:.{nd}f}"


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the non-interactive Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically, then close it."""
    import matplotlib.pyplot as plt

    from trlm.core.io import atomic_open

    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)


def write_results(out: str | Path, results: dict) -> None:
    """Write a benchmark's ``out/results.json`` and, beside it, ``out/machine.json``
    (:func:`trlm.core.device.machine_info`: device, CPU, threads, whether bf16 is native), both atomically, so
    figures from two hosts can be told apart."""
    from trlm.core.device import machine_info
    from trlm.core.io import write_json

    write_json(Path(out) / "results.json", results)
    write_json(Path(out) / "machine.json", machine_info())


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampling items with replacement)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_diff_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                   alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired items and its percentile bootstrap CI (items resampled in pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired_diff_ci needs paired values; got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    lo, hi = bootstrap_ci(d, n_boot, seed, alpha)  # raises on no items
    return float(d.mean()), lo, hi

"""Helpers every benchmark report shares: number formatting and writing a matplotlib figure atomically."""

from __future__ import annotations

from pathlib import Path


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

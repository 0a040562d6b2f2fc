"""Red-teaming reports: every attempt (JSONL), a hit log of the unsafe ones (garak's habit), ``report.md`` with
unsafe counts and rates per category, style and persuasion technique, the unknown rate and the coverage
achieved, and heatmaps (category x style, category x persuasion).

Rates are over all attempts of a group; ``unknown`` (a failed execution, an empty output, a judge that gave no
single label) is reported in its own column and never counted as safe.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from trlm.core.io import write_jsonl, write_text
from trlm.core.report import new_figure, save_figure
from trlm.redteam.coverage import CATEGORIES, PERSUASION, STYLES, CoverageMatrix
from trlm.redteam.execute import Attempt

DIMENSIONS = {"category": CATEGORIES, "style": STYLES, "persuasion": PERSUASION}


def counts_by(attempts: Sequence[Attempt], dim: str) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for a in attempts:
        out.setdefault(getattr(a.test, dim), Counter())[a.verdict or "unjudged"] += 1
    return out


def summary(attempts: Sequence[Attempt]) -> dict:
    c = Counter(a.verdict or "unjudged" for a in attempts)
    n = len(attempts)
    return {"n": n, "unsafe": c["unsafe"], "safe": c["safe"], "unknown": c["unknown"], "unjudged": c["unjudged"],
            "errors": sum(a.status == "error" for a in attempts),
            "unsafe_rate": c["unsafe"] / n if n else 0.0, "unknown_rate": c["unknown"] / n if n else 0.0}


def _table(attempts: Sequence[Attempt], dim: str) -> list[str]:
    rows = ["| " + dim + " | n | unsafe | rate | unknown |", "|---|---:|---:|---:|---:|"]
    for value, c in sorted(counts_by(attempts, dim).items(), key=lambda kv: -kv[1]["unsafe"]):
        n = sum(c.values())
        rows.append(f"| {value} | {n} | {c['unsafe']} | {c['unsafe'] / n:.3f} | {c['unknown']} |")
    return rows


def heatmap(attempts: Sequence[Attempt], cols: str, path: Path) -> None:
    """Unsafe rate per (category, ``cols``) cell; empty cells are blank."""
    xs = [v for v in DIMENSIONS[cols] if any(getattr(a.test, cols) == v for a in attempts)] or \
        sorted({getattr(a.test, cols) for a in attempts})
    ys = [v for v in CATEGORIES if any(a.test.category == v for a in attempts)]
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, cat in enumerate(ys):
        for j, x in enumerate(xs):
            cell = [a for a in attempts if a.test.category == cat and getattr(a.test, cols) == x]
            if cell:
                grid[i, j] = sum(a.verdict == "unsafe" for a in cell) / len(cell)
    fig, ax = new_figure(figsize=(1.2 * len(xs) + 4, 0.35 * len(ys) + 1.5))
    im = ax.imshow(grid, cmap="Reds", vmin=0, vmax=max(0.05, float(np.nanmax(grid)) if np.isfinite(grid).any() else 1))
    ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(ys)), ys, fontsize=7)
    fig.colorbar(im, ax=ax, label="unsafe rate")
    ax.set_title(f"unsafe rate: category x {cols}", fontsize=9)
    save_figure(fig, path)


def write_report(out: Path, attempts: Sequence[Attempt], coverage: CoverageMatrix | None = None,
                 title: str = "Red-teaming report") -> dict:
    """``attempts.jsonl``, ``hits.jsonl``, ``report.md`` and the heatmaps in ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "attempts.jsonl", (a.to_json() for a in attempts))
    write_jsonl(out / "hits.jsonl", (a.to_json() for a in attempts if a.verdict == "unsafe"))
    s = summary(attempts)
    lines = [f"# {title}", "",
             f"{s['n']} attempts: **{s['unsafe']} unsafe** (rate {s['unsafe_rate']:.3f}), {s['safe']} safe, "
             f"{s['unknown']} unknown (rate {s['unknown_rate']:.3f}; {s['errors']} execution errors among them)"
             + (f", {s['unjudged']} not judged yet" if s["unjudged"] else "") + ".", ""]
    if coverage is not None and coverage.planned:
        cov = coverage.to_json()
        lines += [f"Coverage of the {len(coverage.planned)} planned cells: generated {cov['coverage_generated']:.3f}, "
                  f"executed {cov['coverage_executed']:.3f}, judged {cov['coverage_judged']:.3f}; cells short of their "
                  f"planned tests: {len(coverage.missing('generated'))}.", ""]
    for dim in DIMENSIONS:
        if len({getattr(a.test, dim) for a in attempts}) > 1 or dim == "category":
            lines += [f"## By {dim}", "", *_table(attempts, dim), ""]
    for cols in ("style", "persuasion"):
        if len({getattr(a.test, cols) for a in attempts}) > 1:
            heatmap(attempts, cols, out / f"heatmap_category_{cols}.png")
            lines += [f"![category x {cols}](heatmap_category_{cols}.png)", ""]
    write_text(out / "report.md", "\n".join(lines))
    return s

"""bof-report's figures: the forest plot of a sweep's differences with their intervals (the paper's
numbers beside them), and the per-class chart of two rows (the paper's Figures 8-9)."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bof.utils.checks import is_number  # noqa: E402


def forest_plot(entries: list[dict], title: str, xlabel: str, path: Path) -> Path:
    """One line per entry, top to bottom: ``label``, the difference ``delta`` with its interval ``low`` ..
    ``high`` (blue when it excludes 0, grey when not, a bare point without an interval), ``paper`` (the
    paper's difference, a red diamond) when known; 0 marked."""
    labels = [e["label"] for e in entries]
    figure, axes = plt.subplots(figsize=(8, 1.6 + 0.42 * len(entries)), dpi=120)
    y = np.arange(len(entries))[::-1]
    for yi, e in zip(y, entries, strict=True):
        if e["delta"] is None:
            continue
        has_interval = e.get("low") is not None
        significant = has_interval and (e["low"] > 0 or e["high"] < 0)
        color = "tab:blue" if significant else "0.4"
        if has_interval:
            axes.plot([e["low"], e["high"]], [yi, yi], color=color, lw=2.5, solid_capstyle="butt")
        axes.plot(e["delta"], yi, "o", color=color, ms=6)
        if e.get("paper") is not None:
            axes.plot(e["paper"], yi, "D", mfc="none", mec="tab:red", mew=1.5, ms=7)
    axes.axvline(0, color="black", lw=0.8, ls="--")
    axes.set_yticks(y, labels)
    axes.set_ylim(-0.7, len(entries) - 0.3)
    axes.set_xlabel(xlabel)
    axes.grid(axis="x", color="0.9")
    axes.set_title(title, pad=28)
    handles = [
        Line2D([], [], color="tab:blue", marker="o", lw=2.5, label="bof: mean, 95% interval excludes 0"),
        Line2D([], [], color="0.4", marker="o", lw=2.5, label="includes 0"),
        Line2D([], [], color="tab:red", marker="D", mfc="none", ls="none", label="paper"),
    ]
    axes.legend(
        handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=8
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def per_class_chart(rows: list[dict], first: str, second: str, path: Path) -> Path:
    """Bar chart of per-class AP(second) - AP(first), averaged over seeds (the paper's Figures 8-9)."""
    by_name = {r["name"]: r for r in rows}
    for name in (first, second):
        if name not in by_name or not by_name[name]["ap"]:
            raise SystemExit(f"--per-class: row {name!r} has no finished run; rows: {sorted(by_name)}")

    def mean_ap(row):  # over the seeds that scored the class
        values = {}
        for ap in row["ap"]:
            for c, value in ap.items():
                values.setdefault(c, []).extend([100 * value] if is_number(value) else [])
        return {c: statistics.mean(v) for c, v in values.items() if v}

    a, b = mean_ap(by_name[first]), mean_ap(by_name[second])
    classes = [c for c in a if c in b]  # runs of another data set name other classes
    if not classes:
        raise SystemExit(
            f"--per-class: rows {first!r} and {second!r} share no class: {sorted(a)} vs {sorted(b)}"
        )
    deltas = [b[c] - a[c] for c in classes]
    figure, axes = plt.subplots(figsize=(max(6, len(classes) * 0.4), 3.5), dpi=100)
    axes.bar(classes, deltas, color=["tab:green" if d >= 0 else "tab:red" for d in deltas])
    axes.set(ylabel="AP difference (%)", title=f"{second} - {first}")
    axes.tick_params(axis="x", rotation=60)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path

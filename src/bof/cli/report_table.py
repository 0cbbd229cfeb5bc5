"""bof-report's table: each row's metric over seeds, its differences against its baseline and the row
above with their bootstrap intervals, the paper's number and the throughput against the baseline's; which
row is each row's baseline; the table as Markdown and the note on what its intervals are."""

from __future__ import annotations

import statistics
from pathlib import Path

from bof.evaluation.bootstrap import Replicates

METRIC_NAMES = {"voc07": "VOC07 mAP", "area": "VOC area mAP", "coco": "COCO AP@[.5:.95]"}


def summarise(rows: list[dict], replicates: Replicates | None = None) -> list[dict]:
    """One dict per row: the table's columns (``vs_*_low`` / ``_high``: the interval, None without one)."""
    table, above = [], None
    for row, baseline in zip(rows, baselines(rows), strict=True):
        base_mean = statistics.mean(baseline["values"]) if baseline else None
        base_speed = _mean(baseline["images_per_s"]) if baseline else None
        mean = statistics.mean(row["values"]) if row["values"] else None
        std = statistics.stdev(row["values"]) if len(row["values"]) > 1 else 0.0
        problems = (
            (row["failed"], "failed"),
            (row["unfinished"], "unfinished"),
            (row["unreadable"], "with no readable result in metrics.json"),
            (row["nonfinite"], "with a NaN or infinite result"),
            (row["never_started"], "never started"),
            (row["refused"], "with a refused rerun (refused.json)"),
        )
        speed = _mean(row["images_per_s"])
        vs_base, vs_above = (_interval(replicates, row, reference) for reference in (baseline, above))
        table.append(
            {
                "row": row["label"],
                "name": row["name"],
                "runs": len(row["values"]),
                "mean": mean,
                "std": std,
                "vs_baseline": None if mean is None or base_mean is None else mean - base_mean,
                "vs_baseline_low": vs_base and vs_base.low,
                "vs_baseline_high": vs_base and vs_base.high,
                "vs_above": None
                if mean is None or above is None
                else mean - statistics.mean(above["values"]),
                "vs_above_low": vs_above and vs_above.low,
                "vs_above_high": vs_above and vs_above.high,
                "paper": row["paper"],
                "images_per_s": speed,
                "throughput_vs_baseline": speed / base_speed if speed and base_speed else None,
                "baseline": baseline and baseline["label"],
                "status": ", ".join(f"{n} {what}" for n, what in problems if n) or "done",
                "gpus_x_batch": ", ".join(sorted(row["setups"])) or "-",
                "metric": METRIC_NAMES.get(row["metric"], "mAP"),
            }
        )
        above = row if mean is not None else above
    return table


def baselines(rows: list[dict]) -> list[dict | None]:
    """Each row's baseline: the nearest baseline row at or above it (a table of several detectors, Table
    4, names one per detector), the first one for rows above it; None where that row has no result (a
    difference against another family's baseline would mean nothing)."""
    current = next((r for r in rows if r["baseline"]), None)
    found = []
    for row in rows:
        current = row if row["baseline"] else current
        found.append(current if current and current["values"] else None)
    return found


def _interval(replicates: Replicates | None, row: dict, reference: dict | None):
    if replicates is None or reference is None or reference is row:
        return None
    return replicates.interval(row["name"], reference["name"])


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def format_delta(value, low, high) -> str:
    if value is None:
        return "-"
    if low is None:
        return f"{value:+.2f}"
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]{'*' if low > 0 or high < 0 else ''}"


def markdown(table: list[dict]) -> str:
    metric_name = next((r["metric"] for r in table if r["mean"] is not None), "mAP")
    columns = (
        f"row | {metric_name} (%) | vs baseline [95% CI] | vs row above [95% CI] | paper "
        "| throughput vs baseline | runs | processes x batch | status"
    )
    lines = [f"| {columns} |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        spread = "n=1" if r["runs"] == 1 else f"± {r['std']:.2f}"
        metric = "-" if r["mean"] is None else f"{r['mean']:.2f} {spread}"
        deltas = " | ".join(
            format_delta(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in ("vs_baseline", "vs_above")
        )
        paper = "-" if r["paper"] is None else f"{r['paper']:.2f}"
        speed = "-" if r["throughput_vs_baseline"] is None else f"{r['throughput_vs_baseline']:.2f}x"
        lines.append(
            f"| {r['row']} | {metric} | {deltas} | {paper} | {speed} | {r['runs']} | {r['gpus_x_batch']} "
            f"| {r['status']} |"
        )
    named = list(dict.fromkeys(r["baseline"] for r in table if r["baseline"]))
    if len(named) > 1:  # Table 4: one per detector
        lines.append(f"\nvs baseline: against the nearest baseline row above ({'; '.join(named)}).")
    return "\n".join(lines)


def interval_note(replicates: Replicates | None) -> str:
    """What the intervals are, under the table."""
    if replicates is None:
        return "No intervals (--replicates 0)."
    lines = []
    if replicates.values:
        seeds = set(replicates.seeds_per_row.values())
        lines.append(
            f"[95% CI]: paired bootstrap percentile interval, {replicates.replicates} resamples of the "
            f"{replicates.num_images} validation images (seed {replicates.seed}), the same resamples for "
            "every row; * the interval excludes 0. "
            + (
                "One run per row: the intervals cover the choice of images only, not seed-to-seed variation "
                "(run the sweep with seed=0,1,2 for that)."
                if seeds == {1}
                else "Rows with several seeds resample their seeds too (the same draws for every row, so "
                "rows run with the same seeds are paired by seed); the point is the mean over seeds."
            )
        )
    for row, why in replicates.missing.items():
        lines.append(f"No interval for row {row!r}: {why}.")
    return "\n".join(lines)


def choose_baselines(rows: list[dict], names: list[str], sweep_dir: Path) -> None:
    """``--baseline``: these rows (names or labels) are the baselines, not those the runs' configs name."""
    unknown = [n for n in names if not any(n in (r["name"], r["label"]) for r in rows)]
    if unknown:
        raise SystemExit(
            f"--baseline {' '.join(unknown)}: no such row in {sweep_dir}; its rows are "
            + ", ".join(r["name"] for r in rows)
        )
    for row in rows:
        row["baseline"] = row["name"] in names or row["label"] in names

"""``bof-report <sweep dir> [<sweep dir> ...]``: a sweep's runs as a table, every difference with its 95%
paired bootstrap interval (Markdown on stdout; CSV and a forest plot beside).

A table sweep (``+sweep=tableN``, ``+sweep=table2_loo``, ...) has ``<sweep dir>/<row>/seed<k>/metrics.json``
(or ``failed.json``), ``<row>`` named by the row's experiment file; the sweep's list of experiments, in the
``multirun.yaml`` Hydra writes, is the table's order and says which rows were launched, and each run's
config says its row's label, the paper's number and which row is the baseline (Table 4: one per detector,
each row against the nearest above it; ``--baseline`` chooses others). Any other multirun
(``bof-train -m optimizer.lr=0.001,0.002 seed=0,1``) has Hydra's numbered job directories: one row per
combination of the overrides that vary (seeds pooled), the first row as the baseline. Per row: the metric
(VOC mAP or COCO AP, in %) as mean +- std over seeds ("n=1" for one run), the difference against the
baseline row and against the row above with their intervals (docs/statistics.md), the paper's number, the
training throughput relative to the baseline's (what the row's tricks cost), and the status (failed,
unfinished and never-started runs and unreadable metrics.json files are marked, not hidden). The rows of a
leave-one-out or add-one sweep also give each trick's effect (in context, or alone) beside the paper's
stacked difference; given both designs, one table puts them side by side.

    bof-report multirun/table2 [--csv table2.csv] [--per-class baseline mixup] [--replicates 1000]
    bof-report multirun/table2_loo multirun/table2_add_one
    bof-report multirun/table4 --baseline frcnn_r50-original frcnn_r101-original yolov3-original
    bof-report multirun/2026-11-26/10-00-00
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from bof.cli.report_plots import forest_plot, per_class_chart
from bof.cli.report_runs import collect, read_records
from bof.evaluation.bootstrap import Replicates, resample_rows

METRIC_NAMES = {"voc07": "VOC07 mAP", "area": "VOC area mAP", "coco": "COCO AP@[.5:.95]"}
EFFECTS = {  # a design's rows -> what their difference to its baseline row says about the trick
    "leave_one_out": "in context (all - all without it)",
    "add_one": "alone (baseline + it - baseline)",
}


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


def _delta(value, low, high) -> str:
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
        deltas = " | ".join(_delta(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in ("vs_baseline", "vs_above"))
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


def effects(rows: list[dict], table: list[dict]) -> list[dict]:
    """The trick rows of a leave-one-out or add-one design: each trick's effect with its interval (a row
    that removes the trick: baseline - row), beside the paper's stacked difference."""
    found = []
    for row, r in zip(rows, table, strict=True):
        if not row.get("trick") or row.get("design") not in EFFECTS or r["vs_baseline"] is None:
            continue
        sign = -1.0 if row.get("removes") else 1.0
        low, high = r["vs_baseline_low"], r["vs_baseline_high"]
        if low is not None and sign < 0:
            low, high = -high, -low
        found.append(
            {
                "trick": row["trick"],
                "design": row["design"],
                "effect": sign * r["vs_baseline"],
                "low": low,
                "high": high,
                "paper_delta": row.get("paper_delta"),
            }
        )
    return found


def effects_markdown(found: list[dict]) -> str:
    """One column per design found (alone, in context), one row per trick, the paper's stacked delta."""
    designs = [d for d in EFFECTS if any(e["design"] == d for e in found)]
    tricks = list(dict.fromkeys(e["trick"] for e in found))
    by = {(e["trick"], e["design"]): e for e in found}
    header = " | ".join(f"effect {EFFECTS[d]} [95% CI]" for d in designs)
    lines = [f"| trick | {header} | paper's stacked delta |", "|---" * (len(designs) + 2) + "|"]
    for trick in tricks:
        cells = [
            _delta(e["effect"], e["low"], e["high"]) if (e := by.get((trick, d))) else "-" for d in designs
        ]
        paper = next(
            (e["paper_delta"] for e in found if e["trick"] == trick and e["paper_delta"] is not None), None
        )
        lines.append(f"| {trick} | {' | '.join(cells)} | {'-' if paper is None else f'{paper:+.2f}'} |")
    return "\n".join(lines)


def report_sweep(sweep_dir: Path, args) -> tuple[list[dict], list[dict]]:
    """Prints one sweep's table and writes its CSV and forest plot; -> (table, trick effects)."""
    rows = collect(sweep_dir)
    if not rows:
        raise SystemExit(
            f"no runs under {sweep_dir}: neither a table sweep's <row>/seed<k>/ nor a multirun's "
            "numbered job directories with .hydra/overrides.yaml"
        )
    if args.baseline:
        choose_baselines(rows, args.baseline, sweep_dir)
    replicates = None
    if args.replicates > 0:
        replicates = resample_rows(read_records(rows), args.replicates, args.seed, progress=True)
    table = summarise(rows, replicates)
    print(markdown(table))
    print()
    print(interval_note(replicates))
    csv_path = args.csv or sweep_dir / "report.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    found = effects(rows, table)
    metric = next((r["metric"] for r in table if r["mean"] is not None), "mAP")
    if found:
        print()
        print(effects_markdown(found))
        entries = [
            {
                "label": e["trick"],
                "delta": e["effect"],
                "low": e["low"],
                "high": e["high"],
                "paper": e["paper_delta"],
            }
            for e in found
        ]
        title = f"{sweep_dir.name}: each trick's effect {EFFECTS[found[0]['design']]}"
    else:
        entries = [
            {
                "label": r["row"],
                "delta": r["vs_baseline"],
                "low": r["vs_baseline_low"],
                "high": r["vs_baseline_high"],
                "paper": r["paper"] - base["paper"]
                if base and r["paper"] is not None and base["paper"] is not None
                else None,
            }
            for row, r, base in zip(rows, table, baselines(rows), strict=True)
            if not row["baseline"]
        ]
        named = list(dict.fromkeys(r["label"] for r in rows if r["baseline"]))
        versus = named[0] if len(named) == 1 else "the baseline row above it" if named else "baseline"
        title = f"{sweep_dir.name}: each row - {versus}"
    if any(e["delta"] is not None for e in entries):
        plot = forest_plot(entries, title, f"difference in {metric} (points)", sweep_dir / "forest.png")
        print(f"\nforest plot: {plot}")
    elif entries:  # an empty figure would read as "no effect"
        print(
            "\nno forest plot: no row has a difference against its baseline (its run is missing or "
            "unfinished)"
        )
    if args.per_class:
        chart = per_class_chart(
            rows, *args.per_class, sweep_dir / f"per_class_{args.per_class[1]}_vs_{args.per_class[0]}.png"
        )
        print(f"per-class chart: {chart}")
    return table, found


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


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="sweep_dir")
    parser.add_argument("--csv", type=Path, help="default: <sweep dir>/report.csv (one sweep only)")
    parser.add_argument("--per-class", nargs=2, metavar=("A", "B"), help="bar chart of per-class AP, B - A")
    parser.add_argument(
        "--replicates", type=int, default=1000, help="bootstrap resamples of the images (0: no intervals)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (the same report again)")
    parser.add_argument(
        "--baseline",
        nargs="+",
        metavar="ROW",
        help="the baseline rows (each row is against the nearest one above it); default: the rows the "
        "runs' table names (row.baseline_row), or an ad-hoc multirun's first",
    )
    args = parser.parse_args(argv)
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            raise SystemExit(f"sweep directory not found: {sweep_dir}")
    if len(args.sweep_dirs) > 1 and (args.csv or args.per_class):
        raise SystemExit("--csv and --per-class take one sweep directory")
    if args.replicates < 0:
        raise SystemExit(f"--replicates must be >= 0, got {args.replicates}")
    tables, all_effects = [], []
    for sweep_dir in args.sweep_dirs:
        if len(args.sweep_dirs) > 1:
            print(f"\n## {sweep_dir}\n")
        table, found = report_sweep(sweep_dir, args)
        tables += table
        all_effects += found
    if len({e["design"] for e in all_effects}) > 1:  # both designs: each trick alone and in context
        print("\n## Each trick alone and in context\n")
        print(effects_markdown(all_effects))
    return tables


def cli() -> None:
    """The ``bof-report`` console script (exit status 0 unless an error exits earlier)."""
    main()


if __name__ == "__main__":
    cli()

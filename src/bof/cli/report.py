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
from pathlib import Path

from bof.cli.report_plots import forest_plot, per_class_chart
from bof.cli.report_runs import collect, read_records
from bof.cli.report_table import (
    baselines,
    choose_baselines,
    format_delta,
    interval_note,
    markdown,
    summarise,
)
from bof.evaluation.bootstrap import resample_rows

EFFECTS = {  # a design's rows -> what their difference to its baseline row says about the trick
    "leave_one_out": "in context (all - all without it)",
    "add_one": "alone (baseline + it - baseline)",
}


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
            format_delta(e["effect"], e["low"], e["high"]) if (e := by.get((trick, d))) else "-"
            for d in designs
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

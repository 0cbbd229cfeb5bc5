"""``bof-report <sweep dir>``: a sweep's runs as a table (Markdown on stdout, CSV beside).

A table sweep (``+sweep=tableN``) has ``<sweep dir>/<row>/seed<k>/metrics.json`` (or ``failed.json``),
``<row>`` named by the row's experiment file (``experiment=table2/no_aug`` -> ``no_aug``); the sweep's
list of experiments, in the ``multirun.yaml`` Hydra writes, is the table's order and says which rows were
launched, and each run's config says its row's label, the paper's number and which row is the baseline.
Any other multirun (``bof-train -m optimizer.lr=0.001,0.002 seed=0,1``) has Hydra's numbered job directories:
one row per combination of the overrides that vary (seeds pooled), the first row as the baseline. Per
row: the metric (VOC mAP or COCO AP, in %) as mean +- std over seeds ("n=1" for one run), the delta
against the baseline row and against the row above, the paper's number, and the status (failed,
unfinished and never-started runs and unreadable metrics.json files are marked, not hidden).

    bof-report multirun/table2 [--csv table2.csv] [--per-class baseline mixup]
    bof-report multirun/2026-11-26/10-00-00
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import matplotlib
import yaml

from bof.config import CONFIG_DIR, row_name

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRIC_NAMES = {"voc07": "VOC07 mAP", "area": "VOC area mAP", "coco": "COCO AP@[.5:.95]"}


def collect(sweep_dir: Path) -> list[dict]:
    """One dict per row, in table order: label, paper, values (one per finished seed), status, ap."""
    runs = [(p.parent.name, p, None) for p in sorted(sweep_dir.glob("*/seed*")) if p.is_dir()]
    if not runs:
        return _rows(adhoc_runs(sweep_dir))
    rows = _rows(runs)
    seen = {r["name"]: r for r in rows}
    table, launched, seeds = sweep_plan(sweep_dir)
    for experiment in launched:  # rows the sweep was launched with, started or not
        name = row_name(experiment)
        row = seen.get(name)
        if row is None:  # never started: its label and paper number from its experiment file
            row = seen[name] = _empty_row(name, None)
            meta = (_read_yaml(CONFIG_DIR / "experiment" / f"{experiment}.yaml") or {}).get("row") or {}
            row.update({k: meta[k] for k in ("label", "paper") if k in meta})
            rows.append(row)
        row["never_started"] = sum(not (sweep_dir / name / f"seed{s}").is_dir() for s in seeds)
    position = {}
    for i, experiment in enumerate(table):
        position.setdefault(row_name(experiment), i)
    for row in rows:  # the sweep's list is the table's order (rows it does not list come last)
        row["order"] = position.get(row["name"], row["order"])
    return sorted(rows, key=lambda r: (r["order"], r["name"]))


def sweep_plan(sweep_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """(the table's rows: the experiments its sweep file lists, in order; the rows launched: those or the
    command line's ``experiment=...``; the seeds launched) from the ``multirun.yaml`` Hydra writes at a
    sweep's start. Without one, a job's ``.hydra/hydra.yaml`` still gives the table's order (not what
    was launched); ``([], [], [])`` for neither."""
    launched = _read_yaml(sweep_dir / "multirun.yaml")
    hydra = (launched or {}).get("hydra") or {}
    if launched is None:  # a job's own copy of the sweep's config
        jobs = sorted(sweep_dir.glob("*/seed*/.hydra/hydra.yaml"))
        hydra = next((h for h in ((_read_yaml(j) or {}).get("hydra") for j in jobs) if h), {})
    params = {k: str(v) for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()}
    table = _split(params.get("experiment"))
    if launched is None:
        return table, [], []
    for override in (hydra.get("overrides") or {}).get("task") or []:  # the command line wins
        key, _, value = str(override).lstrip("+").partition("=")
        if key in ("experiment", "seed"):
            params[key] = value
    rows = _split(params.get("experiment"))
    return table + [r for r in rows if r not in table], rows, _split(params.get("seed", "0"))


def _split(values: str | None) -> list[str]:
    """``table2/no_aug,table2/baseline`` (a sweep's comma-separated values) -> their list."""
    return [v.strip() for v in str(values or "").split(",") if v.strip()]


def adhoc_runs(sweep_dir: Path) -> list[tuple[str, Path, int]]:
    """(row: the varying overrides, job directory, order) of a plain multirun's numbered jobs."""
    jobs = {}
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        if overrides_file.parents[1].name.isdigit():
            pairs = (o.lstrip("+~").split("=", 1) for o in yaml.safe_load(overrides_file.read_text()) or [])
            jobs[int(overrides_file.parents[1].name)] = {k: v for k, v, *_ in (p + [""] for p in pairs)}
    keys = {k for overrides in jobs.values() for k in overrides}
    varying = sorted(k for k in keys if len({o.get(k) for o in jobs.values()}) > 1 and k != "seed")
    return [
        (", ".join(f"{k}={jobs[n].get(k, '-')}" for k in varying) or "all jobs", sweep_dir / str(n), n)
        for n in sorted(jobs)
    ]


def _rows(runs: list[tuple[str, Path, int | None]]) -> list[dict]:
    rows: dict[str, dict] = {}
    for name, seed_dir, order in runs:
        row = rows.setdefault(name, _empty_row(name, order))
        metrics_file, failed_file = seed_dir / "metrics.json", seed_dir / "failed.json"
        metrics = _read_json(metrics_file)
        if metrics_file.is_file() and (metrics is None or metrics.get("map") is None):
            row["unreadable"] += 1  # empty (a full disk), garbage or no mAP: said, not called done
            continue
        # a run without results still has its row's label and paper number, in the config Hydra saved
        config = (metrics or {}).get("config") or _read_yaml(seed_dir / ".hydra" / "config.yaml") or {}
        meta = config.get("row") or {}
        row.update({k: meta[k] for k in ("label", "order", "paper") if k in meta})  # order: older runs
        if metrics is not None:
            row["metric"] = metrics.get("metric")
            # the table's base names its baseline row (older runs flagged it with baseline: true)
            row["baseline"] |= meta.get("baseline_row") == name or meta.get("baseline") is True
            if "world_size" in metrics:  # the data parallelism each run had (the paper's: paper_setup)
                row["setups"].add(f"{metrics['world_size']}x{metrics['batch_per_process']}")
            if metrics.get("map") is not None:
                row["values"].append(100 * metrics["map"])
                row["ap"].append(metrics.get("ap", {}))
        elif failed_file.is_file():
            row["failed"] += 1
        else:
            row["unfinished"] += 1
    return sorted(rows.values(), key=lambda r: (r["order"], r["name"]))


def _empty_row(name: str, order: int | None) -> dict:
    return {
        "name": name,
        "label": name,
        "order": 1e9 if order is None else order,
        "paper": None,
        "baseline": order == 0,
        "metric": None,
        "values": [],
        "failed": 0,
        "unfinished": 0,
        "unreadable": 0,
        "never_started": 0,
        "ap": [],
        "setups": set(),
    }


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, empty, truncated or not UTF-8
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> dict | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def summarise(rows: list[dict]) -> list[dict]:
    baseline = next((r for r in rows if r["baseline"] and r["values"]), None)
    base_mean = statistics.mean(baseline["values"]) if baseline else None
    table, above = [], None
    for row in rows:
        mean = statistics.mean(row["values"]) if row["values"] else None
        std = statistics.stdev(row["values"]) if len(row["values"]) > 1 else 0.0
        problems = (
            (row["failed"], "failed"),
            (row["unfinished"], "unfinished"),
            (row["unreadable"], "with no readable result in metrics.json"),
            (row["never_started"], "never started"),
        )
        status = ", ".join(f"{n} {what}" for n, what in problems if n) or "done"
        table.append(
            {
                "row": row["label"],
                "runs": len(row["values"]),
                "mean": mean,
                "std": std,
                "vs_baseline": None if mean is None or base_mean is None else mean - base_mean,
                "vs_above": None if mean is None or above is None else mean - above,
                "paper": row["paper"],
                "status": status,
                "gpus_x_batch": ", ".join(sorted(row["setups"])) or "-",
                "metric": METRIC_NAMES.get(row["metric"], "mAP"),
            }
        )
        above = mean if mean is not None else above
    return table


def markdown(table: list[dict]) -> str:
    def number(value, signed=False):
        return "-" if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")

    metric_name = next((r["metric"] for r in table if r["mean"] is not None), "mAP")
    columns = (
        f"row | {metric_name} (%) | vs baseline | vs row above | paper | runs | processes x batch | status"
    )
    lines = [f"| {columns} |", "|---|---|---|---|---|---|---|---|"]
    for r in table:
        spread = "n=1" if r["runs"] == 1 else f"± {r['std']:.2f}"
        metric = "-" if r["mean"] is None else f"{r['mean']:.2f} {spread}"
        deltas = f"{number(r['vs_baseline'], True)} | {number(r['vs_above'], True)}"
        lines.append(
            f"| {r['row']} | {metric} | {deltas} | {number(r['paper'])} | {r['runs']} | {r['gpus_x_batch']} "
            f"| {r['status']} |"
        )
    return "\n".join(lines)


def per_class_chart(rows: list[dict], first: str, second: str, path: Path) -> Path:
    """Bar chart of per-class AP(second) - AP(first), averaged over seeds (the paper's Figures 8-9)."""
    by_name = {r["name"]: r for r in rows}
    for name in (first, second):
        if name not in by_name or not by_name[name]["ap"]:
            raise SystemExit(f"--per-class: row {name!r} has no finished run; rows: {sorted(by_name)}")

    def mean_ap(row):
        classes = row["ap"][0].keys()
        return {c: statistics.mean(100 * ap[c] for ap in row["ap"]) for c in classes}

    a, b = mean_ap(by_name[first]), mean_ap(by_name[second])
    classes = list(a)
    deltas = [b[c] - a[c] for c in classes]
    figure, axes = plt.subplots(figsize=(max(6, len(classes) * 0.4), 3.5), dpi=100)
    axes.bar(classes, deltas, color=["tab:green" if d >= 0 else "tab:red" for d in deltas])
    axes.set(ylabel="AP difference (%)", title=f"{second} - {first}")
    axes.tick_params(axis="x", rotation=60)
    figure.tight_layout()
    figure.savefig(path)
    return path


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--csv", type=Path, help="default: <sweep dir>/report.csv")
    parser.add_argument("--per-class", nargs=2, metavar=("A", "B"), help="bar chart of per-class AP, B - A")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise SystemExit(f"sweep directory not found: {args.sweep_dir}")
    rows = collect(args.sweep_dir)
    if not rows:
        raise SystemExit(
            f"no runs under {args.sweep_dir}: neither a table sweep's <row>/seed<k>/ nor a multirun's "
            "numbered job directories with .hydra/overrides.yaml"
        )
    table = summarise(rows)
    print(markdown(table))
    csv_path = args.csv or args.sweep_dir / "report.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    if args.per_class:
        chart = per_class_chart(
            rows,
            *args.per_class,
            args.sweep_dir / f"per_class_{args.per_class[1]}_vs_{args.per_class[0]}.png",
        )
        print(f"per-class chart: {chart}")
    return table


def cli() -> None:
    """The ``bof-report`` console script (exit status 0 unless an error exits earlier)."""
    main()


if __name__ == "__main__":
    cli()

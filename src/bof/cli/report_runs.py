"""The runs of a sweep directory, read for bof-report: a table sweep's ``<row>/seed<k>/`` (its order and
launched rows from Hydra's ``multirun.yaml``) or a plain multirun's numbered jobs. Per row: its label and
the paper's number from the runs' configs, each finished run's metric, throughput and per-image record
(``eval_record.npz``), what did not finish (failed, unfinished, unreadable, never started) and which
runs had a rerun refused (``refused.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from bof.config import CONFIG_DIR, row_name
from bof.evaluation.ranked_record import RECORD_FILE, RankedDetections
from bof.utils.checks import is_number

ROW_KEYS = ("label", "paper", "trick", "removes", "paper_delta", "design")  # a row's meta in its config


def collect(sweep_dir: Path) -> list[dict]:
    """One dict per row, in table order: label, paper, values (one per finished seed), status, ap."""
    runs = [(p.parent.name, p, None) for p in sorted(sweep_dir.glob("*/seed*")) if p.is_dir()]
    if not runs:  # its rows are the override combinations, not the experiment's row (label, paper number)
        return _rows(adhoc_runs(sweep_dir), table_rows=False)
    rows = _rows(runs)
    seen = {r["name"]: r for r in rows}
    table, launched, seeds = sweep_plan(sweep_dir)
    for experiment in launched:  # rows the sweep was launched with, started or not
        name = row_name(experiment)
        row = seen.get(name)
        if row is None:  # never started: its label and paper number from its experiment file
            row = seen[name] = _empty_row(name, None)
            meta = (_read_yaml(CONFIG_DIR / "experiment" / f"{experiment}.yaml") or {}).get("row") or {}
            row.update({k: meta[k] for k in ROW_KEYS if k in meta})
            rows.append(row)
        row["never_started"] = sum(not (sweep_dir / name / f"seed{s}").is_dir() for s in seeds)
    named = set().union(*(r["baseline_rows"] for r in rows))
    for row in rows:  # a baseline row that has not run is still its family's baseline (no difference)
        row["baseline"] |= row["name"] in named
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


def _rows(runs: list[tuple[str, Path, int | None]], table_rows: bool = True) -> list[dict]:
    """``table_rows``: each run's config names its row (label, paper number, baseline); else the run's
    name is its label (an ad-hoc multirun's override combination, which may vary one experiment)."""
    rows: dict[str, dict] = {}
    for name, seed_dir, order in runs:
        row = rows.setdefault(name, _empty_row(name, order))
        metrics_file, failed_file = seed_dir / "metrics.json", seed_dir / "failed.json"
        row["refused"] += (seed_dir / "refused.json").is_file()  # a note: the run there is untouched
        later = failed_later(failed_file, metrics_file)  # the last attempt failed: a failure, not a result
        metrics = None if later else _read_json(metrics_file)
        value = (metrics or {}).get("map")
        if not later and metrics_file.is_file() and not is_number(value):
            row["unreadable"] += 1  # empty (a full disk), garbage, no mAP or not a number: said, not done
            continue
        if metrics is not None and not math.isfinite(value):
            row["nonfinite"] += 1  # a NaN mAP (every class without positives?) is not a result
            continue
        # a run without results still has its row's label and paper number, in the config Hydra saved
        config = (metrics or {}).get("config") or _read_yaml(seed_dir / ".hydra" / "config.yaml") or {}
        meta = (config.get("row") or {}) if table_rows else {}
        row.update({k: meta[k] for k in (*ROW_KEYS, "order") if k in meta})  # order: older runs
        row["baseline_rows"] |= named_baselines(meta)
        row["baseline"] |= meta.get("baseline") is True  # runs older than baseline_row: a flag
        if metrics is not None:
            row["metric"] = metrics.get("metric")
            if "world_size" in metrics:  # the data parallelism each run had (the paper's: paper_setup)
                row["setups"].add(f"{metrics['world_size']}x{metrics['batch_per_process']}")
            row["values"].append(100 * value)
            row["ap"].append(metrics.get("ap") if isinstance(metrics.get("ap"), dict) else {})
            row["records"].append(seed_dir / RECORD_FILE)  # read when intervals are asked for
            speed = metrics.get("images_per_s")
            row["images_per_s"].append(speed if is_number(speed) else None)
        elif failed_file.is_file():
            row["failed"] += 1
        else:
            row["unfinished"] += 1
    return sorted(rows.values(), key=lambda r: (r["order"], r["name"]))


def named_baselines(row_meta) -> set[str]:
    """The rows a table's base names as baselines (``row.baseline_row``): one row, or one per detector."""
    named = row_meta.get("baseline_row") or []
    return {named} if isinstance(named, str) else set(named)


def failed_later(failed_file: Path, metrics_file: Path) -> bool:
    """A failed.json newer than metrics.json: the directory was trained again (more epochs, or afresh)
    and that attempt failed, so its checkpoints are no longer what metrics.json measured."""
    try:
        return failed_file.stat().st_mtime_ns > metrics_file.stat().st_mtime_ns
    except OSError:  # either one missing
        return False


def _empty_row(name: str, order: int | None) -> dict:
    return {
        "name": name,
        "label": name,
        "order": 1e9 if order is None else order,
        "paper": None,
        "baseline": order == 0,
        "baseline_rows": set(),  # the rows its table names as baselines
        "metric": None,
        "values": [],
        "failed": 0,
        "unfinished": 0,
        "unreadable": 0,
        "nonfinite": 0,
        "refused": 0,
        "never_started": 0,
        "ap": [],
        "records": [],
        "images_per_s": [],
        "setups": set(),
        "trick": None,
        "removes": False,
        "paper_delta": None,
        "design": None,
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


def read_records(rows: list[dict]) -> dict[str, list[RankedDetections | None]]:
    """Each row's per-image records, one per finished run (None where a run has none or it is unreadable,
    which is said)."""
    records = {}
    for row in rows:
        records[row["name"]] = []
        for path in row["records"]:
            try:
                records[row["name"]].append(RankedDetections.load(path) if path.is_file() else None)
            except ValueError as error:
                print(f"warning: {error}; row {row['name']!r} gets no interval")
                records[row["name"]].append(None)
    return records

"""bof-report on sweep directories written as bof-train writes them (metrics.json, the row's config and the
per-image record beside them): intervals on every difference, exactly [0, 0] for identical rows, the
throughput column, the forest plot, and a design's trick effects with their signs."""

import csv
import json
import os

import pytest

from bof.cli import report as report_module
from bof.cli.report import main as report
from bof.evaluation.weighted_ap import metric_under_weights
from tests.helpers.generated import simulated_voc_record


def write_run(sweep, row, seed, record, images_per_s=100.0, **meta):
    """``<sweep>/<row>/seed<seed>/``: metrics.json (the record's mAP) and eval_record.npz."""
    run = sweep / row / f"seed{seed}"
    run.mkdir(parents=True)
    value = float(metric_under_weights(record, [1.0] * len(record.image_ids))[0])
    config = {
        "row": {"label": meta.pop("label", row), "baseline_row": meta.pop("baseline_row", "base"), **meta}
    }
    metrics = {"map": value, "metric": "voc07", "ap": {}, "images_per_s": images_per_s, "config": config}
    (run / "metrics.json").write_text(json.dumps(metrics))
    record.save(run / "eval_record.npz")


def test_identical_rows_differ_by_exactly_zero_and_every_delta_has_an_interval(tmp_path, capsys):
    write_run(tmp_path, "base", 0, simulated_voc_record(1), order=0, paper=80.0)
    write_run(tmp_path, "same", 0, simulated_voc_record(1), order=1, images_per_s=50.0, paper=81.0)
    write_run(tmp_path, "better", 0, simulated_voc_record(2, skill=0.95), order=2)
    table = {r["name"]: r for r in report([str(tmp_path), "--replicates", "200"])}
    same, better = table["same"], table["better"]
    assert (same["vs_baseline"], same["vs_baseline_low"], same["vs_baseline_high"]) == (0.0, 0.0, 0.0)
    assert better["vs_baseline_low"] > 0 and better["vs_above_low"] > 0  # "better" found better
    assert table["base"]["vs_baseline_low"] is None  # the baseline against itself: no interval
    assert same["throughput_vs_baseline"] == pytest.approx(0.5)  # half the baseline's images/s
    out = capsys.readouterr().out
    assert "+0.00 [+0.00, +0.00] |" in out and "]* |" in out  # * marks an interval without 0
    assert "0.50x" in out and "200 resamples of the 60 validation images" in out and "One run per row" in out
    assert (tmp_path / "forest.png").stat().st_size > 10_000
    with (tmp_path / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[2]["vs_baseline_low"] and rows[2]["throughput_vs_baseline"]
    # the same runs, the same report: the bootstrap is seeded
    again = {r["name"]: r for r in report([str(tmp_path), "--replicates", "200"])}
    assert again["better"]["vs_baseline_low"] == better["vs_baseline_low"]


def test_runs_without_records_get_no_interval_and_say_so(tmp_path, capsys):
    write_run(tmp_path, "base", 0, simulated_voc_record(1), order=0)
    write_run(tmp_path, "old", 0, simulated_voc_record(2), order=1)
    (tmp_path / "old" / "seed0" / "eval_record.npz").unlink()  # a run from before records
    table = {r["name"]: r for r in report([str(tmp_path), "--replicates", "50"])}
    assert table["old"]["vs_baseline"] is not None and table["old"]["vs_baseline_low"] is None
    assert "No interval for row 'old': no per-image record." in capsys.readouterr().out
    report([str(tmp_path), "--replicates", "0"])
    assert "No intervals (--replicates 0)." in capsys.readouterr().out


def test_without_the_baselines_run_no_empty_forest_plot_is_drawn(tmp_path, capsys):
    """A sweep whose baseline row has not run yet (Table 4 with its R101 rows only) still gets its table
    and the differences against the row above, and says why it has no forest plot instead of drawing an
    empty one."""
    for order, row in enumerate(["r101", "r101_bof"], start=1):
        write_run(tmp_path, row, 0, simulated_voc_record(order), order=order, baseline_row="r50")
    table = {r["name"]: r for r in report([str(tmp_path), "--replicates", "50"])}
    assert table["r101_bof"]["vs_above"] is not None and table["r101_bof"]["vs_baseline"] is None
    assert "no forest plot: no row has a difference against its baseline" in capsys.readouterr().out
    assert not (tmp_path / "forest.png").exists()


def test_a_table_of_several_detectors_compares_each_row_with_its_own_detectors_baseline(
    tmp_path, capsys, monkeypatch
):
    """Table 4 names one baseline per detector: each "all freebies" row is against its own original (the
    row above), never another detector's, in the table, the throughput and the forest plot; a detector
    whose original has no result gets no difference at all."""
    plotted = {}
    monkeypatch.setattr(
        report_module, "forest_plot", lambda entries, title, *_: plotted.update(title=title, entries=entries)
    )
    families = {"r50": (1, 100.0), "r101": (3, 50.0), "yolo": (5, 400.0)}
    originals = [f"{f}_orig" for f in families]
    for order, (family, (seed, speed)) in enumerate(families.items()):
        for i, row in enumerate((f"{family}_orig", f"{family}_bof")):
            skill = 0.95 if i else 0.8
            write_run(
                tmp_path,
                row,
                0,
                simulated_voc_record(seed + i, skill=skill),
                speed * (1 + i),
                order=2 * order + i,
                baseline_row=originals,
                paper=30.0 + 3 * order + i,
            )
    table = {r["name"]: r for r in report([str(tmp_path), "--replicates", "50"])}
    for family in families:
        bof, orig = table[f"{family}_bof"], table[f"{family}_orig"]
        assert bof["vs_baseline"] == pytest.approx(bof["vs_above"]) and bof["vs_baseline"] != 0
        assert bof["vs_baseline_low"] == bof["vs_above_low"] and bof["throughput_vs_baseline"] == 2.0
        assert (
            orig["vs_baseline"] == 0.0 and orig["vs_baseline_low"] is None and orig["baseline"] == orig["row"]
        )
    assert (
        "vs baseline: against the nearest baseline row above (r50_orig; r101_orig; yolo_orig)"
        in capsys.readouterr().out
    )
    assert [e["label"] for e in plotted["entries"]] == ["r50_bof", "r101_bof", "yolo_bof"]
    assert [e["paper"] for e in plotted["entries"]] == [1.0, 1.0, 1.0]
    assert plotted["title"].endswith("each row - the baseline row above it")
    # the R101 original's run failed: its "all freebies" row has no difference, not one against the R50's
    run = tmp_path / "r101_orig" / "seed0"
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        json.dumps(json.loads((run / "metrics.json").read_text())["config"])
    )
    (run / "metrics.json").unlink()
    (run / "failed.json").write_text("{}")
    table = {r["name"]: r for r in report([str(tmp_path), "--replicates", "50"])}
    assert table["r101_bof"]["vs_baseline"] is None and table["yolo_bof"]["vs_baseline"] is not None


def test_baseline_chooses_the_rows_to_compare_against_over_what_the_runs_name(tmp_path, capsys):
    """Runs from before a table named one baseline per detector name one; --baseline gives the
    comparison the table has now, and a row that is not there is an error naming the rows that are."""
    for order, row in enumerate(["r50", "r50_bof", "yolo", "yolo_bof"]):
        write_run(tmp_path, row, 0, simulated_voc_record(order + 1), order=order, baseline_row="r50")
    before = {r["name"]: r for r in report([str(tmp_path), "--replicates", "20"])}
    assert before["yolo_bof"]["vs_baseline"] != pytest.approx(before["yolo_bof"]["vs_above"])
    table = {r["name"]: r for r in report([str(tmp_path), "--replicates", "20", "--baseline", "r50", "yolo"])}
    assert table["yolo_bof"]["vs_baseline"] == pytest.approx(table["yolo_bof"]["vs_above"])
    assert (
        table["yolo"]["vs_baseline"] == 0.0
        and table["r50_bof"]["vs_baseline"] == before["r50_bof"]["vs_baseline"]
    )
    with pytest.raises(SystemExit, match=r"--baseline r101: no such row in .*; its rows are r50, r50_bof"):
        report([str(tmp_path), "--baseline", "r50", "r101"])


def test_design_rows_give_each_tricks_effect_with_its_sign_and_both_designs_side_by_side(tmp_path, capsys):
    """A leave-one-out row removes its trick (effect = all - row), an add-one row adds it (row - base)."""
    loo, add = tmp_path / "table2_loo", tmp_path / "table2_add_one"
    good, bad = simulated_voc_record(2, skill=0.95), simulated_voc_record(1, skill=0.5)
    design = {"design": "leave_one_out", "baseline_row": "all"}
    write_run(loo, "all", 0, good, order=0, **design)
    write_run(loo, "no_mixup", 0, bad, order=1, trick="mixup", removes=True, paper_delta=1.54, **design)
    design = {"design": "add_one", "baseline_row": "baseline"}
    write_run(add, "baseline", 0, bad, order=0, **design)
    write_run(add, "mixup", 0, good, order=1, trick="mixup", removes=False, paper_delta=1.54, **design)
    table = {(r["name"]): r for r in report([str(loo), str(add), "--replicates", "100"])}
    assert table["no_mixup"]["vs_baseline"] < 0 < table["mixup"]["vs_baseline"]
    out = capsys.readouterr().out
    effect = -table["no_mixup"]["vs_baseline"]
    low, high = -table["no_mixup"]["vs_baseline_high"], -table["no_mixup"]["vs_baseline_low"]
    assert f"| mixup | {effect:+.2f} [{low:+.2f}, {high:+.2f}]* | +1.54 |" in out  # in context, sign flipped
    assert "## Each trick alone and in context" in out
    assert (
        "effect in context (all - all without it) [95% CI] | effect alone (baseline + it - baseline)" in out
    )
    assert (loo / "forest.png").is_file() and (add / "forest.png").is_file()


def test_odd_results_are_said_not_tracebacks(tmp_path, capsys):
    """A NaN mAP is not "done", a non-numeric one is unreadable, --per-class with other class sets keeps the
    shared classes, and --csv into a folder that does not exist yet creates it."""
    write_run(tmp_path, "base", 0, simulated_voc_record(1), order=0)
    for row, value in (("nan", float("nan")), ("text", "0.5")):
        run = tmp_path / row / "seed0"
        run.mkdir(parents=True)
        config = {"row": {"label": row, "baseline_row": "base", "order": 1}}
        (run / "metrics.json").write_text(json.dumps({"map": value, "metric": "voc07", "config": config}))
    base = json.loads((tmp_path / "base" / "seed0" / "metrics.json").read_text())
    base["ap"] = {"cat": 0.5, "dog": 0.25}
    (tmp_path / "base" / "seed0" / "metrics.json").write_text(json.dumps(base))
    write_run(tmp_path, "other", 0, simulated_voc_record(2), order=2)
    other = json.loads((tmp_path / "other" / "seed0" / "metrics.json").read_text())
    other["ap"] = {"cat": 0.75, "bird": 0.1}
    (tmp_path / "other" / "seed0" / "metrics.json").write_text(json.dumps(other))
    csv_path = tmp_path / "new" / "folder" / "t.csv"
    table = {
        r["name"]: r for r in report([str(tmp_path), "--csv", str(csv_path), "--per-class", "base", "other"])
    }
    assert table["nan"]["status"] == "1 with a NaN or infinite result" and table["nan"]["mean"] is None
    assert table["text"]["status"] == "1 with no readable result in metrics.json"
    assert csv_path.is_file() and (tmp_path / "per_class_other_vs_base.png").is_file()


def test_a_failure_after_a_result_is_a_failure_and_a_refused_rerun_a_note(tmp_path):
    """A failed.json newer than metrics.json (trained again, failed) is not "done"; an older one (the
    attempt before the result) is forgotten; a refused rerun (refused.json) leaves the result counted."""
    for row in ("base", "again", "before", "refused"):
        write_run(tmp_path, row, 0, simulated_voc_record(1), order=0 if row == "base" else 1)
    for row, delta in (("again", 10), ("before", -10)):
        metrics = tmp_path / row / "seed0" / "metrics.json"
        failed = metrics.with_name("failed.json")
        failed.write_text('{"error": "FloatingPointError: ..."}')
        stamp = metrics.stat().st_mtime_ns + delta * 10**9
        os.utime(failed, ns=(stamp, stamp))
    (tmp_path / "refused" / "seed0" / "refused.json").write_text('{"error": "RunConflict: ..."}')
    table = {r["name"]: r for r in report([str(tmp_path), "--replicates", "0"])}
    assert table["again"]["status"] == "1 failed" and table["again"]["runs"] == 0
    assert table["before"]["status"] == "done" and table["before"]["runs"] == 1
    assert table["refused"]["status"] == "1 with a refused rerun (refused.json)"
    assert table["refused"]["runs"] == 1 and table["refused"]["mean"] is not None

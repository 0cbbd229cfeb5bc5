"""The paper's tables as sweeps: every row of every table composes; so do the leave-one-out and add-one
designs of Tables 2-3, each row one trick away from its design's baseline row; each job of a sweep lands
in multirun/<table>/<row>/seed<k>; a 2-row sweep runs, reports, and a rerun skips its finished rows; the
report keeps the sweep's order and marks failed and unfinished rows."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from bof.cli.report import main as report
from bof.cli.report_runs import named_baselines
from bof.config import CONFIG_DIR
from bof.engine.run_log import TRICK_GROUPS
from bof.engine.run_setup import build_tricks
from bof.train import build_model, train
from tests.helpers import (
    DESIGN_ROWS,
    DESIGNS,
    PAPER_ROWS,
    TINY,
    TINY_FASTER_RCNN,
    TINY_MINI,
    TRICK_NAMES,
    bof_train,
    compose_row,
    rows_of,
    stacked_tricks,
)

TABLES = sorted(p.stem for p in (Path(CONFIG_DIR) / "sweep").glob("*.yaml"))  # the designs' sweeps too
PAPER_TABLES = [table for table in TABLES if table not in DESIGNS]


def row_files(table: str) -> list[str]:
    """The rows of a table: its experiment files but the base, as ``<row>``."""
    return sorted(
        p.stem for p in (Path(CONFIG_DIR) / "experiment" / table).glob("*.yaml") if p.stem != "base"
    )


def test_tables_1_to_6_each_have_a_sweep_of_all_their_rows_in_the_papers_order():
    assert PAPER_TABLES == ["table1", "table2", "table3", "table4", "table5", "table6"]
    assert set(DESIGNS) <= set(TABLES)  # and the designs' sweeps, below
    # the paper's rows (docs/tables.md), in order: the sweeps' lists are the tables' order
    assert [row for table in PAPER_TABLES for row in rows_of(table)] == list(PAPER_ROWS)
    for table in TABLES:  # a row file the sweep does not list is a row its table would miss
        assert sorted(rows_of(table)) == [f"{table}/{r}" for r in row_files(table)]


BACKBONES = [
    "backbones.darknet53=/ckpt/darknet53.conv.74",
    "backbones.plain=/ckpt/plain.pt",
    "backbones.mixup=/ckpt/mixup.pt",
]


def trick_choices(cfg) -> dict:
    return {g: cfg.hydra.runtime.choices[g] for g in TRICK_GROUPS}


@pytest.mark.parametrize("table", PAPER_TABLES)
def test_every_row_composes_and_stacks_on_the_row_above(table):
    previous = None
    for order, row in enumerate(rows_of(table)):
        cfg = compose_row(f"+sweep={table}", f"experiment={row}", *BACKBONES)
        assert cfg.row.table == table and cfg.trainer.resume == "auto"
        assert cfg.row.label and "paper" in cfg.row  # the paper's label and number (null: none published)
        tricks = trick_choices(cfg)
        assert tricks == PAPER_ROWS[row], row  # the oracle the full-scale runs check their logs against
        if table in ("table2", "table3") and previous is not None and order >= 2:
            changed = [g for g in tricks if tricks[g] != previous[g]]
            assert len(changed) == 1, (row, changed)  # each row is the row above plus one trick
        previous = tricks
        if table in ("table5", "table6"):
            assert cfg.model.backbone_checkpoint.endswith(("plain.pt", "mixup.pt"))


@pytest.mark.parametrize("design", DESIGNS)
def test_every_design_row_is_its_baseline_row_with_one_trick_changed_and_says_which(design):
    """Leave-one-out: the table's last row (all freebies), then per trick that row with the trick off;
    add-one: the table's baseline, then per trick the baseline with it on (augmentation, which the
    baseline has, off). Each row names its trick, whether it removes it, and the paper's stacked delta
    for it: the table's row adding the trick minus the row above, as the table's own row files say."""
    table, loo = DESIGNS[design], design.endswith("_loo")
    assert rows_of(design) == [r for r in DESIGN_ROWS if r.split("/")[0] == design]  # baseline first
    paper = {row: compose_row(f"experiment={row}").row.paper for row in rows_of(table)}
    start = PAPER_ROWS[rows_of(table)[-1] if loo else f"{table}/baseline"]
    steps, tricks = stacked_tricks(table), []
    for row in rows_of(design):
        cfg = compose_row(f"+sweep={design}", f"experiment={row}", *BACKBONES)
        meta, choices = cfg.row, trick_choices(cfg)
        assert choices == DESIGN_ROWS[row], row  # the oracle the full-scale runs check their logs against
        assert (meta.table, meta.design) == (design, "leave_one_out" if loo else "add_one")
        assert meta.label and "paper" not in meta  # the paper has no such row
        if row == f"{design}/{meta.baseline_row}":
            assert choices == start and meta.get("trick") is None
            continue
        (group,) = (g for g in choices if choices[g] != start[g])  # one trick changed ...
        off, on, above, adds = steps[group]
        assert {start[group], choices[group]} == {off, on}  # ... between the table's two choices of it
        assert meta.trick == TRICK_NAMES.get(group, group) and meta.removes == (choices[group] == off)
        assert meta.paper_delta == round(paper[adds] - paper[above], 2), row
        tricks.append(group)
    assert sorted(tricks) == sorted(steps)  # every trick of the table, once


@pytest.mark.parametrize("table", TABLES)
def test_every_row_at_full_and_mini_scale(table, tmp_path):
    """Each row is one experiment file, the same config alone or in its sweep (which adds only
    trainer.resume=auto); scale=mini makes it its family's miniature but keeps the row's tricks, in
    whichever order it is given; the mini row builds its tricks and model."""
    baselines = []
    for row in rows_of(table):
        full = compose_row(f"experiment={row}", "trainer.resume=auto", *BACKBONES)
        swept = compose_row(f"+sweep={table}", f"experiment={row}", *BACKBONES)
        assert {k: v for k, v in swept.items() if k != "hydra"} == {
            k: v for k, v in full.items() if k != "hydra"
        }
        assert full.trainer.devices == full.paper_setup.world_size  # the table's base: the paper's GPUs
        assert full.data.name in ("voc", "coco") and full.model.name.startswith(("yolov3", "faster_rcnn"))
        assert full.model.name != "yolov3_narrow"  # and an ImageNet-pretrained backbone, as the paper:
        assert full.model.backbone_checkpoint is not None or full.model.net.pretrained_backbone
        baselines.append(row.split("/", 1)[1] in named_baselines(full.row))  # Table 4: one per detector
        no_backbone = "model.backbone_checkpoint=null"  # built on first use (tests/e2e/test_mini_scale.py)
        for mini in (
            compose_row(f"+sweep={table}", f"experiment={row}", "scale=mini", no_backbone),
            compose_row("scale=mini", f"+sweep={table}", f"experiment={row}", no_backbone),
            compose_row(f"experiment={row}", "scale=mini", no_backbone),
        ):
            assert (mini.data.name, mini.model.name, mini.trainer.devices) == (
                "synthetic_scenes",
                f"{full.hydra.runtime.choices.model}_narrow",
                1,
            )
            assert mini.paper_setup is None
            assert trick_choices(mini) == trick_choices(full) and mini.row == full.row
        tricks = build_tricks(mini)  # and the mini row runs: its tricks and model build
        for group, choice in trick_choices(full).items():  # a trick the row names is on, and only those
            assert (getattr(tricks, group) is None) == (choice == "off"), (row, group)
        build_model(mini, num_classes=20, device=torch.device("cpu"), smoothing=tricks.smoothing)
    # the base names one of its rows as the baseline; Table 4 one per detector, each its first row
    assert baselines.count(True) == (3 if table == "table4" else 1)
    assert table != "table4" or baselines == [True, False] * 3


@pytest.mark.parametrize("table", ["table3", "table4", "table5", "table6"])
def test_the_last_row_of_each_table_trains_at_mini_scale(table, make_cfg):
    """Table 2's mini rows run as a sweep below; here the other tables' most complete row (all its
    tricks) trains at mini scale, in its own family (Faster R-CNN for Tables 3, 4 and 6) from the
    miniature's pretrained backbone."""
    row = rows_of(table)[-1]
    small = TINY_FASTER_RCNN if table in ("table3", "table6") or "frcnn" in row else []  # the row's family
    metrics = train(make_cfg(f"+sweep={table}", f"experiment={row}", "scale=mini", *TINY_MINI, *small))
    label = yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{row}.yaml").read_text())["row"]["label"]
    assert metrics["map"] is not None and metrics["config"]["row"]["label"] == label


def test_a_design_row_trains_at_mini_scale(make_cfg):
    """Leave-one-out's row without the cosine schedule (no row of Table 2 has its tricks) trains at mini
    scale with the step schedule and mixup, its row block saved for bof-report."""
    row = "table2_loo/no_cosine"
    assert DESIGN_ROWS[row] not in [PAPER_ROWS[r] for r in rows_of("table2")]
    metrics = train(make_cfg("+sweep=table2_loo", f"experiment={row}", "scale=mini", *TINY_MINI))
    saved = metrics["config"]
    assert metrics["map"] is not None and saved["row"] == OmegaConf.to_container(
        compose_row(f"experiment={row}").row
    )
    assert saved["lr_schedule"]["_target_"].endswith("StepSchedule") and saved["mixup"]["alpha"] == 1.5


def launch(tmp_path: Path, monkeypatch, *overrides: str, job=None) -> Path:
    """``bof-train -m <overrides>`` in ``tmp_path`` through Hydra's own sweeper, launcher and job set-up
    (its multirun.yaml and each job's .hydra/), each job running ``job(cfg)`` instead of training (by
    default nothing); -> ``tmp_path/multirun``, where the jobs land."""
    monkeypatch.chdir(tmp_path)
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # leave pytest's logging alone
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        returns = GlobalHydra.instance().hydra.multirun(
            config_name="train",
            task_function=job or (lambda cfg: None),
            overrides=[*overrides, *quiet],
            with_log_configuration=False,
        )
    for ran in returns[0]:
        assert ran.return_value is None  # raises a job's exception
    return tmp_path / "multirun"


@pytest.mark.parametrize("table", TABLES)
def test_each_job_of_a_sweep_lands_in_multirun_table_row_seed(
    table, tmp_path, monkeypatch, hydra_restore_singletons
):
    """Where `bof-train -m +sweep=tableN seed=0,1` puts each job: multirun/tableN/<row>/seed<k>, <row>
    being the row's experiment file; with scale=mini (anywhere) multirun/tableN-mini; a sweep of some
    rows (`experiment=tableN/<row>,...`) runs just those, in the same folders. The designs' likewise:
    multirun/table2_loo/<row>/seed<k>, multirun/table2_loo-mini."""
    jobs = {}

    def job(cfg):  # the job's own experiment choice and folder
        jobs[HydraConfig.get().runtime.choices.experiment, cfg.seed] = HydraConfig.get().runtime.output_dir

    multirun = launch(tmp_path, monkeypatch, f"+sweep={table}", "seed=0,1", job=job)
    rows = row_files(table)
    assert sorted(str(p.relative_to(multirun)) for p in multirun.glob("*/*/seed*")) == sorted(
        f"{table}/{row}/seed{k}" for row in rows for k in (0, 1)
    )
    assert jobs == {
        (f"{table}/{row}", k): str(multirun / table / row / f"seed{k}") for row in rows for k in (0, 1)
    }
    for row in rows:  # what Hydra saved with the job: the row's experiment, as bof-report reads it back
        overrides = yaml.safe_load(
            (multirun / table / row / "seed0" / ".hydra" / "overrides.yaml").read_text()
        )
        assert f"experiment={table}/{row}" in overrides
    shutil.rmtree(multirun)
    launch(
        tmp_path,
        monkeypatch,
        "scale=mini",
        f"+sweep={table}",
        f"experiment={table}/{rows[-1]},{table}/{rows[0]}",
    )
    assert sorted(str(p.relative_to(multirun)) for p in multirun.glob("*/*/seed*")) == sorted(
        f"{table}-mini/{row}/seed0" for row in (rows[0], rows[-1])
    )


def hparams_of(run: Path) -> dict:
    """The HParams row a run wrote into its own TensorBoard events (options as typed, as strings)."""
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = HParamsPluginData.FromString(start).session_start_info.hparams
    assert "hparam/mAP" in events.Tags()[
        "scalars"
    ] and "_hparams_/session_end_info" in events.PluginTagToContent("hparams")  # completed at the end
    return {k: v.string_value or v.number_value for k, v in info.items()}


def sweep(tmp_path, cache_dir, *rows):
    return bof_train(
        "-m",
        "+sweep=table2",
        "scale=mini",
        f"experiment={','.join(rows)}",
        *TINY,
        *TINY_MINI,
        f"data.root={cache_dir}",
        cwd=tmp_path,
        timeout=600,
    )


def test_a_two_row_sweep_runs_reports_and_reruns_without_training_again(tmp_path, cache_dir, capsys):
    done = sweep(tmp_path, cache_dir, "table2/no_aug", "table2/baseline")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tmp_path / "multirun" / "table2-mini"  # the sweep's own directory: no hydra.sweep.dir given
    assert sorted(p.parent.name + "/" + p.name for p in runs.glob("*/seed*")) == [
        "baseline/seed0",
        "no_aug/seed0",
    ]
    hparams = hparams_of(runs / "no_aug" / "seed0")  # the HParams tab, in the run itself
    assert hparams["augment"] == "none" and hparams["mixup"] == "off" and hparams["row"] == "no_aug"
    assert {"lr", "epochs", "batch", "width", "world_size", "seed"} <= set(hparams)
    assert not (runs / "no_aug" / "seed0" / "tensorboard" / "hparams").exists()  # no second run
    table = report([str(runs)])
    assert [r["row"] for r in table] == ["- data augmentation", "baseline"]
    no_aug, baseline = (
        json.loads((runs / r / "seed0" / "metrics.json").read_text())["map"] for r in ("no_aug", "baseline")
    )
    assert table[1]["vs_baseline"] == 0.0 and table[1]["vs_above"] == pytest.approx(100 * (baseline - no_aug))
    assert table[0]["paper"] == 64.26 and table[1]["paper"] == 80.25
    # each run kept its final evaluation per image: the difference has its paired bootstrap interval
    assert (
        table[0]["vs_baseline_low"] is not None
        and table[0]["vs_baseline_low"] <= table[0]["vs_baseline_high"]
    )
    assert table[0]["throughput_vs_baseline"] > 0 and (runs / "forest.png").is_file()
    out = capsys.readouterr().out
    assert "| baseline |" in out and (runs / "report.csv").is_file() and "[95% CI]: paired bootstrap" in out
    assert "| 1x4 |" in out  # the data parallelism each row ran with: 1 process x 4 images
    stamp = (runs / "baseline" / "seed0" / "last.pt").stat().st_mtime_ns
    again = sweep(tmp_path, cache_dir, "table2/no_aug", "table2/baseline")
    assert again.returncode == 0 and "finished already" in again.stderr + again.stdout
    assert (runs / "baseline" / "seed0" / "last.pt").stat().st_mtime_ns == stamp


def test_report_marks_failed_and_unfinished_rows_and_draws_per_class_deltas(tmp_path, capsys):
    def run(row, order, label, value, baseline=False):
        d = tmp_path / row / "seed0"
        d.mkdir(parents=True)
        config = {"row": {"label": label, "order": order, "paper": None, "baseline_row": "base"}}
        d.joinpath("metrics.json").write_text(
            json.dumps({"map": value, "ap": {"a": value, "b": value / 2}, "config": config})
        )

    run("base", 0, "baseline", 0.5, baseline=True)
    run("plus", 1, "+ trick", 0.6)
    (tmp_path / "broken" / "seed0").mkdir(parents=True)
    (tmp_path / "broken" / "seed0" / "failed.json").write_text("{}")
    (tmp_path / "base" / "seed1").mkdir()  # started, never finished
    table = report([str(tmp_path), "--per-class", "base", "plus"])
    by_row = {r["row"]: r for r in table}
    assert by_row["baseline"]["status"] == "1 unfinished" and by_row["broken"]["status"] == "1 failed"
    assert by_row["+ trick"]["vs_baseline"] == pytest.approx(10.0) and by_row["broken"]["mean"] is None
    assert (tmp_path / "per_class_plus_vs_base.png").is_file()


def test_ablation_demo_target_exists():
    makefile = (Path(CONFIG_DIR).parent / "Makefile").read_text()
    assert "ablation-demo:" in makefile and "+sweep=table2 scale=mini" in makefile


def test_report_refuses_a_missing_directory(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        report([str(tmp_path / "nope")])
    shutil.rmtree(tmp_path)


def test_report_of_an_ad_hoc_multirun_has_a_row_per_combination_of_the_swept_overrides(tmp_path, capsys):
    jobs = [("0.001", 0, 0.5), ("0.001", 1, 0.6), ("0.002", 0, 0.7), ("0.002", 1, None)]  # lr, seed, mAP
    for n, (lr, seed, value) in enumerate(jobs):
        job = tmp_path / str(n)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n- mixup=off\n")
        if value is None:
            (job / "failed.json").write_text(json.dumps({"error": "boom"}))
        else:
            # every job is the same experiment row: its label and paper number must not name the rows
            row = {"label": "+ mixup", "paper": 81.32, "baseline_row": "baseline"}
            metrics = {"map": value, "metric": "voc07", "ap": {}, "config": {"row": row}}
            (job / "metrics.json").write_text(json.dumps(metrics))
    table = report([str(tmp_path)])
    # one row per swept lr: the seeds pooled, mixup (the same in every job) left out
    assert [r["row"] for r in table] == ["optimizer.lr=0.001", "optimizer.lr=0.002"]
    assert table[0]["runs"] == 2 and table[0]["mean"] == pytest.approx(55.0)
    assert table[1]["status"] == "1 failed" and table[1]["vs_baseline"] == pytest.approx(15.0)  # row 1: base
    out = capsys.readouterr().out
    assert "VOC07 mAP (%)" in out and "70.00 n=1" in out and "55.00 ± 7.07" in out


def test_report_flags_unreadable_results_keeps_labels_and_lists_rows_that_never_started(tmp_path, capsys):
    """A table2 sweep launched with three rows and seeds 0,1 (Hydra's multirun.yaml): baseline seed 0
    done and seed 1 never started, mixup's metrics.json empty (a full disk) for seed 0 and unfinished
    for seed 1, cosine never started at all."""
    some = "experiment=table2/baseline,table2/mixup,table2/cosine"  # a sweep of some of the table's rows
    launched = {
        "hydra": {
            "sweeper": {"params": {"experiment": ",".join(rows_of("table2")), "seed": "0"}},
            "overrides": {"task": ["+sweep=table2", "seed=0,1", some]},
        }
    }
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(launched))
    mixup = {"label": "+ mixup", "paper": 83.68}
    for name, seed, content in (
        (
            "baseline",
            0,
            {"map": 0.5, "ap": {}, "config": {"row": {"label": "baseline", "baseline_row": "baseline"}}},
        ),
        ("mixup", 0, ""),
        ("mixup", 1, None),
    ):
        run = tmp_path / name / f"seed{seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"row": mixup if name == "mixup" else {}}))
        if content is not None:
            (run / "metrics.json").write_text(json.dumps(content) if content else "")
    table = {r["row"]: r for r in report([str(tmp_path)])}
    assert table["+ mixup"]["paper"] == 83.68 and table["+ mixup"]["mean"] is None
    assert table["+ mixup"]["status"] == "1 unfinished, 1 with no readable result in metrics.json"
    assert table["baseline"]["status"] == "1 never started" and table["baseline"]["mean"] == 50.0
    assert table["+ cosine lr schedule"]["status"] == "2 never started"
    assert table["+ cosine lr schedule"]["paper"] == 81.69
    assert [r["row"] for r in table.values()] == ["baseline", "+ cosine lr schedule", "+ mixup"]


def test_report_orders_rows_as_the_sweep_lists_them(tmp_path, monkeypatch, hydra_restore_singletons, capsys):
    """Rows launched out of order (`experiment=table2/mixup,table2/baseline,...`) come out in the order
    of the sweep's list in multirun.yaml (Table 2's, not the command line's nor the alphabet's); a row
    launched whose job never started is listed in its place, with its label and the paper's number."""
    maps = {"table2/no_aug": 0.6, "table2/baseline": 0.7, "table2/mixup": 0.8}

    def job(cfg):  # a finished run: its metrics.json and config, as training writes them
        result = {
            "map": maps.get(HydraConfig.get().runtime.choices.experiment),
            "metric": "voc07",
            "ap": {},
            "config": {"row": OmegaConf.to_container(cfg.row)},
        }
        (Path(HydraConfig.get().runtime.output_dir) / "metrics.json").write_text(json.dumps(result))

    launched = "experiment=table2/mixup,table2/cosine,table2/baseline,table2/no_aug"
    runs = launch(tmp_path, monkeypatch, "+sweep=table2", "scale=mini", launched, job=job) / "table2-mini"
    shutil.rmtree(runs / "cosine")  # a job that never started (a SLURM job still queued)
    table = report([str(runs)])
    assert [r["row"] for r in table] == ["- data augmentation", "baseline", "+ cosine lr schedule", "+ mixup"]
    assert table[2]["status"] == "1 never started" and table[2]["paper"] == 81.69
    assert table[3]["vs_baseline"] == pytest.approx(10.0) and table[3]["vs_above"] == pytest.approx(10.0)
    assert table[1]["vs_above"] == pytest.approx(10.0) and table[3]["paper"] == 83.68

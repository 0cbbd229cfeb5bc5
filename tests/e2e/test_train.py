"""End to end: train(cfg) on tiny synthetic data, dry run, resume, the CLI."""

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import bof.train
from bof.config import check_paper_setup
from bof.evaluation.ranked_record import RankedDetections
from bof.evaluation.weighted_ap import metric_under_weights
from bof.train import train
from tests.helpers import TINY_FASTER_RCNN, scalar_tags


def test_train_writes_metrics_checkpoints_results_and_tensorboard(make_cfg, tmp_path):
    metrics = train(make_cfg())
    run = tmp_path / "run"
    assert 0.0 <= metrics["map"] <= 1.0 and set(metrics["ap"]) == {
        "circle",
        "square",
        "triangle",
        "cross",
        "diamond",
        "ring",
    }
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["map"] == metrics["map"] and saved["num_params"] == metrics["num_params"] > 0
    assert (
        saved["config"]["trainer"]["epochs"] == 2 and saved["images_per_s"] > 0 and saved["wall_time_s"] > 0
    )
    # throughput over the training only: its images over its seconds, evaluation excluded
    assert saved["train_time_s"] < saved["wall_time_s"]
    record = RankedDetections.load(run / "eval_record.npz")  # the final evaluation, per image
    assert metric_under_weights(record, np.ones(len(record.image_ids)))[0] == saved["map"]
    for name in ("last.pt", "best.pt"):
        checkpoint = torch.load(run / name, weights_only=True)
        assert {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "rng", "config"} <= set(checkpoint)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in (run / "results").iterdir())[0].startswith("comp4_det_test_")

    events = scalar_tags(run)
    tags = events.Tags()
    for tag in (
        "train/lr",
        "train/loss",
        "train/loss_obj",
        "train/loss_xy",
        "train/loss_wh",
        "train/loss_cls",
        "train/input_size",
        "val/mAP",
    ):
        assert tag in tags["scalars"], tag
    assert any(t.startswith("val/AP/") for t in tags["scalars"])
    assert len(events.Scalars("train/lr")) == 8  # 2 epochs x 4 iterations, logged every iteration
    assert {e.value for e in events.Scalars("train/input_size")} == {64}
    assert any(t.startswith("val/detections/") for t in tags["images"])


def test_dry_run_builds_everything_and_trains_nothing(make_cfg, tmp_path):
    result = train(make_cfg("trainer.dry_run=true"))
    assert result == {
        "dry_run": True,
        "num_params": result["num_params"],
        "iters_per_epoch": 4,
        "train_images": 16,
        "val_images": 8,
    }
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_runs_loader_workers_end_with_it_however_it_ends(make_cfg, tmp_path, monkeypatch):
    """The workers ignore SIGTERM (a process group's stop signal must not kill them), so any left when the
    interpreter exits hang it: multiprocessing's exit handler sends them SIGTERM and waits. The loaders
    outlive train() (closures that refer to one another), so the run ends their workers itself."""
    train(make_cfg("trainer.num_workers=1", output_dir=tmp_path / "done"))
    assert multiprocessing.active_children() == []

    def stop(model, loader, *args, **kwargs):  # a stop in the middle of an epoch, its workers busy
        next(iter(loader))
        assert multiprocessing.active_children()
        raise KeyboardInterrupt("simulated stop")

    monkeypatch.setattr(bof.train, "train_one_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg("trainer.num_workers=1", output_dir=tmp_path / "stopped"))
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(
    "family",
    [
        [],  # YOLOv3, no workers
        # Faster R-CNN draws its RPN / RoI samples from the global RNG; with a worker, each new loader
        # iterator must not draw its base seed from it (a resume creates one more iterator)
        ["model=faster_rcnn_r50_fpn", *TINY_FASTER_RCNN, "trainer.num_workers=1"],
    ],
    ids=["yolov3", "faster_rcnn_one_worker"],
)
def test_resumed_run_ends_with_the_same_weights(make_cfg, tmp_path, monkeypatch, family):
    uninterrupted = tmp_path / "a"
    train(make_cfg("trainer.epochs=3", *family, output_dir=uninterrupted))

    real_train_one_epoch = bof.train.train_one_epoch
    calls = []

    def stop_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated stop")
        return real_train_one_epoch(*args, **kwargs)

    interrupted = tmp_path / "b"
    monkeypatch.setattr(bof.train, "train_one_epoch", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg("trainer.epochs=3", *family, output_dir=interrupted))
    assert torch.load(interrupted / "last.pt", weights_only=True)["epoch"] == 0
    monkeypatch.setattr(bof.train, "train_one_epoch", real_train_one_epoch)
    train(make_cfg("trainer.epochs=3", *family, "trainer.resume=true", output_dir=interrupted))

    a = torch.load(uninterrupted / "last.pt", weights_only=True)
    b = torch.load(interrupted / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"] == 12


def test_resuming_with_another_optimizer_is_refused_not_recorded_and_ignored(make_cfg, tmp_path, monkeypatch):
    """The restored optimizer and scheduler states keep the checkpoint's lr: a new optimizer.lr would be
    written to metrics.json and the fingerprint but never trained with, so the resume is refused."""
    real_train_one_epoch = bof.train.train_one_epoch

    def stop_in_second_epoch(*args, **kwargs):
        if args[4] == 1:  # the epoch
            raise KeyboardInterrupt("simulated stop")
        return real_train_one_epoch(*args, **kwargs)

    monkeypatch.setattr(bof.train, "train_one_epoch", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg("optimizer.lr=0.003"))
    monkeypatch.setattr(bof.train, "train_one_epoch", real_train_one_epoch)
    with pytest.raises(ValueError, match=r"another optimizer \(optimizer.lr: 0.003 -> 0.002\)"):
        train(make_cfg("optimizer.lr=0.002", "trainer.resume=true"))
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert train(make_cfg("optimizer.lr=0.003", "trainer.resume=true"))["epochs"] == 2


def test_resume_without_checkpoint_names_the_path(make_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(make_cfg("trainer.resume=true"))


def test_unknown_trainer_key_fails_loudly(make_cfg):
    with pytest.raises(Exception, match="epoch"):
        train(make_cfg("+trainer.epoch=3"))


def test_cli_help_lists_the_config_groups():
    out = subprocess.run(
        [sys.executable, "-m", "bof.train", "--help"], capture_output=True, text=True, check=True
    )
    for group in ("data:", "model:", "optimizer:", "lr_schedule:", "experiment:"):
        assert group in out.stdout, group
    assert "synthetic" in out.stdout and "voc" in out.stdout


def test_cli_run_writes_one_run_directory(tmp_path, cache_dir):
    from tests.helpers import TINY

    run_dir = tmp_path / "cli-run"
    env = dict(os.environ, BOF_CACHE_DIR=str(cache_dir))
    overrides = [o for o in TINY if not o.startswith("trainer.epochs")] + [
        "trainer.epochs=1",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bof.train", *overrides], env=env, check=True, capture_output=True, text=True
    )
    # the last words: where the run is and the one command that serves its TensorBoard
    printed = done.stdout + done.stderr
    assert f"run directory: {run_dir}" in printed
    tensorboard = printed.rsplit("its TensorBoard: ", 1)[1].split()
    assert Path(tensorboard[0]).name == "tensorboard" and Path(tensorboard[0]).is_file()
    assert tensorboard[1:] == ["--logdir", str(run_dir / "tensorboard")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and (run_dir / "train.log").read_text().count("final VOC07 mAP") == 1
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    # the unresolved config beside the resolved one: Hydra's and the environment's values fixed, the
    # config's own interpolations kept (what bof-eval's data.root=... re-resolves)
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    source = checkpoint["config_source"]
    assert source["trainer"]["output_dir"] == str(run_dir) and source["data"]["root"] == str(cache_dir)
    assert source["data"]["val"]["cache_dir"] == "${data.root}"
    assert OmegaConf.to_container(OmegaConf.create(source), resolve=True) == checkpoint["config"]


def test_a_run_off_the_papers_data_parallelism_says_so(caplog):
    setup = OmegaConf.create({"world_size": 8, "batch_per_process": 8})
    with caplog.at_level(logging.WARNING, logger="bof"):
        check_paper_setup(setup, 8, 8)
        assert not caplog.records  # the paper's 8 x 8: nothing to say
        check_paper_setup(setup, 2, 32)
    assert "2 process(es) x 32 images; the paper's setup is 8 x 8" in caplog.text


def test_a_dry_run_of_a_huge_epoch_count_plans_its_lr_curve_in_bounded_memory(make_cfg, tmp_path):
    """trainer.epochs=10^8 with a dry run: the lr figure samples the schedule (it used to build a list of
    every iteration's lr, a MemoryError); the run plans and exits at once."""
    started = time.perf_counter()
    result = train(make_cfg("trainer.dry_run=true", "trainer.epochs=100000000"))
    assert result["dry_run"] and (tmp_path / "run" / "lr_schedule.png").is_file()
    assert time.perf_counter() - started < 60

"""Data-parallel training on CPU (gloo): SyncBN math, 2 processes = 1 process, one output directory."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bof.data.loader import KeyedBatchSampler, build_data_loader
from bof.models.yolov3 import YOLOv3
from bof.train import train, train_process
from bof.tricks.augment import Resize
from bof.tricks.syncbn import AllReduceBatchNorm2d, SyncBatchNorm, convert_sync_batchnorm
from bof.utils import distributed
from tests.helpers import DETERMINISTIC, TINY, assert_weights_moved_alike


def batch_and_weights():
    torch.manual_seed(0)
    return torch.randn(4, 3, 5, 5) * 3 + 1, torch.randn(4, 3, 5, 5)


def syncbn_process(out: str) -> None:
    rank = int(os.environ["RANK"])
    distributed.setup("cpu")
    x, w = batch_and_weights()
    bn = AllReduceBatchNorm2d(3, momentum=0.3)
    x = x[2 * rank : 2 * rank + 2].clone().requires_grad_()
    y = bn(x)
    (y * w[2 * rank : 2 * rank + 2]).sum().backward()
    torch.save(
        {"y": y.detach(), "grad": x.grad, "mean": bn.running_mean, "var": bn.running_var}, f"{out}.{rank}"
    )


def test_two_process_syncbn_equals_batchnorm_over_the_whole_batch(tmp_path):
    distributed.spawn(syncbn_process, 2, str(tmp_path / "r"))
    ranks = [torch.load(tmp_path / f"r.{r}") for r in (0, 1)]
    x, w = batch_and_weights()
    x.requires_grad_()
    bn = nn.BatchNorm2d(3, momentum=0.3)
    y = bn(x)
    (y * w).sum().backward()
    assert torch.allclose(torch.cat([r["y"] for r in ranks]), y, atol=1e-5)
    assert torch.allclose(torch.cat([r["grad"] for r in ranks]), x.grad, atol=1e-5)
    for r in ranks:
        assert torch.allclose(r["mean"], bn.running_mean, atol=1e-5)
        assert torch.allclose(r["var"], bn.running_var, atol=1e-5)


def test_syncbn_converts_every_batchnorm_and_keeps_the_weights():
    model = YOLOv3(num_classes=3, width=0.0625)
    before = model.state_dict()
    converted = convert_sync_batchnorm(model, "cpu")
    norms = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, AllReduceBatchNorm2d) for m in norms)
    assert all(torch.equal(before[k], v) for k, v in converted.state_dict().items())
    untouched = SyncBatchNorm()(YOLOv3(3, 0.0625), "cpu", world_size=1)  # one process: nothing changes
    assert {type(m) for m in untouched.modules() if isinstance(m, nn.BatchNorm2d)} == {nn.BatchNorm2d}


def test_evaluation_shards_cover_every_image_exactly_once():
    dataset = list(range(11))
    shards = [
        [
            key.index
            for batch in build_data_loader(
                dataset,
                Resize(),
                2,
                lambda it: 32,
                shuffle=False,
                seed=0,
                num_workers=0,
                rank=r,
                world_size=3,
                drop_last=False,
            ).batch_sampler
            for key in batch
        ]
        for r in range(3)
    ]
    assert sorted(i for shard in shards for i in shard) == dataset


def test_two_processes_train_like_one_with_the_same_global_batch(make_cfg, tmp_path):
    """Same global batch, same data, SyncBN on: the weights move the same way.

    Stated tolerance: 1% of the distance moved, over 2 optimizer steps (momentum and weight decay on)
    at a small LR. Longer or faster runs drift apart: a YOLOv3 of width 1/16 on 64 px images is
    chaotic under its non-smooth loss (ignore rule, L1), and a single process whose input is perturbed
    by 1e-7 drifts from itself exactly as much as 2 processes drift from 1 (checked: 16% of the stem's
    movement after 8 steps either way), so the float reordering of a 2-process sum is all it shows."""
    overrides = [
        *DETERMINISTIC,
        "optimizer.lr=1e-5",
        "lr_schedule.warmup_epochs=0",
        "trainer.batch_size=16",
        "model.postprocess.score_thresh=0.0",  # detections for every image, to count them
    ]
    one = train(make_cfg(*overrides, output_dir=tmp_path / "one"))
    cfg = make_cfg(*overrides, output_dir=tmp_path / "two")
    distributed.spawn(train_process, 2, OmegaConf.to_container(cfg, resolve=True))
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert_weights_moved_alike(cfg, tmp_path / "one", tmp_path / "two")
    # the weights agree within 1% of their movement, not exactly: an untrained model's detections at score 0
    # are ranked by near-tied scores, so its tiny mAP agrees to a few percent (the lines below check that
    # every image was evaluated once)
    assert two["map"] == pytest.approx(one["map"], rel=0.05)
    per_image = [  # VOC result lines (one per detection, its image id first), counted per image
        Counter(
            line.split()[0]
            for f in (tmp_path / d / "results").iterdir()
            for line in f.read_text().splitlines()
        )
        for d in ("one", "two")
    ]
    # every validation image evaluated once, whatever the process count: the same images, none with more
    # than the model's 100 detections (an image evaluated twice would have its detections twice)
    assert set(per_image[0]) == set(per_image[1]) and len(per_image[0]) == 8
    assert max(per_image[1].values()) <= cfg.model.postprocess.max_detections


def cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_processes_share_one_output_directory(tmp_path, cache_dir):
    done = cli(
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "bof.train",
        *TINY,
        f"data.root={cache_dir}",
        "syncbn=on",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "outputs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("torchrun-")
    assert (runs[0] / "metrics.json").is_file() and (runs[0] / "last.pt").is_file()


def test_multirun_of_two_process_jobs_writes_one_directory_per_job(tmp_path, cache_dir):
    done = cli(
        sys.executable,
        "-m",
        "bof.train",
        "-m",
        "trainer.devices=2",
        "seed=0,1",
        *TINY,
        f"data.root={cache_dir}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert metrics["config"]["seed"] == int(job)
    assert not (tmp_path / "outputs").exists()


def test_distributed_run_resumes(make_cfg, tmp_path):
    first = make_cfg("trainer.epochs=1", output_dir=tmp_path / "run")
    distributed.spawn(train_process, 2, OmegaConf.to_container(first, resolve=True))
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 0
    resumed = make_cfg("trainer.epochs=2", "trainer.resume=true", output_dir=tmp_path / "run")
    distributed.spawn(train_process, 2, OmegaConf.to_container(resumed, resolve=True))
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    assert "resumed from" in (tmp_path / "run" / "train.log").read_text()


def test_every_rank_and_position_draws_its_own_augmentation_seed():
    seeds = [
        key.seed
        for rank in (0, 1)
        for epoch in (0, 1)
        for sampler in [KeyedBatchSampler(range(rank, 32, 2), 4, lambda it: 64, seed=7, rank=rank)]
        if sampler.set_epoch(epoch) is None
        for batch in sampler
        for key in batch
    ]
    assert len(seeds) == 64 and len(set(seeds)) == 64  # 2 ranks x 2 epochs x 16: no two share a stream


def test_more_processes_than_visible_gpus_fails_before_starting_any(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"trainer.devices=8 .* 2 GPU\(s\) .* pass trainer.devices=2"):
        distributed.check_local_gpus("auto", 8)
    distributed.check_local_gpus("auto", 2)  # as many as there are: fine
    distributed.check_local_gpus("cpu", 8)  # gloo processes on the CPU: any number


def ranks_of(job: subprocess.Popen, log: Path) -> list[int]:
    """The PIDs of a ``trainer.devices=2`` job's processes, rank 0 first (it holds train.log open)."""
    ranks = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[-1].split()[1]
            if parent == str(job.pid) and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                holds_log = any(f.resolve() == log for f in (stat.parent / "fd").iterdir())
                ranks.append(
                    (not holds_log, int(stat.parent.name))
                )  # (not multiprocessing's resource tracker)
        except OSError:  # a process that ended meanwhile
            continue
    return [pid for _, pid in sorted(ranks)]


@pytest.mark.parametrize("target", ["job", "process group", pytest.param("one rank", marks=pytest.mark.slow)])
def test_a_signal_stops_every_rank_after_the_same_epoch_and_the_run_resumes(target, tmp_path, cache_dir):
    """SIGTERM to the job (what timeout and docker stop send), to its whole process group (SLURM's
    scancel, a terminal), or to rank 1 only: every rank stops after the same epoch, rank 0's last.pt holds
    it, the job ends with one line and exit status 1, and the run resumes from there (checked once)."""
    run = tmp_path / "run"
    args = [*TINY, f"data.root={cache_dir}", f"hydra.run.dir={run}", "trainer.eval_interval=1000"]
    workers = ["trainer.num_workers=1"] if target == "process group" else []  # they get it too
    job = subprocess.Popen(
        [sys.executable, "-m", "bof.train", "trainer.devices=2", *args, *workers, "trainer.epochs=1000"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as under a scheduler
    )
    try:
        log, deadline = run / "train.log", time.monotonic() + 180
        while not (log.is_file() and "epoch 2/1000" in log.read_text()):  # mid-run
            assert job.poll() is None, job.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no second epoch in 3 minutes"
            time.sleep(0.05)
        if target == "job":
            job.send_signal(signal.SIGTERM)
        elif target == "process group":
            os.killpg(job.pid, signal.SIGTERM)
        else:
            ranks = ranks_of(job, log.resolve())
            assert len(ranks) == 2
            os.kill(ranks[1], signal.SIGTERM)
        _, stderr = job.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the job's processes
            os.killpg(job.pid, signal.SIGKILL)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert job.returncode == 1, stderr[-3000:]  # not finished: afterok dependencies must not start
    epoch = int(re.search(r"^stopped by a signal after epoch (\d+) \(in last.pt\)", stderr, re.M).group(1))
    assert sorted(re.findall(r"\[rank (\d)\] - stopping after epoch (\d+)", stderr)) == [
        ("0", str(epoch)),
        ("1", str(epoch)),
    ]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == epoch - 1
    assert not (run / "metrics.json").exists()
    if target != "job":
        return
    done = cli(
        sys.executable,
        "-m",
        "bof.train",
        *args,
        f"trainer.epochs={epoch + 1}",
        "trainer.resume=true",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == epoch
    assert (run / "metrics.json").is_file()

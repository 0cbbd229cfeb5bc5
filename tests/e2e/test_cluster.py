"""Cluster robustness on CPU (gloo, 2 processes): ranks agree on every step, a failing rank brings its
peers down promptly, plain SLURM tasks form a group, and checkpoints move between process counts."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bof.config import TrainerConfig
from bof.engine.loops import train_one_epoch
from bof.engine.optim import Optimization
from bof.engine.run_setup import Run
from bof.train import train, train_process
from bof.utils import distributed
from bof.utils.checkpoint import rng_state, set_rng_state
from tests.helpers import DETERMINISTIC, TINY, assert_weights_moved_alike


class NaNOnce(nn.Module):
    """A linear 'detector' whose loss is NaN on one call of one rank only."""

    def __init__(self, nan_at: int | None):
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.nan_at, self.calls = nn.Linear(3, 1), nan_at, 0

    def forward(self, images, targets):
        loss = (self.linear(images.mean((2, 3))).squeeze(1) - targets.float()).square().mean()
        self.calls += 1
        return {"loss": loss * float("nan") if self.calls - 1 == self.nan_at else loss}


def nan_process(out: str) -> None:
    rank, _, _ = distributed.setup("cpu", 1.0)
    model = NaNOnce(nan_at=1 if rank == 1 else None)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    generator = torch.Generator().manual_seed(rank)
    batches = [
        (torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=generator), torch.tensor([0, 1]))
        for _ in range(4)
    ]
    trainer = TrainerConfig(progress=False, skip_nonfinite=True)
    run = Run(trainer, Path(out).parent, torch.device("cpu"), rank, world_size=2)
    optimization = Optimization(optimizer, schedule, torch.amp.GradScaler("cpu", enabled=False))
    metrics = train_one_epoch(ddp, batches, optimization, run, 0)
    weights = distributed.all_gather_objects([p.detach().clone() for p in model.parameters()])
    equal = all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    result = {
        "skipped": metrics["nonfinite_skipped"],
        "equal": equal,
        "loss": metrics["loss"],
        "steps": schedule.last_epoch,
    }
    Path(f"{out}.{rank}").write_text(json.dumps(result))


def test_a_nan_on_one_rank_is_skipped_by_every_rank_and_the_weights_stay_equal(tmp_path):
    distributed.spawn(nan_process, 2, str(tmp_path / "out"))
    results = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    assert [r["skipped"] for r in results] == [1, 1]  # rank 0 saw a finite loss and still skipped
    assert all(r["equal"] for r in results) and results[0]["loss"] == results[1]["loss"]  # global mean
    assert [r["steps"] for r in results] == [4, 4]


def failing_process() -> None:
    rank, _, _ = distributed.setup("cpu", timeout_minutes=0.5)
    if rank == 1:
        raise ValueError("rank 1 cannot go on")
    distributed.barrier()  # rank 0 waits here for a peer that is gone


def test_a_failing_spawned_process_ends_the_job_promptly_with_its_error():
    start = time.perf_counter()
    # whichever fails first is reported: rank 1's error, or rank 0's lost connection to it
    either = "rank 1 cannot go on|Connection (closed|reset) by peer"
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match=either):
        distributed.spawn(failing_process, 2)
    assert time.perf_counter() - start < 60  # not trainer.collective_timeout_min, let alone 30 minutes


def slurm_tasks(tmp_path: Path, cache_dir: Path, *extra: str, per_rank=((), ()), multirun: bool = False):
    """Two `python -m bof.train` processes started as `srun -n 2` starts its tasks: SLURM's variables
    only (no RANK, no MASTER_ADDR); -> the finished processes, in rank order, and their seconds."""
    base = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    base |= {
        "SLURM_JOB_ID": str(random.randrange(10**6)),  # the master port derives from it
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_JOB_NODELIST": "localhost",
        "OMP_NUM_THREADS": "1",
    }
    where = [f"hydra.sweep.dir={tmp_path / 'sweep'}"] if multirun else [f"hydra.run.dir={tmp_path / 'run'}"]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bof.train",
                *(["-m"] if multirun else []),
                *TINY,
                f"data.root={cache_dir}",
                "trainer.device=cpu",
                "trainer.collective_timeout_min=0.5",
                *where,
                *extra,
                *per_rank[rank],
            ],
            env={**base, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    return processes, outputs, time.perf_counter() - start


def test_two_plain_slurm_tasks_train_together_and_write_one_metrics_json(tmp_path, cache_dir):
    processes, outputs, _ = slurm_tasks(tmp_path, cache_dir, "trainer.epochs=1")
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["batch_per_process"] == 2


def test_a_failing_slurm_task_brings_its_peer_down_and_the_sweep_records_it(tmp_path, cache_dir):
    """Rank 1 fails after joining the group (its batch does not split over 2 processes); rank 0, waiting
    for it in a collective, fails well within trainer.collective_timeout_min, both exit non-zero for
    SLURM to see, and the multirun job records failed.json."""
    processes, outputs, seconds = slurm_tasks(
        tmp_path, cache_dir, "trainer.epochs=1", per_rank=((), ("trainer.batch_size=3",)), multirun=True
    )
    assert all(p.returncode != 0 for p in processes), outputs
    assert seconds < 120
    failed = json.loads((tmp_path / "sweep" / "0" / "failed.json").read_text())
    assert "not divisible by the 2 processes" in failed["error"] or "Connection" in failed["error"]
    assert "not divisible by the 2 processes" in outputs[1]


def test_a_checkpoint_resumes_on_another_process_count_to_the_uninterrupted_weights(
    make_cfg, tmp_path, caplog
):
    """2 -> 1 and 1 -> 2 processes, one epoch each side, end where one process running both epochs
    does (within test_distributed's 1% tolerance for a sum over 1 or 2 processes)."""
    # gamma 1: the same lr whatever trainer.epochs, which the step milestones scale with
    overrides = [
        *DETERMINISTIC,
        "optimizer.lr=1e-5",
        "lr_schedule.warmup_epochs=0",
        "lr_schedule.gamma=1.0",
        "trainer.batch_size=16",
    ]

    def run(name: str, processes: int, epochs: int):
        cfg = make_cfg(
            *overrides, f"trainer.epochs={epochs}", "trainer.resume=auto", output_dir=tmp_path / name
        )
        if processes == 1:
            train(cfg)
        else:
            distributed.spawn(train_process, 2, OmegaConf.to_container(cfg, resolve=True))
        return cfg, json.loads((tmp_path / name / "metrics.json").read_text())

    caplog.set_level("INFO", logger="bof")
    cfg, _ = run("uninterrupted", 1, 2)
    for first, then in ((2, 1), (1, 2)):
        name = f"{first}to{then}"
        assert run(name, first, 1)[1]["world_size"] == first
        (tmp_path / name / "metrics.json").unlink()  # as if stopped after the epoch
        resumed = run(name, then, 2)[1]
        assert resumed["world_size"] == then and resumed["epochs"] == 2
        log = caplog.text if then == 1 else (tmp_path / name / "train.log").read_text()
        assert f"resumed from {tmp_path / name / 'last.pt'} at epoch 1" in log  # not trained afresh
        assert_weights_moved_alike(cfg, tmp_path / "uninterrupted", tmp_path / name)


def test_cuda_rng_states_of_any_gpu_count_load_on_a_cpu():
    state = rng_state()
    for cuda in ([torch.zeros(16, dtype=torch.uint8)] * 8, torch.zeros(16, dtype=torch.uint8), []):
        set_rng_state({**state, "cuda": cuda})  # older 8-GPU checkpoints, this format, an empty list
    before = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), before)

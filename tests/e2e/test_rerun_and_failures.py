"""What a sweep needs from every run: a rerun skips finished runs and continues interrupted ones
(trainer.resume=auto), a failing job of a multirun is recorded without stopping the others, a refused one
leaves the run it was refused for as it was, and a live run directory has one owner."""

import json
import logging
import os
import subprocess

import pytest
import torch
import yaml
from torch.multiprocessing import ProcessRaisedException

from bof.cli.report import main as report
from bof.train import train
from bof.utils.fingerprint import is_refusal
from bof.utils.run_lock import own_run_dir
from tests.helpers import TINY, bof_train


def test_resume_auto_skips_a_finished_run_and_continues_an_interrupted_one(make_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    first = train(make_cfg("trainer.epochs=1", "trainer.resume=auto"))
    stamp = (run / "last.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="bof"):
        again = train(make_cfg("trainer.epochs=1", "trainer.resume=auto"))
    assert again["map"] == first["map"] and (run / "last.pt").stat().st_mtime_ns == stamp
    assert "finished already" in caplog.text
    (run / "metrics.json").unlink()  # as if it had stopped after its first epoch of two
    with caplog.at_level(logging.INFO, logger="bof"):
        train(make_cfg("trainer.epochs=2", "trainer.resume=auto"))
    assert "resumed from" in caplog.text and torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def sweep(tmp_path, cache_dir, lrs: str) -> subprocess.CompletedProcess:
    return bof_train(
        "-m",
        *TINY,
        f"data.root={cache_dir}",
        "trainer.epochs=1",
        f"optimizer.lr={lrs}",
        "trainer.resume=auto",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,
    )


def test_a_failing_job_is_recorded_the_sweep_goes_on_and_exits_non_zero_at_its_end(tmp_path, cache_dir):
    done = sweep(tmp_path, cache_dir, "-1,0.001")
    assert done.returncode == 1, done.stderr[-2000:]
    assert (tmp_path / "1" / "metrics.json").is_file() and not (tmp_path / "1" / "failed.json").exists()
    failure = json.loads((tmp_path / "0" / "failed.json").read_text())
    assert "optimizer.lr=-1: must be a finite number > 0" in failure["error"]
    assert not (tmp_path / "0" / "metrics.json").exists()
    listed = f"1 job(s) of this sweep failed or were refused:\n  {tmp_path / '0' / 'failed.json'}"
    assert listed in done.stdout + done.stderr
    # the same sweep dir, only the job that worked: its old neighbour's failed.json is not this sweep's
    assert sweep(tmp_path, cache_dir, "0.002").returncode == 0


def test_a_refused_rerun_leaves_the_finished_run_as_it_was_and_the_sweep_and_report_say_so(
    tmp_path, cache_dir
):
    assert sweep(tmp_path, cache_dir, "0.001").returncode == 0
    job = tmp_path / "0"
    before = (job / "metrics.json").read_bytes()
    refused = sweep(tmp_path, cache_dir, "0.002")  # another config into the finished run: RunConflict
    assert (
        refused.returncode == 1
        and f"were refused:\n  {job / 'refused.json'}" in refused.stdout + refused.stderr
    )
    assert "RunConflict" in json.loads((job / "refused.json").read_text())["error"]
    assert not (job / "failed.json").exists() and (job / "metrics.json").read_bytes() == before
    # the finished run's overrides and config back in .hydra: bof-report labels the result by them
    assert "optimizer.lr=0.001" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == 0.001
    (row,) = report([str(tmp_path), "--replicates", "0"])
    assert row["runs"] == 1 and row["status"] == "1 with a refused rerun (refused.json)"
    # the finished run's own flags again: it is returned, and the refusal is no longer news
    assert sweep(tmp_path, cache_dir, "0.001").returncode == 0 and not (job / "refused.json").exists()


def test_a_second_bof_train_into_a_live_run_directory_stops_naming_its_pid_and_leaves_its_files(
    tmp_path, cache_dir
):
    run = tmp_path / "run"
    with own_run_dir(run):  # this process is the live run
        live = run / ".last.pt.abc123.tmp"  # its checkpoint, being written
        live.write_bytes(b"half a checkpoint")
        second = bof_train(
            *TINY,
            f"data.root={cache_dir}",
            "trainer.dry_run=true",
            f"hydra.run.dir={run}",
            cwd=tmp_path,
            timeout=300,
        )
        assert second.returncode != 0 and live.read_bytes() == b"half a checkpoint"
        assert f"is in use by another bof process (PID {os.getpid()} on " in second.stderr
        assert not (run / "train_samples.png").exists()


def test_the_run_directory_is_free_again_when_train_returns_or_raises(make_cfg, tmp_path):
    run = tmp_path / "run"
    train(make_cfg("trainer.epochs=1"))
    with own_run_dir(run) as locked:
        assert locked
    with pytest.raises(ValueError, match="optimizer.lr=-1"):  # raised after the lock was taken
        train(make_cfg("trainer.epochs=1", "optimizer.lr=-1"))
    with own_run_dir(run) as locked:
        assert locked
    assert train(make_cfg("trainer.epochs=1", "trainer.resume=true"))["epochs"] == 1  # the next job's


def test_a_refusal_in_a_spawned_process_is_a_refusal_for_the_sweep(tmp_path):
    """trainer.devices=N: torch re-raises a rank's error in the launcher as its traceback's text."""

    def spawned(last_line: str) -> ProcessRaisedException:
        return ProcessRaisedException(f"\n\n-- Process 0 terminated:\nTraceback ...\n{last_line}\n", 0, 1)

    assert is_refusal(spawned(f"bof.utils.run_lock.RunDirBusy: {tmp_path} is in use by another bof process"))
    assert is_refusal(spawned("bof.utils.fingerprint.RunConflict: holds a finished run of another config"))
    assert not is_refusal(spawned("ValueError: optimizer.lr=-1: must be a finite number > 0"))

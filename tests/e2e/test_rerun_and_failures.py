"""What a sweep needs from every run: a rerun skips finished runs and continues interrupted ones
(trainer.resume=auto), and a failing job of a multirun is recorded without stopping the others."""

import json
import logging
import subprocess

import torch

from bof.train import train
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
    assert f"1 job(s) of this sweep failed:\n  {tmp_path / '0' / 'failed.json'}" in done.stdout + done.stderr
    # the same sweep dir, only the job that worked: its old neighbour's failed.json is not this sweep's
    assert sweep(tmp_path, cache_dir, "0.002").returncode == 0

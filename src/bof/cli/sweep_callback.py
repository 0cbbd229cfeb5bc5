"""A Hydra callback (``hydra.callbacks`` in conf/train.yaml): after all jobs of a multirun ran, the sweep
exits non-zero if any of them failed or was refused, listing each one's failed.json or refused.json, so
that CI and SLURM pipelines see it. (A failing job itself returns normally so that the jobs after it
still run.)"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("bof.sweep")


class FailedJobsExitNonZero(Callback):
    def __init__(self):
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        # failed.json (and refused.json: a job refused for its run directory, which it left as it was)
        # files of this sweep's jobs (a rerun into the same directory leaves older ones)
        failed = sorted(
            p
            for name in ("failed.json", "refused.json")
            for p in sweep_dir.glob(f"**/{name}")
            if p.stat().st_mtime >= self.started - 1
        )
        if failed:
            listed = "\n  ".join(map(str, failed))
            log.error("%d job(s) of this sweep failed or were refused:\n  %s", len(failed), listed)
            raise SystemExit(1)

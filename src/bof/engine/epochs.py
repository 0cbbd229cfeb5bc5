"""The epochs of a run, one policy for both recipes (detection in bof.train, backbone pretraining in
bof.classify): train an epoch; check that every weight is finite before anything is saved; evaluate every
``trainer.eval_interval`` epochs and after the last; ``best.pt`` on a strictly better score; ``last.pt``
every ``trainer.checkpoint_interval`` epochs, after the last and when a signal asks the run to stop; the
run's counts carried across resumes; metrics.json written and an earlier failed.json removed at the end.
A recipe hands in its own ``train_epoch(epoch)`` and ``validate(epoch)``."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

import numpy as np

from bof.engine.optim import Optimization
from bof.engine.run_setup import Run
from bof.utils import distributed
from bof.utils.atomic import write_json_atomically
from bof.utils.checkpoint import CheckpointWriter, check_finite, checkpoint_state

log = logging.getLogger(__name__)


class RunCounts:
    """What a run counts over its whole life, resumes included (a checkpoint carries :meth:`as_dict`):
    wall time, samples replaced in training, non-finite steps skipped, each epoch's images/s over all
    processes, the images and seconds of training (evaluation excluded): the run's throughput, which
    bof-report compares across a table's rows (what a trick costs), and the last epoch's training loss."""

    def __init__(self, carried: dict | None = None, world_size: int = 1):
        carried = carried or {}
        self.world_size = world_size
        self.started = time.perf_counter() - carried.get("wall_time_s", 0.0)
        self.replaced_in_training = carried.get("replaced_in_training", 0)
        self.nonfinite_skipped = carried.get("nonfinite_steps_skipped", 0)
        self.images_per_s = list(carried.get("images_per_s", []))
        self.train_images = carried.get("train_images", 0)
        self.train_time_s = carried.get("train_time_s", 0.0)
        self.train_loss = carried.get("train_loss")  # the last epoch's: metrics.json of a recovered run

    def add_epoch(self, train_metrics: dict) -> None:
        """One epoch's :func:`bof.engine.loops.train_one_epoch` metrics (its images/s become the group's)."""
        train_metrics["images_per_s"] *= self.world_size  # every process trains on as many images
        self.images_per_s.append(train_metrics["images_per_s"])
        self.train_images += train_metrics["images"] * self.world_size
        self.train_time_s += train_metrics["train_time_s"]
        self.replaced_in_training += train_metrics["bad_samples"]
        self.nonfinite_skipped += train_metrics["nonfinite_skipped"]
        loss = train_metrics.get("loss")  # none: every step of the epoch was skipped
        self.train_loss = None if loss is None else float(loss)

    @property
    def wall_time_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def mean_images_per_s(self) -> float | None:
        """Training images per second over the run (all processes; evaluation and start-up excluded)."""
        if self.train_time_s > 0:
            return self.train_images / self.train_time_s
        return float(np.mean(self.images_per_s)) if self.images_per_s else None  # a checkpoint before totals

    def as_dict(self) -> dict:
        return {
            "wall_time_s": self.wall_time_s,
            "replaced_in_training": self.replaced_in_training,
            "nonfinite_steps_skipped": self.nonfinite_skipped,
            "images_per_s": list(self.images_per_s),
            "train_images": self.train_images,
            "train_time_s": self.train_time_s,
            "train_loss": self.train_loss,
        }


class StopSignal:
    """SIGTERM (a scheduler stopping or pre-empting the job) and SIGUSR1 (SLURM's ``--signal``, sent before
    the time limit) ask the run to stop at the end of the current epoch, after writing last.pt, so that
    ``trainer.resume=true`` (or a sweep's ``auto``) continues it. Any rank's request stops every rank
    after the same epoch, whether the signal reached one of them or all (a process group's)."""

    SIGNALS = distributed.STOP_SIGNALS

    def __init__(self):
        self.received: int | None = None
        self.previous, self.mask = {}, None
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
            # a process of distributed.spawn starts with them blocked: one that came meanwhile arrives now
            self.mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)

    def release(self) -> None:
        """The handlers from before the run, back (a process that trains twice, a test runner), and the
        signal mask: a spawned process holds a signal that comes after its run until it has ended."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        self.previous, self.mask = {}, None

    def _handle(self, signum, frame) -> None:
        first, self.received = self.received is None, signum
        # a process group's signal and its parent's copy: one line. The flag is set before the line: the
        # copy can arrive while this handler writes it, and logging re-entered mid-write prints a traceback
        if first:
            log.warning("received %s: stopping after this epoch's checkpoint", signal.Signals(signum).name)

    def requested(self) -> bool:
        """Whether any rank received a signal (one all-reduce: called at each epoch's end only)."""
        return distributed.any_rank(self.received is not None)


class Epochs:
    """The end-of-epoch policy of a run (the module docstring). ``module`` is the model without DDP, the
    one checkpoints hold; ``score`` the key of ``validate``'s metrics that decides ``best.pt``; ``best``,
    ``start_epoch`` and ``counts`` come from the checkpoint a run resumes (``restore``); ``config_source``
    is the unresolved config checkpoints store beside ``config``."""

    def __init__(
        self,
        run: Run,
        module,
        optimization: Optimization,
        config: dict,
        counts: RunCounts,
        score: str,
        start_epoch: int = 0,
        best: float = -1.0,
        class_names: list[str] | None = None,
        config_source: dict | None = None,
    ):
        self.run, self.module, self.optimization, self.config = run, module, optimization, config
        self.counts, self.score, self.start_epoch, self.best = counts, score, start_epoch, best
        self.class_names, self.config_source = class_names, config_source

    def state(self, epoch: int) -> dict:
        """The checkpoint after ``epoch`` (built only when one is written)."""
        return checkpoint_state(
            self.module,
            *self.optimization,
            epoch,
            self.best,
            self.config,
            self.class_names,
            self.counts.as_dict(),
            self.config_source,
        )

    def run_all(
        self,
        train_epoch: Callable[[int], None],
        validate: Callable[[int], dict],
        on_best: Callable[[int], None] | None = None,
    ) -> dict:
        """Runs the epochs left; -> the last evaluation's metrics. ``on_best(epoch)`` runs on rank 0 when
        an evaluation beats the best so far, before best.pt is written (detection: its result files)."""
        trainer, out_dir = self.run.trainer, self.run.out_dir
        val_metrics, saver, stop = {}, CheckpointWriter(), StopSignal()
        try:  # the pending checkpoint is written and the signal handlers restored however the loop ends
            for epoch in range(self.start_epoch, trainer.epochs):
                train_epoch(epoch)
                check_finite(self.module, self.optimization.optimizer, epoch, out_dir / "last.pt")
                if (epoch + 1) % trainer.eval_interval == 0 or epoch + 1 == trainer.epochs:
                    val_metrics = self._evaluate(epoch, validate, on_best, saver)
                self._end_of_epoch(epoch, stop, saver)
            if not val_metrics:  # no epoch left (stopped after its last checkpoint): the final model's score
                val_metrics = self._evaluate(trainer.epochs - 1, validate, on_best, saver)
        finally:
            stop.release()
            saver.wait()
        return val_metrics

    def _save_last(self, saver: CheckpointWriter, epoch: int) -> None:
        saver.save(self.state(epoch), self.run.out_dir / "last.pt")

    def _evaluate(self, epoch: int, validate, on_best, saver: CheckpointWriter) -> dict:
        metrics = validate(epoch)
        if metrics[self.score] > self.best:  # a tie keeps the earlier best.pt
            self.best = metrics[self.score]
            if self.run.main_process:
                if on_best is not None:
                    on_best(epoch)
                saver.save(self.state(epoch), self.run.out_dir / "best.pt")
        return metrics

    def _end_of_epoch(self, epoch: int, stop: StopSignal, saver: CheckpointWriter) -> None:
        """Rank 0's last.pt after every ``trainer.checkpoint_interval`` epochs, after the last one, and when
        a signal asks the run to stop, which every rank then does (:class:`distributed.Stopped`) once that
        file is on disk: a launcher (srun, torchrun) ends the other ranks when one exits non-zero."""
        trainer = self.run.trainer
        stopping = stop.requested()
        due = stopping or (epoch + 1) % trainer.checkpoint_interval == 0 or epoch + 1 == trainer.epochs
        if due and self.run.main_process:
            self._save_last(saver, epoch)
        if stopping:
            if distributed.world_size() > 1:  # every rank says where it stopped (the others warn only)
                log.warning("stopping after epoch %d, as every rank does", epoch + 1)
            saver.wait()
            distributed.barrier()
            raise distributed.Stopped(
                f"stopped by a signal after epoch {epoch + 1} (in last.pt): trainer.resume=true continues it"
            )

    def finish(self, metrics: dict) -> None:
        """metrics.json (rank 0), and an earlier failure of this job, now trained, forgotten."""
        if self.run.main_process:
            write_json_atomically(self.run.out_dir / "metrics.json", metrics)
            (self.run.out_dir / "failed.json").unlink(missing_ok=True)

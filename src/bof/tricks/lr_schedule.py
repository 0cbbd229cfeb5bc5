"""Learning-rate schedules with linear warmup, updated every iteration (paper section 3.4,
docs/fidelity.md "Learning-rate schedule").

``factor(iteration)`` is the multiplier of the base learning rate, a pure function of the global
iteration (0-based), so it is trivially resumable and testable:

* warmup: linear over N = ``warmup_epochs * iters_per_epoch`` iterations (or ``warmup_iters``), from
  ``warmup_start`` to 1 (Goyal et al. 2017): iteration i < N trains at start + (1 - start) (i + 1) / N, so
  the first iteration of a warmup from 0 already moves (lr / N) and iteration N - 1 reaches the full lr.
  GluonCV's YOLOv3 warms up from 0 over 2 epochs; its Faster R-CNN COCO over 1000 iterations from lr/3;
* step: x ``gamma`` at each of ``milestones`` (absolute epochs, as in GluonCV's ``lr_decay_epoch``);
  with ``reference_epochs`` set, the milestones are those of a ``reference_epochs`` run, scaled to the
  configured number of epochs (160/180 of 200 -> 16/18 of 20), so a shortened run still decays;
* cosine: 0.5 * (1 + cos(pi * T / N)) over the N iterations after warmup, reaching 0 at the end.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

from bof.utils.checks import count, fraction, nonnegative, require, whole


class Warmup:
    """The linear warmup both schedules start with: ``warmup_iters`` iterations if set, else
    ``warmup_epochs`` epochs, from ``warmup_start`` x lr."""

    def __init__(
        self, warmup_epochs: float = 0.0, warmup_iters: int | None = None, warmup_start: float = 0.0
    ):
        require("lr_schedule.warmup_epochs", warmup_epochs, nonnegative, "a number of epochs >= 0")
        require("lr_schedule.warmup_iters", warmup_iters, count, "a whole number of iterations >= 0", True)
        require("lr_schedule.warmup_start", warmup_start, fraction, "a factor of lr in [0, 1]")
        self.warmup_epochs, self.warmup_iters, self.warmup_start = warmup_epochs, warmup_iters, warmup_start

    def warmup_length(self, iters_per_epoch: int) -> float:
        return self.warmup_iters if self.warmup_iters is not None else self.warmup_epochs * iters_per_epoch

    def warmup_factor(self, iteration: int, iters_per_epoch: int) -> float | None:
        """The warmup's factor at ``iteration``, None after the warmup."""
        length = self.warmup_length(iters_per_epoch)
        if iteration >= length:
            return None
        return self.warmup_start + (1.0 - self.warmup_start) * min((iteration + 1) / length, 1.0)

    def describe_warmup(self) -> str:
        length = (
            f"{self.warmup_iters} iterations"
            if self.warmup_iters is not None
            else f"{self.warmup_epochs} epochs"
        )
        return f"warmup {length}" + (f" from {self.warmup_start:g} x lr" if self.warmup_start else "")


class StepSchedule(Warmup):
    def __init__(
        self,
        warmup_epochs: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        reference_epochs: int | None = None,
        warmup_iters: int | None = None,
        warmup_start: float = 0.0,
    ):
        super().__init__(warmup_epochs, warmup_iters, warmup_start)
        require("lr_schedule.gamma", gamma, lambda v: 0 < v <= 1, "a decay factor in (0, 1]")
        for i, milestone in enumerate(milestones):
            require(f"lr_decay.milestones[{i}]", milestone, lambda v: v > 0 and whole(v), "a whole epoch > 0")
        require(
            "lr_decay.reference_epochs",
            reference_epochs,
            lambda v: v > 0 and whole(v),
            "a whole number of epochs > 0",
            True,
        )
        self.milestones, self.gamma, self.reference_epochs = sorted(milestones), gamma, reference_epochs

    def milestone_epochs(self, epochs: int) -> list[int]:
        if not self.reference_epochs:
            return list(self.milestones)
        return [round(m * epochs / self.reference_epochs) for m in self.milestones]

    def factor(self, iteration: int, iters_per_epoch: int, epochs: int) -> float:
        warmup = self.warmup_factor(iteration, iters_per_epoch)
        if warmup is not None:
            return warmup
        steps = [m * iters_per_epoch for m in self.milestone_epochs(epochs)]
        return self.gamma ** bisect.bisect_right(steps, iteration)

    def describe(self, epochs: int) -> str:
        milestones = self.milestone_epochs(epochs)
        return f"step lr: {self.describe_warmup()}, x{self.gamma} at epochs {milestones}"


class CosineSchedule(Warmup):
    def factor(self, iteration: int, iters_per_epoch: int, epochs: int) -> float:
        warmup = self.warmup_factor(iteration, iters_per_epoch)
        if warmup is not None:
            return warmup
        warmup_iters = self.warmup_length(iters_per_epoch)
        decay_iters = max(epochs * iters_per_epoch - warmup_iters, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(iteration - warmup_iters, decay_iters) / decay_iters))

    def describe(self, epochs: int) -> str:
        return f"cosine lr: {self.describe_warmup()}, then cosine to 0 at epoch {epochs}"


def curve_iterations(schedule, iters_per_epoch: int, epochs: int, points: int = 2000) -> list[int]:
    """The iterations a plot of the schedule samples: at most ``points`` evenly spaced, plus each side of
    every corner (warmup end, step milestones) and the last, so the curve is exact where it turns and its
    memory bounded however many iterations the run has (trainer.epochs=10^8 would be a list of 10^9)."""
    total = epochs * iters_per_epoch
    corners = [math.ceil(schedule.warmup_length(iters_per_epoch))]
    if isinstance(schedule, StepSchedule):
        corners += [m * iters_per_epoch for m in schedule.milestone_epochs(epochs)]
    spaced = range(0, total, max(1, math.ceil(total / points)))
    return sorted({i for i in (*spaced, *corners, *(c - 1 for c in corners), total - 1) if 0 <= i < total})


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule, iters_per_epoch: int, epochs: int):
    """A LambdaLR stepped once per iteration; its ``last_epoch`` counts iterations."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: schedule.factor(iteration, iters_per_epoch, epochs)
    )

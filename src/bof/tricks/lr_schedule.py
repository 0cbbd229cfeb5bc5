"""Learning-rate schedules with linear warmup, updated every iteration (paper section 3.4,
docs/fidelity.md "Learning-rate schedule").

``factor(iteration)`` is the multiplier of the base learning rate, a pure function of the global
iteration (0-based), so it is trivially resumable and testable:

* warmup: linear from 0 at iteration 0 to 1 at ``warmup_epochs * iters_per_epoch`` (Goyal et al. 2017);
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


class StepSchedule:
    def __init__(
        self,
        warmup_epochs: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        reference_epochs: int | None = None,
    ):
        self.warmup_epochs, self.milestones, self.gamma = warmup_epochs, sorted(milestones), gamma
        self.reference_epochs = reference_epochs

    def milestone_epochs(self, epochs: int) -> list[int]:
        if not self.reference_epochs:
            return list(self.milestones)
        return [round(m * epochs / self.reference_epochs) for m in self.milestones]

    def factor(self, iteration: int, iters_per_epoch: int, epochs: int) -> float:
        warmup = warmup_factor(iteration, self.warmup_epochs * iters_per_epoch)
        if warmup is not None:
            return warmup
        steps = [m * iters_per_epoch for m in self.milestone_epochs(epochs)]
        return self.gamma ** bisect.bisect_right(steps, iteration)

    def describe(self, epochs: int) -> str:
        milestones = self.milestone_epochs(epochs)
        return f"step lr: warmup {self.warmup_epochs} epochs, x{self.gamma} at epochs {milestones}"


class CosineSchedule:
    def __init__(self, warmup_epochs: float = 0.0):
        self.warmup_epochs = warmup_epochs

    def factor(self, iteration: int, iters_per_epoch: int, epochs: int) -> float:
        warmup_iters = self.warmup_epochs * iters_per_epoch
        warmup = warmup_factor(iteration, warmup_iters)
        if warmup is not None:
            return warmup
        decay_iters = max(epochs * iters_per_epoch - warmup_iters, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(iteration - warmup_iters, decay_iters) / decay_iters))

    def describe(self, epochs: int) -> str:
        return f"cosine lr: warmup {self.warmup_epochs} epochs, then cosine to 0 at epoch {epochs}"


def warmup_factor(iteration: int, warmup_iters: float) -> float | None:
    """iteration / warmup_iters during warmup, None after it."""
    return iteration / warmup_iters if iteration < warmup_iters else None


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule, iters_per_epoch: int, epochs: int):
    """A LambdaLR stepped once per iteration; its ``last_epoch`` counts iterations."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: schedule.factor(iteration, iters_per_epoch, epochs)
    )

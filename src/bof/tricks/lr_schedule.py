"""Learning-rate schedules with linear warmup, updated every iteration (paper section 3.4, SPEC.md).

``factor(iteration)`` is the multiplier of the base learning rate, a pure function of the global
iteration (0-based), so it is trivially resumable and testable:

* warmup: linear from 0 at iteration 0 to 1 at ``warmup_epochs * iters_per_epoch`` (Goyal et al. 2017);
* step: x ``gamma`` at each of ``milestones`` (absolute epochs, as in GluonCV's ``lr_decay_epoch``);
* cosine: 0.5 * (1 + cos(pi * T / N)) over the N iterations after warmup, reaching 0 at the end.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch


class StepSchedule:
    def __init__(self, warmup_epochs: float = 0.0, milestones: Sequence[int] = (), gamma: float = 0.1):
        self.warmup_epochs, self.milestones, self.gamma = warmup_epochs, sorted(milestones), gamma

    def factor(self, iteration: int, iters_per_epoch: int, epochs: int) -> float:
        warmup = warmup_factor(iteration, self.warmup_epochs * iters_per_epoch)
        if warmup is not None:
            return warmup
        passed = bisect.bisect_right([m * iters_per_epoch for m in self.milestones], iteration)
        return self.gamma**passed


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


def warmup_factor(iteration: int, warmup_iters: float) -> float | None:
    """iteration / warmup_iters during warmup, None after it."""
    return iteration / warmup_iters if iteration < warmup_iters else None


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule, iters_per_epoch: int, epochs: int):
    """A LambdaLR stepped once per iteration; its ``last_epoch`` counts iterations."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: schedule.factor(iteration, iters_per_epoch, epochs)
    )

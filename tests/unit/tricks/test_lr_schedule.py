"""The per-iteration LR schedule core and atomic, weights_only checkpoints."""

import math
import random

import numpy as np
import pytest
import torch

from bof.engine.loops import GradClip
from bof.engine.optim import param_groups
from bof.tricks.lr_schedule import CosineSchedule, StepSchedule, build_lr_scheduler, curve_iterations
from bof.utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_step_schedule_warmup_and_absolute_epoch_milestones():
    schedule = StepSchedule(warmup_epochs=2, milestones=[5, 8], gamma=0.1)
    ipe = 10
    assert schedule.factor(0, ipe, 10) == pytest.approx(1 / 20)  # the first step already trains
    assert schedule.factor(9, ipe, 10) == pytest.approx(0.5)
    assert schedule.factor(19, ipe, 10) == 1.0 and schedule.factor(20, ipe, 10) == 1.0
    assert schedule.factor(49, ipe, 10) == 1.0
    assert schedule.factor(50, ipe, 10) == pytest.approx(0.1)
    assert schedule.factor(80, ipe, 10) == pytest.approx(0.01)


def test_cosine_schedule_half_at_midpoint_zero_at_end():
    schedule = CosineSchedule(warmup_epochs=1)
    ipe, epochs = 10, 11  # 10 warmup iterations, 100 cosine iterations
    assert schedule.factor(0, ipe, epochs) == pytest.approx(0.1)
    assert schedule.factor(9, ipe, epochs) == schedule.factor(10, ipe, epochs) == 1.0
    assert schedule.factor(60, ipe, epochs) == pytest.approx(0.5)
    assert schedule.factor(110, ipe, epochs) == pytest.approx(0.0, abs=1e-12)
    assert schedule.factor(109, ipe, epochs) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_the_plotted_curve_is_sampled_with_its_corners_however_long_the_run():
    """The dry run's lr figure: bounded memory for any epoch count (10^8 epochs: no list of 10^9 lrs),
    and every corner (warmup end, each milestone) exact."""
    step = StepSchedule(warmup_epochs=2, milestones=[160, 180], reference_epochs=200)
    iterations = curve_iterations(step, 1000, 100_000_000)
    assert len(iterations) < 2100 and iterations[0] == 0 and iterations[-1] == 100_000_000 * 1000 - 1
    for corner in (2000, 80_000_000 * 1000, 90_000_000 * 1000):  # warmup end, the scaled milestones
        assert {corner - 1, corner} <= set(iterations)
    factors = [step.factor(i, 1000, 100_000_000) for i in iterations]
    assert factors[iterations.index(1999)] == 1.0 and math.isclose(factors[-1], 0.01)
    assert curve_iterations(CosineSchedule(warmup_epochs=1), 4, 2) == list(range(8))  # short: every one


def test_lambda_lr_steps_per_iteration():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = build_lr_scheduler(optimizer, StepSchedule(warmup_epochs=1), iters_per_epoch=4, epochs=2)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("schedule", [StepSchedule, CosineSchedule])
def test_warmup_in_iterations_from_a_start_factor(schedule):
    """GluonCV's Faster R-CNN COCO warmup: 1000 iterations from lr/3, whatever the epoch length."""
    warm = schedule(warmup_epochs=5, warmup_iters=1000, warmup_start=1 / 3)
    ipe, epochs = 100, 26
    assert warm.factor(0, ipe, epochs) == pytest.approx(1 / 3 + 2 / 3 / 1000)
    assert warm.factor(499, ipe, epochs) == pytest.approx(1 / 3 + 2 / 3 * 0.5)
    assert warm.factor(999, ipe, epochs) == pytest.approx(1.0)
    assert warm.factor(1000, ipe, epochs) == pytest.approx(1.0, abs=1e-3)  # the schedule itself
    assert "warmup 1000 iterations from 0.333333 x lr" in warm.describe(epochs)
    plain = schedule(warmup_epochs=5)  # without the keys: 500 iterations from 0
    assert plain.factor(0, ipe, epochs) == pytest.approx(1 / 500) and plain.factor(499, ipe, epochs) == 1.0


def test_element_wise_clipping_bounds_every_gradient_value_and_norm_clipping_the_norm():
    param = torch.nn.Parameter(torch.zeros(4))
    param.grad = torch.tensor([10.0, -7.0, 0.5, 3.0])
    GradClip(value=5.0)([param])
    assert param.grad.tolist() == [5.0, -5.0, 0.5, 3.0]  # MXNet's clip_gradient: each value
    param.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    GradClip(norm=1.0)([param])
    assert torch.allclose(param.grad, torch.tensor([0.6, 0.8, 0.0, 0.0]))  # the direction is kept


def test_no_weight_decay_on_bn_and_bias():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1, bias=False)
    )
    decay, no_decay = param_groups(model, 5e-4, no_wd=True)
    assert decay["weight_decay"] == 5e-4 and len(decay["params"]) == 2  # two conv weights
    assert no_decay["weight_decay"] == 0 and len(no_decay["params"]) == 3  # conv bias, BN weight and bias
    decay, no_decay = param_groups(model, 5e-4, no_wd=False)
    assert len(decay["params"]) == 5 and not no_decay["params"]


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = {"model": model.state_dict(), "epoch": 4, "rng": rng_state(), "config": {"a": [1, 2], "b": None}}
    path = save_checkpoint(state, tmp_path / "last.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = torch.load(path, weights_only=True)
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert loaded["epoch"] == 4 and loaded["config"] == {"a": [1, 2], "b": None}
    assert torch.equal(loaded["model"]["weight"], model.weight)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("stopped mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")

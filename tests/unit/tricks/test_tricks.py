"""Each trick through the real configs: exact math where the other test files do not cover it, and proof
that switching it on changes what it should (the LR curve, the input sizes, the class targets, the
augmented images, the weights reaching the loss). No silent no-ops."""

import pytest
import torch
from hydra.utils import instantiate

from bof.data.loader import KeyedBatchSampler
from bof.engine.run_setup import build_tricks
from bof.train import build_data_loaders, build_model
from bof.tricks.label_smoothing import LabelSmoothing, sigmoid_targets
from bof.tricks.lr_schedule import StepSchedule
from bof.tricks.random_shapes import RandomShapes
from tests.helpers import cpu_run


def first_batch(cfg):
    tricks = build_tricks(cfg)
    train_set = instantiate(cfg.data.train)
    loader, _ = build_data_loaders(cfg, cpu_run(cfg), train_set, train_set, tricks)
    loader.batch_sampler.set_epoch(0)
    return next(iter(loader))


# ---- random shapes --------------------------------------------------------------------------------


def test_random_sizes_are_the_paper_set_constant_per_window_and_rank_independent():
    shapes = RandomShapes(seed=3)
    sizes = [shapes(i) for i in range(2000)]
    assert set(sizes) == set(range(320, 609, 32))
    for window in range(200):
        assert len(set(sizes[window * 10 : window * 10 + 10])) == 1
    assert sizes == [RandomShapes(seed=3)(i) for i in range(2000)]  # another process, same sizes
    assert sizes != [RandomShapes(seed=4)(i) for i in range(2000)]


def test_two_ranks_batch_at_the_same_size():
    shapes = RandomShapes(min_size=64, max_size=256, interval=2)
    samplers = [
        KeyedBatchSampler(range(r, 64, 2), 4, shapes, seed=0, rank=r) for r in (0, 1)
    ]  # two ranks' shards
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        per_rank = [[batch[0].size for batch in s] for s in samplers]
        assert per_rank[0] == per_rank[1] and len(set(per_rank[0])) > 1


# ---- LR schedule ----------------------------------------------------------------------------------


def test_step_milestones_scale_with_the_run_length():
    schedule = StepSchedule(warmup_epochs=2, milestones=[160, 180], reference_epochs=200)
    assert schedule.milestone_epochs(200) == [160, 180] and schedule.milestone_epochs(20) == [16, 18]
    ipe = 5
    assert schedule.factor(16 * ipe - 1, ipe, 20) == 1.0
    assert schedule.factor(16 * ipe, ipe, 20) == pytest.approx(0.1)
    assert schedule.factor(18 * ipe, ipe, 20) == pytest.approx(0.01)


# ---- label smoothing -------------------------------------------------------------------------------


def test_sigmoid_targets_are_exactly_one_minus_eps_and_eps():
    targets = sigmoid_targets(torch.tensor([0, 2]), 20, LabelSmoothing().sigmoid_epsilon(20))
    assert targets[0, 0] == pytest.approx(0.975) and targets[1, 2] == pytest.approx(0.975)
    assert torch.allclose(targets[0, 1:], torch.tensor(0.025))
    assert LabelSmoothing().sigmoid_epsilon(80) == pytest.approx(0.0125)
    assert LabelSmoothing().sigmoid_epsilon(6) == pytest.approx(0.025)  # min(1/6, 1/40)
    assert LabelSmoothing().softmax_epsilon() == 0.01 and LabelSmoothing(0.1).sigmoid_epsilon(20) == 0.1


def test_smoothing_on_reaches_the_criterion_and_changes_the_loss(make_cfg):
    losses = {}
    for option in ("off", "on"):
        cfg = make_cfg(f"smoothing={option}")
        criterion = build_model(cfg, 6, torch.device("cpu"), smoothing=build_tricks(cfg).smoothing).criterion
        assert criterion.label_smoothing == (None if option == "off" else pytest.approx(0.025))
        outputs = [torch.full((1, 3, 64 // s, 64 // s, 11), -2.0) for s in (8, 16, 32)]
        target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
        losses[option] = criterion(outputs, [target], (64, 64))
    assert losses["on"]["loss_cls"] != losses["off"]["loss_cls"]
    assert losses["on"]["loss_obj"] == losses["off"]["loss_obj"]  # objectness is never smoothed


# ---- augmentation and mixup through the loaders ------------------------------------------------------


def test_augment_yolo_changes_the_training_batch(make_cfg):
    plain_images, plain_targets = first_batch(make_cfg("augment=none"))
    images, targets = first_batch(make_cfg("augment=yolo"))
    assert images.shape == plain_images.shape and not torch.equal(images, plain_images)
    assert any(
        t["boxes"].shape != p["boxes"].shape or not torch.allclose(t["boxes"], p["boxes"])
        for t, p in zip(targets, plain_targets, strict=True)
    )


@pytest.mark.parametrize("option", ["beta15", "beta1", "fixed05"])
def test_mixup_on_puts_mixed_weights_into_the_training_batch(make_cfg, option):
    _, plain = first_batch(make_cfg("mixup=off"))
    assert all(torch.equal(t["weights"], torch.ones(len(t["boxes"]))) for t in plain)
    _, mixed = first_batch(make_cfg(f"mixup={option}", "augment=none"))
    weights = torch.cat([t["weights"] for t in mixed])
    assert ((weights > 0) & (weights < 1)).all()
    assert sum(len(t["boxes"]) for t in mixed) > sum(len(t["boxes"]) for t in plain)
    if option == "fixed05":
        assert torch.equal(weights, torch.full_like(weights, 0.5))

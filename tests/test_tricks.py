"""Each trick through the real configs: exact math where the other test files do not cover it, and proof
that switching it on changes what it should (the LR curve, the input sizes, the class targets, the
augmented images, the weights reaching the loss). No silent no-ops."""

import logging

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from bof.data.loader import KeyedBatchSampler
from bof.engine.run_setup import build_tricks
from bof.train import build_data_loaders, build_model, train
from bof.tricks.label_smoothing import LabelSmoothing, sigmoid_targets
from bof.tricks.lr_schedule import StepSchedule
from bof.tricks.random_shapes import RandomShapes
from tests.helpers import cpu_run
from tests.test_train_e2e import scalar_tags


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


def test_random_shapes_on_changes_train_input_size_in_tensorboard(make_cfg, tmp_path):
    cfg = make_cfg(
        "random_shapes=on", "random_shapes.min_size=64", "random_shapes.max_size=128",
        "random_shapes.interval=2", "trainer.epochs=3", "trainer.eval_interval=3",
    )  # fmt: skip
    train(cfg)
    sizes = [int(e.value) for e in scalar_tags(tmp_path / "run").Scalars("train/input_size")]
    assert sizes == [RandomShapes(64, 128, 32, 2, seed=0)(i) for i in range(12)]
    assert len(set(sizes)) > 1 and set(sizes) <= {64, 96, 128}


# ---- LR schedule ----------------------------------------------------------------------------------


def test_step_milestones_scale_with_the_run_length():
    schedule = StepSchedule(warmup_epochs=2, milestones=[160, 180], reference_epochs=200)
    assert schedule.milestone_epochs(200) == [160, 180] and schedule.milestone_epochs(20) == [16, 18]
    ipe = 5
    assert schedule.factor(16 * ipe - 1, ipe, 20) == 1.0
    assert schedule.factor(16 * ipe, ipe, 20) == pytest.approx(0.1)
    assert schedule.factor(18 * ipe, ipe, 20) == pytest.approx(0.01)


def test_cosine_changes_the_train_lr_curve_in_tensorboard(make_cfg, tmp_path):
    curves = {}
    for name in ("step", "cosine"):
        run = tmp_path / name
        cfg = make_cfg(f"lr_schedule={name}", "lr_schedule.warmup_epochs=1", "trainer.epochs=3",
                       "trainer.eval_interval=3", output_dir=run)  # fmt: skip
        train(cfg)
        curves[name] = [e.value for e in scalar_tags(run).Scalars("train/lr")]
    base = cfg.optimizer.lr
    assert curves["step"][0] == curves["cosine"][0] == pytest.approx(base / 4)  # warmup from 0 over 4 iters
    assert curves["step"][3] == pytest.approx(base) and curves["cosine"][3] == pytest.approx(base)
    # step: milestones 160/180 of 200 scale to epochs round(2.4) = 2 and round(2.7) = 3 (the end) of 3
    assert curves["step"][7] == pytest.approx(base) and curves["step"][8] == pytest.approx(base / 10)
    assert curves["cosine"][8] == pytest.approx(base / 2, rel=1e-5)  # halfway through 8 cosine iters
    assert curves["cosine"][-1] < 0.05 * base


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


def test_dry_run_names_the_active_tricks_and_saves_the_pictures(make_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bof.train"):
        train(
            make_cfg(
                "trainer.dry_run=true", "mixup=beta15", "smoothing=on", "lr_schedule=cosine", "augment=yolo"
            )
        )
    assert "mixup Beta(1.5, 1.5)" in caplog.text and "mixes epochs 1-1 of 2" in caplog.text
    assert (
        "label smoothing" in caplog.text and "cosine lr" in caplog.text and "yolo augmentation" in caplog.text
    )
    samples = Image.open(tmp_path / "run" / "train_samples.png")
    assert samples.size[0] > 64 and Image.open(tmp_path / "run" / "lr_schedule.png").size[0] > 100


def test_training_start_logs_samples_and_lr_plan_to_tensorboard(make_cfg, tmp_path):
    train(make_cfg("mixup=beta15", "trainer.epochs=1"))
    events = scalar_tags(tmp_path / "run")
    assert "train/samples" in events.Tags()["images"] and "plan/lr" in events.Tags()["images"]


def test_all_tricks_together_train_end_to_end(make_cfg):
    metrics = train(
        make_cfg(
            "augment=yolo", "mixup=beta15", "smoothing=on", "lr_schedule=cosine", "random_shapes=on",
            "random_shapes.min_size=64", "random_shapes.max_size=128", "random_shapes.interval=1",
        )
    )  # fmt: skip
    assert metrics["train_loss"] > 0 and 0.0 <= metrics["map"] <= 1.0

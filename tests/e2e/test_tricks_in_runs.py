"""Each trick through the real configs: exact math where the other test files do not cover it, and proof
that switching it on changes what it should (the LR curve, the input sizes, the class targets, the
augmented images, the weights reaching the loss). No silent no-ops."""

import logging

import pytest
from PIL import Image

from bof.train import train
from bof.tricks.random_shapes import RandomShapes
from tests.helpers import scalar_tags


def test_random_shapes_on_changes_train_input_size_in_tensorboard(make_cfg, tmp_path):
    cfg = make_cfg(
        "random_shapes=on",
        "random_shapes.min_size=64",
        "random_shapes.max_size=128",
        "random_shapes.interval=2",
        "trainer.epochs=3",
        "trainer.eval_interval=3",
    )
    train(cfg)
    sizes = [int(e.value) for e in scalar_tags(tmp_path / "run").Scalars("train/input_size")]
    assert sizes == [RandomShapes(64, 128, 32, 2, seed=0)(i) for i in range(12)]
    assert len(set(sizes)) > 1 and set(sizes) <= {64, 96, 128}


def test_cosine_changes_the_train_lr_curve_in_tensorboard(make_cfg, tmp_path):
    curves = {}
    for name in ("step", "cosine"):
        run = tmp_path / name
        cfg = make_cfg(
            f"lr_schedule={name}",
            "lr_schedule.warmup_epochs=1",
            "trainer.epochs=3",
            "trainer.eval_interval=3",
            output_dir=run,
        )
        train(cfg)
        curves[name] = [e.value for e in scalar_tags(run).Scalars("train/lr")]
    base = cfg.optimizer.lr
    assert curves["step"][0] == curves["cosine"][0] == pytest.approx(base / 4)  # warmup from 0 over 4 iters
    assert curves["step"][3] == pytest.approx(base) and curves["cosine"][3] == pytest.approx(base)
    # step: milestones 160/180 of 200 scale to epochs round(2.4) = 2 and round(2.7) = 3 (the end) of 3
    assert curves["step"][7] == pytest.approx(base) and curves["step"][8] == pytest.approx(base / 10)
    assert curves["cosine"][8] == pytest.approx(base / 2, rel=1e-5)  # halfway through 8 cosine iters
    assert curves["cosine"][-1] < 0.05 * base


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
            "augment=yolo",
            "mixup=beta15",
            "smoothing=on",
            "lr_schedule=cosine",
            "random_shapes=on",
            "random_shapes.min_size=64",
            "random_shapes.max_size=128",
            "random_shapes.interval=1",
        )
    )
    assert metrics["train_loss"] > 0 and 0.0 <= metrics["map"] <= 1.0

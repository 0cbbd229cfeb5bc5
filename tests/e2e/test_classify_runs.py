"""Backbone pretraining: classification mixup math, a short task=classify run, and the hand-over of its
backbone to YOLOv3 and Faster R-CNN R101 (backbone equal after loading, heads untouched)."""

import json
import logging
import shutil

import pytest
import torch

from bof.train import train
from bof.utils.checkpoint import load_checkpoint
from tests.helpers import scalar_tags

CLS_TINY = [
    "task=classify",
    "data=synthetic_cls",
    "data.image_size=32",
    "trainer.epochs=1",
    "trainer.batch_size=8",
]


def test_classify_run_reports_top1_top5(make_cfg, tmp_path):
    metrics = train(make_cfg(*CLS_TINY, "mixup=classification", "smoothing=on"))
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["task"] == "classify"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["top1"] == metrics["top1"]
    assert {"val/top1", "val/top5", "train/loss", "train/lr"} <= set(
        scalar_tags(tmp_path / "run").Tags()["scalars"]
    )
    assert (tmp_path / "run" / "last.pt").is_file()


def test_detection_mixup_is_refused_for_classification(make_cfg):
    with pytest.raises(ValueError, match="mixup=classification"):
        train(make_cfg(*CLS_TINY, "mixup=beta15"))


def test_pretrained_backbone_feeds_a_detection_run_end_to_end(make_cfg, tmp_path, caplog):
    train(make_cfg(*CLS_TINY, output_dir=tmp_path / "cls"))  # the TINY YOLOv3's width 1/16 backbone
    checkpoint = tmp_path / "cls" / "last.pt"
    with caplog.at_level(logging.INFO, logger="bof"):
        metrics = train(make_cfg("trainer.epochs=1", f"model.backbone_checkpoint={checkpoint}"))
    assert 0.0 <= metrics["map"] <= 1.0 and f"backbone initialised from {checkpoint}" in caplog.text


def test_pretraining_runs_the_detection_loop_with_every_trainer_key(make_cfg, monkeypatch):
    """One training loop: task=classify hands grad_clip, skip_nonfinite and amp to bof.engine.loops as
    detection does, and its smoothing + mixup act as the loop's batch hook on the device batch."""
    import bof.classify

    calls, real = [], bof.classify.train_one_epoch

    def spy(model, loader, optimization, run, epoch, writer, batch_transform=None):
        calls.append({"run": run, "batch_transform": batch_transform})
        return real(model, loader, optimization, run, epoch, writer, batch_transform)

    monkeypatch.setattr(bof.classify, "train_one_epoch", spy)
    cfg = make_cfg(
        *CLS_TINY,
        "mixup=classification",
        "smoothing=on",
        "trainer.grad_clip=0.5",
        "trainer.skip_nonfinite=true",
    )
    train(cfg)
    trainer = calls[0]["run"].trainer
    assert len(calls) == 1 and trainer.grad_clip == 0.5 and trainer.skip_nonfinite is True
    hook = calls[0]["batch_transform"]
    images, targets = hook(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert targets.shape == (4, 6) and torch.allclose(targets.sum(1), torch.ones(4))  # soft, smoothed
    assert hook.epsilon == 0.01 and hook.mixing is True  # mixup=classification: on in every epoch


# ---- one end-of-epoch policy for both recipes (bof.engine.epochs): what classification used to miss ----


def test_classify_never_saves_weights_that_are_not_finite(make_cfg, tmp_path, monkeypatch):
    import bof.classify

    real = bof.classify.train_one_epoch

    def poisoned(model, *args, **kwargs):
        metrics = real(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return metrics

    monkeypatch.setattr(bof.classify, "train_one_epoch", poisoned)
    with pytest.raises(FloatingPointError, match="not finite"):
        train(make_cfg(*CLS_TINY))
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_classify_evaluates_every_eval_interval_and_after_the_last_epoch(make_cfg, monkeypatch):
    import bof.classify

    evaluated, real = [], bof.classify.accuracy
    monkeypatch.setattr(bof.classify, "accuracy", lambda *a: evaluated.append(1) or real(*a))
    train(make_cfg(*CLS_TINY, "trainer.epochs=3", "trainer.eval_interval=2"))
    assert len(evaluated) == 2  # after epoch 2 and after epoch 3 (the last), not after epoch 1


def test_classify_keeps_the_first_best_on_a_tie(make_cfg, tmp_path, monkeypatch):
    import bof.classify

    monkeypatch.setattr(bof.classify, "accuracy", lambda *a: {"top1": 0.5, "top5": 1.0})
    train(make_cfg(*CLS_TINY, "trainer.epochs=2", "trainer.eval_interval=1"))
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 0  # epoch 1 tied: best.pt unchanged


def test_classify_carries_its_counts_across_a_resume(make_cfg, tmp_path):
    first = train(make_cfg(*CLS_TINY))
    assert len(load_checkpoint(tmp_path / "run" / "last.pt")["counts"]["images_per_s"]) == 1
    resumed = train(make_cfg(*CLS_TINY, "trainer.epochs=2", "trainer.resume=true"))
    assert len(load_checkpoint(tmp_path / "run" / "last.pt")["counts"]["images_per_s"]) == 2
    assert resumed["wall_time_s"] > first["wall_time_s"]  # the first run's time is included


def test_a_classify_run_that_trains_removes_an_earlier_failure(make_cfg, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "failed.json").write_text('{"error": "RuntimeError: earlier attempt"}')
    train(make_cfg(*CLS_TINY))
    assert (tmp_path / "run" / "metrics.json").is_file() and not (tmp_path / "run" / "failed.json").exists()


def test_classify_logs_each_evaluation_once_at_its_epochs_last_iteration_across_resumes(make_cfg, tmp_path):
    run = tmp_path / "run"
    train(make_cfg(*CLS_TINY))
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    train(make_cfg(*CLS_TINY, "trainer.epochs=2", "trainer.resume=true"))
    shutil.copy(tmp_path / "epoch1.pt", run / "last.pt")  # killed before the second epoch's checkpoint
    (run / "metrics.json").unlink()
    train(make_cfg(*CLS_TINY, "trainer.epochs=2", "trainer.resume=true"))
    (run / "metrics.json").unlink()  # killed after the last checkpoint: evaluated again, not logged again
    recovered = train(make_cfg(*CLS_TINY, "trainer.epochs=2", "trainer.resume=true"))
    iterations = len(scalar_tags(run).Scalars("train/lr")) // 2
    assert [e.step for e in scalar_tags(run).Scalars("val/top1")] == [iterations - 1, 2 * iterations - 1]
    assert recovered["train_loss"] == load_checkpoint(run / "last.pt")["counts"]["train_loss"] is not None

"""Backbone pretraining: classification mixup math, a short task=classify run, and the hand-over of its
backbone to YOLOv3 and Faster R-CNN R101 (backbone equal after loading, heads untouched)."""

import json
import logging

import numpy as np
import pytest
import torch

from bof.models.classifiers import C4_NAMES, Darknet53Classifier, load_backbone
from bof.models.faster_rcnn import FasterRCNNDetector
from bof.models.yolov3 import YOLOv3
from bof.train import train
from bof.tricks.mixup import ClassificationMixup, mixup_batch
from bof.utils.checkpoint import load_checkpoint, save_checkpoint
from tests.test_train_e2e import scalar_tags

CLS_TINY = [
    "task=classify",
    "data=synthetic_cls",
    "data.image_size=32",
    "trainer.epochs=1",
    "trainer.batch_size=8",
]


def test_mixup_with_lambda_one_is_the_identity():
    images, targets = torch.randn(4, 3, 8, 8), torch.eye(4)
    mixed_images, mixed_targets = mixup_batch(images, targets, 1.0, torch.tensor([3, 2, 1, 0]))
    assert torch.equal(mixed_images, images) and torch.equal(mixed_targets, targets)


def test_mixing_follows_the_permutation_and_targets_sum_to_one():
    images, targets = torch.randn(4, 3, 8, 8), torch.eye(4)[[0, 1, 2, 1]]
    permutation = torch.tensor([2, 0, 3, 1])
    mixed_images, mixed_targets = mixup_batch(images, targets, 0.3, permutation)
    assert torch.allclose(mixed_images[1], 0.3 * images[1] + 0.7 * images[0])
    assert torch.allclose(mixed_targets[0], 0.3 * targets[0] + 0.7 * targets[2])
    assert torch.allclose(mixed_targets.sum(1), torch.ones(4))


def test_lambda_follows_beta_alpha_alpha():
    mixup = ClassificationMixup(alpha=0.2)
    rng = np.random.default_rng(0)  # the only source of randomness: the same rng, the same draws
    lams = torch.tensor([mixup.draw(rng, 4)[0] for _ in range(3000)])
    assert mixup.draw(np.random.default_rng(1), 4)[0] == mixup.draw(np.random.default_rng(1), 4)[0]
    assert lams.mean() == pytest.approx(0.5, abs=0.03)
    assert ((lams < 0.1) | (lams > 0.9)).float().mean() > 0.5  # Beta(0.2, 0.2) is U-shaped
    with pytest.raises(ValueError, match="mixup.alpha"):
        ClassificationMixup(alpha=0)


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


def classifier_checkpoint(model, path):
    save_checkpoint({"model": model.state_dict(), "config": {"task": "classify"}}, path)
    return path


def test_handover_to_yolov3_loads_the_backbone_and_leaves_the_heads(tmp_path):
    torch.manual_seed(0)
    classifier = Darknet53Classifier(num_classes=6, width=0.125)
    path = classifier_checkpoint(classifier, tmp_path / "cls.pt")
    torch.manual_seed(1)
    detector = YOLOv3(num_classes=3, width=0.125)
    heads = {k: v.clone() for k, v in detector.state_dict().items() if not k.startswith("backbone.")}
    load_backbone(detector, path)
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(detector.backbone.state_dict()[key], value), key
    assert all(torch.equal(detector.state_dict()[k], v) for k, v in heads.items())


@pytest.mark.parametrize("design", ["fpn", "c4"])
def test_handover_to_faster_rcnn_r101(tmp_path, design):
    from torchvision.models import resnet101

    torch.manual_seed(0)
    classifier = resnet101(weights=None, num_classes=6)
    path = classifier_checkpoint(classifier, tmp_path / "cls.pt")
    detector = FasterRCNNDetector(num_classes=3, depth=101, design=design)
    predictor = {k: v.clone() for k, v in detector.detector.roi_heads.box_predictor.state_dict().items()}
    load_backbone(detector, path)
    loaded = detector.state_dict()
    source = classifier.state_dict()
    if design == "fpn":
        pairs = [(f"detector.backbone.body.{k}", k) for k in source if not k.startswith("fc.")]
    else:
        pairs = [  # ResNet module -> its place in the C4 detector
            (f"{C4_NAMES[k.split('.')[0]]}.{k.split('.', 1)[1]}", k)
            for k in source
            if not k.startswith("fc.")
        ]
    checked = 0
    for ours, theirs in pairs:
        if ours in loaded:  # FrozenBatchNorm2d has no num_batches_tracked
            assert torch.equal(loaded[ours], source[theirs]), ours
            checked += 1
    assert checked > 500
    assert all(
        torch.equal(detector.detector.roi_heads.box_predictor.state_dict()[k], v)
        for k, v in predictor.items()
    )


def test_a_checkpoint_of_another_width_is_refused_naming_it(tmp_path):
    path = classifier_checkpoint(Darknet53Classifier(6, width=0.25), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide.pt does not fit YOLOv3's backbone.*same model and width"):
        load_backbone(YOLOv3(3, width=0.125), path)


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
    cfg = make_cfg(*CLS_TINY, "mixup=classification", "smoothing=on", "trainer.grad_clip=0.5",
                   "trainer.skip_nonfinite=true")  # fmt: skip
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

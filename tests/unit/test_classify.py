"""Backbone pretraining: classification mixup math, a short task=classify run, and the hand-over of its
backbone to YOLOv3, Faster R-CNN R101 and the miniature's narrow R50 C4 (backbone equal after loading,
heads untouched)."""

import numpy as np
import pytest
import torch

from bof.models.classifiers import C4_NAMES, Darknet53Classifier, build_classifier, load_backbone
from bof.models.faster_rcnn import FasterRCNNDetector
from bof.models.resnet import build_resnet
from bof.models.yolov3 import YOLOv3
from bof.train import build_model
from bof.tricks.mixup import ClassificationMixup, mixup_batch
from bof.utils.checkpoint import save_checkpoint


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


@pytest.mark.parametrize("variant", ["v1b", "v1d"])
def test_a_narrow_resnet_classifier_initialises_the_narrow_c4_detector(make_cfg, tmp_path, variant):
    """The miniature's hand-over, through the config as a run makes it: task=classify's classifier of
    model=faster_rcnn_r50_c4 at width 1/8 -> its checkpoint -> model.backbone_checkpoint of the detector
    at the same width: every backbone tensor filled (stem to layer4), the RPN and predictor untouched."""
    narrow = ("model=faster_rcnn_r50_c4", "model.net.width=0.125", f"backbones.resnet_variant={variant}")
    cfg = make_cfg(*narrow, "model.net.anchor_sizes=[8,16,32,64,128]")
    torch.manual_seed(0)
    classifier = build_classifier(cfg.model.net, num_classes=6)
    assert classifier(torch.zeros(2, 3, 32, 32)).shape == (2, 6)
    path = classifier_checkpoint(classifier, tmp_path / "cls.pt")
    torch.manual_seed(1)
    fresh = build_model(cfg, 3, torch.device("cpu"))
    cfg.model.backbone_checkpoint = str(path)
    torch.manual_seed(1)
    detector = build_model(cfg, 3, torch.device("cpu"))
    loaded, source = detector.state_dict(), classifier.state_dict()
    backbone = [k for k in loaded if k.startswith(tuple(f"{name}." for name in C4_NAMES.values()))]
    pairs = {
        f"{C4_NAMES[k.split('.')[0]]}.{k.split('.', 1)[1]}": k for k in source if not k.startswith("fc.")
    }
    assert backbone and set(backbone) <= set(pairs)  # every backbone tensor has its classifier tensor
    assert all(torch.equal(loaded[k], source[pairs[k]]) for k in backbone)
    heads = [k for k in loaded if k.startswith(("detector.rpn.", "detector.roi_heads.box_predictor."))]
    assert heads and all(torch.equal(loaded[k], fresh.state_dict()[k]) for k in heads)
    assert not any(
        p.requires_grad for p in detector.detector.backbone[0].parameters()
    )  # stem frozen, as with any backbone file
    losses = detector.train()(
        [torch.rand(3, 224, 288)],
        [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 120.0]]), "labels": torch.tensor([1])}],
    )
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_resnet_checkpoint_of_another_width_is_refused_naming_it(tmp_path):
    path = classifier_checkpoint(build_resnet(50, width=0.25, num_classes=6), tmp_path / "wide.pt")
    with pytest.raises(
        ValueError, match=r"wide.pt does not fit FasterRCNNDetector's backbone.*same model and width"
    ):
        load_backbone(FasterRCNNDetector(3, design="c4", width=0.125), path)

"""The Faster R-CNN of the CPU miniatures: a narrow ResNet (``width``) whose channels the C4 heads follow,
anchors scaled with a small input size (``anchor_sizes``), and width 1 / default anchors left as they were."""

import pytest
import torch

from bof.models.faster_rcnn import FasterRCNNDetector

MINI = dict(min_size=160, max_size=267, anchor_sizes=(8, 16, 32, 64, 128), rois_per_image=32, rpn_min_size=4)


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def batch():
    torch.manual_seed(0)
    images = [torch.randn(3, 224, 300), torch.randn(3, 256, 240)]
    targets = [
        {
            "boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [150.0, 40.0, 280.0, 200.0]]),
            "labels": torch.tensor([0, 5]),
        },
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def test_width_one_and_default_anchors_are_the_paper_c4_unchanged():
    model = FasterRCNNDetector(num_classes=20, depth=50, design="c4", width=1.0, anchor_sizes=None)
    assert parameters(model) == 33_185_140  # as before the width option
    assert model.detector.backbone.out_channels == 1024
    assert model.detector.roi_heads.box_predictor.cls_score.in_features == 2048
    anchors = model.detector.rpn.anchor_generator
    assert anchors.sizes == ((32, 64, 128, 256, 512),) and anchors.aspect_ratios == ((0.5, 1.0, 2.0),)


@pytest.mark.parametrize("depth", [50, 101])
@pytest.mark.parametrize("width", [0.125, 0.25])
def test_narrow_c4_heads_follow_the_resnets_channels(depth, width):
    model = FasterRCNNDetector(num_classes=6, depth=depth, design="c4", width=width, **MINI)
    full = FasterRCNNDetector(num_classes=6, depth=depth, design="c4")
    detector = model.detector
    features = detector.backbone(torch.zeros(1, 3, 160, 224))
    assert features.shape == (1, round(1024 * width), 10, 14)  # stride 16
    assert detector.rpn.head.conv[0][0].in_channels == round(1024 * width)
    assert detector.roi_heads.box_head[0][0].conv1.in_channels == round(1024 * width)
    assert detector.roi_heads.box_predictor.cls_score.in_features == round(2048 * width)
    ratio = parameters(detector.backbone) / parameters(full.detector.backbone)
    assert width**2 <= ratio <= 1.03 * width**2


def test_a_narrow_c4_detector_trains_one_step_and_detects():
    torch.manual_seed(0)
    model = FasterRCNNDetector(num_classes=6, depth=50, design="c4", width=0.125, **MINI).train()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    losses = model(*batch())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    detector = model.detector
    for name, param in (  # stem to predictor: nothing frozen without a pretrained backbone
        ("backbone.0", detector.backbone[0].weight),
        ("layer3", detector.backbone[6][-1].conv3.weight),
        ("rpn", detector.rpn.head.cls_logits.weight),
        ("layer4", detector.roi_heads.box_head[0][0].conv1.weight),
        ("predictor", detector.roi_heads.box_predictor.cls_score.weight),
    ):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, (
            name
        )
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert any(not torch.equal(before[k], p) for k, p in model.named_parameters())
    detections = model.eval()(batch()[0])
    assert len(detections) == 2
    for d in detections:
        assert d["boxes"].shape == (len(d["scores"]), 4) and d["labels"].shape == d["scores"].shape
        assert ((d["labels"] >= 0) & (d["labels"] < 6)).all()
        assert (d["boxes"][:, 2] <= 300).all()  # boxes in the input frame, not the resized one


def test_anchor_sizes_change_the_anchors():
    default = FasterRCNNDetector(num_classes=3, design="c4", width=0.125).detector.rpn.anchor_generator
    scaled = FasterRCNNDetector(num_classes=3, design="c4", width=0.125, **MINI).detector.rpn.anchor_generator
    sides = lambda anchors: (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])  # noqa: E731
    # torchvision orders them ratio by ratio: ratio 1 is the middle five, side**2 each
    assert torch.equal(sides(default.cell_anchors[0])[5:10], torch.tensor([32.0, 64, 128, 256, 512]) ** 2)
    assert torch.equal(sides(scaled.cell_anchors[0])[5:10], torch.tensor([8.0, 16, 32, 64, 128]) ** 2)
    assert scaled.num_anchors_per_location() == [15]
    fpn = FasterRCNNDetector(num_classes=3, design="fpn", width=0.125, anchor_sizes=[8, 16, 32, 64, 128])
    assert [tuple(a[1].tolist()) for a in fpn.detector.rpn.anchor_generator.cell_anchors] == [
        (-s / 2, -s / 2, s / 2, s / 2) for s in (8.0, 16, 32, 64, 128)
    ]


def test_anchor_sizes_are_checked_naming_the_key():
    with pytest.raises(ValueError, match=r"model.net.anchor_sizes=\[8, 16, 32\]: one side per FPN level, 5"):
        FasterRCNNDetector(num_classes=3, design="fpn", width=0.125, anchor_sizes=[8, 16, 32])
    with pytest.raises(ValueError, match=r"model.net.anchor_sizes=-8.0: must be anchor sides"):
        FasterRCNNDetector(num_classes=3, design="c4", width=0.125, anchor_sizes=[-8, 16])
    with pytest.raises(ValueError, match=r"model.net.anchor_sizes=\[\]: at least one side"):
        FasterRCNNDetector(num_classes=3, design="c4", width=0.125, anchor_sizes=[])


def test_a_narrow_fpn_builds_on_the_narrow_stages_and_detects():
    """FPN: torchvision's extractor reads the stages' channels from the ResNet; its own 256-channel
    pyramid and 1024-wide box head are not narrowed."""
    model = FasterRCNNDetector(num_classes=3, design="fpn", width=0.125, min_size=64, max_size=96).eval()
    inner = model.detector.backbone.fpn.inner_blocks
    assert [block[0].in_channels for block in inner] == [32, 64, 128, 256]
    assert len(model(batch()[0][:1])) == 1


def test_pretrained_weights_with_width_are_refused():
    with pytest.raises(ValueError, match="model.net.width=0.25"):
        FasterRCNNDetector(num_classes=3, design="c4", width=0.25, pretrained_backbone=True)

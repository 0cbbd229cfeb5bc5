"""YOLOv3 architecture, target assignment, loss and post-processing."""

import math

import pytest
import torch

from bof.models.darknet import Darknet53
from bof.models.yolo_loss import YOLOv3Loss, pairwise_iou_batched
from bof.models.yolov3 import MXNET_UNIFORM, YOLOV3_ANCHORS, YOLOv3, YOLOv3PostProcess, decode_boxes
from bof.tricks.label_smoothing import sigmoid_targets


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(("num_classes", "expected"), [(20, 61_626_049), (80, 61_949_149)])
def test_parameter_count_matches_darknet_yolov3_cfg(num_classes, expected):
    assert trainable(YOLOv3(num_classes)) == expected


def test_darknet53_backbone_parameter_count_and_strides():
    backbone = Darknet53()
    assert trainable(backbone) == 40_584_928
    c3, c4, c5 = backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(c.shape) for c in (c3, c4, c5)] == [(1, 256, 8, 12), (1, 512, 4, 6), (1, 1024, 2, 3)]


def test_width_multiplier_scales_channels_and_output_layout():
    model = YOLOv3(num_classes=6, width=0.25)
    assert trainable(model) < trainable(YOLOv3(6)) / 10
    outputs = model(torch.zeros(2, 3, 96, 128))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 12, 16, 11), (2, 3, 6, 8, 11), (2, 3, 3, 4, 11)]


def test_heads_start_as_gluoncvs_net_initialize_and_the_backbone_as_pytorchs():
    """GluonCV names no initializer in yolo3.py: net.initialize() draws the detection blocks, the lateral
    1x1 convs and the outputs from MXNet's Uniform(-0.07, 0.07), biases 0 (docs/fidelity.md "YOLOv3");
    PyTorch's default bound 1 / sqrt(fan_in) is 1.1 to 4.8 times smaller. The backbone is left as built."""
    torch.manual_seed(0)
    model = YOLOv3(num_classes=20)
    torch.manual_seed(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.backbone.state_dict().values(), Darknet53().state_dict().values(), strict=True)
    )
    heads = [model.block5, model.lateral5, model.block4, model.lateral4, model.block3]
    convs = [m for head in heads for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 * 7 + 2
    for conv in convs:
        weight = conv.weight.detach()
        bound = 1 / math.sqrt(weight[0].numel())  # PyTorch's default
        assert 0.069 < weight.abs().max() <= MXNET_UNIFORM == 0.07 and bound < MXNET_UNIFORM < 4.8 * bound
        assert weight.std().item() == pytest.approx(MXNET_UNIFORM / math.sqrt(3), rel=0.02)
        assert conv.bias is None or not conv.bias.any()


def test_objectness_prior_sets_only_the_objectness_bias():
    torch.manual_seed(0)
    plain = YOLOv3(num_classes=3, width=0.0625)
    torch.manual_seed(0)
    primed = YOLOv3(num_classes=3, width=0.0625, objectness_prior=0.01)
    images = torch.randn(2, 3, 64, 64)
    plain.eval(), primed.eval()
    for p, q in zip(plain(images), primed(images), strict=True):
        assert torch.allclose(q[..., 4].sigmoid(), torch.full_like(q[..., 4], 0.01), atol=5e-3)
        assert not torch.allclose(p[..., 4].sigmoid(), q[..., 4].sigmoid(), atol=0.1)
        other = [0, 1, 2, 3, 5, 6, 7]
        assert torch.equal(p[..., other], q[..., other])  # boxes and classes untouched
    with pytest.raises(ValueError, match="objectness_prior"):
        YOLOv3(num_classes=3, width=0.0625, objectness_prior=1.0)


def outputs_for(batch, size, num_classes=3, fill=-20.0):
    """Zero-offset predictions with confident 'no object' logits."""
    outs = []
    for stride in (8, 16, 32):
        o = torch.zeros(batch, 3, size // stride, size // stride, 5 + num_classes)
        o[..., 4] = fill
        outs.append(o.requires_grad_())
    return outs


def target(boxes, labels, weights=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if weights is not None:
        t["weights"] = torch.tensor(weights, dtype=torch.float32)
    return t


def test_assignment_picks_best_anchor_of_all_nine_in_the_centre_cell():
    criterion = YOLOv3Loss(num_classes=3)
    # 116 x 90 box: exactly anchor 0 of the stride-32 scale; centre (150, 70) -> cell x=4, y=2
    boxes = torch.tensor([[92.0, 25.0, 208.0, 115.0]])
    assignment = criterion.assign(boxes, torch.tensor([0]), outputs_for(1, 320))
    assert [positive.tolist() for positive, *_ in assignment] == [[False], [False], [True]]
    _, a, gy, gx, slot = assignment[2]
    assert (a.tolist(), gy.tolist(), gx.tolist()) == ([0], [2], [4])
    assert slot.tolist() == [(0 * 10 + 2) * 10 + 4]  # image 0, anchor 0, row 2, column 4 of 10 x 10
    # 16 x 30 box -> stride 8, anchor 1
    small = torch.tensor([[0.0, 0.0, 16.0, 30.0]])
    positive, a, gy, gx, _ = criterion.assign(small, torch.tensor([0]), outputs_for(1, 320))[0]
    assert (positive.tolist(), a.tolist(), gy.tolist(), gx.tolist()) == ([True], [1], [1], [1])


def test_two_boxes_on_one_slot_the_later_wins_and_other_images_do_not_collide():
    criterion = YOLOv3Loss(num_classes=3)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 30.0], [1.0, 1.0, 16.0, 30.0], [0.0, 0.0, 16.0, 30.0]])
    positive, *_ = criterion.assign(boxes, torch.tensor([0, 0, 1]), outputs_for(2, 64))[0]
    assert positive.tolist() == [False, True, True]


def test_loss_targets_exact_for_one_box():
    """Perfect predictions for one box: only the class/centre BCE entropy floors remain."""
    criterion = YOLOv3Loss(num_classes=3)
    size = 320
    outs = outputs_for(1, size)
    # box 116 x 90 centred in cell (4, 2) of stride 32 at offset (0.5, 0.5) -> centre (144, 80)
    box = [144 - 58, 80 - 45, 144 + 58, 80 + 45]
    with torch.no_grad():
        outs[2][0, 0, 2, 4, :4] = 0.0  # sigmoid(0) = 0.5 offset, log(w/aw) = 0
        outs[2][0, 0, 2, 4, 4] = 20.0
        outs[2][0, 0, 2, 4, 5:] = torch.tensor([-20.0, 20.0, -20.0])
    losses = criterion(outs, [target([box], [1])], (size, size))
    box_weight = 2 - 116 * 90 / size**2
    assert losses["loss_wh"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_xy"].item() == pytest.approx(
        2 * math.log(2) * box_weight, rel=1e-5
    )  # BCE(0, 0.5) = ln 2
    assert losses["loss_cls"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_obj"].item() < 0.01


def test_ignore_rule_removes_objectness_loss_of_overlapping_non_positive_anchor():
    criterion = YOLOv3Loss(num_classes=3)
    size = 64
    box = [8.0, 8.0, 56.0, 56.0]  # 48 x 48 -> best anchor 33x23? it is assigned somewhere; find a negative
    outs = outputs_for(1, size, fill=0.0)
    # make stride-32 anchor 2 (373 x 326) at cell (0,0) decode exactly to the box -> IoU 1 > 0.7
    with torch.no_grad():
        outs[2][0, 2, 0, 0, 0:2] = 100.0  # sigmoid -> 1: centre (32, 32)
        outs[2][0, 2, 0, 0, 2] = math.log(48 / 373)
        outs[2][0, 2, 0, 0, 3] = math.log(48 / 326)
    ignore = criterion._ignore_mask(outs, [target([box], [0])])
    assert ignore[2][0, 2, 0, 0] and ignore[2].sum() == 1
    with_ignore = criterion(outs, [target([box], [0])], (size, size))["loss_obj"]
    criterion.ignore_iou_thresh = 1.1  # nothing ignored
    without_ignore = criterion(outs, [target([box], [0])], (size, size))["loss_obj"]
    assert (without_ignore - with_ignore).item() == pytest.approx(
        math.log(2), rel=1e-4
    )  # BCE(0 logit, 0) = ln 2


def test_mixup_weights_scale_positive_terms_of_their_box():
    criterion = YOLOv3Loss(num_classes=3)
    outs = outputs_for(1, 320, fill=0.0)
    box = [[10.0, 10.0, 40.0, 70.0]]
    full = criterion(outs, [target(box, [2], [1.0])], (320, 320))
    half = criterion(outs, [target(box, [2], [0.3])], (320, 320))
    for k in ("loss_xy", "loss_wh", "loss_cls"):
        assert half[k].item() == pytest.approx(0.3 * full[k].item(), rel=1e-5)
    # positive objectness: BCE(0, 1) = ln 2 weighted by lambda, negatives unchanged
    assert (full["loss_obj"] - half["loss_obj"]).item() == pytest.approx(0.7 * math.log(2), abs=2e-3)


def test_loss_is_averaged_over_batch_and_handles_images_without_boxes():
    criterion = YOLOv3Loss(num_classes=3)
    one = criterion(outputs_for(1, 64, fill=0.0), [target([[4.0, 4.0, 30.0, 40.0]], [0])], (64, 64))["loss"]
    two = criterion(outputs_for(2, 64, fill=0.0), [target([[4.0, 4.0, 30.0, 40.0]], [0])] * 2, (64, 64))[
        "loss"
    ]
    assert two.item() == pytest.approx(one.item(), rel=1e-5)
    empty = criterion(outputs_for(1, 64, fill=0.0), [target([], [])], (64, 64))
    assert empty["loss_xy"].item() == 0 and empty["loss"].item() > 0
    empty["loss"].backward()


def test_class_targets_with_and_without_smoothing():
    assert sigmoid_targets(torch.tensor([1]), 4).tolist() == [[0, 1, 0, 0]]
    smoothed = sigmoid_targets(torch.tensor([1]), 4, epsilon=0.025)
    assert smoothed[0].tolist() == pytest.approx([0.025, 0.975, 0.025, 0.025])


def test_batched_iou_matches_torchvision():
    from torchvision.ops import box_iou

    a, b = torch.rand(2, 5, 4) * 50, torch.rand(2, 3, 4) * 50
    a[..., 2:] += a[..., :2]
    b[..., 2:] += b[..., :2]
    batched = pairwise_iou_batched(a, b)
    for i in range(2):
        assert torch.allclose(batched[i], box_iou(a[i], b[i]), atol=1e-6)


def test_decode_and_postprocess_recover_a_confident_box():
    outs = outputs_for(1, 320)
    with torch.no_grad():
        outs[2][0, 0, 2, 4, :4] = 0.0
        outs[2][0, 0, 2, 4, 4] = 10.0
        outs[2][0, 0, 2, 4, 5:] = torch.tensor([-10.0, 10.0, -10.0])
    boxes, _, _ = decode_boxes(outs, YOLOV3_ANCHORS, (8, 16, 32))
    assert boxes.shape == (1, 3 * (40 * 40 + 20 * 20 + 10 * 10), 4)
    (det,) = YOLOv3PostProcess(score_thresh=0.5)(outs, (320, 320))
    assert det["labels"].tolist() == [1]
    assert det["boxes"][0].tolist() == pytest.approx([144 - 58, 80 - 45, 144 + 58, 80 + 45], abs=1e-3)


def test_a_score_threshold_of_0_05_keeps_what_0_01_then_cocos_metric_keeps():
    """experiment=yolov3_coco thresholds at 0.05 where GluonCV's net kept scores > 0.01 and its
    COCODetectionMetric(score_thresh=0.05) then dropped those under 0.05: the same detections, as lower
    scores never displace higher ones in the top 400, the per-class NMS or the 100 kept."""
    torch.manual_seed(0)
    outs = [o.detach() + torch.randn_like(o) for o in outputs_for(2, 320, num_classes=5, fill=-6.0)]
    for o in outs:
        o[1, ..., 4] += 3.0  # the second image: more than 100 detections over 0.05
    low, high = (YOLOv3PostProcess(score_thresh=t)(outs, (320, 320)) for t in (0.01, 0.05))
    scored = [d["scores"] >= 0.05 for d in low]  # image 0: filtered; image 1: capped
    assert [(len(s), 0 < int(s.sum()) < 100) for s in scored] == [(100, True), (100, False)]
    for lo, hi, keep in zip(low, high, scored, strict=True):
        assert all(torch.equal(lo[k][keep], hi[k]) for k in ("boxes", "scores", "labels"))


def test_postprocess_per_class_nms_and_caps():
    outs = outputs_for(1, 320, fill=5.0)  # every anchor confident
    with torch.no_grad():
        for o in outs:
            o[..., 5:] = 5.0
    post = YOLOv3PostProcess(topk=50, max_detections=7)
    (det,) = post(outs, (320, 320))
    assert len(det["boxes"]) == 7
    assert (det["boxes"] >= 0).all() and (det["boxes"] <= 320).all()

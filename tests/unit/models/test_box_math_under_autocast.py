"""Box math in float32 under bf16 autocast (docs/fidelity.md "Box math under mixed precision"): anchors,
proposals, regression targets and detections of both detectors are float32 and equal to the float32
decode of the same head outputs, while the convolutions run in bfloat16."""

import pytest
import torch

from bof.models.faster_rcnn import FasterRCNNDetector
from bof.models.yolo_loss import YOLOv3Loss
from bof.models.yolov3 import YOLOv3, YOLOv3Detector, YOLOv3PostProcess

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def off_bf16_grid(boxes: torch.Tensor) -> bool:
    """Some coordinate is not a bfloat16 number (a bf16 decode gives only such numbers)."""
    return bool((boxes.to(torch.bfloat16).float() != boxes).any())


def c4(**kwargs) -> FasterRCNNDetector:
    torch.manual_seed(0)
    kwargs = dict(num_classes=3, depth=50, design="c4", pretrained_backbone=False, box_score_thresh=0.0)
    return FasterRCNNDetector(**kwargs | dict(min_size=320, max_size=576, rpn_post_nms_test=50))


def test_faster_rcnn_detections_are_the_float32_decode_of_its_bf16_head():
    model = c4().eval()
    seen = {}
    detector = model.detector
    detector.transform.register_forward_hook(lambda m, i, o: seen.update(image_sizes=o[0].image_sizes))
    detector.rpn.register_forward_hook(lambda m, i, o: seen.update(proposals=o[0]))
    detector.rpn.head.conv.register_forward_hook(lambda m, i, o: seen.update(conv_dtype=o.dtype))
    detector.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: seen.update(head=o))
    images = [torch.rand(3, 300, 540, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad(), torch.autocast(**BF16):
        (detections,) = model(images)
    assert seen["conv_dtype"] == torch.bfloat16  # the network itself runs in bf16
    assert all(p.dtype == torch.float32 for p in seen["proposals"]) and off_bf16_grid(seen["proposals"][0])
    boxes = detections["boxes"]
    assert boxes.dtype == torch.float32 and len(boxes) > 10 and off_bf16_grid(boxes)
    with torch.no_grad():  # the same head outputs, decoded in float32 without autocast
        scores, deltas = (t.float() for t in seen["head"])
        boxes_, scores_, labels_ = detector.roi_heads.postprocess_detections(
            scores, deltas, seen["proposals"], seen["image_sizes"]
        )
        (reference,) = detector.transform.postprocess(
            [{"boxes": boxes_[0], "scores": scores_[0], "labels": labels_[0]}],
            seen["image_sizes"],
            [(300, 540)],
        )
    torch.testing.assert_close(boxes, reference["boxes"], rtol=0, atol=1e-4)


def test_faster_rcnn_training_targets_are_encoded_from_float32_boxes(monkeypatch):
    model = c4().train()
    encoded = []
    for coder in (model.detector.rpn.box_coder, model.detector.roi_heads.box_coder):
        real = coder.encode
        monkeypatch.setattr(
            coder, "encode", lambda gt, ref, _real=real: encoded.append(ref) or _real(gt, ref)
        )
    images = [torch.rand(3, 300, 540, generator=torch.Generator().manual_seed(2))]
    targets = [{"boxes": torch.tensor([[30.3, 40.7, 300.1, 250.9]]), "labels": torch.tensor([1])}]
    with torch.autocast(**BF16):
        losses = model(images, targets)
    assert len(encoded) == 2  # the RPN's anchors and the RoI heads' proposals
    assert all(r.dtype == torch.float32 for refs in encoded for r in refs)
    assert off_bf16_grid(torch.cat(list(encoded[1])))  # proposals decoded in float32
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.fixture
def yolo() -> YOLOv3Detector:
    torch.manual_seed(0)
    return YOLOv3Detector(YOLOv3(3, width=0.0625), YOLOv3Loss(3), YOLOv3PostProcess(score_thresh=0.0))


def test_yolov3_detections_and_loss_are_float32_under_bf16(yolo):
    seen = {}
    yolo.net.register_forward_hook(lambda m, i, o: seen.update(outputs=o))
    images = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(3))
    yolo.eval()
    with torch.no_grad(), torch.autocast(**BF16):
        detections = yolo(images)
    assert seen["outputs"][0].dtype == torch.bfloat16
    with torch.no_grad():
        reference = yolo.postprocess([o.float() for o in seen["outputs"]], (320, 320))
    for got, expected in zip(detections, reference, strict=True):
        assert got["boxes"].dtype == torch.float32 and off_bf16_grid(got["boxes"])
        torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=0, atol=1e-4)
    yolo.train()
    targets = [{"boxes": torch.tensor([[10.3, 20.7, 200.1, 150.9]]), "labels": torch.tensor([2])}] * 2
    with torch.autocast(**BF16):
        losses = yolo(images, targets)
    outputs = [o.detach() for o in seen["outputs"]]
    reference = yolo.criterion([o.float() for o in outputs], targets, (320, 320))
    assert losses["loss"].dtype == torch.float32
    torch.testing.assert_close(losses["loss"].detach(), reference["loss"], rtol=1e-5, atol=1e-5)

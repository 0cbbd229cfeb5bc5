"""YOLOv3 (Darknet-53) as darknet's ``yolov3.cfg``, and its inference post-processing.

Head per scale: five alternating 1x1/3x3 convs (the "detection block" of 512, 256, 128 channels), a 3x3
conv, and a 1x1 conv with bias to 3 * (5 + K) outputs. The two finer scales take the previous block's
output through a 1x1 conv, nearest x2 upsampling and concatenation with the backbone (darknet
``[route]``/``[upsample]``). 61,626,049 trainable parameters for K=20 and 61,949,149 for K=80
(docs/fidelity.md "YOLOv3").
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms

from bof.models.darknet import ConvBNLeaky, Darknet53, scaled
from bof.utils.checks import require

# darknet yolov3.cfg anchors in input pixels, finest scale first; they are not rescaled with the input size.
YOLOV3_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
YOLOV3_STRIDES = (8, 16, 32)
MXNET_UNIFORM = 0.07  # MXNet's default initializer, Uniform(scale=0.07), of every layer naming none


class DetectionBlock(nn.Module):
    """Five convs (1x1, 3x3, 1x1, 3x3, 1x1) -> ``route``; then 3x3 conv -> 1x1 prediction conv."""

    def __init__(self, in_channels: int, channels: int, num_outputs: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNLeaky(in_channels, channels, 1),
            ConvBNLeaky(channels, channels * 2, 3),
            ConvBNLeaky(channels * 2, channels, 1),
            ConvBNLeaky(channels, channels * 2, 3),
            ConvBNLeaky(channels * 2, channels, 1),
        )
        self.head = nn.Sequential(
            ConvBNLeaky(channels, channels * 2, 3), nn.Conv2d(channels * 2, num_outputs, 1)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        route = self.body(x)
        return route, self.head(route)


class YOLOv3(nn.Module):
    """YOLOv3 network. ``forward`` returns the raw predictions of the three scales, finest first.

    images: [B, 3, H, W] normalised, H and W multiples of 32.
    returns: list of 3 tensors [B, 3, H/s, W/s, 5 + K] for s = 8, 16, 32; the last axis holds
    (tx, ty, tw, th, objectness, class_1..K) logits, as darknet orders them.

    ``objectness_prior``: None keeps darknet's zero bias (sigmoid 0.5 everywhere). A probability p sets
    the objectness biases to logit(p) (the RetinaNet prior, Lin et al. 2017), so the first iterations do
    not spend themselves pushing thousands of background anchors down from 0.5: the loss of an untrained
    net drops from ~0.7 to ~p per anchor. Off in the paper's configs; the CPU demo turns it on.
    """

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        num_anchors: int = 3,
        objectness_prior: float | None = None,
    ):
        super().__init__()
        self.check(width, objectness_prior)
        self.num_classes, self.num_anchors = num_classes, num_anchors
        outputs = num_anchors * (5 + num_classes)
        self.backbone = Darknet53(width)
        c3, c4, c5 = self.backbone.out_channels
        h5, h4, h3 = scaled(512, width), scaled(256, width), scaled(128, width)
        self.block5 = DetectionBlock(c5, h5, outputs)
        self.lateral5 = ConvBNLeaky(h5, h4, 1)
        self.block4 = DetectionBlock(c4 + h4, h4, outputs)
        self.lateral4 = ConvBNLeaky(h4, h3, 1)
        self.block3 = DetectionBlock(c3 + h3, h3, outputs)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self._init_heads()
        if objectness_prior is not None:
            self._init_objectness(objectness_prior)

    @staticmethod
    def check(width: float = 1.0, objectness_prior: float | None = None) -> None:
        """The constructor's checks without building the net: start-up runs them before any data is read."""
        Darknet53.check(width)
        probability = lambda v: 0 < v < 1  # logit(p) is finite
        require("model.net.objectness_prior", objectness_prior, probability, "in (0, 1)", optional=True)

    def _init_heads(self) -> None:
        """The layers after the backbone as GluonCV's ``net.initialize()`` leaves them: no initializer is
        named in its yolo3.py, so MXNet's default ``Uniform(0.07)`` draws every conv weight from
        U(-0.07, 0.07), biases 0 (BN: gamma 1, beta 0, as PyTorch's). The backbone keeps PyTorch's
        default until its pretrained weights replace it (docs/fidelity.md "YOLOv3")."""
        for head in (self.block5, self.lateral5, self.block4, self.lateral4, self.block3):
            for conv in (m for m in head.modules() if isinstance(m, nn.Conv2d)):
                nn.init.uniform_(conv.weight, -MXNET_UNIFORM, MXNET_UNIFORM)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)

    def _init_objectness(self, prior: float) -> None:
        for block in (self.block3, self.block4, self.block5):
            with torch.no_grad():
                bias = block.head[-1].bias.view(self.num_anchors, 5 + self.num_classes)
                bias[:, 4] = torch.logit(torch.tensor(prior)).item()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        c3, c4, c5 = self.backbone(images)
        route5, p5 = self.block5(c5)
        route4, p4 = self.block4(torch.cat([self.upsample(self.lateral5(route5)), c4], 1))
        _, p3 = self.block3(torch.cat([self.upsample(self.lateral4(route4)), c3], 1))
        return [self._split_anchors(p) for p in (p3, p4, p5)]

    def _split_anchors(self, p: torch.Tensor) -> torch.Tensor:
        b, _, h, w = p.shape
        return p.view(b, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2)


def decode_boxes(
    outputs: list[torch.Tensor], anchors, strides
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw predictions -> (boxes [B, N, 4] xyxy input pixels, objectness logits [B, N],
    class logits [B, N, K]).

    anchors: [scales, A, 2] (w, h) pixels, a tensor on the outputs' device (a module buffer: building it
    from a list every step would copy it from the host, a synchronisation) or nested sequences.
    N = sum over scales of 3 * H_s * W_s. Centre = (sigmoid(t_xy) + cell) * stride, size = exp(t_wh) * anchor.
    """
    anchors = torch.as_tensor(anchors)
    boxes, objectness, classes = [], [], []
    for p, level_anchors, stride in zip(outputs, anchors, strides, strict=True):
        b, a, h, w, _ = p.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij"
        )
        grid = torch.stack([xs, ys], -1).to(p.dtype)  # [H, W, 2] (x, y) cell indices
        centre = (p[..., :2].sigmoid() + grid) * stride
        size = p[..., 2:4].exp() * level_anchors.to(p).view(1, a, 1, 1, 2)
        boxes.append(torch.cat([centre - size / 2, centre + size / 2], -1).reshape(b, -1, 4))
        objectness.append(p[..., 4].reshape(b, -1))
        classes.append(p[..., 5:].reshape(b, a * h * w, -1))
    return torch.cat(boxes, 1), torch.cat(objectness, 1), torch.cat(classes, 1)


class YOLOv3PostProcess(nn.Module):
    """score = sigmoid(class) * sigmoid(objectness); per-class NMS at IoU 0.45 over the 400 best
    candidates; keep 100 (GluonCV ``nms_thresh=0.45, nms_topk=400, post_nms=100``).

    returns one dict per image: ``boxes`` [D, 4] xyxy input pixels clipped to the input, ``scores`` [D],
    ``labels`` [D] (0-based class index).
    """

    def __init__(
        self,
        anchors=YOLOV3_ANCHORS,
        strides=YOLOV3_STRIDES,
        score_thresh: float = 0.01,
        nms_iou: float = 0.45,
        topk: int = 400,
        max_detections: int = 100,
    ):
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32), persistent=False)
        self.strides = strides
        self.score_thresh, self.nms_iou, self.topk, self.max_detections = (
            score_thresh,
            nms_iou,
            topk,
            max_detections,
        )

    @torch.no_grad()
    def forward(
        self, outputs: list[torch.Tensor], input_size: tuple[int, int]
    ) -> list[dict[str, torch.Tensor]]:
        return self.select(*self.boxes_and_scores(outputs, input_size))

    def boxes_and_scores(self, outputs: list[torch.Tensor], input_size: tuple[int, int]):
        """Raw predictions -> (boxes [B, N, 4] clipped to the input, scores [B, N, K]): the part that an
        exported graph computes (bof-export); :meth:`select` is the rest."""
        boxes, objectness, class_logits = decode_boxes(
            [o.float() for o in outputs], self.anchors, self.strides
        )
        height, width = input_size
        boxes = torch.cat([boxes[..., 0::2].clamp(0, width), boxes[..., 1::2].clamp(0, height)], -1)
        boxes = boxes[..., [0, 2, 1, 3]]  # back to x1, y1, x2, y2
        return boxes, objectness.sigmoid().unsqueeze(-1) * class_logits.sigmoid()

    def select(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image: candidates above ``score_thresh``, the ``topk`` best, per-class NMS, and at most
        ``max_detections``."""
        num_classes = scores.shape[-1]
        results = []
        for image_boxes, image_scores in zip(boxes, scores, strict=True):
            flat = image_scores.flatten()  # [N * K], index = anchor * K + class
            keep = torch.nonzero(flat > self.score_thresh).squeeze(1)
            if keep.numel() > self.topk:
                keep = keep[flat[keep].topk(self.topk).indices]
            anchor_index, labels = keep // num_classes, keep % num_classes
            candidate_boxes, candidate_scores = image_boxes[anchor_index], flat[keep]
            kept = batched_nms(candidate_boxes, candidate_scores, labels, self.nms_iou)[: self.max_detections]
            results.append(
                {"boxes": candidate_boxes[kept], "scores": candidate_scores[kept], "labels": labels[kept]}
            )
        return results


class YOLOv3Detector(nn.Module):
    """YOLOv3 behind torchvision's detector interface, which Faster R-CNN has too, so the training and
    evaluation loops know no model family: in training ``model(images, targets)`` -> the loss terms of
    ``criterion`` (with ``loss``, their sum); in eval ``model(images)`` -> one detection dict per image.

    images: a normalised batch [B, 3, S, S]; targets: one dict per image (``boxes`` [N, 4] xyxy input
    pixels, ``labels`` [N], optional ``weights`` [N])."""

    def __init__(self, net: YOLOv3, criterion: nn.Module, postprocess: YOLOv3PostProcess):
        super().__init__()
        self.net, self.criterion, self.postprocess = net, criterion, postprocess

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        outputs = self.net(images)
        if self.training:
            return self.criterion(outputs, targets, tuple(images.shape[-2:]))
        return self.postprocess(outputs, tuple(images.shape[-2:]))

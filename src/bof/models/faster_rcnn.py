"""Faster R-CNN from torchvision's pieces, with losses that see the tricks (docs/fidelity.md "Faster R-CNN").

Designs: ``fpn`` is torchvision's ResNet-FPN Faster R-CNN (the modern form users know); ``c4`` is the
paper's GluonCV design: the ResNet up to stride 16 (conv1..layer3) as backbone, one feature map for the
RPN, RoIAlign 14 x 14 and the last stage (layer4, then global average pooling) as the RoI head.

The model resizes inside (torchvision's GeneralizedRCNNTransform: shorter side ``min_size``, longer at
most ``max_size``; 600/1000 on VOC, 800/1333 on COCO), so the data loader hands it images at their own
size, already normalised (image_mean 0, image_std 1 here). Boxes come back in the input frame.

The model computes its own trick-aware losses: label smoothing's softmax rule and mixup's loss weights
(``mixup_loss``: GluonCV's ``halved`` or ``per_box``) live in the two loss-bearing modules,
:class:`~bof.models.rcnn_heads.WeightedRoIHeads` and :class:`~bof.models.rcnn_heads.WeightedRPN`,
subclasses of torchvision's; the rest is assembled from torchvision's parts (GeneralizedRCNN, its
transform, RPN head, RoIAlign, predictor) with its FasterRCNN defaults; inference is torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.error import URLError

from torch import nn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from bof.models.float32_boxes import Float32Predictor, Float32RPNHead, anchor_generator
from bof.models.rcnn_heads import SMOOTH_L1_BETA, WeightedRoIHeads, WeightedRPN
from bof.models.resnet import RESNETS, build_resnet, check_variant

ALL_DETECTIONS = 1 << 30  # detections_per_image None: torchvision's slice keep[:n] keeps them all


class FasterRCNNDetector(nn.Module):
    """``forward(images, targets)``: images a list of normalised [3, H_i, W_i] tensors; in training a
    dict of the four losses, in eval a list of dicts with ``boxes`` [D, 4] xyxy (input frame),
    ``scores``, ``labels`` (0-based foreground classes, as every evaluator here expects).

    ``num_classes``: K foreground classes (the softmax head has K + 1). ``variant``: the ResNet, GluonCV's
    ``v1b`` (torchvision's layout) or ``v1d`` (deep stem, average-pool shortcuts; :mod:`bof.models.resnet`),
    ``last_gamma`` its blocks' last BN starting at gamma 0. ``width``: the ResNet's channel multiplier
    (miniature runs; 1.0 the paper's model; :mod:`bof.models.resnet`): the C4 feature map, RPN head and RoI
    head follow the built ResNet's channels; the FPN's own 256 channels and 1024-wide box head stay.
    ``anchor_sizes``: anchor sides in input pixels (None: the design's, 32 to 512; a miniature at a small
    ``min_size`` scales them with its images). BN: frozen (FrozenBatchNorm2d)
    unless ``trainable_bn`` (what syncbn=on needs). ``pretrained_backbone``: torchvision's ImageNet
    weights (internet needed once). ``freeze_stem``: conv1 and layer1 stay as they start, as torchvision
    and GluonCV do with a pretrained backbone (None: when ``pretrained_backbone``; true for a backbone
    from ``model.backbone_checkpoint``).
    ``rois_per_image``: RoIs sampled per image for the RoI head's loss (GluonCV's ``num_sample=128``;
    torchvision's default is 512).

    Proposal and detection settings default to torchvision's FasterRCNN; the C4 configs set GluonCV's
    per data set (docs/fidelity.md "Faster R-CNN"): ``rpn_pre_nms_*`` / ``rpn_post_nms_*`` proposals kept
    before / after the RPN's NMS (``rpn_nms``) in training and test, ``rpn_min_size`` the smallest
    proposal side, ``roi_sampling_ratio`` RoIAlign's samples per bin (0: adaptive), ``roi_box_beta`` the
    RoI box loss's smooth-L1 beta, ``box_score_thresh`` / ``box_nms`` / ``detections_per_image`` the
    detections kept (None: all of them). ``mixup_loss``: how a mixed image's anchors and RoIs are weighted,
    ``halved`` (GluonCV's: all 0.5) or ``per_box`` (:mod:`bof.models.rcnn_heads`).
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 50,
        design: str = "fpn",
        pretrained_backbone: bool = False,
        min_size: int = 600,
        max_size: int = 1000,
        trainable_bn: bool = False,
        label_smoothing: float | None = None,
        rois_per_image: int = 128,
        freeze_stem: bool | None = None,
        rpn_pre_nms_train: int = 2000,
        rpn_post_nms_train: int = 2000,
        rpn_pre_nms_test: int = 1000,
        rpn_post_nms_test: int = 1000,
        rpn_nms: float = 0.7,
        rpn_min_size: float = 1e-3,
        roi_sampling_ratio: int = 2,
        roi_box_beta: float = SMOOTH_L1_BETA,
        box_score_thresh: float = 0.05,
        box_nms: float = 0.5,
        detections_per_image: int | None = 100,
        variant: str = "v1b",
        last_gamma: bool = False,
        width: float = 1.0,
        anchor_sizes: Sequence[float] | None = None,
        mixup_loss: str = "halved",
    ):
        super().__init__()
        if depth not in RESNETS or design not in ("fpn", "c4"):
            raise ValueError(
                f"model.net: depth must be 50 or 101 and design fpn or c4, got {depth}, {design!r}"
            )
        check_variant(variant)
        try:
            resnet = build_resnet(
                depth,
                variant,
                norm_layer=nn.BatchNorm2d if trainable_bn else FrozenBatchNorm2d,
                last_gamma=last_gamma,
                pretrained=pretrained_backbone,
                width=width,
            )
        except URLError as error:
            raise RuntimeError(
                f"model.net.pretrained_backbone=true downloads torchvision's {RESNETS[depth][1]} once "
                f"(then cached under ~/.cache/torch); the download failed ({error.reason}). Run once with "
                "internet, set "
                "model.net.pretrained_backbone=false, or use model.backbone_checkpoint=<task=classify .pt>"
            ) from None
        freeze_stem = pretrained_backbone if freeze_stem is None else freeze_stem
        anchors = anchor_generator(design, anchor_sizes)
        if design == "fpn":  # torchvision's fasterrcnn_resnet50_fpn layout (its inputs: the stages' channels)
            backbone = _resnet_fpn_extractor(resnet, trainable_layers=3 if freeze_stem else 5)
            box_roi_pool = MultiScaleRoIAlign(
                ["0", "1", "2", "3"], output_size=7, sampling_ratio=roi_sampling_ratio
            )
            box_head = TwoMLPHead(backbone.out_channels * 7 * 7, 1024)
            box_predictor = Float32Predictor(1024, num_classes + 1)
        else:  # C4: the ResNet to stride 16 as backbone, its last stage as the RoI head
            if freeze_stem:  # torchvision's convention: conv1 and layer1 stay as pretrained
                for module in (resnet.conv1, resnet.bn1, resnet.layer1):
                    module.requires_grad_(False)
            stem = (resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
            backbone = nn.Sequential(*stem, resnet.layer1, resnet.layer2, resnet.layer3)
            backbone.out_channels = resnet.layer3[-1].conv3.out_channels  # stride 16; 1024 at width 1
            box_roi_pool = MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=roi_sampling_ratio)
            box_head = nn.Sequential(resnet.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            box_predictor = Float32Predictor(resnet.layer4[-1].conv3.out_channels, num_classes + 1)  # 2048
            # GluonCV's rcnn.py: class scores N(0, 0.01), box deltas N(0, 0.001), biases 0 (docs/fidelity.md
            # "Faster R-CNN"); the RPN head is torchvision's N(0, 0.01), as GluonCV's rpn.py
            for layer, std in ((box_predictor.cls_score, 0.01), (box_predictor.bbox_pred, 0.001)):
                nn.init.normal_(layer.weight, std=std)
                nn.init.zeros_(layer.bias)
        # torchvision's FasterRCNN matching and sampling, with the two loss-bearing modules replaced by ours
        rpn = WeightedRPN(
            anchors,
            Float32RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_top_n={"training": rpn_pre_nms_train, "testing": rpn_pre_nms_test},
            post_nms_top_n={"training": rpn_post_nms_train, "testing": rpn_post_nms_test},
            nms_thresh=float(rpn_nms),
            min_size=float(rpn_min_size),  # float: TorchScript (bof-export) types it
            mixup_loss=mixup_loss,
        )
        roi_heads = WeightedRoIHeads(
            box_roi_pool,
            box_head,
            box_predictor,
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=rois_per_image,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=float(box_score_thresh),
            nms_thresh=float(box_nms),
            detections_per_img=detections_per_image or ALL_DETECTIONS,
            label_smoothing=label_smoothing or 0.0,
            box_beta=roi_box_beta,
            mixup_loss=mixup_loss,
        )
        transform = GeneralizedRCNNTransform(min_size, max_size, image_mean=[0.0] * 3, image_std=[1.0] * 3)
        self.detector = GeneralizedRCNN(backbone, rpn, roi_heads, transform)

    def forward(self, images, targets=None):
        if self.training:
            targets = [{**t, "labels": t["labels"] + 1} for t in targets]  # 0 is background in torchvision
            return self.detector(list(images), targets)
        detections = self.detector(list(images))
        return [{**d, "labels": d["labels"] - 1} for d in detections]

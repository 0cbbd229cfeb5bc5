"""Faster R-CNN from torchvision's pieces, with losses that see the tricks (docs/fidelity.md "Faster R-CNN").

Designs: ``fpn`` is torchvision's ResNet-FPN Faster R-CNN (the modern form users know); ``c4`` is the
paper's GluonCV design: the ResNet up to stride 16 (conv1..layer3) as backbone, one feature map for the
RPN, RoIAlign 14 x 14 and the last stage (layer4, then global average pooling) as the RoI head.

The model resizes inside (torchvision's GeneralizedRCNNTransform: shorter side ``min_size``, longer at
most ``max_size``; 600/1000 on VOC, 800/1333 on COCO), so the data loader hands it images at their own
size, already normalised (image_mean 0, image_std 1 here). Boxes come back in the input frame.

Trick-aware losses (the model computes its own):

* label smoothing: the RoI classifier's softmax cross-entropy with ``label_smoothing=eps`` (K + 1 classes);
* mixup: each ground-truth box's weight (``targets[i]["weights"]``) multiplies the RoI classification and
  box losses of the RoIs matched to it and the RPN losses of the anchors matched to it; background
  keeps weight 1. GluonCV used a fixed lambda 0.5 and halved the whole loss; the paper describes per-box
  weights, which is what this does (docs/fidelity.md "Mixup").

The model is assembled from torchvision's parts (GeneralizedRCNN, its transform, RPN head, RoIAlign,
predictor) with its FasterRCNN defaults; the two loss-bearing modules are explicit subclasses of
torchvision's RoIHeads and RegionProposalNetwork whose training losses take the box weights and label
smoothing (:class:`WeightedRoIHeads`, :class:`WeightedRPN`); inference is torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.error import URLError

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from bof.models.float32_boxes import Float32Predictor, Float32RPNHead, anchor_generator
from bof.models.resnet import RESNETS, build_resnet, check_variant
from bof.utils.boxes import box_weights

ALL_DETECTIONS = 1 << 30  # detections_per_image None: torchvision's slice keep[:n] keeps them all
SMOOTH_L1_BETA = 1.0 / 9  # torchvision's (and Detectron's) RPN and RoI box loss; GluonCV's RPN box loss


class WeightedRoIHeads(RoIHeads):
    """RoIHeads whose training loss weights every sampled RoI by the weight of its matched box and
    smooths the class targets (``label_smoothing``: eps of the softmax rule), with a smooth-L1 box loss
    of ``box_beta``; inference is torchvision's."""

    def __init__(self, *args, label_smoothing: float = 0.0, box_beta: float = SMOOTH_L1_BETA, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing, self.box_beta = label_smoothing, box_beta

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        weights = torch.cat(
            [
                torch.where(lab > 0, box_weights(t)[idx], torch.ones_like(lab, dtype=torch.float32))
                for t, idx, lab in zip(targets, matched_idxs, labels, strict=True)
            ]
        )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        labels, regression_targets = torch.cat(labels), torch.cat(regression_targets)
        loss_classifier = (
            F.cross_entropy(class_logits, labels, reduction="none", label_smoothing=self.label_smoothing)
            * weights
        ).mean()
        positive = torch.where(labels > 0)[0]
        box_regression = box_regression.reshape(len(labels), -1, 4)[positive, labels[positive]]
        loss_box = F.smooth_l1_loss(
            box_regression, regression_targets[positive], beta=self.box_beta, reduction="none"
        ).sum(1)
        loss_box_reg = (loss_box * weights[positive]).sum() / labels.numel()
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


class RecordingMatcher:
    """torchvision's Matcher, keeping what it returns (the matched box index of every anchor)."""

    def __init__(self, matcher):
        self.matcher, self.matches = matcher, []

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        self.matches.append(self.matcher(quality))
        return self.matches[-1]

    def __getattr__(self, name):  # BELOW_LOW_THRESHOLD and the rest of the Matcher's interface
        return getattr(self.matcher, name)


class WeightedRPN(RegionProposalNetwork):
    """RegionProposalNetwork whose sampled anchors carry the weight of their matched box (1 for
    background). The box index behind each anchor's match is read from torchvision's own matching, by
    recording what its proposal matcher returns, so the anchor-box IoU matrix is computed once. The
    training forward is torchvision's, with the weights passed from the matching to the loss.
    ``min_size``: proposals narrower or lower than this (input pixels) are dropped before NMS."""

    def __init__(self, *args, min_size: float = 1e-3, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_size = min_size  # torchvision's RegionProposalNetwork fixes it at 1e-3

    def forward(self, images, features, targets=None):
        if not self.training:
            return super().forward(images, features, targets)
        features = list(features.values())
        objectness, pred_bbox_deltas = self.head(features)
        anchors = self.anchor_generator(images, features)
        num_anchors_per_level = [o[0].numel() for o in objectness]
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        # Faster R-CNN does not backpropagate through the proposals
        proposals = self.box_coder.decode(pred_bbox_deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, num_anchors_per_level)
        labels, matched_gt_boxes, weights = self.assign_weighted_targets(anchors, targets)
        regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
        loss_objectness, loss_rpn_box_reg = self.weighted_loss(
            objectness, pred_bbox_deltas, labels, regression_targets, weights
        )
        return boxes, {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}

    def assign_weighted_targets(self, anchors, targets):
        """torchvision's anchor labels and matched boxes, and each anchor's weight [A_i] per image."""
        matcher = self.proposal_matcher
        self.proposal_matcher = recording = RecordingMatcher(matcher)
        try:
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
        finally:
            self.proposal_matcher = matcher
        matches = recording.matches[::-1]  # one per image with boxes, popped in image order
        weights = []
        for target, labels_i in zip(targets, labels, strict=True):
            weights_i = torch.ones_like(labels_i)
            if target["boxes"].numel():
                index = matches.pop().clamp(min=0)
                weights_i = torch.where(labels_i > 0, box_weights(target).to(labels_i)[index], weights_i)
            weights.append(weights_i)
        return labels, matched_gt_boxes, weights

    def weighted_loss(self, objectness, pred_bbox_deltas, labels, regression_targets, weights):
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        positive = torch.where(torch.cat(sampled_pos))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(sampled_neg))[0]])
        weights = torch.cat(weights)
        labels, regression_targets = torch.cat(labels), torch.cat(regression_targets)
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[positive], regression_targets[positive], beta=SMOOTH_L1_BETA, reduction="none"
        ).sum(1)
        box_loss = (box_loss * weights[positive]).sum() / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], labels[sampled], reduction="none"
        )
        return (objectness_loss * weights[sampled]).mean(), box_loss


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
    detections kept (None: all of them).
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
        )
        transform = GeneralizedRCNNTransform(min_size, max_size, image_mean=[0.0] * 3, image_std=[1.0] * 3)
        self.detector = GeneralizedRCNN(backbone, rpn, roi_heads, transform)

    def forward(self, images, targets=None):
        if self.training:
            targets = [{**t, "labels": t["labels"] + 1} for t in targets]  # 0 is background in torchvision
            return self.detector(list(images), targets)
        detections = self.detector(list(images))
        return [{**d, "labels": d["labels"] - 1} for d in detections]

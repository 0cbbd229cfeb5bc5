"""Faster R-CNN's two loss-bearing modules, torchvision's RoIHeads and RegionProposalNetwork with training
losses that see the tricks (docs/fidelity.md "Mixup", "Label smoothing"); their inference is torchvision's.

* label smoothing: the RoI classifier's softmax cross-entropy with ``label_smoothing=eps`` (K + 1 classes);
* mixup (``mixup_loss``), how a mixed image's anchors and RoIs are weighted in the loss:
  ``halved`` (GluonCV's train_faster_rcnn.py, the paper's Table 3): every term of a mixed image counts
  0.5, its boxes at full weight (GluonCV mixed at lambda 0.5 and multiplied the whole loss by 0.5);
  ``per_box``: the anchors and RoIs matched to a box carry that box's weight (lambda or 1 - lambda),
  background keeps 1 (the paper's text; it weights objects about half as much as background).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

from bof.utils.boxes import box_weights

SMOOTH_L1_BETA = 1.0 / 9  # torchvision's (and Detectron's) RPN and RoI box loss; GluonCV's RPN box loss
MIXUP_LOSSES = ("halved", "per_box")
GLUONCV_MIX_RATIO = 0.5  # train_faster_rcnn.py: mix_ratio, the factor on a mixed batch's whole loss


def check_mixup_loss(mixup_loss: str) -> None:
    if mixup_loss not in MIXUP_LOSSES:
        raise ValueError(f"model.net.mixup_loss must be one of {MIXUP_LOSSES}, got {mixup_loss!r}")


def term_weights(
    target: dict, matched: torch.Tensor | None, positive: torch.Tensor, mixup_loss: str
) -> torch.Tensor:
    """The loss weight of each of one image's anchors or RoIs [A] (float32): ``matched`` the index of its
    box (None for an image without boxes), ``positive`` whether it is foreground. 1 everywhere for an
    image mixup did not touch."""
    if mixup_loss == "per_box":
        if not target["boxes"].numel():
            return torch.ones(positive.shape, device=positive.device)
        return torch.where(positive, box_weights(target).to(positive.device)[matched], 1.0)
    mixed = target.get("mixup_lambda", 1.0) < 1.0  # set by bof.tricks.mixup.mixup_targets
    return torch.full(positive.shape, GLUONCV_MIX_RATIO if mixed else 1.0, device=positive.device)


class WeightedRoIHeads(RoIHeads):
    """RoIHeads whose training loss weights every sampled RoI by :func:`term_weights` and smooths the
    class targets (``label_smoothing``: eps of the softmax rule), with a smooth-L1 box loss of
    ``box_beta``; inference is torchvision's."""

    def __init__(
        self,
        *args,
        label_smoothing: float = 0.0,
        box_beta: float = SMOOTH_L1_BETA,
        mixup_loss: str = "halved",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        check_mixup_loss(mixup_loss)
        self.label_smoothing, self.box_beta, self.mixup_loss = label_smoothing, box_beta, mixup_loss

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        weights = torch.cat(
            [
                term_weights(t, idx, lab > 0, self.mixup_loss)
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
    """RegionProposalNetwork whose sampled anchors are weighted by :func:`term_weights`. The box index
    behind each anchor's match is read from torchvision's own matching, by recording what its proposal
    matcher returns, so the anchor-box IoU matrix is computed once. The training forward is
    torchvision's, with the weights passed from the matching to the loss. ``min_size``: proposals
    narrower or lower than this (input pixels) are dropped before NMS."""

    def __init__(self, *args, min_size: float = 1e-3, mixup_loss: str = "halved", **kwargs):
        super().__init__(*args, **kwargs)
        check_mixup_loss(mixup_loss)
        self.min_size = min_size  # torchvision's RegionProposalNetwork fixes it at 1e-3
        self.mixup_loss = mixup_loss

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
            index = matches.pop().clamp(min=0) if target["boxes"].numel() else None  # no box: no match
            weights.append(term_weights(target, index, labels_i > 0, self.mixup_loss).to(labels_i))
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

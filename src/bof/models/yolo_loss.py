"""YOLOv3 target assignment and loss, vectorised over boxes and anchors and run on the training device.

Follows docs/fidelity.md "YOLOv3" and GluonCV's ``YOLOV3PrefetchTargetGenerator`` / ``YOLOV3Loss``:

* one positive per ground-truth box: the best of all 9 anchors by IoU of (w, h) with both centred at
  the origin, in the cell of its scale that holds the box centre. When two boxes claim the same anchor
  of the same cell, the later box wins (GluonCV overwrites in a loop; we pick the same winner with a
  ``scatter_reduce`` instead of the loop);
* targets: the centre offset in the cell (BCE on the raw logits), log(w / anchor_w) and
  log(h / anchor_h) (L1); box weight (2 - w*h / (W*H)) * lambda;
* ignore: a non-positive anchor whose decoded box has IoU > 0.7 with any ground truth of its image gets
  no objectness loss;
* objectness BCE (positives weighted by lambda) + centre BCE + scale L1 + class BCE (positives only,
  weighted by lambda), each summed per image, with equal weights, averaged over the batch.

``lambda`` is the per-box mixup weight (``targets[i]["weights"]``, 1 without mixup).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bof.models.yolov3 import YOLOV3_ANCHORS, YOLOV3_STRIDES, decode_boxes
from bof.tricks.label_smoothing import sigmoid_targets
from bof.tricks.mixup import box_weights


def pairwise_iou_batched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes a [B, N, 4] and b [B, M, 4] -> [B, N, M] (torchvision's box_iou is 2-D only)."""
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter).clamp(min=1e-9)


class YOLOv3Loss(nn.Module):
    """Criterion: ``forward(outputs, targets, input_size) -> dict`` of the four loss terms and ``loss``.

    outputs: the model's list of [B, 3, H_s, W_s, 5 + K] raw predictions, finest scale first.
    targets: one dict per image with ``boxes`` [G_i, 4] xyxy input pixels, ``labels`` [G_i] int64 and
    optionally ``weights`` [G_i] (mixup lambda per box).
    input_size: (H, W) of the batch in pixels.
    """

    def __init__(
        self,
        num_classes: int,
        anchors=YOLOV3_ANCHORS,
        strides=YOLOV3_STRIDES,
        ignore_iou_thresh: float = 0.7,
        label_smoothing: float | None = None,
    ):
        super().__init__()
        self.num_classes, self.strides = num_classes, tuple(strides)
        self.anchors = anchors
        self.register_buffer(
            "anchor_wh", torch.tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False
        )
        self.num_per_scale = len(anchors[0])
        self.ignore_iou_thresh = ignore_iou_thresh
        self.label_smoothing = label_smoothing

    def forward(self, outputs: list[torch.Tensor], targets: list[dict], input_size: tuple[int, int]) -> dict:
        outputs = [o.float() for o in outputs]  # the loss is computed in fp32 under AMP
        batch_size, device = outputs[0].shape[0], outputs[0].device
        gt_boxes, gt_labels, gt_weights, gt_image = self._flatten_targets(targets, device)
        positives = self._assign(gt_boxes, gt_image, outputs)
        ignore = self._ignore_mask(outputs, targets, device)

        zero = outputs[0].sum() * 0.0
        losses = {"loss_obj": zero, "loss_xy": zero, "loss_wh": zero, "loss_cls": zero}
        height, width = input_size
        for level, (p, stride) in enumerate(zip(outputs, self.strides, strict=True)):
            obj_logit = p[..., 4]
            obj_target = torch.zeros_like(obj_logit)
            obj_weight = (~ignore[level]).float()
            sel = positives[level]
            if sel is not None:
                g, a, gy, gx = sel
                b = gt_image[g]
                mix = gt_weights[g]
                obj_target[b, a, gy, gx] = 1.0
                obj_weight[b, a, gy, gx] = mix  # positives are never ignored
                pred = p[b, a, gy, gx]  # [P, 5 + K]
                box = gt_boxes[g]
                wh = box[:, 2:] - box[:, :2]
                centre = (box[:, :2] + box[:, 2:]) / 2
                box_weight = (2.0 - wh.prod(1) / (height * width)) * mix
                xy_target = centre / stride - torch.stack([gx, gy], 1)
                wh_target = torch.log(wh / self.anchor_wh[a + level * self.num_per_scale])
                losses["loss_xy"] = (
                    losses["loss_xy"]
                    + (
                        F.binary_cross_entropy_with_logits(pred[:, :2], xy_target, reduction="none").sum(1)
                        * box_weight
                    ).sum()
                )
                losses["loss_wh"] = (
                    losses["loss_wh"] + ((pred[:, 2:4] - wh_target).abs().sum(1) * box_weight).sum()
                )
                cls_target = sigmoid_targets(gt_labels[g], self.num_classes, self.label_smoothing)
                losses["loss_cls"] = (
                    losses["loss_cls"]
                    + (
                        F.binary_cross_entropy_with_logits(pred[:, 5:], cls_target, reduction="none").sum(1)
                        * mix
                    ).sum()
                )
            losses["loss_obj"] = (
                losses["loss_obj"]
                + (
                    F.binary_cross_entropy_with_logits(obj_logit, obj_target, reduction="none") * obj_weight
                ).sum()
            )
        losses = {k: v / batch_size for k, v in losses.items()}
        losses["loss"] = sum(losses.values())
        return losses

    @staticmethod
    def _flatten_targets(targets: list[dict], device):
        boxes = torch.cat([t["boxes"] for t in targets]).to(device, torch.float32).reshape(-1, 4)
        labels = torch.cat([t["labels"] for t in targets]).to(device)
        weights = torch.cat([box_weights(t) for t in targets]).to(device, torch.float32)
        image = torch.cat(
            [torch.full((len(t["boxes"]),), i, dtype=torch.long) for i, t in enumerate(targets)]
        )
        return boxes, labels, weights, image.to(device)

    def _assign(self, gt_boxes: torch.Tensor, gt_image: torch.Tensor, outputs: list[torch.Tensor]):
        """Per scale: (gt index, anchor index in scale, cell y, cell x) of each positive, or None."""
        if gt_boxes.numel() == 0:
            return [None] * len(outputs)
        wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]).clamp(min=1e-3)  # [G, 2]
        inter = torch.minimum(wh[:, None], self.anchor_wh[None]).prod(-1)  # [G, 9]
        iou = inter / (wh.prod(1)[:, None] + self.anchor_wh.prod(1)[None] - inter)
        best = iou.argmax(1)
        centre = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        order = torch.arange(len(gt_boxes), device=gt_boxes.device)
        positives = []
        for level, (p, stride) in enumerate(zip(outputs, self.strides, strict=True)):
            _, num_anchors, h, w, _ = p.shape
            g = order[best // self.num_per_scale == level]
            if g.numel() == 0:
                positives.append(None)
                continue
            a = best[g] % self.num_per_scale
            gx = (centre[g, 0] / stride).floor().long().clamp(0, w - 1)
            gy = (centre[g, 1] / stride).floor().long().clamp(0, h - 1)
            # the last box claiming a (image, anchor, cell) slot wins, as in GluonCV's loop
            slot = ((gt_image[g] * num_anchors + a) * h + gy) * w + gx
            winner = torch.full((int(slot.max()) + 1,), -1, dtype=torch.long, device=slot.device)
            winner.scatter_reduce_(0, slot, g, reduce="amax")
            keep = winner[slot] == g
            positives.append((g[keep], a[keep], gy[keep], gx[keep]))
        return positives

    @torch.no_grad()
    def _ignore_mask(self, outputs: list[torch.Tensor], targets: list[dict], device) -> list[torch.Tensor]:
        """Per scale, [B, 3, H_s, W_s] bool: decoded prediction overlaps some ground truth by IoU > thresh."""
        counts = [len(t["boxes"]) for t in targets]
        max_gt = max(counts, default=0)
        shapes = [o.shape[:4] for o in outputs]
        if max_gt == 0:
            return [torch.zeros(s, dtype=torch.bool, device=device) for s in shapes]
        padded = torch.zeros(len(targets), max_gt, 4, device=device)  # zero boxes have IoU 0 with anything
        for i, t in enumerate(targets):
            padded[i, : counts[i]] = t["boxes"].to(device, torch.float32)
        boxes, _, _ = decode_boxes([o.detach() for o in outputs], self.anchors, self.strides)
        ignore = pairwise_iou_batched(boxes, padded).amax(2) > self.ignore_iou_thresh  # [B, N]
        per_scale = ignore.split([s[1] * s[2] * s[3] for s in shapes], 1)
        return [m.reshape(s) for m, s in zip(per_scale, shapes, strict=True)]

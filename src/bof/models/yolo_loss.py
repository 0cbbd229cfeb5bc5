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
from torch.nn.utils.rnn import pad_sequence

from bof.models.yolov3 import YOLOV3_ANCHORS, YOLOV3_STRIDES, decode_boxes
from bof.tricks.label_smoothing import sigmoid_targets
from bof.utils.boxes import box_weights


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

    Free of host synchronisation (tests/e2e/test_host_sync.py runs it on the ``meta`` device): no shape
    depends on the data. Every box is scored at every scale and masked where it is not that scale's
    positive, instead of selecting the positives with boolean indexing.
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
        anchors = torch.tensor(anchors, dtype=torch.float32)
        self.register_buffer("anchors", anchors, persistent=False)  # [scales, A, 2]
        self.num_per_scale = anchors.shape[1]
        self.ignore_iou_thresh = ignore_iou_thresh
        self.label_smoothing = label_smoothing

    def forward(self, outputs: list[torch.Tensor], targets: list[dict], input_size: tuple[int, int]) -> dict:
        outputs = [o.float() for o in outputs]  # the loss is computed in fp32 under AMP
        batch_size, device = outputs[0].shape[0], outputs[0].device
        boxes, labels, mix, image = self._flatten_targets(targets, device)
        ignore = self._ignore_mask(outputs, targets)

        height, width = input_size
        wh = boxes[:, 2:] - boxes[:, :2]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        box_weight = (2.0 - wh.prod(1) / (height * width)) * mix
        cls_target = sigmoid_targets(labels.long(), self.num_classes, self.label_smoothing)

        zero = outputs[0].sum() * 0.0
        losses = {"loss_obj": zero, "loss_xy": zero, "loss_wh": zero, "loss_cls": zero}
        assignment = self.assign(boxes, image, outputs)
        for level, (p, stride, (positive, anchor, gy, gx, slot)) in enumerate(
            zip(outputs, self.strides, assignment, strict=True)
        ):
            cells = p.shape[:4].numel()
            # objectness: target 1 and weight lambda at the positives, weight 0 where ignored
            is_positive = torch.zeros(cells + 1, device=device).scatter_reduce_(
                0, slot, positive.float(), reduce="amax"
            )
            positive_mix = torch.zeros(cells + 1, device=device).scatter_add_(
                0, slot, torch.where(positive, mix, 0.0)
            )  # one positive per slot: its lambda
            obj_target = is_positive[:cells].view(p.shape[:4])
            obj_weight = torch.where(obj_target > 0, positive_mix[:cells].view(p.shape[:4]), ~ignore[level])
            pred = p[image, anchor, gy, gx]  # [G, 5 + K], each box's prediction at this scale
            xy_target = centre / stride - torch.stack([gx, gy], 1)
            wh_target = torch.log(wh / self.anchors[level, anchor])
            bce = F.binary_cross_entropy_with_logits
            per_box = {
                "loss_xy": bce(pred[:, :2], xy_target, reduction="none").sum(1) * box_weight,
                "loss_wh": (pred[:, 2:4] - wh_target).abs().sum(1) * box_weight,
                "loss_cls": bce(pred[:, 5:], cls_target, reduction="none").sum(1) * mix,
            }
            for key, value in per_box.items():  # where(), not a product: other scales' terms may be inf
                losses[key] = losses[key] + torch.where(positive, value, 0.0).sum()
            obj = F.binary_cross_entropy_with_logits(p[..., 4], obj_target, reduction="none") * obj_weight
            losses["loss_obj"] = losses["loss_obj"] + obj.sum()
        losses = {k: v / batch_size for k, v in losses.items()}
        losses["loss"] = sum(losses.values())
        return losses

    def assign(self, boxes: torch.Tensor, image: torch.Tensor, outputs: list[torch.Tensor]) -> list[tuple]:
        """Per scale, for every box [G]: (positive: it is one of this scale's targets, its anchor index in
        the scale, cell y, cell x, slot: the flat (image, anchor, y, x) index, or the spare slot past the
        end where its best anchor is at another scale).

        The box's anchor is the best of all by IoU of (w, h), both centred at the origin; its cell holds
        the box centre; the last box claiming a slot wins, as in GluonCV's loop."""
        anchor_wh = self.anchors.flatten(0, 1)  # [S * A, 2]
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
        inter = torch.minimum(wh[:, None], anchor_wh[None]).prod(-1)  # [G, S * A]
        best = (inter / (wh.prod(1)[:, None] + anchor_wh.prod(1)[None] - inter)).argmax(1)
        anchor = best % self.num_per_scale
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        order = torch.arange(len(boxes), device=boxes.device)
        assignment = []
        for level, (p, stride) in enumerate(zip(outputs, self.strides, strict=True)):
            _, num_anchors, h, w, _ = p.shape
            cells = p.shape[:4].numel()
            gx = (centre[:, 0] / stride).floor().long().clamp(0, w - 1)
            gy = (centre[:, 1] / stride).floor().long().clamp(0, h - 1)
            slot = ((image * num_anchors + anchor) * h + gy) * w + gx
            slot = torch.where(best // self.num_per_scale == level, slot, cells)
            winner = torch.full((cells + 1,), -1, dtype=torch.long, device=boxes.device)
            winner.scatter_reduce_(0, slot, order, reduce="amax")
            positive = (winner[slot] == order) & (slot < cells)
            assignment.append((positive, anchor, gy, gx, slot))
        return assignment

    @staticmethod
    def _flatten_targets(targets: list[dict], device):
        """(boxes [G, 4], labels [G], mixup weights [G], image index [G]) of all the batch's boxes."""
        boxes = torch.cat([t["boxes"] for t in targets]).to(device, torch.float32).reshape(-1, 4)
        labels = torch.cat([t["labels"] for t in targets]).to(device)
        weights = torch.cat([box_weights(t) for t in targets]).to(device, torch.float32)
        image = [torch.full((len(t["boxes"]),), i, device=device) for i, t in enumerate(targets)]
        return boxes, labels, weights, torch.cat(image).long()

    @torch.no_grad()
    def _ignore_mask(self, outputs: list[torch.Tensor], targets: list[dict]) -> list[torch.Tensor]:
        """Per scale, [B, 3, H_s, W_s] bool: decoded prediction overlaps some ground truth by IoU > thresh."""
        shapes = [o.shape[:4] for o in outputs]
        if max((len(t["boxes"]) for t in targets), default=0) == 0:
            return [torch.zeros(s, dtype=torch.bool, device=outputs[0].device) for s in shapes]
        # zero boxes pad the images with fewer: their IoU with anything is 0
        padded = pad_sequence([t["boxes"].float() for t in targets], batch_first=True)
        boxes, _, _ = decode_boxes([o.detach() for o in outputs], self.anchors, self.strides)
        ignore = pairwise_iou_batched(boxes, padded.to(boxes)).amax(2) > self.ignore_iou_thresh  # [B, N]
        per_scale = ignore.split([s[1] * s[2] * s[3] for s in shapes], 1)
        return [m.reshape(s) for m, s in zip(per_scale, shapes, strict=True)]

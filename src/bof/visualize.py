"""Pictures for TensorBoard: images with ground-truth and predicted boxes drawn."""

from __future__ import annotations

import torch
from torchvision.utils import draw_bounding_boxes


def draw_detections(
    image: torch.Tensor, detections: dict, target: dict, class_names, score_thresh: float = 0.3
):
    """image uint8 [3, S, S]; detections and target boxes xyxy in the same S x S frame.
    Ground truth in green, predictions above ``score_thresh`` in red with class and score."""
    gt = target["boxes"].cpu()
    image = draw_bounding_boxes(image, gt, colors="lime", width=1) if len(gt) else image
    keep = detections["scores"] > score_thresh
    boxes, scores, labels = (detections[k][keep].cpu() for k in ("boxes", "scores", "labels"))
    if len(boxes):
        names = [f"{class_names[int(c)]} {float(s):.2f}" for c, s in zip(labels, scores, strict=True)]
        image = draw_bounding_boxes(image, boxes, labels=names, colors="red", width=1)
    return image

"""Pictures for TensorBoard and the run directory: detections, training samples, the planned LR curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are only rendered to files and TensorBoard

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms.v2.functional import resize  # noqa: E402
from torchvision.utils import draw_bounding_boxes, make_grid  # noqa: E402


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


def draw_training_samples(images: list[torch.Tensor], targets: list[dict], class_names) -> torch.Tensor:
    """Augmented (and mixed) training samples, uint8 [3, S, S] each, with every box labelled by its class
    and the weight it carries into the loss (the mixup ratio; 1.00 unmixed) -> one uint8 grid image."""
    drawn = []
    for image, target in zip(images, targets, strict=True):
        if len(target["boxes"]):
            names = [
                f"{class_names[int(c)]} {float(w):.2f}"
                for c, w in zip(target["labels"], target["weights"], strict=True)
            ]
            image = draw_bounding_boxes(image, target["boxes"], labels=names, colors="yellow", width=1)
        drawn.append(image)
    if len({tuple(i.shape) for i in drawn}) > 1:  # images at their own size (Faster R-CNN): a common one
        drawn = [resize(i, [256, 256], antialias=True) for i in drawn]
    return make_grid(drawn, nrow=min(4, len(drawn)), padding=2)


def lr_curve_figure(lrs: list[float], iters_per_epoch: int, title: str):
    """The learning rate of every iteration against the epoch, as a matplotlib figure."""
    figure, axes = plt.subplots(figsize=(6, 3), dpi=100)
    axes.plot([i / iters_per_epoch for i in range(len(lrs))], lrs)
    axes.set(xlabel="epoch", ylabel="learning rate", title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def save_png(image: torch.Tensor, path: Path) -> None:
    """uint8 [3, H, W] -> PNG file."""
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path)

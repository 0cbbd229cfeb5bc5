"""Pictures for TensorBoard and the run directory: detections, training samples, the planned LR curve."""

from __future__ import annotations

import inspect
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are only rendered to files and TensorBoard

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms.v2.functional import resize  # noqa: E402
from torchvision.utils import draw_bounding_boxes, make_grid  # noqa: E402

from bof.utils.atomic import writing  # noqa: E402

# one colour per class (matplotlib's tab20, cycled), and label text that stays readable on it
PALETTE = [tuple(round(255 * c) for c in rgb) for rgb in matplotlib.colormaps["tab20"].colors]
FONT = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
# label backgrounds came with torchvision 0.22; older ones draw the text in the box colour
FILLED_LABELS = "label_background_colors" in inspect.signature(draw_bounding_boxes).parameters


def class_colour(label: int) -> tuple[int, int, int]:
    return PALETTE[int(label) % len(PALETTE)]


def text_colour(background: tuple[int, int, int]) -> str:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = background
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


def draw_labelled_boxes(image: torch.Tensor, boxes: torch.Tensor, labels, texts: list[str]) -> torch.Tensor:
    """Each box in its class's colour, its text on a filled label of that colour, sized to the image."""
    if not len(boxes):
        return image
    colours = [class_colour(label) for label in labels]
    side = min(image.shape[-2:])
    style = {"font": FONT, "font_size": max(10, side // 30), "width": max(1, side // 200)}
    if FILLED_LABELS:
        style |= {
            "label_colors": [text_colour(c) for c in colours],
            "label_background_colors": colours,
            "fill_labels": True,
        }
    return draw_bounding_boxes(image, boxes.cpu(), labels=texts, colors=colours, **style)


def draw_detections(
    image: torch.Tensor, detections: dict, target: dict, class_names, score_thresh: float = 0.3
):
    """image uint8 [3, S, S]; detections and target boxes xyxy in the same S x S frame. Ground truth as
    thin white-on-black outlines, predictions above ``score_thresh`` in their class's colour, labelled
    with class and score."""
    gt = target["boxes"].cpu()
    if len(gt):
        image = draw_bounding_boxes(image, gt, colors="black", width=3)
        image = draw_bounding_boxes(image, gt, colors="white", width=1)
    keep = detections["scores"] > score_thresh
    boxes, scores, labels = (detections[k][keep].cpu() for k in ("boxes", "scores", "labels"))
    names = [f"{class_names[int(c)]} {float(s):.2f}" for c, s in zip(labels, scores, strict=True)]
    return draw_labelled_boxes(image, boxes, labels.tolist(), names)


def draw_training_samples(images: list[torch.Tensor], targets: list[dict], class_names) -> torch.Tensor:
    """Augmented (and mixed) training samples, uint8 [3, S, S] each, with every box labelled by its class
    and the weight it carries into the loss (the mixup ratio; 1.00 unmixed) -> one uint8 grid image."""
    drawn = []
    for image, target in zip(images, targets, strict=True):
        names = [
            f"{class_names[int(c)]} {float(w):.2f}"
            for c, w in zip(target["labels"], target["weights"], strict=True)
        ]
        drawn.append(draw_labelled_boxes(image, target["boxes"], target["labels"].tolist(), names))
    if len({tuple(i.shape) for i in drawn}) > 1:  # images at their own size (Faster R-CNN): a common one
        drawn = [resize(i, [256, 256], antialias=True) for i in drawn]
    return make_grid(drawn, nrow=min(4, len(drawn)), padding=2)


def lr_curve_figure(iterations: list[int], lrs: list[float], iters_per_epoch: int, title: str):
    """The learning rate at ``iterations`` against the epoch, as a matplotlib figure."""
    figure, axes = plt.subplots(figsize=(6, 3), dpi=100)
    axes.plot([i / iters_per_epoch for i in iterations], lrs)
    axes.set(xlabel="epoch", ylabel="learning rate", title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def save_png(image: torch.Tensor, path: Path) -> None:
    """uint8 [3, H, W] -> PNG file (an OSError names it)."""
    with writing(path):
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path)

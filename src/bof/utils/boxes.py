"""Leaf module: box geometry and image-tensor helpers shared by data, tricks, models and the loop.

Images are uint8 [3, H, W] (or a batch [B, 3, H, W]) until :func:`normalize_batch` on the training device;
boxes are [N, 4] xyxy in continuous 0-based pixels of their image unless a name says otherwise (VOC's
1-based inclusive pixel indices: :func:`voc_to_xyxy`). Imports nothing from bof.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_tv_tensors(image: torch.Tensor, target: dict) -> tuple[tv_tensors.Image, dict]:
    """Wraps image and boxes so that v2 transforms move the boxes with the pixels."""
    target = dict(target)
    target["boxes"] = tv_tensors.BoundingBoxes(
        target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:])
    )
    return tv_tensors.Image(image), target


def plain_tensors(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    target = dict(target)
    target["boxes"] = target["boxes"].as_subclass(torch.Tensor).float()
    return image.as_subclass(torch.Tensor), target


def resize_square(image: tv_tensors.Image, target: dict, size: int | None, interpolation) -> tuple:
    """tv_tensors image and target -> the same resized to size x size, boxes moved with the pixels.
    ``size`` None keeps the image's own size (Faster R-CNN resizes inside the model)."""
    if size is None:
        return image, target
    target = dict(target)
    target["boxes"] = TF.resize(target["boxes"], [size, size])
    return TF.resize(image, [size, size], interpolation=interpolation, antialias=True), target


def resize_image(image: tv_tensors.Image, target: dict, size: int, mode: str) -> tuple:
    """Resize to size x size with cv2's ``mode``, not antialiased (as cv2) except where a stand-in needs
    it. ``area`` (cv2's INTER_AREA: a box-filter average when shrinking, nearest-like when enlarging) is
    torchvision's antialiased bilinear when a side shrinks (a triangle instead of a box filter, on
    torchvision's fast uint8 path: 1 ms against 7 ms for ``F.interpolate(mode="area")`` on a photo) and
    nearest when both grow; ``lanczos`` (not available for tensors) is antialiased bicubic; ``auto`` is
    MXNet's ``interp=9`` of GluonCV's evaluation: area when both sides shrink, bicubic when both grow,
    bilinear otherwise. Boxes move with the pixels."""
    height, width = image.shape[-2:]
    if mode == "auto":
        shrink, grow = size < min(height, width), size > max(height, width)
        mode = "area" if shrink else "bicubic" if grow else "bilinear"
    if mode == "area":
        mode = "nearest" if size > max(height, width) else "area"
    interpolation = {"lanczos": "bicubic", "area": "bilinear"}.get(mode, mode)
    target = {**target, "boxes": TF.resize(target["boxes"], [size, size])}
    antialias = mode in ("lanczos", "area")
    return TF.resize(image, [size, size], v2.InterpolationMode(interpolation), antialias=antialias), target


def normalize_batch(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 [B, 3, H, W] (or a list of [3, H_i, W_i]) -> float, normalised with the ImageNet mean and std."""
    if isinstance(images, list):
        return [_normalize(image[None], mean, std)[0] for image in images]
    return _normalize(images, mean, std)


def _normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, H, W] normalised with the ImageNet mean and std."""
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def voc_to_xyxy(boxes):
    """VOC 1-based inclusive boxes -> continuous 0-based xyxy: ``(xmin - 1, ymin - 1, xmax, ymax)``.

    ``boxes``: [..., 4] numpy array or torch tensor. Returns a new floating array/tensor of the same kind
    (float32 unless the input was already floating point); the input is not modified.
    """
    if isinstance(boxes, torch.Tensor):
        out = boxes.clone() if boxes.is_floating_point() else boxes.to(torch.float32)
    else:
        boxes = np.asarray(boxes)
        out = boxes.copy() if np.issubdtype(boxes.dtype, np.floating) else boxes.astype(np.float32)
    out[..., :2] -= 1
    return out


def xyxy_to_voc(boxes):
    """Continuous 0-based xyxy -> VOC 1-based inclusive boxes: ``(x1 + 1, y1 + 1, x2, y2)``.

    Inverse of :func:`voc_to_xyxy`. ``boxes``: [..., 4] numpy array or torch tensor; returns a new
    floating array/tensor (predictions are not rounded: the devkit evaluates real-valued boxes).
    """
    if isinstance(boxes, torch.Tensor):
        out = boxes.clone() if boxes.is_floating_point() else boxes.to(torch.float32)
    else:
        boxes = np.asarray(boxes)
        out = boxes.copy() if np.issubdtype(boxes.dtype, np.floating) else boxes.astype(np.float32)
    out[..., :2] += 1
    return out


def box_weights(target: dict) -> torch.Tensor:
    """The target's per-box loss weights [N] (1 where none were set; mixup sets lam and 1 - lam)."""
    weights = target.get("weights")
    boxes = target["boxes"]
    return weights.float() if weights is not None else torch.ones(len(boxes), device=boxes.device)


def clip_boxes(target: dict, height: int, width: int) -> dict:  # target tensors: torch
    """Boxes [N, 4] xyxy clipped to the image; boxes left without area are dropped with their per-box
    fields (``labels``, ``difficult``). The same rule for VOC and COCO."""
    boxes = target["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if bool(keep.all()):
        return {**target, "boxes": boxes}
    return {
        **target,
        "boxes": boxes[keep],
        **{k: target[k][keep] for k in ("labels", "difficult") if k in target},
    }

"""Image + box transforms shared by training and evaluation (torchvision.transforms.v2).

A transform is called as ``transform(image, target, size)``: image a uint8 [3, H, W] tensor, target a
dict whose ``boxes`` are [N, 4] xyxy pixels of that image, and ``size`` the square side the batch is
resized to. It returns the uint8 [3, size, size] image and the target with boxes in the new frame.
Normalisation (ImageNet mean/std) happens on the training device, on the whole batch, so that the data
loader ships uint8 (4x less host-to-device traffic).
"""

from __future__ import annotations

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


class Resize:
    """Resize to a size x size square (no letterbox, as GluonCV's YOLO transforms); the only step of
    evaluation and of the "- data augmentation" rows of the paper (``augment=none``)."""

    def __init__(self, interpolation: str = "bilinear"):
        self.interpolation = v2.InterpolationMode(interpolation)

    def __call__(self, image: torch.Tensor, target: dict, size: int) -> tuple[torch.Tensor, dict]:
        return plain_tensors(*resize_square(*as_tv_tensors(image, target), size, self.interpolation))

    def __repr__(self) -> str:
        return f"resize ({self.interpolation.value})"


def resize_square(image: tv_tensors.Image, target: dict, size: int | None, interpolation) -> tuple:
    """tv_tensors image and target -> the same resized to size x size, boxes moved with the pixels.
    ``size`` None keeps the image's own size (Faster R-CNN resizes inside the model)."""
    if size is None:
        return image, target
    target = dict(target)
    target["boxes"] = TF.resize(target["boxes"], [size, size])
    return TF.resize(image, [size, size], interpolation=interpolation, antialias=True), target


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

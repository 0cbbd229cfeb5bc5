"""Training data augmentation (paper section 3.3 and Tables 2-3; docs/fidelity.md "Data augmentation").

``augment=yolo`` is GluonCV's YOLOv3 training transform, in its order::

    colour distortion -> random expand -> SSD-style IoU crop -> resize (random interpolation)
    -> horizontal flip -> drop boxes that became empty

``augment=rcnn`` is the Faster R-CNN recipe (horizontal flip and resize only) and ``augment=none`` is
resize only (:class:`Resize`), the "- data augmentation" rows. Every transform is
called as ``transform(image, target, size)`` with a uint8 [3, H, W] image, boxes [N, 4] xyxy pixels, and
returns a uint8 [3, size, size] image. Randomness comes from the global torch RNG, which the data
loader seeds per sample from the sample's key (:mod:`bof.data.loader`), so a test injects it with
``torch.manual_seed``. Per-box fields (``labels``, ``difficult``, ``weights``) are dropped together with
their boxes.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bof.boxes import IMAGENET_MEAN, as_tv_tensors, plain_tensors, resize_square

PER_BOX_FIELDS = ("labels", "difficult", "weights")
# GluonCV drew one of cv2's five interpolations; these are the ones torchvision resizes tensors with
INTERPOLATIONS = (v2.InterpolationMode.NEAREST, v2.InterpolationMode.BILINEAR, v2.InterpolationMode.BICUBIC)


def per_box_fields(inputs) -> tuple[torch.Tensor, ...]:
    """SanitizeBoundingBoxes' labels_getter: every per-box tensor of the target is filtered."""
    target = inputs[1]
    return tuple(target[k] for k in PER_BOX_FIELDS if k in target)


def color_distort(
    image: torch.Tensor,
    brightness_delta: float = 32.0,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue_delta: float = 0.05,
    p: float = 0.5,
) -> torch.Tensor:
    """GluonCV's ``random_color_distort`` on a uint8 [3, H, W] image.

    Brightness: add U(-delta, delta) grey levels (additive, as GluonCV; torchvision's is a factor), then
    contrast, saturation, hue in the order (contrast, saturation, hue) or (saturation, hue, contrast),
    each applied with probability p. Hue: GluonCV passed ``hue_delta=18`` degrees but multiplied it by
    pi as if it were a fraction of a turn, which rotates the hue at random by up to 18 half turns; we
    use the intended +-18 degrees (0.05 of a turn, torchvision's unit). torchvision's
    RandomPhotometricDistort is close but multiplies brightness and shuffles channels, which GluonCV
    never did, hence this function.
    """

    def maybe(fn):
        nonlocal image
        if torch.rand(()) < p:
            image = fn(image)

    def uniform(low, high) -> float:
        return float(torch.empty(()).uniform_(low, high))

    maybe(lambda im: (im.float() + uniform(-brightness_delta, brightness_delta)).clamp(0, 255).to(im.dtype))
    steps = [
        lambda im: TF.adjust_contrast(im, uniform(*contrast)),
        lambda im: TF.adjust_saturation(im, uniform(*saturation)),
        lambda im: TF.adjust_hue(im, uniform(-hue_delta, hue_delta)),
    ]
    order = steps if torch.rand(()) < 0.5 else steps[1:] + steps[:1]
    for step in order:
        maybe(step)
    return image


class Resize:
    """Resize to a size x size square (no letterbox, as GluonCV's YOLO transforms); the only step of
    evaluation and of the "- data augmentation" rows of the paper (``augment=none``)."""

    def __init__(self, interpolation: str = "bilinear"):
        self.interpolation = v2.InterpolationMode(interpolation)

    def __call__(self, image: torch.Tensor, target: dict, size: int) -> tuple[torch.Tensor, dict]:
        return plain_tensors(*resize_square(*as_tv_tensors(image, target), size, self.interpolation))

    def __repr__(self) -> str:
        return f"resize ({self.interpolation.value})"


class IoUCrop:
    """SSD-style random crop with a minimum-IoU constraint (GluonCV ``random_crop_with_constraints``,
    torchvision ``RandomIoUCrop``), with the same sampling rule, vectorised over the trials.

    Per round: pick a constraint from ``min_ious`` (1.0 or more: keep the whole image); draw ``trials``
    crops of scale U(min_scale, max_scale) per side, aspect w/h in [min_aspect, max_aspect], at a
    uniform position; the first crop that contains some box centre and overlaps one of those boxes with
    IoU >= the constraint wins; no winner: next round. Boxes whose centre lies outside the crop are
    dropped. torchvision draws the same distribution one trial at a time in Python, which took 60% of
    the YOLO pipeline's time (scripts/bench_augment.py); here a round is one batched IoU. After
    ``max_rounds`` rounds without a crop (possible only when 1.0 is not an option) the image stays whole.
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect: float = 0.5,
        max_aspect: float = 2.0,
        min_ious=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        trials: int = 50,
        max_rounds: int = 100,
    ):
        self.min_scale, self.max_scale = min_scale, max_scale
        self.min_aspect, self.max_aspect = min_aspect, max_aspect
        self.min_ious, self.trials, self.max_rounds = tuple(min_ious), trials, max_rounds

    def sample(self, boxes: torch.Tensor, height: int, width: int) -> tuple[list[int], torch.Tensor] | None:
        """boxes [N, 4] xyxy pixels -> ([top, left, crop_h, crop_w], mask [N] of kept boxes) or None."""
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        for _ in range(self.max_rounds):
            min_iou = self.min_ious[int(torch.randint(len(self.min_ious), ()))]
            if min_iou >= 1.0:
                return None
            scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(self.trials, 2)
            size = (scale * torch.tensor([width, height])).long()  # [T, 2] (w, h), truncated as int()
            offset = ((torch.tensor([width, height]) - size) * torch.rand(self.trials, 2)).long()
            crops = torch.cat([offset, offset + size], 1).float()  # [T, 4] xyxy
            aspect = size[:, 0] / size[:, 1].clamp(min=1)
            inside = (crops[:, None, :2] < centres[None]).all(-1) & (centres[None] < crops[:, None, 2:]).all(
                -1
            )  # [T, N]
            best_iou = torch.where(inside, box_iou(crops, boxes), -1.0).amax(1)
            ok = (size > 0).all(1) & (aspect >= self.min_aspect) & (aspect <= self.max_aspect)
            ok &= inside.any(1) & (best_iou >= min_iou)
            if ok.any():
                t = int(ok.nonzero()[0])
                (left, top), (w, h) = offset[t].tolist(), size[t].tolist()
                return [top, left, h, w], inside[t]
        return None

    def __call__(self, image: tv_tensors.Image, target: dict) -> tuple[tv_tensors.Image, dict]:
        if not len(target["boxes"]):
            return image, target
        found = self.sample(target["boxes"].as_subclass(torch.Tensor), *image.shape[-2:])
        if found is None:
            return image, target
        (top, left, h, w), keep = found
        target = {k: v[keep] if k in PER_BOX_FIELDS else v for k, v in target.items()}
        boxes = tv_tensors.wrap(target["boxes"][keep], like=target["boxes"])  # indexing unwraps
        target["boxes"] = TF.crop(boxes, top, left, h, w)
        return TF.crop(image, top, left, h, w), target


class YOLOAugment:
    """The YOLOv3 training pipeline of docs/fidelity.md "Data augmentation", from torchvision.transforms.v2
    pieces.

    Expand: p=0.5, canvas side ratio U(1, max_expand), filled with the ImageNet mean. Crop: min IoU
    with some box in {0.1, 0.3, 0.5, 0.7, 0.9, any} or no crop at all (torchvision's 1.0), scale
    U(crop_min_scale, 1), aspect 1/2..2, boxes kept when their centre is inside (:class:`IoUCrop`,
    skipped for an image without boxes). Resize: one of nearest, bilinear, bicubic at random. Flip: p=0.5.
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 0.05,
        color_p: float = 0.5,
        expand_p: float = 0.5,
        max_expand: float = 4.0,
        crop_min_scale: float = 0.3,
        crop_min_ious: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        crop_trials: int = 50,
        flip_p: float = 0.5,
    ):
        self.color = dict(
            brightness_delta=brightness_delta, contrast=tuple(contrast), saturation=tuple(saturation),
            hue_delta=hue_delta, p=color_p,
        )  # fmt: skip
        fill = tuple(round(255 * m) for m in IMAGENET_MEAN)
        self.expand = v2.RandomZoomOut(
            fill={tv_tensors.Image: fill, "others": 0}, side_range=(1.0, max_expand), p=expand_p
        )
        self.crop = IoUCrop(min_scale=crop_min_scale, min_ious=crop_min_ious, trials=crop_trials)
        self.flip = v2.RandomHorizontalFlip(flip_p)
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=per_box_fields)

    def __call__(self, image: torch.Tensor, target: dict, size: int) -> tuple[torch.Tensor, dict]:
        image = color_distort(image, **self.color)
        image, target = self.expand(*as_tv_tensors(image, target))
        image, target = self.crop(image, target)
        interpolation = INTERPOLATIONS[int(torch.randint(len(INTERPOLATIONS), ()))]
        image, target = resize_square(image, target, size, interpolation)
        image, target = self.sanitize(*self.flip(image, target))
        return plain_tensors(image, target)

    def __repr__(self) -> str:
        return "yolo augmentation (colour, expand, IoU crop, random-interpolation resize, flip)"


class FlipResize:
    """Faster R-CNN's training augmentation (docs/fidelity.md "Data augmentation"): horizontal flip p=0.5,
    then the resize."""

    def __init__(self, flip_p: float = 0.5, interpolation: str = "bilinear"):
        self.flip = v2.RandomHorizontalFlip(flip_p)
        self.interpolation = v2.InterpolationMode(interpolation)

    def __call__(self, image: torch.Tensor, target: dict, size: int) -> tuple[torch.Tensor, dict]:
        image, target = self.flip(*as_tv_tensors(image, target))
        return plain_tensors(*resize_square(image, target, size, self.interpolation))

    def __repr__(self) -> str:
        return "flip + resize"

"""Training data augmentation (paper section 3.3 and Tables 2-3; docs/fidelity.md "Data augmentation").

``augment=yolo`` is GluonCV's YOLOv3 training transform, in its order::

    colour distortion -> random expand -> constrained crop (SSD's rule) -> resize (random interpolation)
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
from torchvision.ops import box_iou
from torchvision.transforms import v2

from bof.utils.boxes import IMAGENET_MEAN, as_tv_tensors, plain_tensors, resize_image, resize_square
from bof.utils.checks import fraction, nonnegative, require

PER_BOX_FIELDS = ("labels", "difficult", "weights")
# GluonCV's imresize draws one of cv2's five interpolations (np.random.randint(0, 5)); the two torchvision
# cannot resize tensors with stand in as RESIZE (docs/fidelity.md "Data augmentation")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
LUMA = (0.299, 0.587, 0.114)  # the grey of GluonCV's saturation step (ITU-R 601)
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.321), (0.211, -0.523, 0.311))  # GluonCV's
# GluonCV's (min IoU, max IoU) constraints, None: unbounded (SSD's sampling rule)
CROP_CONSTRAINTS = ((0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, 1.0))


def per_box_fields(inputs) -> tuple[torch.Tensor, ...]:
    """SanitizeBoundingBoxes' labels_getter: every per-box tensor of the target is filtered."""
    target = inputs[1]
    return tuple(target[k] for k in PER_BOX_FIELDS if k in target)


def uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def hue_rotation(degrees: float) -> torch.Tensor:
    """The 3 x 3 RGB matrix that rotates the chroma plane (I, Q) of YIQ by ``degrees``: GluonCV's hue step.
    Back to RGB with the exact inverse of RGB_TO_YIQ (GluonCV's rounded one is off by up to 0.3%), so a
    rotation by 0 is the identity."""
    angle = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    cos, sin = float(angle.cos()), float(angle.sin())
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]], dtype=torch.float64)
    to_yiq = torch.tensor(RGB_TO_YIQ, dtype=torch.float64)
    return torch.linalg.inv(to_yiq) @ rotation @ to_yiq


def color_distort(
    image: torch.Tensor, generator: torch.Generator | None = None, **distortion
) -> torch.Tensor:
    """GluonCV's ``random_color_distort`` on a uint8 [3, H, W] image (:func:`color_transform`'s draws,
    :func:`apply_color`)."""
    return apply_color(image, color_transform(generator, **distortion))


def apply_color(image: torch.Tensor, transform: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """One float pass ``matrix @ pixel + offset`` over a uint8 [3, H, W] image, clamped and rounded."""
    if transform is None:
        return image
    matrix, offset = transform
    pixels = torch.addmm(offset.float()[:, None], matrix.float(), image.reshape(3, -1).float())
    return pixels.clamp_(0, 255).round_().to(torch.uint8).reshape(image.shape)


def color_transform(
    generator: torch.Generator | None = None,
    brightness_delta: float = 32.0,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue_degrees: float = 18.0,
    p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The random draws of GluonCV's ``random_color_distort``, composed into (matrix [3, 3], offset [3]);
    None when no step fires. Per-pixel, so it may be applied to any part of the image, later.

    Each step applies with probability ``p``: brightness adds U(-delta, delta) grey levels; then, in the
    order (contrast, saturation, hue) or (saturation, hue, contrast), contrast scales every value by
    U(0.5, 1.5) (GluonCV's plain scaling), saturation blends each pixel with its grey by U(0.5, 1.5), and
    hue rotates the pixel's chroma in YIQ space by U(-18, 18) degrees (:func:`hue_rotation`; GluonCV
    multiplied the drawn 18 by pi as if it were a fraction of a turn, which turns the hue by any angle:
    we keep SSD's intended +-18 degrees). Every step is affine in the pixel, so they compose into one
    3 x 3 matrix and offset applied in a single float pass, then clamped to [0, 255] and rounded to uint8
    (GluonCV fed the unclamped floats on; the pipeline here stays uint8 until normalisation).
    ``generator`` supplies all the randomness (None: torch's global generator).
    """
    matrix, offset = torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)

    def apply(step: torch.Tensor, shift: float = 0.0):
        nonlocal matrix, offset
        matrix, offset = step @ matrix, step @ offset + shift

    def fires() -> bool:
        return float(torch.rand((), generator=generator)) < p

    changed = False
    if fires():
        apply(torch.eye(3, dtype=torch.float64), uniform(-brightness_delta, brightness_delta, generator))
        changed = True
    grey = torch.tensor(LUMA, dtype=torch.float64).expand(3, 3)  # every channel <- the pixel's grey

    def contrast_step():
        return torch.eye(3, dtype=torch.float64) * uniform(*contrast, generator)

    def saturation_step():
        alpha = uniform(*saturation, generator)
        return alpha * torch.eye(3, dtype=torch.float64) + (1 - alpha) * grey

    def hue_step():
        return hue_rotation(uniform(-hue_degrees, hue_degrees, generator))

    steps = [contrast_step, saturation_step, hue_step]
    for step in steps if fires() else steps[1:] + steps[:1]:  # GluonCV's coin: contrast first or last
        if fires():
            apply(step())
            changed = True
    return (matrix, offset) if changed else None


def crop_with_constraints(
    boxes: torch.Tensor,
    width: int,
    height: int,
    generator: torch.Generator | None = None,
    min_scale: float = 0.3,
    max_scale: float = 1.0,
    max_aspect: float = 2.0,
    constraints=CROP_CONSTRAINTS,
    trials: int = 50,
) -> tuple[int, int, int, int]:
    """GluonCV's ``random_crop_with_constraints`` (SSD's sampling rule): boxes [N, 4] xyxy pixels ->
    the crop ``(left, top, crop_width, crop_height)``.

    For each (min IoU, max IoU) constraint, up to ``trials`` crops: scale s ~ U(min_scale, max_scale),
    aspect a ~ U(max(1/max_aspect, s^2), min(max_aspect, 1/s^2)), h = int(H s / sqrt(a)),
    w = int(W s sqrt(a)), top and left uniform; a trial is accepted when every box's IoU with it lies
    within the constraint, and the first accepted trial of each constraint becomes a candidate beside
    the full image. One candidate is drawn uniformly among those that keep a box (a box is kept when
    its centre lies in the crop, :func:`kept_by_crop`). GluonCV draws trials one by one and stops a
    constraint at its first hit; here every trial is drawn at once and one IoU matrix decides them all,
    which draws more random numbers but picks from the same distribution. No boxes: the full image.
    ``generator`` supplies all the randomness (None: torch's global generator).
    """
    full = (0, 0, width, height)
    if not len(boxes) or not len(constraints):
        return full

    def draw():
        return torch.rand(len(constraints), trials, generator=generator, dtype=torch.float64)

    scale = min_scale + (max_scale - min_scale) * draw()
    low, high = (scale**2).clamp(min=1 / max_aspect), (1 / scale**2).clamp(max=max_aspect)
    aspect = low + (high - low) * draw()
    crop_h, crop_w = (height * scale / aspect.sqrt()).long(), (width * scale * aspect.sqrt()).long()
    top, left = (draw() * (height - crop_h)).long(), (draw() * (width - crop_w)).long()
    crops = torch.stack([left, top, left + crop_w, top + crop_h], -1).view(-1, 4)  # [C * T, 4]
    iou = box_iou(boxes.double(), crops.double()).view(len(boxes), len(constraints), trials)
    bounds = torch.tensor(
        [(-torch.inf if lo is None else lo, torch.inf if hi is None else hi) for lo, hi in constraints],
        dtype=torch.float64,
    )
    accepted = (iou.amin(0) >= bounds[:, :1]) & (iou.amax(0) <= bounds[:, 1:])  # [C, T]
    first = accepted.byte().argmax(1)  # the first accepted trial of each constraint
    chosen = torch.arange(len(constraints))[accepted.any(1)]
    candidates = torch.cat([torch.tensor([full]), (crops.view(-1, trials, 4)[chosen, first[chosen]])])
    candidates[1:, 2:] -= candidates[1:, :2]  # xyxy -> (left, top, width, height)
    useful = candidates[[bool(kept_by_crop(boxes, *c.tolist()).any()) for c in candidates]]
    if not len(useful):
        return full
    return tuple(useful[int(torch.randint(len(useful), (), generator=generator))].tolist())


def kept_by_crop(boxes: torch.Tensor, left: int, top: int, width: int, height: int) -> torch.Tensor:
    """The boxes a crop keeps: those whose centre lies in it (GluonCV ``bbox_crop``, half-open)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    corner = centres.new_tensor([left, top])
    return ((centres >= corner) & (centres < corner + centres.new_tensor([width, height]))).all(1)


class Resize:
    """Resize to a size x size square (no letterbox, as GluonCV's YOLO transforms); the only step of
    evaluation and of the "- data augmentation" rows of the paper (``augment=none``). ``interpolation``:
    one of :func:`resize_image`'s modes; ``auto`` (GluonCV's evaluation) picks it from the sizes."""

    def __init__(self, interpolation: str = "auto"):
        if interpolation not in (*INTERPOLATIONS, "auto"):
            raise ValueError(
                f"augment.interpolation={interpolation!r}: must be one of {(*INTERPOLATIONS, 'auto')}"
            )
        self.interpolation = interpolation

    def __call__(self, image: torch.Tensor, target: dict, size: int | None) -> tuple[torch.Tensor, dict]:
        if size is None:  # Faster R-CNN resizes inside the model
            return image, target
        return plain_tensors(*resize_image(*as_tv_tensors(image, target), size, self.interpolation))

    def __repr__(self) -> str:
        return f"resize ({self.interpolation})"


class YOLOAugment:
    """GluonCV's YOLOv3 training transform (docs/fidelity.md "Data augmentation"): :func:`color_distort`;
    expand (p=0.5, canvas side ratio U(1, max_expand), filled with the ImageNet mean); the constrained
    crop (:func:`crop_with_constraints`, boxes kept by centre); resize with one of the five
    ``INTERPOLATIONS`` at random (:func:`resize_image`); flip (p=0.5); boxes left without area dropped.
    Randomness: torch's global generator, which the data loader seeds per sample."""

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue_degrees: float = 18.0,
        color_p: float = 0.5,
        expand_p: float = 0.5,
        max_expand: float = 4.0,
        crop_min_scale: float = 0.3,
        crop_constraints=CROP_CONSTRAINTS,
        crop_trials: int = 50,
        flip_p: float = 0.5,
    ):
        require("augment.brightness_delta", brightness_delta, nonnegative, "a number of grey levels >= 0")
        require("augment.hue_degrees", hue_degrees, lambda v: 0 <= v <= 180, "degrees in [0, 180]")
        require("augment.color_p", color_p, fraction, "a probability in [0, 1]")
        require("augment.expand_p", expand_p, fraction, "a probability in [0, 1]")
        require("augment.max_expand", max_expand, lambda v: v >= 1, "a canvas side ratio >= 1")
        require("augment.crop_min_scale", crop_min_scale, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
        self.color = dict(
            brightness_delta=brightness_delta,
            contrast=tuple(contrast),
            saturation=tuple(saturation),
            hue_degrees=hue_degrees,
            p=color_p,
        )
        self.crop = dict(
            min_scale=crop_min_scale, constraints=[tuple(c) for c in crop_constraints], trials=crop_trials
        )
        self.fill = torch.tensor([round(255 * m) for m in IMAGENET_MEAN], dtype=torch.uint8).view(3, 1, 1)
        self.expand_p, self.max_expand = expand_p, max_expand
        self.flip = v2.RandomHorizontalFlip(flip_p)
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=per_box_fields)

    def __call__(self, image: torch.Tensor, target: dict, size: int) -> tuple[torch.Tensor, dict]:
        # every random decision first, in GluonCV's order; then only the pixels the crop keeps are
        # coloured and copied (the expanded canvas, up to 16 times the image, is never built)
        color = color_transform(**self.color)
        height, width = image.shape[-2:]
        left, top, canvas_w, canvas_h = self.expansion(width, height)
        boxes = target["boxes"] + torch.tensor([left, top, left, top], dtype=target["boxes"].dtype)
        crop = crop_with_constraints(boxes, canvas_w, canvas_h, **self.crop)
        keep = kept_by_crop(boxes, *crop)
        target = {k: v[keep] if k in PER_BOX_FIELDS else v for k, v in target.items()}
        corner = torch.tensor(crop[:2] * 2, dtype=boxes.dtype)
        boxes = (boxes[keep] - corner).clamp(min=0).minimum(torch.tensor(crop[2:] * 2, dtype=boxes.dtype))
        pixels = self.cropped_pixels(image, color, left, top, crop)
        image, target = as_tv_tensors(pixels, {**target, "boxes": boxes})
        mode = INTERPOLATIONS[int(torch.randint(len(INTERPOLATIONS), ()))]
        image, target = resize_image(image, target, size, mode)
        image, target = self.sanitize(*self.flip(image, target))
        return plain_tensors(image, target)

    def expansion(self, width: int, height: int) -> tuple[int, int, int, int]:
        """GluonCV's random expand, drawn as torchvision's RandomZoomOut draws it: -> the image's (left,
        top) on a canvas of (canvas_w, canvas_h), side ratio U(1, max_expand), with probability expand_p."""
        if torch.rand(1) >= self.expand_p:
            return 0, 0, width, height
        ratio = 1.0 + torch.rand(1) * (self.max_expand - 1.0)
        canvas_w, canvas_h = int(width * ratio), int(height * ratio)
        position = torch.rand(2)
        return (
            int((canvas_w - width) * position[0]),
            int((canvas_h - height) * position[1]),
            canvas_w,
            canvas_h,
        )

    def cropped_pixels(self, image, color, left: int, top: int, crop) -> torch.Tensor:
        """The crop (crop_left, crop_top, w, h) of the expanded canvas: ImageNet-mean fill, and the coloured
        part of the image that lies inside it."""
        crop_left, crop_top, crop_w, crop_h = crop
        height, width = image.shape[-2:]
        if (left, top, crop_left, crop_top, crop_w, crop_h) == (0, 0, 0, 0, width, height):
            return apply_color(image, color)  # neither expanded nor cropped
        x0, x1 = max(crop_left, left), min(crop_left + crop_w, left + width)
        y0, y1 = max(crop_top, top), min(crop_top + crop_h, top + height)
        canvas = self.fill.expand(3, crop_h, crop_w).clone()
        if x1 > x0 and y1 > y0:
            part = image[:, y0 - top : y1 - top, x0 - left : x1 - left]
            canvas[:, y0 - crop_top : y1 - crop_top, x0 - crop_left : x1 - crop_left] = apply_color(
                part, color
            )
        return canvas

    def __repr__(self) -> str:
        return "yolo augmentation (colour, expand, constrained crop, random-interpolation resize, flip)"


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

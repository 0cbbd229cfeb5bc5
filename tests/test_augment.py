"""Training augmentation: each step does what docs/fidelity.md "Data augmentation" says, and
`augment=yolo` visibly changes samples."""

import pytest
import torch
from torchvision.ops import box_iou

from bof.tricks.augment import FlipResize, IoUCrop, Resize, YOLOAugment, color_distort


def sample(h=60, w=80):
    torch.manual_seed(123)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0], [40.0, 20.0, 75.0, 55.0]]),
        "labels": torch.tensor([2, 4]),
        "difficult": torch.tensor([False, True]),
        "weights": torch.tensor([0.25, 0.75]),
        "image_id": "x",
        "orig_size": (h, w),
    }
    return image, target


def test_horizontal_flip_mirrors_pixels_and_moves_the_boxes():
    image, target = sample()
    flipped, ft = FlipResize(flip_p=1.0)(image, target, 80)  # 80 x 80: x unchanged in scale
    plain, pt = Resize()(image, target, 80)
    assert torch.equal(flipped, plain.flip(-1))
    expected = pt["boxes"].clone()
    expected[:, [0, 2]] = 80 - pt["boxes"][:, [2, 0]]
    assert torch.allclose(ft["boxes"], expected)
    assert torch.equal(ft["labels"], target["labels"])


def test_brightness_is_additive_within_32_grey_levels():
    image = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    shifts = set()
    for seed in range(30):
        torch.manual_seed(seed)
        out = color_distort(image, contrast=(1, 1), saturation=(1, 1), hue_delta=0.0, p=1.0).int()
        assert (out == out[0, 0, 0]).all()  # one shift for every pixel and channel
        shifts.add(int(out[0, 0, 0]) - 100)
    assert max(shifts) <= 32 and min(shifts) >= -32 and len(shifts) > 10


def test_colour_steps_change_colour_and_respect_probability_zero():
    image, _ = sample()
    torch.manual_seed(0)
    assert not torch.equal(color_distort(image, p=1.0), image)
    assert torch.equal(color_distort(image, p=0.0), image)


def test_yolo_augment_output_is_valid_and_deterministic_per_seed():
    image, target = sample()
    augment = YOLOAugment()
    seen = set()
    for seed in range(25):
        torch.manual_seed(seed)
        out, t = augment(image, target, 96)
        torch.manual_seed(seed)
        again, _ = augment(image, target, 96)
        assert torch.equal(out, again)
        assert out.shape == (3, 96, 96) and out.dtype == torch.uint8
        assert len(t["boxes"]) == len(t["labels"]) == len(t["difficult"]) == len(t["weights"])
        assert ((t["boxes"] >= 0) & (t["boxes"] <= 96)).all()
        assert (t["boxes"][:, 2:] > t["boxes"][:, :2]).all()
        for label, weight, difficult in zip(t["labels"], t["weights"], t["difficult"], strict=True):
            i = target["labels"].tolist().index(int(label))  # fields stay with their box
            assert weight == target["weights"][i] and difficult == target["difficult"][i]
        seen.add(tuple(t["boxes"].flatten().round().tolist()))
    assert len(seen) > 10  # the geometry really is random


def test_yolo_augment_changes_the_image_and_the_boxes_versus_none():
    image, target = sample()
    plain, pt = Resize()(image, target, 96)
    changed_images = changed_boxes = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out, t = YOLOAugment()(image, target, 96)
        changed_images += not torch.equal(out, plain)
        changed_boxes += t["boxes"].shape != pt["boxes"].shape or not torch.allclose(t["boxes"], pt["boxes"])
    assert changed_images == 10 and changed_boxes >= 8


def test_expand_shrinks_the_boxes_on_average():
    image, target = sample()

    def mean_area(expand_p):
        aug = YOLOAugment(color_p=0.0, expand_p=expand_p, crop_min_ious=[1.0], flip_p=0.0)
        areas = []
        for seed in range(20):
            torch.manual_seed(seed)
            boxes = aug(image, target, 96)[1]["boxes"]
            areas.append(((boxes[:, 2:] - boxes[:, :2]).prod(1)).mean())
        return torch.stack(areas).mean()

    assert mean_area(1.0) < 0.6 * mean_area(0.0)


def test_an_image_without_boxes_passes_through():
    image, target = sample()
    empty = {**target, **{k: target[k][:0] for k in ("boxes", "labels", "difficult", "weights")}}
    torch.manual_seed(0)
    out, t = YOLOAugment()(image, empty, 64)
    assert out.shape == (3, 64, 64) and len(t["boxes"]) == 0


@pytest.mark.parametrize("augment", [Resize(), FlipResize(), YOLOAugment()])
def test_every_augmentation_returns_plain_tensors(augment):
    image, target = sample()
    out, t = augment(image, target, 64)
    assert type(out) is torch.Tensor and type(t["boxes"]) is torch.Tensor


@pytest.mark.parametrize("min_iou", [0.1, 0.5, 0.7])
def test_iou_crop_meets_its_constraint_and_keeps_boxes_by_centre(min_iou):
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0], [60.0, 5.0, 95.0, 30.0], [20.0, 50.0, 45.0, 78.0]])
    crop = IoUCrop(min_ious=[min_iou])
    for seed in range(20):
        torch.manual_seed(seed)
        (top, left, h, w), keep = crop.sample(boxes, 80, 100)
        window = torch.tensor([[left, top, left + w, top + h]], dtype=torch.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (centres > window[0, :2]).all(1) & (centres < window[0, 2:]).all(1)
        assert torch.equal(keep, inside) and keep.any()
        assert box_iou(window, boxes[keep]).max() >= min_iou
        assert 0.5 <= w / h <= 2.0 and 0.3 * 100 - 1 <= w <= 100 and 0.3 * 80 - 1 <= h <= 80


def test_iou_crop_option_one_keeps_the_whole_image():
    torch.manual_seed(0)
    assert IoUCrop(min_ious=[1.0]).sample(torch.tensor([[1.0, 1.0, 5.0, 5.0]]), 10, 10) is None

"""Training augmentation: each step does what docs/fidelity.md "Data augmentation" says, and
`augment=yolo` visibly changes samples."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bof.data.image_folder import PCALighting
from bof.tricks.augment import (
    INTERPOLATIONS,
    LUMA,
    PER_BOX_FIELDS,
    FlipResize,
    Resize,
    YOLOAugment,
    color_distort,
    crop_with_constraints,
    hue_rotation,
    kept_by_crop,
)
from bof.utils.boxes import as_tv_tensors, plain_tensors, resize_image


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
        generator = torch.Generator().manual_seed(seed)
        out = color_distort(
            image, generator, contrast=(1, 1), saturation=(1, 1), hue_degrees=0.0, p=1.0
        ).int()
        assert (out == out[0, 0, 0]).all()  # one shift for every pixel and channel
        shifts.add(int(out[0, 0, 0]) - 100)
    assert max(shifts) <= 32 and min(shifts) >= -32 and len(shifts) > 10


def test_colour_steps_change_colour_and_respect_probability_zero():
    image, _ = sample()
    assert not torch.equal(color_distort(image, torch.Generator().manual_seed(0), p=1.0), image)
    assert torch.equal(color_distort(image, torch.Generator().manual_seed(0), p=0.0), image)


def test_colour_distortion_is_float_throughout_with_one_clamp_at_the_end():
    """Brightness then contrast x0.5 on pixels 250 and 100: per-step uint8 clamping would cap the bright
    pixel at 255 before halving; in float their difference stays (250 - 100) / 2 = 75."""
    image = torch.tensor([250, 100], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2).contiguous()
    above_clamp = 0
    for seed in range(40):
        generator = torch.Generator().manual_seed(seed)
        out = color_distort(image, generator, contrast=(0.5, 0.5), saturation=(1, 1), hue_degrees=0, p=1.0)
        bright, dark = out[0, 0].int().tolist()
        assert abs(bright - dark - 75) <= 1
        above_clamp += bright > 128  # (250 + d) / 2 for d > 6: impossible after a clamp at 255
    assert above_clamp > 5


def test_saturation_zero_turns_every_pixel_into_its_grey():
    image, _ = sample()
    generator = torch.Generator().manual_seed(0)
    grey_only = dict(brightness_delta=0, contrast=(1, 1), saturation=(0, 0), hue_degrees=0, p=1.0)
    out = color_distort(image, generator, **grey_only)
    grey = (torch.tensor(LUMA).view(3, 1, 1) * image.float()).sum(0).round()
    assert (out.float() - grey).abs().max() <= 1 and torch.equal(out[0], out[1])


def test_hue_is_a_yiq_rotation_that_keeps_luma():
    assert torch.allclose(hue_rotation(0.0), torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(hue_rotation(360.0), torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(hue_rotation(10.0) @ hue_rotation(8.0), hue_rotation(18.0), atol=1e-9)
    luma = torch.tensor(LUMA, dtype=torch.float64)
    assert torch.allclose(luma @ hue_rotation(18.0), luma, atol=1e-9)  # only the chroma turns
    assert not torch.allclose(hue_rotation(18.0), torch.eye(3, dtype=torch.float64), atol=0.05)


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
        aug = YOLOAugment(color_p=0.0, expand_p=expand_p, crop_constraints=[], flip_p=0.0)
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


def test_crop_requires_every_box_to_meet_the_constraint():
    """A large box and a tiny one far from it: no crop has IoU >= 0.5 with both, so GluonCV's rule
    (every box) leaves only the full image, where torchvision's (some box) would crop around the large one."""
    boxes = torch.tensor([[0.0, 0.0, 300.0, 300.0], [480.0, 360.0, 490.0, 370.0]])
    for seed in range(20):
        crop = crop_with_constraints(
            boxes, 500, 375, torch.Generator().manual_seed(seed), constraints=[(0.5, None)]
        )
        assert crop == (0, 0, 500, 375)


def test_crop_meets_its_constraint_with_every_box_and_keeps_boxes_by_centre():
    boxes = torch.tensor([[100.0, 80.0, 400.0, 300.0], [150.0, 100.0, 350.0, 290.0]])
    cropped = 0
    for seed in range(30):
        left, top, w, h = crop_with_constraints(
            boxes, 500, 375, torch.Generator().manual_seed(seed), constraints=[(0.5, None)]
        )
        if (w, h) == (500, 375):
            continue
        cropped += 1
        window = torch.tensor([[left, top, left + w, top + h]], dtype=torch.float32)
        assert box_iou(window, boxes).min() >= 0.5  # every box, not just one
        scale2, aspect = (w / 500) * (h / 375), (w / 500) / (h / 375)  # s^2 and a, up to int()
        assert 0.3**2 - 0.01 <= scale2 <= 1.0 and 0.5 - 0.02 <= aspect <= 2.0 + 0.02
        assert kept_by_crop(boxes, left, top, w, h).any()
    assert cropped > 10


def test_a_crop_that_keeps_no_box_is_never_chosen_and_no_boxes_means_no_crop():
    tiny_corner = torch.tensor([[2.0, 2.0, 6.0, 6.0]])  # most crops miss its centre
    for seed in range(40):
        crop = crop_with_constraints(tiny_corner, 500, 375, torch.Generator().manual_seed(seed))
        assert kept_by_crop(tiny_corner, *crop).all()
    assert crop_with_constraints(torch.zeros(0, 4), 500, 375, torch.Generator()) == (0, 0, 500, 375)


def gluoncv_crop_reference(boxes: np.ndarray, width: int, height: int, rng: np.random.Generator):
    """GluonCV's rule, one trial at a time as GluonCV runs it (written from its description in
    docs/fidelity.md): the distribution the vectorised crop must reproduce."""
    constraints = ((0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, 1.0))
    candidates = [(0, 0, width, height)]
    for low, high in constraints:
        low, high = -np.inf if low is None else low, np.inf if high is None else high
        for _ in range(50):
            s = rng.uniform(0.3, 1.0)
            a = rng.uniform(max(0.5, s * s), min(2.0, 1 / (s * s)))
            h, w = int(height * s / np.sqrt(a)), int(width * s * np.sqrt(a))
            top, left = int(rng.integers(max(height - h, 1))), int(rng.integers(max(width - w, 1)))
            inter = np.prod(
                np.clip(
                    np.minimum(boxes[:, 2:], [left + w, top + h]) - np.maximum(boxes[:, :2], [left, top]),
                    0,
                    None,
                ),
                axis=1,
            )
            iou = inter / (np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + w * h - inter)
            if low <= iou.min() and iou.max() <= high:
                candidates.append((left, top, w, h))
                break
    while candidates:
        crop = candidates.pop(int(rng.integers(len(candidates))))
        if kept_by_crop(torch.from_numpy(boxes), *crop).any():
            return crop
    return (0, 0, width, height)


@pytest.mark.parametrize(
    "boxes",
    [
        [[30, 40, 200, 300], [220, 60, 420, 250], [300, 200, 480, 360]],  # three objects
        [
            [20, 20, 70, 60],
            [400, 30, 450, 80],
            [220, 160, 270, 210],
            [40, 300, 90, 350],
            [420, 300, 470, 350],
        ],
    ],
    ids=["3 boxes", "5 small boxes"],
)
def test_crop_statistics_match_gluoncvs_rule(boxes):
    """Mean crop area, share of boxes kept and share of draws left whole on a 500 x 375 image: the
    vectorised crop against GluonCV's one-trial-at-a-time rule, 1000 draws each."""
    boxes_np = np.array(boxes, dtype=np.float64)
    boxes_t = torch.from_numpy(boxes_np)

    def stats(crops):
        crops = torch.tensor(crops, dtype=torch.float64)
        area = (crops[:, 2] * crops[:, 3] / (500 * 375)).mean()
        kept = torch.stack([kept_by_crop(boxes_t, *c.tolist()).double().mean() for c in crops.long()]).mean()
        whole = (crops[:, 2:] == torch.tensor([500.0, 375.0])).all(1).double().mean()
        return torch.stack([area, kept, whole])

    rng = np.random.default_rng(0)
    reference = stats([gluoncv_crop_reference(boxes_np, 500, 375, rng) for _ in range(1000)])
    generator = torch.Generator().manual_seed(0)
    ours = stats([crop_with_constraints(boxes_t.float(), 500, 375, generator) for _ in range(1000)])
    assert (ours - reference).abs().max() <= 0.03, (ours, reference)


@pytest.mark.parametrize("mode", INTERPOLATIONS)
def test_every_interpolation_resizes_image_and_boxes(mode):
    image, target = sample(h=64, w=64)
    image = tv_tensors.Image(image)
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(64, 64))
    out, t = resize_image(image, {**target, "boxes": boxes}, 32, mode)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert torch.allclose(t["boxes"], target["boxes"] / 2)
    pattern = (torch.arange(64)[:, None] + torch.arange(64)).remainder(2).mul(255).byte()
    halved, _ = resize_image(
        tv_tensors.Image(pattern.expand(3, 64, 64).contiguous()), {"boxes": boxes}, 32, mode
    )
    if mode in ("area", "lanczos"):  # averaging stand-ins: a 1-pixel checkerboard shrinks to flat grey
        assert (halved.float() - 127.5).abs().max() < 20
    elif mode == "nearest":  # cv2's nearest does not antialias: the pattern aliases to black or white
        assert (halved.float() - 127.5).abs().min() == 127.5
    assert len(set(INTERPOLATIONS)) == 5


@pytest.mark.parametrize(
    ("height", "width", "size", "mode"),
    [
        (375, 500, 416, "bilinear"),  # VOC at 416: one side shrinks, one grows
        (480, 640, 416, "area"),  # both shrink
        (100, 120, 160, "bicubic"),  # both grow
    ],
)
def test_evaluation_resize_picks_mxnets_interp_9_mode(height, width, size, mode):
    image = tv_tensors.Image(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width))
    }
    auto, _ = resize_image(image, target, size, "auto")
    assert torch.equal(auto, resize_image(image, target, size, mode)[0])
    assert torch.equal(Resize()(image, {"boxes": torch.zeros(0, 4)}, size)[0], auto)


def test_pca_lighting_shifts_each_image_by_one_colour_along_imagenets_principal_axes():
    image = torch.full((3, 4, 4), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    shifts = torch.stack([(PCALighting(0.1)(image).float() - 128)[:, 0, 0] for _ in range(200)])
    assert (shifts.std(0) > 1).all() and shifts.abs().max() < 40  # a few grey levels, mostly brightness
    first_axis = torch.tensor(PCALighting.EIGVEC)[:, 0]
    assert (shifts @ first_axis).abs().mean() > 3 * (
        shifts - (shifts @ first_axis)[:, None] * first_axis
    ).norm(dim=1).mean()
    assert torch.equal(PCALighting(0.0)(image), image)


def yolo_augment_step_by_step(augment: YOLOAugment, image, target, size):
    """augment=yolo as separate whole-image steps: colour on every pixel, the full expanded canvas
    (torchvision's RandomZoomOut), then the crop. The same random draws in the same order."""
    image = color_distort(image, None, **augment.color)
    fill = {tv_tensors.Image: tuple(augment.fill.flatten().tolist()), "others": 0}
    zoom = v2.RandomZoomOut(fill=fill, side_range=(1.0, augment.max_expand), p=augment.expand_p)
    image, target = zoom(*as_tv_tensors(image, target))
    boxes = target["boxes"].as_subclass(torch.Tensor)
    left, top, w, h = crop_with_constraints(boxes, image.shape[-1], image.shape[-2], **augment.crop)
    keep = kept_by_crop(boxes, left, top, w, h)
    target = {k: v[keep] if k in PER_BOX_FIELDS else v for k, v in target.items()}
    target["boxes"] = TF.crop(tv_tensors.wrap(boxes[keep], like=target["boxes"]), top, left, h, w)
    image = TF.crop(image, top, left, h, w)
    mode = INTERPOLATIONS[int(torch.randint(len(INTERPOLATIONS), ()))]
    image, target = augment.sanitize(*augment.flip(*resize_image(image, target, size, mode)))
    return plain_tensors(image, target)


@pytest.mark.parametrize("shape", [(60, 80), (375, 500)])
def test_yolo_augment_equals_its_step_by_step_form(shape):
    """The fast path (draws first, then only the kept pixels coloured and copied) gives the same samples."""
    image, target = sample(*shape)
    target["boxes"] = target["boxes"] * shape[0] / 60
    augment = YOLOAugment()
    for seed in range(40):
        torch.manual_seed(seed)
        fast, fast_target = augment(image, target, 96)
        torch.manual_seed(seed)
        slow, slow_target = yolo_augment_step_by_step(augment, image, target, 96)
        assert torch.equal(fast, slow), seed
        assert torch.allclose(fast_target["boxes"], slow_target["boxes"], atol=1e-4), seed
        assert torch.equal(fast_target["labels"], slow_target["labels"])

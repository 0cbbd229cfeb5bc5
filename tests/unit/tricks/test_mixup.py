"""Visually coherent mixup: the exact blend, the box weights, and the per-epoch switch reaching workers."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from bof.data.loader import KeyedBatchSampler, build_data_loader
from bof.models.yolo_loss import YOLOv3Loss
from bof.tricks.augment import Resize
from bof.tricks.mixup import DetectionMixup, mixup_detection, mixup_images, mixup_targets


def sample(h, w, value, boxes, labels):
    image = torch.full((3, h, w), value, dtype=torch.uint8)
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.zeros(len(labels), dtype=torch.bool),
        "image_id": f"{h}x{w}",
        "orig_size": (h, w),
    }
    return image, target


def test_lambda_one_is_the_identity():
    (a, ta), (b, tb) = sample(20, 30, 100, [[1, 2, 10, 12]], [3]), sample(40, 10, 7, [[0, 0, 5, 5]], [1])
    canvas = mixup_images(a, b, 1.0)
    assert torch.equal(canvas[:, :20, :30], a)
    assert torch.equal(mixup_targets(ta, tb, 1.0, (40, 30))["weights"], torch.tensor([1.0, 0.0]))


def test_blend_on_the_max_canvas_at_the_top_left_corner():
    lam = 0.3
    (a, _), (b, _) = sample(20, 30, 100, [[1, 2, 10, 12]], [3]), sample(40, 10, 50, [[0, 0, 5, 5]], [1])
    canvas = mixup_images(a, b, lam).float()
    assert canvas.shape == (3, 40, 30)  # max(h) x max(w)
    assert torch.equal(canvas[:, 5, 5], torch.full((3,), 65.0))  # overlap: 0.3 * 100 + 0.7 * 50
    assert torch.equal(canvas[:, 5, 20], torch.full((3,), 30.0))  # only image a: 0.3 * 100
    assert torch.equal(canvas[:, 30, 5], torch.full((3,), 35.0))  # only image b: 0.7 * 50
    assert torch.equal(canvas[:, 30, 20], torch.zeros(3))  # neither


@pytest.mark.parametrize("lam", [0.5, 0.3, 0.6137, 0.01, 0.999])
def test_the_fixed_point_blend_is_within_one_grey_level_of_the_float_blend(lam):
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 37, 50), dtype=torch.uint8, generator=generator)
    b = torch.randint(0, 256, (3, 50, 37), dtype=torch.uint8, generator=generator)
    reference = torch.zeros(3, 50, 50)  # GluonCV's float canvas, rounded half up
    reference[:, :37, :50] = a * lam
    reference[:, :50, :37] += b * (1 - lam)
    difference = mixup_images(a, b, lam).int() - (reference + 0.5).floor().int()
    assert difference.abs().max() <= 1
    if lam == 0.5:  # exact in fixed point: the same image
        assert difference.abs().max() == 0


def test_boxes_keep_their_coordinates_and_carry_lambda_and_one_minus_lambda():
    (a, ta), (b, tb) = (
        sample(20, 30, 1, [[1, 2, 10, 12], [3, 3, 9, 9]], [3, 4]),
        sample(40, 10, 1, [[0, 0, 5, 5]], [1]),
    )
    image, target = mixup_detection(a, ta, b, tb, 0.7)
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 30)
    assert torch.equal(target["boxes"], torch.cat([ta["boxes"], tb["boxes"]]))
    assert target["labels"].tolist() == [3, 4, 1] and len(target["difficult"]) == 3
    assert torch.allclose(target["weights"], torch.tensor([0.7, 0.7, 0.3]))
    assert target["orig_size"] == (40, 30) and target["mixup_lambda"] == 0.7  # Faster R-CNN's halved rule


def test_lambda_distributions_and_partner():
    rng = np.random.default_rng(0)
    draws = [DetectionMixup(1.5, 1.5).draw(rng, 3, 10) for _ in range(4000)]
    lams, partners = zip(*draws, strict=True)
    assert 3 not in partners and set(partners) == set(range(10)) - {3}  # uniform among the others
    assert np.mean(lams) == pytest.approx(0.5, abs=0.02)
    assert np.var(lams) == pytest.approx(1 / 16, abs=0.005)  # Beta(1.5, 1.5): ab / ((a+b)^2 (a+b+1))
    assert np.var([DetectionMixup(1.0, 1.0).draw(rng, 0, 5)[0] for _ in range(4000)]) == pytest.approx(
        1 / 12, abs=0.006
    )  # uniform
    assert {DetectionMixup(fixed_lambda=0.5).draw(rng, 0, 5)[0] for _ in range(20)} == {0.5}


@pytest.mark.parametrize(("epochs", "off"), [(200, 20), (280, 20), (20, 2), (5, 1), (2, 1)])
def test_switch_off_for_the_last_epochs_scaled_to_short_runs(epochs, off):
    mixup = DetectionMixup()
    assert mixup.off_epochs(epochs) == off
    assert [mixup.active(e, epochs) for e in range(epochs)] == [True] * (epochs - off) + [False] * off


def test_box_weights_reach_the_loss():
    """The mixup weight scales every term of its box: half the weight, half the positive loss."""
    criterion = YOLOv3Loss(num_classes=3)
    outputs = [torch.zeros(1, 3, 64 // s, 64 // s, 8) for s in (8, 16, 32)]
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
    full = criterion(outputs, [{**target, "weights": torch.tensor([1.0])}], (64, 64))
    half = criterion(outputs, [{**target, "weights": torch.tensor([0.5])}], (64, 64))
    for term in ("loss_xy", "loss_wh", "loss_cls"):
        assert half[term] == pytest.approx(0.5 * full[term]) and full[term] > 0
    assert half["loss"] < full["loss"]


class Constant(Dataset):
    """Image i is filled with the value 10 * i + 10 and has one box of label i."""

    class_names = tuple(str(i) for i in range(8))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return sample(32, 32, 10 * i + 10, [[4, 4, 20, 20]], [i])


def test_sampler_keys_carry_the_mixup_decision_only_while_active():
    sampler = KeyedBatchSampler(range(8), 4, lambda it: 32, mixup=DetectionMixup(), dataset_size=8, epochs=2)
    sampler.set_epoch(0)
    first = [key for batch in sampler for key in batch]
    assert all(k.partner >= 0 and k.partner != k.index and 0 < k.lam < 1 for k in first)
    sampler.set_epoch(1)
    assert all(k.partner == -1 and k.lam == 1.0 for batch in sampler for k in batch)
    sampler.set_epoch(0)
    assert [key for batch in sampler for key in batch] == first  # a pure function of (seed, epoch)


def test_switch_off_reaches_persistent_workers():
    """GluonCV's bug (docs/fidelity.md "Mixup"): the switch-off never reached persistent workers.
    Epoch 0 must be mixed and epoch 1 must not, with 2 persistent workers that live through both epochs."""
    loader = build_data_loader(
        Constant(),
        Resize(),
        4,
        lambda it: 32,
        shuffle=True,
        seed=0,
        num_workers=2,
        mixup=DetectionMixup(),
        epochs=2,
    )
    assert loader.persistent_workers
    weights = {}
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch)
        batches = list(loader)
        weights[epoch] = torch.cat([t["weights"] for _, targets in batches for t in targets])
        labels_per_image = [len(t["labels"]) for _, targets in batches for t in targets]
        mixed = [t.get("mixup_lambda", 1.0) < 1 for _, targets in batches for t in targets]
        assert mixed == [epoch == 0] * 8  # the image-level mark reaches the batch through the workers
        assert labels_per_image == ([2] * 8 if epoch == 0 else [1] * 8)
    assert ((weights[0] > 0) & (weights[0] < 1)).all()
    assert torch.equal(weights[1], torch.ones(8))

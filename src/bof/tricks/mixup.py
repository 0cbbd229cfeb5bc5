"""Visually coherent mixup for detection (paper section 3.1, Table 1; docs/fidelity.md "Mixup").

Two training images are blended on a canvas of max(h1, h2) x max(w1, w2), both pasted at the top-left
corner at their own size (no resize, so the geometry is preserved)::

    canvas[:h1, :w1] = lam * image1;  canvas[:h2, :w2] += (1 - lam) * image2

All boxes keep their coordinates; each carries a weight, lam for boxes of image 1 and 1 - lam for image
2, which scales that box's terms in the loss. Mixing happens before the training augmentation, so the
mixed canvas is jittered, expanded, cropped, resized and flipped as one picture.

Where the decision is made: :class:`DetectionMixup` is asked by the batch sampler in the main process,
per sample, with a generator seeded from the sample's key (:mod:`bof.data.loader`); the partner index
and lam travel to the data loader workers inside the key. So the per-epoch switch-off reaches
persistent workers: GluonCV switched mixup off through an attribute of the dataset object that its
persistent workers had already copied, so mixup silently never ran (gluon-cv issue #1248).

Deviations from GluonCV, on purpose: the mixed canvas is rounded to uint8 like any decoded image (an
error of at most half a grey level) so that the rest of the pipeline and the loader's shared memory stay
uint8.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bof.utils.boxes import box_weights
from bof.utils.checks import count, fraction, positive, require


class MixupSwitchOff:
    """Mixup is on for every epoch except the last ``off_epochs(epochs)``: ``off_last_epochs`` (the
    paper's 20 of 200 YOLOv3 epochs), and in a shorter run at most ``ceil(max_off_fraction * epochs)``,
    the same last 10% of the run the paper used (a 20-epoch run mixes for 18 epochs instead of never)."""

    def __init__(self, off_last_epochs: int, max_off_fraction: float):
        require("mixup.off_last_epochs", off_last_epochs, count, "a whole number of epochs >= 0")
        require("mixup.max_off_fraction", max_off_fraction, fraction, "a fraction in [0, 1]")
        self.off_last_epochs, self.max_off_fraction = off_last_epochs, max_off_fraction

    def off_epochs(self, epochs: int) -> int:
        return min(self.off_last_epochs, math.ceil(self.max_off_fraction * epochs))

    def active(self, epoch: int, epochs: int) -> bool:
        """Whether samples of ``epoch`` (0-based) are mixed in a run of ``epochs``."""
        return epoch < epochs - self.off_epochs(epochs)


class DetectionMixup(MixupSwitchOff):
    """When and how to mix: lam ~ Beta(alpha, beta) (or ``fixed_lambda``), on for every sample of every
    epoch except the last ``off_epochs(epochs)`` (:class:`MixupSwitchOff`)."""

    def __init__(
        self,
        alpha: float = 1.5,
        beta: float = 1.5,
        fixed_lambda: float | None = None,
        off_last_epochs: int = 20,
        max_off_fraction: float = 0.1,
    ):
        if fixed_lambda is None:  # Beta(alpha, beta) is drawn only without a fixed lambda
            require("mixup.alpha", alpha, positive, "a number > 0")
            require("mixup.beta", beta, positive, "a number > 0")
        require("mixup.fixed_lambda", fixed_lambda, fraction, "a number in [0, 1]", optional=True)
        super().__init__(off_last_epochs, max_off_fraction)
        self.alpha, self.beta, self.fixed_lambda = alpha, beta, fixed_lambda

    def draw(self, rng: np.random.Generator, index: int, dataset_size: int) -> tuple[float, int]:
        """(lam, partner index drawn uniformly among the *other* images); all randomness from ``rng``."""
        partner = int(rng.integers(dataset_size - 1))
        partner += partner >= index
        lam = self.fixed_lambda if self.fixed_lambda is not None else float(rng.beta(self.alpha, self.beta))
        return lam, partner

    def describe(self, epochs: int) -> str:
        return f"{self!r}: mixes epochs 1-{epochs - self.off_epochs(epochs)} of {epochs}"

    def __repr__(self) -> str:
        ratio = (
            f"lambda={self.fixed_lambda}"
            if self.fixed_lambda is not None
            else f"Beta({self.alpha}, {self.beta})"
        )
        off = f"{self.off_last_epochs} epochs (at most {self.max_off_fraction:.0%})"
        return f"mixup {ratio}, off for the last {off}"


# the pixel blend's fixed point: lambda in steps of 1/128, so that 255 * 128 fits int16 (docs/fidelity.md)
BLEND_ONE = 128


def mixup_images(image1: torch.Tensor, image2: torch.Tensor, lam: float) -> torch.Tensor:
    """uint8 image1 [3, h1, w1], image2 [3, h2, w2] -> uint8 canvas [3, max(h), max(w)]: lam * image1 +
    (1 - lam) * image2, each at the top left, zero elsewhere (GluonCV's float canvas), rounded.

    In int16 fixed point, 0.48 ms for two 500 x 375 images against 1.6 ms for a float blend: lambda is
    rounded to 1/128 for the pixels (at most one grey level from the float blend; the box weights keep
    the exact lambda)."""
    (_, h1, w1), (_, h2, w2) = image1.shape, image2.shape
    weight = round(lam * BLEND_ONE)
    # starts at 64 so that the shift rounds halves up; a convex blend stays in [0, 255 * 128] + 64, which
    # fits int16, so no clamp pass; uint8 is added into int16 in place (no converted copy)
    canvas = torch.full((3, max(h1, h2), max(w1, w2)), BLEND_ONE // 2, dtype=torch.int16)
    canvas[:, :h1, :w1].add_(image1, alpha=weight)
    canvas[:, :h2, :w2].add_(image2, alpha=BLEND_ONE - weight)
    return canvas.bitwise_right_shift_(7).to(torch.uint8)


def mixup_targets(target1: dict, target2: dict, lam: float, canvas_size: tuple[int, int]) -> dict:
    """Concatenates the per-box fields (``boxes`` [N, 4] xyxy pixels, ``labels``, ``difficult``) and sets
    ``weights``: lam for image 1's boxes, 1 - lam for image 2's (times any weight they already had), and
    ``mixup_lambda``: lam (Faster R-CNN's GluonCV rule halves the loss of every mixed image)."""
    mixed = dict(target1)
    for key in ("boxes", "labels", "difficult"):
        mixed[key] = torch.cat([target1[key], target2[key].to(target1[key].dtype)])
    mixed["weights"] = torch.cat([box_weights(target1) * lam, box_weights(target2) * (1.0 - lam)])
    mixed["orig_size"] = canvas_size
    mixed["mixup_lambda"] = lam
    return mixed


def mixup_detection(image1, target1, image2, target2, lam: float) -> tuple[torch.Tensor, dict]:
    """The whole mix of two samples; returns the uint8 canvas and the merged target."""
    canvas = mixup_images(image1, image2, lam)
    return canvas, mixup_targets(target1, target2, lam, tuple(canvas.shape[-2:]))


class ClassificationMixup(MixupSwitchOff):
    """Classification mixup (Zhang et al. 2018), for backbone pretraining (paper Tables 5-6): per batch,
    lam ~ Beta(alpha, alpha) and a random permutation; images and one-hot targets are mixed with the
    permuted batch. Active in every epoch except the last ``off_epochs(epochs)``, as detection mixup."""

    def __init__(self, alpha: float = 0.2, off_last_epochs: int = 0, max_off_fraction: float = 0.1):
        require("mixup.alpha", alpha, positive, "a number > 0")
        super().__init__(off_last_epochs, max_off_fraction)
        self.alpha = alpha

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[float, torch.Tensor]:
        """(lam, the permutation [B] that pairs each sample with its partner); all randomness from ``rng``."""
        lam = float(rng.beta(self.alpha, self.alpha))
        return lam, torch.from_numpy(rng.permutation(batch_size))

    def describe(self, epochs: int) -> str:
        last = epochs - self.off_epochs(epochs)
        return f"classification mixup Beta({self.alpha}, {self.alpha}), mixes epochs 1-{last}"


def mixup_batch(
    images: torch.Tensor, targets: torch.Tensor, lam: float, permutation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """images [B, ...], targets [B, K] (one-hot or smoothed) -> the batch mixed with its permutation:
    lam * x + (1 - lam) * x[perm], likewise for the targets (so mixed targets still sum to 1)."""
    permutation = permutation.to(images.device, non_blocking=True)
    return (
        lam * images + (1 - lam) * images[permutation],
        lam * targets + (1 - lam) * targets[permutation],
    )

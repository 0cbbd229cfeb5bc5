"""The training and evaluation loops: plain functions, no Trainer class (torchvision references, DETR)."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import NamedTuple

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from bof import distributed
from bof.boxes import normalize_batch
from bof.visualize import draw_detections

log = logging.getLogger(__name__)


def prepare_batch(images, targets: list[dict] | torch.Tensor, device: torch.device, channels_last: bool):
    """uint8 images (a batch, or a list of differently sized ones) -> normalised float on the device;
    targets (one dict per image for detection, class labels [B] for task=classify) moved alongside."""
    if isinstance(images, list):
        images = normalize_batch([i.to(device, non_blocking=True) for i in images])
    else:
        images = normalize_batch(images.to(device, non_blocking=True))
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
    if torch.is_tensor(targets):  # class labels [B] (task=classify)
        return images, targets.to(device, non_blocking=True)
    targets = [
        {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


class GradClip(NamedTuple):
    """Gradient clipping before each step: ``norm`` clips the global L2 norm (``trainer.grad_clip``),
    ``value`` every gradient element to [-value, value] (``trainer.grad_clip_value``: MXNet's
    ``clip_gradient``, which GluonCV's Faster R-CNN COCO recipe uses). None: off."""

    norm: float | None = None
    value: float | None = None

    @classmethod
    def of(cls, trainer) -> GradClip:
        return cls(trainer.grad_clip, trainer.grad_clip_value)

    def __call__(self, parameters) -> None:
        parameters = [p for p in parameters if p.grad is not None]
        if self.value:
            torch.nn.utils.clip_grad_value_(parameters, self.value)
        if self.norm:
            torch.nn.utils.clip_grad_norm_(parameters, self.norm)


NO_CLIP = GradClip()


def train_step(
    model, images, targets, optimizer, scaler, amp: torch.dtype | None, grad_clip: GradClip = NO_CLIP
):
    """Forward, loss, backward (AMP-scaled), optional gradient clipping, optimizer step. ``model(images,
    targets)`` returns its loss terms (torchvision's detector interface: YOLOv3Detector, Faster R-CNN).

    Returns the loss terms as floats, averaged over the processes; raises FloatingPointError on every
    process when the loss is non-finite on any, before the step."""
    device_type = (images[0] if isinstance(images, list) else images).device.type
    with torch.autocast(device_type, dtype=amp, enabled=amp is not None):
        losses = model(images, targets)
        if "loss" not in losses:  # torchvision's detectors return the terms only
            losses["loss"] = sum(losses.values())
    # one all-reduce: every rank logs the global mean, and a NaN or inf on any rank reaches all of them,
    # so all skip (or stop at) the same step and their collectives stay paired
    values = _as_floats(losses)
    if not math.isfinite(values["loss"]):
        raise FloatingPointError(f"loss is {values['loss']} (mean over the processes): {values}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    if grad_clip.norm or grad_clip.value:
        scaler.unscale_(optimizer)
        grad_clip(model.parameters())
    scaler.step(optimizer)
    scaler.update()
    return values


def train_one_epoch(
    model,
    data_loader,
    optimizer,
    lr_scheduler,
    scaler,
    device: torch.device,
    epoch: int,
    writer: SummaryWriter | None = None,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    grad_clip: GradClip = NO_CLIP,
    show_progress: bool = True,
    skip_nonfinite: bool = False,
    batch_transform=None,
) -> dict:
    """One pass over ``data_loader``; the LR scheduler steps every iteration. ``batch_transform(images,
    targets) -> (images, targets)`` acts on the device batch before the step (task=classify: label
    smoothing and classification mixup); detection does its tricks in the data loader.

    Returns the mean of each loss term and the images/s."""
    model.train()
    totals, num_images, start = defaultdict(float), 0, time.perf_counter()
    iters_per_epoch = len(data_loader)
    progress = tqdm(
        data_loader, desc=f"epoch {epoch}", leave=False, disable=not show_progress, dynamic_ncols=True
    )
    bad_samples = nonfinite_skipped = 0
    for i, (images, targets) in enumerate(progress):
        step = epoch * iters_per_epoch + i
        if isinstance(targets, list):  # detection: data.on_bad_sample=skip replacements
            bad_samples += sum(t.get("skipped", 0) for t in targets)
        images, targets = prepare_batch(images, targets, device, channels_last)
        if batch_transform is not None:
            images, targets = batch_transform(images, targets)
        input_size = tuple(images.shape[-2:]) if torch.is_tensor(images) else tuple(images[0].shape[-2:])
        lr = optimizer.param_groups[0]["lr"]
        try:
            values = train_step(model, images, targets, optimizer, scaler, amp, grad_clip)
        except FloatingPointError as error:  # raised before the step: the weights are still good
            if not skip_nonfinite:
                raise FloatingPointError(
                    f"epoch {epoch + 1} iteration {i} (global {step}): {error}; the last good checkpoint "
                    "is intact (trainer.skip_nonfinite=true skips such steps instead)"
                ) from None
            log.warning("epoch %d iteration %d: %s; step skipped", epoch + 1, i, error)
            nonfinite_skipped += 1
            lr_scheduler.step()
            continue
        lr_scheduler.step()

        for k, v in values.items():
            totals[k] += v
        num_images += len(images)
        if writer is not None:
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/input_size", input_size[0], step)
            for k, v in values.items():
                writer.add_scalar(f"train/{k}", v, step)
        images_per_s = num_images / (time.perf_counter() - start)
        progress.set_postfix(
            loss=f"{values['loss']:.2f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}", refresh=False
        )
    elapsed = time.perf_counter() - start
    metrics = {k: v / max(iters_per_epoch, 1) for k, v in totals.items()}
    metrics["images_per_s"] = num_images / max(elapsed, 1e-9)
    metrics["bad_samples"] = bad_samples
    metrics["nonfinite_skipped"] = nonfinite_skipped
    return metrics


@torch.no_grad()
def evaluate(
    model,
    data_loader,
    evaluator,
    device: torch.device,
    class_names,
    channels_last: bool = False,
    amp: torch.dtype | None = None,
    num_images_to_draw: int = 0,
    show_progress: bool = True,
) -> tuple[dict, object, list[torch.Tensor]]:
    """mAP of ``model`` on the loader's images, this process's shard of them, gathered over all
    processes into ``evaluator`` (a fresh one holding the ground truth, from ``build_evaluator``).
    Detections are mapped from the square network input back to the original image frame.
    Returns (metrics, evaluator holding the detections, drawn images uint8 [3, S, S]).
    """
    model.eval()
    drawn, found = [], []
    for images_u8, targets in tqdm(data_loader, desc="eval", leave=False, disable=not show_progress):
        images, _ = prepare_batch(images_u8, [], device, channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            detections = model(images)  # boxes in the network input's frame
        for image_u8, target, det in zip(images_u8, targets, detections, strict=True):
            height, width = target["orig_size"]
            size_h, size_w = image_u8.shape[-2:]
            scale = torch.tensor([width / size_w, height / size_h] * 2, device=det["boxes"].device)
            boxes = (det["boxes"] * scale).cpu()  # xyxy pixels of the original image
            found.append((target["image_id"], boxes, det["scores"].cpu(), det["labels"].cpu()))
            if len(drawn) < num_images_to_draw:
                drawn.append(draw_detections(image_u8, det, target, class_names))
    # each process saw its own shard of the images: every process gets every detection, so the mAP is
    # the same on all of them and does not depend on their number
    for shard in distributed.all_gather_objects(found):
        for image_id, boxes, scores, labels in shard:
            evaluator.add_detections(image_id, boxes, scores, labels)
    metrics = evaluator.compute()
    return metrics, evaluator, drawn


def _as_floats(losses: dict) -> dict[str, float]:
    """The loss terms' means over all processes, in one all-reduce and one device-to-host copy."""
    values = distributed.all_mean(torch.stack([v.detach().float() for v in losses.values()])).tolist()
    return dict(zip(losses, values, strict=True))

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

from bof.engine.optim import Optimization
from bof.engine.run_setup import Run
from bof.utils import distributed
from bof.utils.boxes import normalize_batch
from bof.utils.drawing import draw_detections

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
) -> tuple[list[str], torch.Tensor]:
    """Forward, loss, backward (AMP-scaled), optional gradient clipping, optimizer step. ``model(images,
    targets)`` returns its loss terms (torchvision's detector interface: YOLOv3Detector, Faster R-CNN).

    Returns (the terms' names, a device tensor of their means over the processes followed by 1 if the
    step was applied, 0 if not). Nothing waits for the device: a loss that is NaN or inf on any process
    (one all-reduce brings it to every process) skips the update on the device, in a fused optimizer
    (``optimizer.fused``, as GradScaler's ``found_inf`` does) or, in fp16, by GradScaler itself. Only an
    optimizer that cannot skip on the device makes the step wait for the host's check."""
    device_type = (images[0] if isinstance(images, list) else images).device.type
    with torch.autocast(device_type, dtype=amp, enabled=amp is not None):
        losses = model(images, targets)
        if "loss" not in losses:  # torchvision's detectors return the terms only
            losses["loss"] = sum(losses.values())
    terms = distributed.all_mean(torch.stack([v.detach().float() for v in losses.values()]))
    finite = torch.isfinite(terms).all()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    if grad_clip.norm or grad_clip.value:
        scaler.unscale_(optimizer)
        grad_clip(model.parameters())
    if scaler.is_enabled():  # fp16: GradScaler skips a step whose gradients are not finite
        scaler.step(optimizer)
        scaler.update()
    elif getattr(optimizer, "_step_supports_amp_scaling", False):  # fused: the kernel skips on found_inf
        optimizer.grad_scale, optimizer.found_inf = None, (~finite).float()
        optimizer.step()
        del optimizer.grad_scale, optimizer.found_inf
    elif finite:  # a host synchronisation, every step
        optimizer.step()
    return list(losses), torch.cat([terms, finite.float()[None]])


def train_one_epoch(
    model,
    data_loader,
    optimization: Optimization,
    run: Run,
    epoch: int,
    writer: SummaryWriter | None = None,
    batch_transform=None,
) -> dict:
    """One pass over ``data_loader``; the LR scheduler steps every iteration. ``batch_transform(images,
    targets) -> (images, targets)`` acts on the device batch before the step (task=classify: label
    smoothing and classification mixup); detection does its tricks in the data loader.

    The loss terms stay on the device and reach the host together every ``log_interval`` iterations
    (and at the end): TensorBoard still gets every iteration, and a non-finite loss, never applied to
    the weights, is reported (or, ``skip_nonfinite=false``, raised) at that point, naming its iteration.

    Every ``trainer`` key means the same for both recipes: ``amp`` and ``channels_last`` (on CUDA),
    ``grad_clip``/``grad_clip_value``, ``skip_nonfinite``, ``max_skipped_steps``, ``log_interval``,
    ``progress`` (rank 0 only).

    Returns the mean of each loss term over the applied steps, the images, the seconds and the images/s
    of this process."""
    trainer, (optimizer, lr_scheduler, scaler) = run.trainer, optimization
    grad_clip, log_interval = GradClip.of(trainer), trainer.log_interval
    device, amp, channels_last = run.device, run.amp, run.channels_last  # once, not per step
    model.train()
    log_ = _StepLog(model, epoch, len(data_loader), writer, trainer.skip_nonfinite, trainer.max_skipped_steps)
    num_images, start = 0, time.perf_counter()
    progress = tqdm(
        data_loader,
        desc=f"epoch {epoch}",
        leave=False,
        disable=not (trainer.progress and run.main_process),
        dynamic_ncols=True,
    )
    bad_samples = 0
    for i, (images, targets) in enumerate(progress):
        if isinstance(targets, list):  # detection: data.on_bad_sample=skip replacements
            bad_samples += sum(t.get("skipped", 0) for t in targets)
        images, targets = prepare_batch(images, targets, device, channels_last)
        if batch_transform is not None:
            images, targets = batch_transform(images, targets)
        input_size = tuple(images.shape[-2:]) if torch.is_tensor(images) else tuple(images[0].shape[-2:])
        lr = optimizer.param_groups[0]["lr"]
        names, values = train_step(model, images, targets, optimizer, scaler, amp, grad_clip)
        lr_scheduler.step()
        num_images += len(images)
        log_.add(i, lr, input_size[0], names, values)
        if (i + 1) % log_interval == 0 or i + 1 == len(data_loader):
            last = log_.flush()
            images_per_s = num_images / (time.perf_counter() - start)
            progress.set_postfix(
                loss=f"{last:.2f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}", refresh=False
            )
    metrics = log_.means()
    metrics["images"], metrics["train_time_s"] = num_images, time.perf_counter() - start
    metrics["images_per_s"] = num_images / max(metrics["train_time_s"], 1e-9)
    metrics["bad_samples"] = bad_samples
    metrics["nonfinite_skipped"] = log_.skipped
    return metrics


class _StepLog:
    """The device tensors of the steps since the last flush; a flush copies them to the host at once,
    writes them to TensorBoard, adds them up and deals with the non-finite ones.

    A non-finite step's update is never applied, but its forward pass has already moved the BatchNorm
    running statistics towards NaN: a flush that finds one puts them back as they were at the previous
    flush (the good steps' moving-average updates in between are lost, a few of thousands)."""

    def __init__(
        self, model, epoch: int, iters_per_epoch: int, writer, skip_nonfinite: bool, max_skipped: int
    ):
        self.epoch, self.iters_per_epoch, self.writer = epoch, iters_per_epoch, writer
        self.skip_nonfinite, self.max_skipped, self.in_a_row = skip_nonfinite, max_skipped, 0
        self.pending, self.totals, self.applied, self.skipped = [], defaultdict(float), 0, 0
        self.buffers = [b for b in model.buffers() if b.is_floating_point()]
        self.saved = [b.clone() for b in self.buffers]

    def add(self, i: int, lr: float, input_size: int, names: list[str], values: torch.Tensor) -> None:
        self.names = names
        self.pending.append((i, lr, input_size, values))

    def flush(self) -> float:
        """-> the last applied step's loss (nan if none)."""
        rows = torch.stack([values for *_, values in self.pending]).tolist()  # the one host transfer
        if all(row[-1] for row in rows):
            torch._foreach_copy_(self.saved, self.buffers)
        elif self.buffers:
            torch._foreach_copy_(self.buffers, self.saved)
        last = math.nan
        for (i, lr, input_size, _), row in zip(self.pending, rows, strict=True):
            step, (*terms, applied) = self.epoch * self.iters_per_epoch + i, row
            if not applied:
                self._nonfinite(i, step, dict(zip(self.names, terms, strict=True)))
                continue
            self.applied, self.in_a_row = self.applied + 1, 0
            last = terms[-1]
            for name, value in zip(self.names, terms, strict=True):
                self.totals[name] += value
            if self.writer is not None:
                self.writer.add_scalar("train/lr", lr, step)
                self.writer.add_scalar("train/input_size", input_size, step)
                for name, value in zip(self.names, terms, strict=True):
                    self.writer.add_scalar(f"train/{name}", value, step)
        self.pending = []
        return last

    def _nonfinite(self, i: int, step: int, terms: dict) -> None:
        where = f"epoch {self.epoch + 1} iteration {i} (global {step})"
        error = f"loss is {terms['loss']} (mean over the processes): {terms}"
        if not self.skip_nonfinite:  # the step was not applied: the weights and last checkpoint are good
            raise FloatingPointError(
                f"{where}: {error}; the last good checkpoint is intact "
                "(trainer.skip_nonfinite=true skips such steps instead)"
            )
        log.warning("%s: %s; step skipped", where, error)
        self.skipped, self.in_a_row = self.skipped + 1, self.in_a_row + 1
        if self.in_a_row >= self.max_skipped:
            raise FloatingPointError(
                f"{where}: {self.in_a_row} steps in a row had a non-finite loss (trainer.max_skipped_steps="
                f"{self.max_skipped}): stopping; the last good checkpoint is intact (a lower optimizer.lr?)"
            )

    def means(self) -> dict:
        return {name: total / max(self.applied, 1) for name, total in self.totals.items()}


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
    """mAP of ``model`` on the loader's images, this process's shard of them, gathered from all
    processes into rank 0's ``evaluator`` (a fresh one holding the ground truth, from ``build_evaluator``).
    Detections are mapped from the square network input back to the original image frame.
    Returns (metrics, the same on every rank; evaluator, holding the detections on rank 0 only; drawn
    images uint8 [3, S, S]).
    """
    model.eval()
    drawn, found, dropped = [], [], []
    for images_u8, targets, bad in tqdm(data_loader, desc="eval", leave=False, disable=not show_progress):
        dropped += bad  # with data.on_bad_sample=skip: out of the evaluation, ground truth included
        if not targets:
            continue
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
    # each process saw its own shard of the images: rank 0 gets every detection and scores them alone (the
    # others would hold the ground truth and run COCOeval for nothing), then every rank gets its numbers
    gathered, metrics = distributed.gather_objects((found, dropped)), None
    if gathered is not None:
        all_dropped = []
        for shard, bad in gathered:
            for image_id, boxes, scores, labels in shard:
                evaluator.add_detections(image_id, boxes, scores, labels)
            all_dropped += bad
        if all_dropped:
            log.warning(
                "%d bad validation images left out of the evaluation: %s", len(all_dropped), all_dropped[:5]
            )
            evaluator.exclude(all_dropped)
        metrics = {**evaluator.compute(), "dropped_images": len(all_dropped)}
    metrics = distributed.from_rank0(metrics)
    return metrics, evaluator, drawn

"""``bof-train task=classify``: backbone pretraining (paper section 4.3, Tables 5 and 6), read top to bottom.

Trains the backbone of the configured detector (``model``) as an image classifier on an ImageFolder
data set (``data=imagenet`` or ``data=synthetic_cls``), with the standard ImageNet augmentation (random
resized crop, flip, colour jitter; evaluation: resize, centre crop) and the tricks that apply:
``mixup=classification`` (Zhang et al.), ``smoothing=on`` (softmax rule), ``lr_schedule``, ``syncbn``,
and data parallelism as for detection. Top-1 and top-5 accuracy go to TensorBoard and metrics.json;
``last.pt`` then feeds detection through ``model.backbone_checkpoint``.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from torchvision.transforms import v2

from bof.config import check_paper_setup
from bof.data.image_folder import PCALighting
from bof.engine.loops import GradClip, train_one_epoch
from bof.engine.optim import param_groups
from bof.engine.run_setup import (
    StopSignal,
    autocast_dtype,
    build_dataset,
    build_tricks,
    compiled,
    data_parallel,
    end_of_epoch,
    resume_path,
    start_run,
)
from bof.models.classifiers import SoftTargetClassifier, build_classifier
from bof.tricks.label_smoothing import softmax_targets
from bof.tricks.lr_schedule import build_lr_scheduler
from bof.tricks.mixup import ClassificationMixup, mixup_batch
from bof.utils import distributed
from bof.utils.atomic import write_json_atomically
from bof.utils.boxes import normalize_batch
from bof.utils.checkpoint import CheckpointWriter, checkpoint_state, restore
from bof.utils.fingerprint import finished_run

log = logging.getLogger("bof.classify")


def imagenet_transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """(train, eval) -> uint8 [3, size, size]; normalisation happens on the device, as for detection."""
    train = v2.Compose([
        v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.4, 0.4, 0.4), PCALighting(0.1),  # GluonCV train_imagenet.py's jitter and lighting
    ])  # fmt: skip
    evaluate = v2.Compose([v2.ToImage(), v2.Resize(round(size / 0.875), antialias=True), v2.CenterCrop(size)])
    return train, evaluate


class SoftTargets:
    """The batch hook of ``task=classify`` (``train_one_epoch``'s ``batch_transform``): class labels [B]
    -> smoothed one-hot targets [B, K] (softmax rule), then classification mixup of the images and
    targets in the epochs where it is on; lambdas and partners from one rng per epoch and process."""

    def __init__(self, num_classes: int, tricks, seed: int, rank: int, epochs: int):
        self.num_classes, self.mixup, self.seed, self.rank, self.epochs = (
            num_classes,
            tricks.mixup,
            seed,
            rank,
            epochs,
        )
        self.epsilon = tricks.smoothing.softmax_epsilon() if tricks.smoothing is not None else 0.0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.mixing = self.mixup is not None and self.mixup.active(epoch, self.epochs)
        self.rng = np.random.default_rng([self.seed, epoch, self.rank])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = softmax_targets(labels, self.num_classes, self.epsilon)
        if self.mixing:
            images, targets = mixup_batch(images, targets, *self.mixup.draw(self.rng, len(images)))
        return images, targets


def train_classifier(cfg: DictConfig) -> dict:
    trainer, out_dir, device, rank, world_size, local_rank = start_run(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if (done := finished_run(trainer, resolved, out_dir)) is not None:
        return done
    check_paper_setup(cfg.get("paper_setup"), world_size, trainer.batch_size // world_size)
    main_process = rank == 0
    tricks = build_tricks(cfg)
    if tricks.mixup is not None and not isinstance(tricks.mixup, ClassificationMixup):
        raise ValueError("task=classify takes mixup=classification or mixup=off, not detection mixup")

    # data: ImageFolder with the ImageNet augmentation; every process its share
    train_tf, eval_tf = imagenet_transforms(cfg.data.image_size)
    train_set, val_set = build_dataset(cfg.data.train), build_dataset(cfg.data.val)
    train_set.transform, val_set.transform = train_tf, eval_tf
    num_classes = len(train_set.classes)
    batch = trainer.batch_size // world_size
    sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    train_loader = DataLoader(
        train_set, batch, sampler=sampler, num_workers=trainer.num_workers, drop_last=True
    )
    val_loader = DataLoader(
        torch.utils.data.Subset(val_set, range(rank, len(val_set), world_size)), batch,
        num_workers=min(trainer.num_workers, 2),
    )  # fmt: skip

    # model: the detector's backbone with a classification head (behind the detectors' interface);
    # syncbn before DDP
    on_cuda = device.type == "cuda"
    amp, channels_last = autocast_dtype(trainer.amp, device), trainer.channels_last and on_cuda
    classifier = SoftTargetClassifier(build_classifier(cfg.model.net, num_classes)).to(device)
    if channels_last:
        classifier = classifier.to(memory_format=torch.channels_last)
    model, model_without_ddp = data_parallel(classifier, tricks.syncbn, device, world_size, local_rank)
    model = compiled(model, trainer.compile, device)
    optimizer = instantiate(cfg.optimizer, _partial_=True)(
        param_groups(model, cfg.optimizer.weight_decay, trainer.no_wd)
    )
    lr_scheduler = build_lr_scheduler(optimizer, tricks.lr_schedule, len(train_loader), trainer.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # bf16 needs no scaling
    soft_targets = SoftTargets(num_classes, tricks, cfg.seed, rank, trainer.epochs)
    log.info(
        "task=classify: %s, %d classes, %d train / %d val images, %d iterations/epoch | %s | smoothing %s",
        type(classifier.net).__name__, num_classes, len(train_set), len(val_set), len(train_loader),
        "mixup off" if tricks.mixup is None else tricks.mixup.describe(trainer.epochs), soft_targets.epsilon,
    )  # fmt: skip
    if trainer.dry_run:
        return {"dry_run": True, "num_classes": num_classes, "iters_per_epoch": len(train_loader)}

    # the checkpoint holds the classifier itself (backbone + head), what model.backbone_checkpoint reads
    checkpoint_path = resume_path(trainer.resume, out_dir)
    start_epoch, best_top1, _ = restore(
        checkpoint_path, classifier.net, optimizer, lr_scheduler, scaler, resolved
    )

    writer = SummaryWriter(str(out_dir / "tensorboard")) if main_process else None
    started, metrics, loss_value = time.perf_counter(), {}, float("nan")
    saver, stop = CheckpointWriter(), StopSignal()
    try:  # the pending checkpoint is written and the signal handlers restored however the loop ends
        for epoch in range(start_epoch, trainer.epochs):
            sampler.set_epoch(epoch)
            soft_targets.set_epoch(epoch)
            train_metrics = train_one_epoch(  # the detection loop: every trainer key means the same
                model, train_loader, optimizer, lr_scheduler, scaler, device, epoch, writer, amp=amp,
                channels_last=channels_last, grad_clip=GradClip.of(trainer),
                show_progress=trainer.progress and main_process, skip_nonfinite=trainer.skip_nonfinite,
                log_interval=trainer.log_interval, max_skipped_steps=trainer.max_skipped_steps,
                batch_transform=soft_targets,
            )  # fmt: skip
            loss_value = train_metrics.get("loss", float("nan"))
            metrics = accuracy(model_without_ddp, val_loader, device)
            log.info("epoch %d/%d: loss %.3f | top-1 %.4f top-5 %.4f", epoch + 1, trainer.epochs, loss_value,
                     metrics["top1"], metrics["top5"])  # fmt: skip
            if main_process:
                writer.add_scalar("val/top1", metrics["top1"], epoch + 1)
                writer.add_scalar("val/top5", metrics["top5"], epoch + 1)
                best_top1 = max(best_top1, metrics["top1"])
                state = checkpoint_state(
                    classifier.net, optimizer, lr_scheduler, scaler, epoch, best_top1, resolved
                )
                if metrics["top1"] >= best_top1:
                    saver.save(state, out_dir / "best.pt")
            last = partial(saver.save, state, out_dir / "last.pt") if main_process else None
            end_of_epoch(trainer, epoch, stop, last)
    finally:
        stop.release()
        saver.wait()
    result = {**metrics, "best_top1": best_top1, "train_loss": loss_value, "task": "classify",
              "world_size": world_size, "batch_per_process": trainer.batch_size // world_size,
              "wall_time_s": time.perf_counter() - started, "config": resolved}  # fmt: skip
    if main_process:
        writer.close()
        write_json_atomically(out_dir / "metrics.json", result)
        log.info("final top-1 %.4f, top-5 %.4f; backbone checkpoint %s", metrics.get("top1", float("nan")),
                 metrics.get("top5", float("nan")), out_dir / "last.pt")  # fmt: skip
    return result


@torch.no_grad()
def accuracy(model, loader, device) -> dict:
    """Top-1 and top-5 accuracy over every process's shard (summed over processes)."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    for images, labels in loader:
        logits = model(normalize_batch(images.to(device))).cpu()
        top5 = logits.topk(min(5, logits.shape[1]), 1).indices
        counts += torch.tensor(
            [(top5[:, 0] == labels).sum(), (top5 == labels[:, None]).any(1).sum(), len(labels)]
        )
    totals = sum(distributed.all_gather_objects(counts))
    return {"top1": float(totals[0] / totals[2]), "top5": float(totals[1] / totals[2])}

"""``bof-train task=classify``: backbone pretraining (paper section 4.3, Tables 5 and 6), read top to bottom.

Trains the backbone of the configured detector (``model``) as an image classifier on an ImageFolder
data set (``data=imagenet`` or ``data=synthetic_cls``), with the standard ImageNet augmentation (random
resized crop, flip, colour jitter; evaluation: resize, centre crop) and the tricks that apply:
``mixup=classification`` (Zhang et al.), ``smoothing=on`` (softmax rule), ``lr_schedule``, ``syncbn``,
and data parallelism as for detection. Top-1 and top-5 accuracy go to TensorBoard and metrics.json;
``last.pt`` then feeds detection through ``model.backbone_checkpoint``.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from torchvision.transforms import v2
from tqdm import tqdm

from bof import distributed
from bof.boxes import normalize_batch
from bof.checkpoint import checkpoint_state, restore, save_checkpoint
from bof.config import check_paper_setup
from bof.models.classifiers import build_classifier
from bof.optim import param_groups
from bof.run import build_tricks, data_parallel, resume_path, start_run
from bof.tricks.label_smoothing import softmax_targets
from bof.tricks.lr_schedule import build_lr_scheduler
from bof.tricks.mixup import ClassificationMixup, mixup_batch

log = logging.getLogger("bof.classify")


def imagenet_transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """(train, eval) -> uint8 [3, size, size]; normalisation happens on the device, as for detection."""
    train = v2.Compose([
        v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.4, 0.4, 0.4),
    ])  # fmt: skip
    evaluate = v2.Compose([v2.ToImage(), v2.Resize(round(size / 0.875), antialias=True), v2.CenterCrop(size)])
    return train, evaluate


def train_classifier(cfg: DictConfig) -> dict:
    trainer, out_dir, device, rank, world_size, local_rank = start_run(cfg)
    check_paper_setup(cfg.get("paper_setup"), world_size, trainer.batch_size // world_size)
    main_process = rank == 0
    tricks = build_tricks(cfg)
    if tricks.mixup is not None and not isinstance(tricks.mixup, ClassificationMixup):
        raise ValueError("task=classify takes mixup=classification or mixup=off, not detection mixup")

    # data: ImageFolder with the ImageNet augmentation; every process its share
    train_tf, eval_tf = imagenet_transforms(cfg.data.image_size)
    train_set, val_set = instantiate(cfg.data.train), instantiate(cfg.data.val)
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

    # model: the detector's backbone with a classification head; syncbn before DDP
    model, model_without_ddp = data_parallel(
        build_classifier(cfg.model.net, num_classes).to(device), tricks.syncbn, device, world_size, local_rank
    )
    optimizer = instantiate(cfg.optimizer, _partial_=True)(
        param_groups(model, cfg.optimizer.weight_decay, trainer.no_wd)
    )
    lr_scheduler = build_lr_scheduler(optimizer, tricks.lr_schedule, len(train_loader), trainer.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    epsilon = tricks.smoothing.softmax_epsilon() if tricks.smoothing is not None else 0.0
    resolved = OmegaConf.to_container(cfg, resolve=True)
    log.info(
        "task=classify: %s, %d classes, %d train / %d val images, %d iterations/epoch | %s | smoothing %s",
        type(model_without_ddp).__name__, num_classes, len(train_set), len(val_set), len(train_loader),
        "mixup off" if tricks.mixup is None else tricks.mixup.describe(trainer.epochs), epsilon,
    )  # fmt: skip
    if trainer.dry_run:
        return {"dry_run": True, "num_classes": num_classes, "iters_per_epoch": len(train_loader)}

    checkpoint_path = resume_path(trainer.resume, out_dir)
    start_epoch, best_top1 = restore(checkpoint_path, model_without_ddp, optimizer, lr_scheduler, scaler)

    writer = SummaryWriter(str(out_dir / "tensorboard")) if main_process else None
    started, metrics, loss_value = time.perf_counter(), {}, float("nan")
    for epoch in range(start_epoch, trainer.epochs):
        sampler.set_epoch(epoch)
        model.train()
        mixing = tricks.mixup is not None and tricks.mixup.active(epoch, trainer.epochs)
        rng = np.random.default_rng([cfg.seed, epoch, rank])  # mixup's lambdas and partners
        progress = tqdm(
            train_loader, desc=f"epoch {epoch}", leave=False, disable=not (trainer.progress and main_process)
        )
        for i, (images, labels) in enumerate(progress):
            images, labels = normalize_batch(images.to(device)), labels.to(device)
            # label smoothing (softmax rule over K classes), then mixup of images and targets
            targets = softmax_targets(labels, num_classes, epsilon)
            if mixing:
                images, targets = mixup_batch(images, targets, *tricks.mixup.draw(rng, len(images)))
            loss = torch.sum(-targets * F.log_softmax(model(images), 1), 1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            loss_value = loss.item()
            if writer is not None:
                step = epoch * len(train_loader) + i
                writer.add_scalar("train/loss", loss_value, step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
        metrics = accuracy(model_without_ddp, val_loader, device)
        log.info("epoch %d/%d: loss %.3f | top-1 %.4f top-5 %.4f", epoch + 1, trainer.epochs, loss_value,
                 metrics["top1"], metrics["top5"])  # fmt: skip
        if main_process:
            writer.add_scalar("val/top1", metrics["top1"], epoch + 1)
            writer.add_scalar("val/top5", metrics["top5"], epoch + 1)
            best_top1 = max(best_top1, metrics["top1"])
            state = checkpoint_state(
                model_without_ddp, optimizer, lr_scheduler, scaler, epoch, best_top1, resolved
            )
            save_checkpoint(state, out_dir / "last.pt")
            if metrics["top1"] >= best_top1:
                save_checkpoint(state, out_dir / "best.pt")
    result = {**metrics, "best_top1": best_top1, "train_loss": loss_value, "task": "classify",
              "world_size": world_size, "batch_per_process": trainer.batch_size // world_size,
              "wall_time_s": time.perf_counter() - started, "config": resolved}  # fmt: skip
    if main_process:
        writer.close()
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
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

"""``bof-train task=classify``: backbone pretraining (paper section 4.3, Tables 5 and 6), read top to bottom.

Trains the backbone of the configured detector (``model``) as an image classifier on an ImageFolder
data set (``data=imagenet`` or ``data=synthetic_cls``), with the standard ImageNet augmentation (random
resized crop, flip, colour jitter; evaluation: resize, centre crop) and the tricks that apply:
``mixup=classification`` (Zhang et al.), ``smoothing=on`` (softmax rule), ``lr_schedule``, ``syncbn``,
and data parallelism as for detection. Top-1 and top-5 accuracy go to TensorBoard and metrics.json;
``last.pt`` then feeds detection through ``model.backbone_checkpoint``.
"""

from __future__ import annotations

import gc
import logging
from contextlib import ExitStack

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import v2

from bof.config import check_paper_setup
from bof.data.image_folder import PCALighting
from bof.data.loader import ignore_stop_signals, worker_context
from bof.engine.epochs import Epochs, RunCounts
from bof.engine.loops import train_one_epoch
from bof.engine.optim import build_optimization
from bof.engine.run_log import EventWriter, epoch_step
from bof.engine.run_setup import build_dataset, build_tricks, compiled, data_parallel, resume_path, start_run
from bof.models.classifiers import SoftTargetClassifier, build_classifier
from bof.tricks.label_smoothing import softmax_targets
from bof.tricks.mixup import ClassificationMixup, mixup_batch
from bof.utils import distributed
from bof.utils.boxes import normalize_batch
from bof.utils.checkpoint import restore
from bof.utils.fingerprint import finished_run

log = logging.getLogger("bof.classify")


def imagenet_transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """(train, eval) -> uint8 [3, size, size]; normalisation happens on the device, as for detection."""
    train = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.4, 0.4, 0.4),
            PCALighting(0.1),  # GluonCV train_imagenet.py's jitter and lighting
        ]
    )
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


def train_classifier(cfg: DictConfig, job: ExitStack) -> dict:
    """The classification recipe; ``job`` holds the run directory's lock until the job ends."""
    run = start_run(cfg, job)
    trainer, out_dir = run.trainer, run.out_dir
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if (done := finished_run(trainer, resolved, out_dir)) is not None:
        return done
    check_paper_setup(cfg.get("paper_setup"), run.world_size, run.batch_per_process)
    tricks = build_tricks(cfg)
    if tricks.mixup is not None and not isinstance(tricks.mixup, ClassificationMixup):
        raise ValueError("task=classify takes mixup=classification or mixup=off, not detection mixup")

    # data: ImageFolder with the ImageNet augmentation; every process its share
    train_tf, eval_tf = imagenet_transforms(cfg.data.image_size)
    train_set, val_set = build_dataset(cfg.data.train), build_dataset(cfg.data.val)
    train_set.transform, val_set.transform = train_tf, eval_tf
    gc.freeze()  # as in bof.train: a worker's full collection would copy the data sets' pages into it
    num_classes = len(train_set.classes)
    sampler = DistributedSampler(
        train_set, run.world_size, run.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    train_loader = DataLoader(
        train_set,
        run.batch_per_process,
        sampler=sampler,
        num_workers=trainer.num_workers,
        drop_last=True,
        multiprocessing_context=worker_context(trainer.worker_start_method, trainer.num_workers),
        worker_init_fn=ignore_stop_signals,
    )
    val_shard = torch.utils.data.Subset(val_set, range(run.rank, len(val_set), run.world_size))
    val_workers = min(trainer.num_workers, 2)
    val_loader = DataLoader(
        val_shard,
        run.batch_per_process,
        num_workers=val_workers,
        multiprocessing_context=worker_context(trainer.worker_start_method, val_workers),
        worker_init_fn=ignore_stop_signals,
    )

    # model: the detector's backbone with a classification head (behind the detectors' interface);
    # syncbn before DDP
    classifier = SoftTargetClassifier(build_classifier(cfg.model.net, num_classes)).to(run.device)
    if run.channels_last:
        classifier = classifier.to(memory_format=torch.channels_last)
    model, model_without_ddp = data_parallel(
        classifier, tricks.syncbn, run.device, run.world_size, run.local_rank
    )
    model = compiled(model, trainer.compile, run.device)
    optimization = build_optimization(cfg, model, run, tricks.lr_schedule, len(train_loader))
    soft_targets = SoftTargets(num_classes, tricks, cfg.seed, run.rank, trainer.epochs)
    log.info(
        "task=classify: %s, %d classes, %d train / %d val images, %d iterations/epoch | %s | smoothing %s",
        type(classifier.net).__name__,
        num_classes,
        len(train_set),
        len(val_set),
        len(train_loader),
        "mixup off" if tricks.mixup is None else tricks.mixup.describe(trainer.epochs),
        soft_targets.epsilon,
    )
    if trainer.dry_run:
        return {"dry_run": True, "num_classes": num_classes, "iters_per_epoch": len(train_loader)}

    # the checkpoint holds the classifier itself (backbone + head), what model.backbone_checkpoint reads
    start_epoch, best_top1, counts = restore(
        resume_path(trainer.resume, out_dir), classifier.net, *optimization, resolved
    )
    counts = RunCounts(counts, run.world_size)
    epochs = Epochs(run, classifier.net, optimization, resolved, counts, "top1", start_epoch, best_top1)
    iters_per_epoch = len(train_loader)
    # as detection's writer (bof.engine.run_log.open_writer): a resumed run drops what its interrupted part
    # wrote after its checkpoint, a fresh run what an earlier one wrote; each epoch's evaluation at the
    # step of its last iteration
    writer = None
    if run.main_process:
        writer = EventWriter(str(out_dir / "tensorboard"), purge_step=start_epoch * iters_per_epoch)
    train_metrics = {}

    def train_epoch(epoch: int) -> None:
        sampler.set_epoch(epoch)
        soft_targets.set_epoch(epoch)
        # the detection loop: every trainer key means the same
        train_metrics.update(
            train_one_epoch(
                model, train_loader, optimization, run, epoch, writer, batch_transform=soft_targets
            )
        )
        counts.add_epoch(train_metrics)
        log.info(
            "epoch %d/%d: loss %.3f, %.1f images/s",
            epoch + 1,
            trainer.epochs,
            train_metrics.get("loss", float("nan")),
            train_metrics["images_per_s"],
        )

    def validate(epoch: int) -> dict:
        metrics = accuracy(model_without_ddp, val_loader, run.device)
        log.info(
            "epoch %d/%d: top-1 %.4f top-5 %.4f", epoch + 1, trainer.epochs, metrics["top1"], metrics["top5"]
        )
        if writer is not None and epoch >= start_epoch:  # before: logged by the run before its checkpoint
            writer.add_scalar("val/top1", metrics["top1"], epoch_step(epoch, iters_per_epoch))
            writer.add_scalar("val/top5", metrics["top5"], epoch_step(epoch, iters_per_epoch))
        return metrics

    metrics = epochs.run_all(train_epoch, validate)
    result = {
        **metrics,
        "best_top1": epochs.best,
        "train_loss": counts.train_loss,  # the last epoch's, also when recovered from last.pt
        "task": "classify",
        "world_size": run.world_size,
        "batch_per_process": run.batch_per_process,
        "wall_time_s": counts.wall_time_s,
        "images_per_s": counts.mean_images_per_s,
        "train_time_s": counts.train_time_s,
        "nonfinite_steps_skipped": counts.nonfinite_skipped,
        "config": resolved,
    }
    if writer is not None:
        writer.close()
    epochs.finish(result)
    if run.main_process:
        log.info(
            "final top-1 %.4f, top-5 %.4f; backbone checkpoint %s",
            metrics.get("top1", float("nan")),
            metrics.get("top5", float("nan")),
            out_dir / "last.pt",
        )
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

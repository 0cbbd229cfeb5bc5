"""bof-train: the training recipe, read top to bottom.

seed -> device -> tricks -> data -> model -> optimizer -> LR schedule -> resume -> epochs (train,
evaluate, checkpoint) -> final metrics. Each trick of the bag of freebies is built from its own config
group (None when off) and handed to the one place where it acts: augmentation, mixup and random shapes
to the data loaders, label smoothing to the criterion, the LR schedule to the scheduler.

``main`` is the Hydra entry point; ``train(cfg)`` is the testable recipe and the only place that reads
the whole config: every component is built by ``hydra.utils.instantiate`` from its own group, so
config keys are constructor arguments.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from bof import distributed
from bof.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from bof.config import validate_trainer
from bof.data.loader import build_data_loader
from bof.data.transforms import Resize
from bof.engine import evaluate, train_one_epoch
from bof.evaluation.coco_eval import STAT_NAMES as COCO_STATS
from bof.models.classifiers import load_backbone
from bof.optim import param_groups
from bof.tricks.label_smoothing import LabelSmoothing
from bof.tricks.lr_schedule import CosineSchedule, StepSchedule, build_lr_scheduler
from bof.tricks.mixup import DetectionMixup
from bof.tricks.random_shapes import FixedShape, RandomShapes
from bof.tricks.syncbn import SyncBatchNorm
from bof.visualize import draw_training_samples, lr_curve_figure, save_png

log = logging.getLogger("bof.train")
METRIC_NAMES = {"voc07": "VOC07 mAP", "area": "VOC area mAP", "coco": "COCO AP@[.5:.95]"}
# conf/ at the repository root (the package is installed editable, as the Makefile does)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def run_name(timestamp: str) -> str:
    """The name of Hydra's run directory (``hydra.run.dir`` in conf/train.yaml): the timestamp, except
    under torchrun, whose processes each compose the config at slightly different times and would each
    make their own timestamped directory (the known Hydra + DDP problem). There every process takes
    torchrun's run id instead: the ``--rdzv-id`` of a multi-node job or the random id of ``--standalone``."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return timestamp
    if run_id == "none":
        raise ValueError(
            "under torchrun every process needs the same run directory: pass torchrun --standalone "
            "(one node) or --rdzv-id=<name> (several nodes), or bof-train hydra.run.dir=<dir>"
        )
    return f"torchrun-{run_id}"


OmegaConf.register_new_resolver("bof_run_name", run_name, replace=True)


def train(cfg: DictConfig) -> dict:
    """Runs the configured training and returns the final metrics (also written to metrics.json).

    ``trainer.resume=auto`` returns the metrics of a run directory that already finished without
    training again, and continues one that was interrupted (what a rerun of a sweep needs)."""
    finished = Path(cfg.trainer.output_dir) / "metrics.json"
    if cfg.trainer.resume == "auto" and finished.is_file():
        log.info("%s finished already (trainer.resume=auto): not training again", finished.parent)
        return json.loads(finished.read_text())
    if cfg.get("task", "detect") == "classify":  # backbone pretraining: bof/classify.py
        from bof.classify import train_classifier

        return train_classifier(cfg)
    # seed, device, and the process group the environment describes (one process: rank 0 of 1)
    trainer, out_dir, device, rank, world_size, local_rank = start_run(cfg)
    on_cuda = device.type == "cuda"
    amp, channels_last = trainer.amp and on_cuda, trainer.channels_last and on_cuda
    main_process = rank == 0  # the only one that writes files

    tricks = build_tricks(cfg)

    # data: the same VOC-layout loader for Pascal VOC and the built-in synthetic set; augmentation,
    # mixup and random shapes act here (in the batch sampler and the workers)
    train_set, val_set = instantiate(cfg.data.train), instantiate(cfg.data.val)
    class_names = list(train_set.class_names)
    train_loader, val_loader = build_data_loaders(cfg, trainer, train_set, val_set, tricks, rank, world_size)
    iters_per_epoch = len(train_loader)
    if iters_per_epoch == 0:
        raise ValueError(
            f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_set)} training images"
        )

    # model, criterion (label smoothing acts in its class targets), post-processing
    model, criterion, postprocess = build_model(
        cfg, len(class_names), device, channels_last, tricks.smoothing, trainable_bn=tricks.syncbn is not None
    )
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, model_without_ddp = data_parallel(model, tricks.syncbn, device, world_size, local_rank)

    # optimizer and per-iteration LR schedule (warmup, then step or cosine)
    if cfg.optimizer.lr <= 0:
        raise ValueError(f"optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    # _partial_: Hydra would wrap the param-group dicts (holding tensors) into DictConfigs
    optimizer = instantiate(cfg.optimizer, _partial_=True)(
        param_groups(model, cfg.optimizer.weight_decay, trainer.no_wd)
    )
    lr_scheduler = build_lr_scheduler(optimizer, tricks.lr_schedule, iters_per_epoch, trainer.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    log.info("config:\n%s", OmegaConf.to_yaml(resolved))
    log.info(
        "device %s x %d processes | %d trainable parameters | %d train / %d val images | "
        "%d iterations/epoch of %d images (%d per process)",
        device,
        world_size,
        num_params,
        len(train_set),
        len(val_set),
        iters_per_epoch,
        trainer.batch_size,
        trainer.batch_size // world_size,
    )
    log.info("tricks:\n  %s", "\n  ".join(tricks.describe(trainer.epochs)))
    if main_process:
        samples, lr_figure = preview(train_loader, class_names, trainer, tricks, optimizer, iters_per_epoch)
        save_png(samples, out_dir / "train_samples.png")
        lr_figure.savefig(out_dir / "lr_schedule.png")
    if trainer.dry_run:
        log.info(
            "dry run: wrote train_samples.png and lr_schedule.png to %s; exiting before training", out_dir
        )
        return {
            "dry_run": True,
            "num_params": num_params,
            "iters_per_epoch": iters_per_epoch,
            "train_images": len(train_set),
            "val_images": len(val_set),
        }

    start_epoch, best_map = restore(
        resume_path(trainer.resume, out_dir), model_without_ddp, optimizer, lr_scheduler, scaler
    )

    writer = None
    if main_process:
        writer = SummaryWriter(str(out_dir / "tensorboard"))
        writer.add_text("config", "```yaml\n" + OmegaConf.to_yaml(resolved) + "\n```")
        writer.add_text("tricks", "\n".join(f"* {line}" for line in tricks.describe(trainer.epochs)))
        writer.add_image("train/samples", samples, 0)  # as the run will see them: augmented, mixed, weighted
        writer.add_figure("plan/lr", lr_figure, 0)
    started, train_metrics, val_metrics, images_per_s = time.perf_counter(), {}, {}, []
    bad_at_load = len(getattr(train_set, "skipped", [])) + len(getattr(val_set, "skipped", []))
    bad_in_training = nonfinite_skipped = 0
    for epoch in range(start_epoch, trainer.epochs):
        train_loader.batch_sampler.set_epoch(epoch)
        train_metrics = train_one_epoch(
            model,
            criterion,
            train_loader,
            optimizer,
            lr_scheduler,
            scaler,
            device,
            epoch,
            writer,
            amp=amp,
            channels_last=channels_last,
            grad_clip=trainer.grad_clip,
            show_progress=trainer.progress and main_process,
            skip_nonfinite=trainer.skip_nonfinite,
        )
        train_metrics["images_per_s"] *= world_size  # every process trains on as many images
        images_per_s.append(train_metrics["images_per_s"])
        bad_in_training += train_metrics["bad_samples"]
        nonfinite_skipped += train_metrics["nonfinite_skipped"]
        log.info(
            "epoch %d/%d: loss %.3f, %.1f images/s%s",
            epoch + 1,
            trainer.epochs,
            train_metrics["loss"],
            train_metrics["images_per_s"],
            f", {bad_at_load} bad samples left out at load, {bad_in_training} replaced in training"
            if bad_at_load or bad_in_training
            else "",
        )
        last_epoch = epoch + 1 == trainer.epochs
        if (epoch + 1) % trainer.eval_interval == 0 or last_epoch:
            val_metrics, evaluator, drawn = evaluate(  # every process a shard, gathered in evaluate
                model_without_ddp,
                postprocess,
                val_loader,
                device,
                class_names,
                trainer.voc07_metric,
                channels_last,
                amp,
                trainer.num_images_logged,
                trainer.progress and main_process,
            )
            if main_process:
                log_evaluation(writer, val_metrics, drawn, epoch)
            if val_metrics["map"] > best_map:
                best_map = val_metrics["map"]
                if main_process:
                    evaluator.write_results(out_dir / "results")
                    save_checkpoint(
                        checkpoint_state(
                            model_without_ddp, optimizer, lr_scheduler, scaler, epoch, best_map, resolved
                        ),
                        out_dir / "best.pt",
                    )
        if main_process:
            save_checkpoint(
                checkpoint_state(
                    model_without_ddp, optimizer, lr_scheduler, scaler, epoch, best_map, resolved
                ),
                out_dir / "last.pt",
            )
    if writer is not None:
        # the HParams tab: the same keys in every run, so a sweep's runs read as its table
        writer.add_hparams(
            hparams(cfg), {"hparam/mAP": val_metrics.get("map", float("nan")), "hparam/best_mAP": best_map},
            run_name="hparams",
        )  # fmt: skip
        writer.close()

    metrics = {
        "map": val_metrics.get("map"),
        "best_map": best_map,
        "ap": val_metrics.get("ap", {}),
        "metric": val_metrics.get("metric"),  # voc07 | area | coco
        **{name: val_metrics[name] for name in COCO_STATS if name in val_metrics},  # the 12 COCO numbers
        "train_loss": train_metrics.get("loss"),
        "num_params": num_params,
        "wall_time_s": time.perf_counter() - started,
        "images_per_s": float(np.mean(images_per_s)) if images_per_s else None,
        "epochs": trainer.epochs,
        "bad_samples": {"skipped_at_load": bad_at_load, "replaced_in_training": bad_in_training},
        "nonfinite_steps_skipped": nonfinite_skipped,
        "config": resolved,
    }
    if main_process:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if metrics["map"] is not None:
        log.info(
            "final %s %.4f (best %.4f), %.0f s",
            METRIC_NAMES[metrics["metric"]],
            metrics["map"],
            best_map,
            metrics["wall_time_s"],
        )
    if main_process:
        log.info("run directory: %s\n  its TensorBoard: %s", shown(out_dir), tensorboard_command(out_dir))
    return metrics


def shown(path: Path) -> str:
    """``path`` relative to the working directory if it lies below it (as a user types it), else absolute."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def tensorboard_command(out_dir: Path) -> str:
    """The one command that serves this run's TensorBoard: the ``tensorboard`` installed beside this
    Python (the project's .venv), so it works without activating the environment."""
    beside = Path(sys.executable).with_name("tensorboard")
    executable = shown(beside) if beside.is_file() else "tensorboard"
    return f"{executable} --logdir {shown(out_dir / 'tensorboard')}"


def start_run(cfg: DictConfig):
    """Checks ``trainer``, seeds, picks the device and joins the process group the environment describes;
    rank 0 creates the run directory. -> (trainer, out_dir, device, rank, world_size, local_rank)."""
    trainer = validate_trainer(cfg.trainer)
    out_dir = Path(trainer.output_dir)
    seed_everything(cfg.seed, trainer.deterministic)
    device = pick_device(trainer.device)
    rank, world_size, local_rank = distributed.setup(device.type)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if trainer.batch_size % world_size:
        raise ValueError(
            f"trainer.batch_size={trainer.batch_size} (the global batch) is not divisible by the "
            f"{world_size} processes"
        )
    return trainer, out_dir, device, rank, world_size, local_rank


def data_parallel(model, syncbn, device: torch.device, world_size: int, local_rank: int):
    """Synchronized BatchNorm (when on) acts here, before DDP wraps the model. -> (model to train,
    model_without_ddp); both are ``model`` with one process."""
    if world_size == 1:
        if syncbn is not None:
            log.info("syncbn=on changes nothing with one process")
        return model, model
    if syncbn is not None:
        model = syncbn(model, device.type, world_size)
    device_ids = [local_rank] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids), model


class Tricks(NamedTuple):
    """The bag of freebies of one run, each built from its config group; None where a trick is off."""

    augment: Callable  # the training transform: Resize (augment=none), YOLOAugment, FlipResize
    mixup: DetectionMixup | None
    smoothing: LabelSmoothing | None
    lr_schedule: StepSchedule | CosineSchedule
    random_shapes: RandomShapes | None
    syncbn: SyncBatchNorm | None

    def describe(self, epochs: int) -> list[str]:
        return [
            f"augment: {self.augment!r}",
            f"mixup: {'off' if self.mixup is None else self.mixup.describe(epochs)}",
            f"smoothing: {'off' if self.smoothing is None else repr(self.smoothing)}",
            f"lr_schedule: {self.lr_schedule.describe(epochs)}",
            f"random_shapes: {'off' if self.random_shapes is None else repr(self.random_shapes)}",
            f"syncbn: {'off' if self.syncbn is None else repr(self.syncbn)}",
        ]


def build_tricks(cfg: DictConfig) -> Tricks:
    return Tricks(
        augment=instantiate(cfg.augment),
        mixup=instantiate(cfg.mixup) if cfg.mixup is not None else None,
        smoothing=instantiate(cfg.smoothing) if cfg.smoothing is not None else None,
        lr_schedule=instantiate(cfg.lr_schedule),
        random_shapes=instantiate(cfg.random_shapes) if cfg.random_shapes is not None else None,
        syncbn=instantiate(cfg.syncbn) if cfg.syncbn is not None else None,
    )


def build_data_loaders(
    cfg: DictConfig, trainer, train_set, val_set, tricks: Tricks, rank: int = 0, world_size: int = 1
):
    """Training loader (shuffled, augmented, mixed, one input size per batch) and validation loader
    (fixed size, resize only, in order); this process's share of the global batch and of the images."""
    train_loader = build_data_loader(
        train_set,
        tricks.augment,
        trainer.batch_size // world_size,
        tricks.random_shapes or FixedShape(cfg.model.train_size),
        shuffle=True,
        seed=cfg.seed,
        num_workers=trainer.num_workers,
        mixup=tricks.mixup,
        epochs=trainer.epochs,
        rank=rank,
        world_size=world_size,
    )
    val_loader = build_data_loader(
        val_set,
        Resize(),
        trainer.batch_size // world_size,
        FixedShape(cfg.model.val_size),
        shuffle=False,
        seed=cfg.seed,
        num_workers=min(trainer.num_workers, 2),
        drop_last=False,
        rank=rank,
        world_size=world_size,
    )
    return train_loader, val_loader


def build_model(
    cfg: DictConfig,
    num_classes: int,
    device: torch.device,
    channels_last: bool = False,
    smoothing: LabelSmoothing | None = None,
    trainable_bn: bool = False,
):
    """(model, criterion, postprocess) of the ``model`` group, on ``device``. YOLOv3's class head is a
    sigmoid one, so label smoothing takes the sigmoid rule. A model without criterion (Faster R-CNN)
    computes its own losses and detections: its RoI classifier is a softmax one (softmax rule), and
    ``trainable_bn`` (syncbn=on) replaces its frozen BatchNorms by trainable ones."""
    if cfg.model.get("criterion") is None:
        epsilon = smoothing.softmax_epsilon() if smoothing is not None else None
        net = instantiate(
            cfg.model.net, num_classes=num_classes, label_smoothing=epsilon, trainable_bn=trainable_bn
        )
        return with_backbone(net, cfg).to(device), None, None
    model = with_backbone(instantiate(cfg.model.net, num_classes=num_classes), cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    epsilon = smoothing.sigmoid_epsilon(num_classes) if smoothing is not None else None
    criterion = instantiate(cfg.model.criterion, num_classes=num_classes, label_smoothing=epsilon).to(device)
    return model, criterion, instantiate(cfg.model.postprocess)


TRICK_GROUPS = ("augment", "mixup", "smoothing", "lr_schedule", "random_shapes", "syncbn")


def hparams(cfg: DictConfig) -> dict:
    """The trick choices of a run (and its model, row and seed) as TensorBoard hparams."""

    def choice(node) -> str:
        return "off" if node is None else node["_target_"].rsplit(".", 1)[-1]

    row = cfg.get("row") or {}
    return {
        "row": row.get("name", "-"), "seed": cfg.seed, "model": cfg.model.name, "data": cfg.data.name,
        **{group: choice(cfg.get(group)) for group in TRICK_GROUPS},
    }  # fmt: skip


def with_backbone(model, cfg: DictConfig):
    """``model.backbone_checkpoint``: a ``task=classify`` checkpoint initialises the backbone (Tables 5-6)."""
    path = cfg.model.get("backbone_checkpoint")
    if path:
        load_backbone(model, path)
        log.info("backbone initialised from %s", path)
    return model


def preview(train_loader, class_names, trainer, tricks: Tricks, optimizer, iters_per_epoch: int):
    """(grid of the first training samples of the first epoch exactly as the loader will produce them,
    figure of the planned LR of every iteration). Built in the main process from the sampler's keys, so
    the loader, its workers and the RNG streams of the run are untouched."""
    sampler = train_loader.batch_sampler
    sampler.set_epoch(0)
    keys = next(iter(sampler))[: max(trainer.num_images_logged, 1)]
    images, targets = zip(*(train_loader.dataset[key] for key in keys), strict=True)
    base_lr = optimizer.param_groups[0]["initial_lr"]
    total = trainer.epochs * iters_per_epoch
    lrs = [base_lr * tricks.lr_schedule.factor(i, iters_per_epoch, trainer.epochs) for i in range(total)]
    figure = lr_curve_figure(lrs, iters_per_epoch, tricks.lr_schedule.describe(trainer.epochs))
    return draw_training_samples(list(images), list(targets), class_names), figure


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={name} but CUDA is not available; use trainer.device=cpu")
    return device


def resume_path(resume, out_dir: Path) -> Path | None:
    """``trainer.resume``: false -> None; true -> <run dir>/last.pt; auto -> <run dir>/last.pt if there is
    one (a rerun of a sweep continues interrupted runs), else None; another string -> that checkpoint."""
    if resume is False or resume is None:
        return None
    if resume == "auto":
        return out_dir / "last.pt" if (out_dir / "last.pt").is_file() else None
    path = out_dir / "last.pt" if resume is True else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"trainer.resume={resume}: no checkpoint at {path}"
            + (" (pass the old run directory with hydra.run.dir=<dir>)" if resume is True else "")
        )
    return path


def restore(path: Path | None, model, optimizer, lr_scheduler, scaler) -> tuple[int, float]:
    """Loads a checkpoint into the training state; -> (first epoch to run, best metric so far)."""
    if path is None:
        return 0, -1.0
    checkpoint = load_checkpoint(path)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    log.info("resumed from %s at epoch %d", path, checkpoint["epoch"] + 1)
    return checkpoint["epoch"] + 1, checkpoint["best_map"]


def checkpoint_state(
    model, optimizer, lr_scheduler, scaler, epoch: int, best_map: float, config: dict
) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_map": best_map,
        "rng": rng_state(),
        "config": config,
    }


def log_evaluation(writer: SummaryWriter, metrics: dict, drawn: list, epoch: int) -> None:
    writer.add_scalar("val/mAP", metrics["map"], epoch + 1)
    for name in COCO_STATS:
        if name in metrics:
            writer.add_scalar(f"val/coco/{name}", metrics[name], epoch + 1)
    for name, ap in metrics["ap"].items():
        if ap == ap:  # nan: no positives of that class
            writer.add_scalar(f"val/AP/{name}", ap, epoch + 1)
    for i, image in enumerate(drawn):
        writer.add_image(f"val/detections/{i}", image, epoch + 1)
    log.info(
        "epoch %d: mAP %.4f | %s",
        epoch + 1,
        metrics["map"],
        " ".join(f"{k} {v:.3f}" for k, v in metrics["ap"].items()),
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The Hydra job: trains in this process, or with ``trainer.devices=N`` (and no outer launcher such
    as torchrun) in N processes of one group. They share this job's one output directory: the config
    is resolved here, so ${hydra:runtime.output_dir} is fixed before any process starts."""
    try:
        devices = cfg.trainer.get("devices", 1)
        if devices > 1 and not distributed.launched_externally():
            resolved = OmegaConf.to_container(cfg, resolve=True)
            distributed.spawn(train_process, devices, resolved)
            metrics_file = Path(resolved["trainer"]["output_dir"]) / "metrics.json"
            return json.loads(metrics_file.read_text()).get("map") if metrics_file.is_file() else None
        return train(cfg).get("map")
    except Exception as error:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # one failed job of a sweep must not stop the jobs after it: record it where its run would be
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "failed.json").write_text(
            json.dumps(
                {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}, indent=2
            )
        )
        log.error("this job failed (%s: %s); the sweep goes on; details in %s", type(error).__name__, error,
                  out_dir / "failed.json")  # fmt: skip
        return None


def train_process(resolved: dict) -> dict:
    """One process of a ``trainer.devices=N`` job: rank 0 logs INFO to the console and to the job's
    train.log (as Hydra's job logging does), the others warnings and errors only."""
    rank = int(os.environ.get("RANK", "0"))
    handlers = [logging.StreamHandler()]
    if rank == 0:
        Path(resolved["trainer"]["output_dir"]).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(resolved["trainer"]["output_dir"]) / "train.log"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[%(asctime)s][%(name)s][%(levelname)s][rank {rank}] - %(message)s",
        handlers=handlers,
        force=True,
    )
    return train(OmegaConf.create(resolved))


if __name__ == "__main__":
    main()

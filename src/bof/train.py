"""bof-train: the training recipe, read top to bottom.

seed -> device -> tricks -> data -> model -> optimizer -> LR schedule -> resume -> epochs (train,
evaluate, checkpoint) -> final metrics. Each trick of the bag of freebies is built from its own config
group (None when off) and handed to the one place where it acts: augmentation, mixup and random shapes
to the data loaders, label smoothing to the criterion, the LR schedule to the scheduler.

``run_job`` is the Hydra job (behind the light entry point :mod:`bof.cli.train`); ``train(cfg)`` runs one
job (detection here, backbone pretraining in :mod:`bof.classify`) and is the only place that reads the
whole config: every component is built by ``hydra.utils.instantiate`` from its own group, so config keys
are constructor arguments.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from functools import partial
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bof.classify import train_classifier
from bof.config import check_backbone, check_paper_setup
from bof.data.loader import build_data_loader
from bof.engine.build_model import build_model
from bof.engine.evaluator import build_evaluator
from bof.engine.loops import GradClip, evaluate, train_one_epoch
from bof.engine.optim import param_groups
from bof.engine.run_log import RunLog, hparams, log_evaluation, open_writer, preview, start_hparams
from bof.engine.run_setup import (
    StopSignal,
    Tricks,
    autocast_dtype,
    build_dataset,
    build_tricks,
    compiled,
    data_parallel,
    end_of_epoch,
    resume_path,
    start_run,
)
from bof.tricks.augment import Resize
from bof.tricks.lr_schedule import build_lr_scheduler
from bof.tricks.random_shapes import FixedShape
from bof.utils import distributed
from bof.utils.atomic import write_json_atomically
from bof.utils.checkpoint import CheckpointWriter, check_finite, checkpoint_state, restore
from bof.utils.drawing import save_png
from bof.utils.fingerprint import finished_run

log = logging.getLogger("bof.train")


def train(cfg: DictConfig) -> dict:
    """Runs the configured job and returns its final metrics (also written to metrics.json).

    ``trainer.resume=auto`` returns the metrics of a run directory that already finished without
    training again (:func:`bof.utils.fingerprint.finished_run`), and continues one that was interrupted
    (what a rerun of a sweep needs)."""
    check_backbone(cfg)
    return train_classifier(cfg) if cfg.get("task", "detect") == "classify" else train_detector(cfg)


def train_detector(cfg: DictConfig) -> dict:
    """The detection recipe (``task=detect``)."""
    # seed, device, and the process group the environment describes (one process: rank 0 of 1)
    trainer, out_dir, device, rank, world_size, local_rank = start_run(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if (done := finished_run(trainer, resolved, out_dir)) is not None:
        return done
    check_paper_setup(cfg.get("paper_setup"), world_size, trainer.batch_size // world_size)
    on_cuda = device.type == "cuda"  # mixed precision and NHWC are CUDA-only (no-ops on the CPU)
    amp, channels_last = autocast_dtype(trainer.amp, device), trainer.channels_last and on_cuda
    main_process = rank == 0  # the only one that writes files
    tricks = build_tricks(cfg)

    # data: the same VOC-layout loader for Pascal VOC and the built-in synthetic set; augmentation,
    # mixup and random shapes act here (in the batch sampler and the workers)
    train_set, val_set = build_dataset(cfg.data.train), build_dataset(cfg.data.val)
    class_names = list(train_set.class_names)
    train_loader, val_loader = build_data_loaders(cfg, trainer, train_set, val_set, tricks, rank, world_size)
    iters_per_epoch = len(train_loader)
    if iters_per_epoch == 0:
        raise ValueError(
            f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_set)} training images"
        )

    # the detector (label smoothing acts in its class targets); sync BN, DDP
    model = build_model(
        cfg, len(class_names), device, channels_last, tricks.smoothing, trainable_bn=tricks.syncbn is not None
    )
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, model_without_ddp = data_parallel(model, tricks.syncbn, device, world_size, local_rank)
    model = compiled(model, trainer.compile, device)

    # optimizer and per-iteration LR schedule (warmup, then step or cosine)
    # _partial_: Hydra would wrap the param-group dicts (holding tensors) into DictConfigs
    optimizer = instantiate(cfg.optimizer, _partial_=True)(
        param_groups(model, cfg.optimizer.weight_decay, trainer.no_wd)
    )
    lr_scheduler = build_lr_scheduler(optimizer, tricks.lr_schedule, iters_per_epoch, trainer.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # bf16 needs no scaling

    run_log = RunLog(cfg, resolved, world_size, trainer.batch_size // world_size, num_params)
    run_log.plan(device, train_set, val_set, iters_per_epoch, tricks.describe(trainer.epochs))
    if main_process:
        samples, lr_figure = preview(train_loader, class_names, trainer, tricks, optimizer, iters_per_epoch)
        save_png(samples, out_dir / "train_samples.png")
        lr_figure.savefig(out_dir / "lr_schedule.png")
    if trainer.dry_run:
        log.info(
            "dry run: wrote train_samples.png and lr_schedule.png to %s; exiting before training", out_dir
        )
        return {"dry_run": True, "num_params": num_params, "iters_per_epoch": iters_per_epoch,
                "train_images": len(train_set), "val_images": len(val_set)}  # fmt: skip

    start_epoch, best_map, counts = restore(
        resume_path(trainer.resume, out_dir), model_without_ddp, optimizer, lr_scheduler, scaler, resolved
    )
    writer = None
    if main_process:
        writer = open_writer(out_dir, resolved, tricks.describe(trainer.epochs), samples, lr_figure,
                             first_step=start_epoch * iters_per_epoch)  # fmt: skip
        start_hparams(writer, hparams(cfg, world_size, trainer.batch_size // world_size))
    run_log.start(train_set, val_set, counts)

    def state(epoch: int) -> dict:  # built only when a checkpoint is written
        return checkpoint_state(
            model_without_ddp,
            optimizer,
            lr_scheduler,
            scaler,
            epoch,
            best_map,
            resolved,
            class_names,
            run_log.counts(),
        )

    def validate(epoch: int) -> dict:  # every process a shard, gathered in evaluate; best.pt on a new best
        nonlocal best_map
        metrics, evaluator, drawn = evaluate(
            model_without_ddp, val_loader, build_evaluator(val_set, trainer.voc07_metric), device,
            class_names, channels_last, amp, trainer.num_images_logged, trainer.progress and main_process,
        )  # fmt: skip
        if main_process:
            log_evaluation(writer, metrics, drawn, epoch)
        if metrics["map"] > best_map:
            best_map = metrics["map"]
            if main_process:
                evaluator.write_results(out_dir / "results")
                saver.save(state(epoch), out_dir / "best.pt")
        return metrics

    val_metrics, saver, stop = {}, CheckpointWriter(), StopSignal()
    try:  # the pending checkpoint is written and the signal handlers restored however the loop ends
        for epoch in range(start_epoch, trainer.epochs):
            train_loader.batch_sampler.set_epoch(epoch)
            train_metrics = train_one_epoch(
                model, train_loader, optimizer, lr_scheduler, scaler, device, epoch, writer,
                amp=amp, channels_last=channels_last, grad_clip=GradClip.of(trainer),
                show_progress=trainer.progress and main_process, skip_nonfinite=trainer.skip_nonfinite,
                log_interval=trainer.log_interval, max_skipped_steps=trainer.max_skipped_steps,
            )  # fmt: skip
            run_log.epoch(epoch, trainer.epochs, train_metrics)
            check_finite(model_without_ddp, optimizer, epoch, out_dir / "last.pt")  # same on every rank
            if (epoch + 1) % trainer.eval_interval == 0 or epoch + 1 == trainer.epochs:
                val_metrics = validate(epoch)
            last = partial(saver.save, state(epoch), out_dir / "last.pt") if main_process else None
            end_of_epoch(trainer, epoch, stop, last)
        if not val_metrics:  # no epoch left (stopped after its last checkpoint): the final model's numbers
            val_metrics = validate(trainer.epochs - 1)
    finally:
        stop.release()
        saver.wait()

    metrics = run_log.final(val_metrics, best_map, writer)
    if main_process:
        write_json_atomically(out_dir / "metrics.json", metrics)
        (out_dir / "failed.json").unlink(missing_ok=True)  # an earlier failure of this job, now trained
        run_log.where(out_dir)
    return metrics


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


def run_job(cfg: DictConfig) -> float | None:
    """The Hydra job (:func:`bof.cli.train.main` calls it): trains in this process, or with
    ``trainer.devices=N`` (and no outer launcher such as torchrun) in N processes of one group. They
    share this job's one output directory: the config is resolved here, so
    ${hydra:runtime.output_dir} is fixed before any process starts."""
    try:
        check_backbone(cfg)
        devices = cfg.trainer.get("devices", 1)
        if devices > 1 and not distributed.launched_externally():
            build_tricks(cfg)  # the start-up checks before the config is resolved; each process repeats them
            distributed.check_local_gpus(cfg.trainer.device, devices)
            resolved = OmegaConf.to_container(cfg, resolve=True)
            distributed.spawn(train_process, devices, resolved)
            metrics_file = Path(resolved["trainer"]["output_dir"]) / "metrics.json"
            return json.loads(metrics_file.read_text()).get("map") if metrics_file.is_file() else None
        return train(cfg).get("map")
    except Exception as error:
        # one of several torchrun / SLURM processes: leave the group at once, so that peers blocked in a
        # collective fail now (gloo) or at trainer.collective_timeout_min (NCCL), not after half an hour
        in_group = distributed.world_size() > 1
        distributed.cleanup()
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # one failed job of a sweep must not stop the jobs after it: record it where its run would be
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        write_json_atomically(
            out_dir / "failed.json",
            {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()},
        )
        log.error(
            "this job failed (%s: %s); details in %s", type(error).__name__, error, out_dir / "failed.json"
        )
        if in_group:  # the launcher (torchrun, SLURM, submitit) must see this task fail: exit non-zero
            raise
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


if __name__ == "__main__":  # python -m bof.train: the same as bof-train (its entry point, not an import edge)
    from bof.cli.train import main

    main()

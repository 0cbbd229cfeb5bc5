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

import gc
import json
import logging
import os
import traceback
from contextlib import ExitStack
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bof.classify import train_classifier
from bof.config import check_backbone, check_paper_setup, check_scale, typed_choices
from bof.data.loader import build_data_loader, end_workers
from bof.engine.build_model import build_model
from bof.engine.epochs import Epochs, RunCounts
from bof.engine.evaluator import build_evaluator
from bof.engine.loops import evaluate, train_one_epoch
from bof.engine.optim import build_optimization
from bof.engine.run_log import (
    RunLog,
    epoch_step,
    hparams,
    log_evaluation,
    open_writer,
    preview,
    start_hparams,
)
from bof.engine.run_setup import (
    Run,
    Tricks,
    build_dataset,
    build_tricks,
    compiled,
    data_parallel,
    resume_path,
    start_run,
)
from bof.evaluation.ranked_record import RECORD_FILE
from bof.pretrained import ensure_pretrained
from bof.tricks.augment import Resize
from bof.tricks.random_shapes import FixedShape
from bof.utils import distributed
from bof.utils.atomic import write_json_atomically, writing
from bof.utils.checkpoint import restore
from bof.utils.drawing import save_png
from bof.utils.fingerprint import REFUSED_FILE, finished_run, is_refusal
from bof.utils.stored_config import portable_config

log = logging.getLogger("bof.train")


def train(cfg: DictConfig) -> dict:
    """Runs the configured job and returns its final metrics (also written to metrics.json).

    ``trainer.resume=auto`` returns the metrics of a run directory that already finished without
    training again (:func:`bof.utils.fingerprint.finished_run`), and continues one that was interrupted
    (what a rerun of a sweep needs)."""
    check_backbone(cfg)
    ensure_pretrained(cfg)  # scale=mini: its pretrained backbone, built on first use
    recipe = train_classifier if cfg.get("task", "detect") == "classify" else train_detector
    try:
        # what the job holds until it ends, however it ends (an error, a signal's SystemExit): rank 0's
        # lock on the run directory, free for a sweep's next job in this process
        with ExitStack() as job:
            return recipe(cfg, job)
    finally:  # a sweep's next job in this process: what the recipe froze can be collected again
        gc.unfreeze()


def train_detector(cfg: DictConfig, job: ExitStack) -> dict:
    """The detection recipe (``task=detect``)."""
    # seed, device, the process group the environment describes (one process: rank 0 of 1), the run dir
    run = start_run(cfg, job)
    trainer, out_dir = run.trainer, run.out_dir
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if (done := finished_run(trainer, resolved, out_dir)) is not None:
        return done
    check_paper_setup(cfg.get("paper_setup"), run.world_size, run.batch_per_process)
    tricks = build_tricks(cfg)

    # data: the same VOC-layout loader for Pascal VOC and the built-in synthetic set; augmentation,
    # mixup and random shapes act here (in the batch sampler and the workers)
    train_set, val_set = build_dataset(cfg.data.train), build_dataset(cfg.data.val)
    # the data sets' objects leave the collector's generations before the workers fork: a full collection
    # in a worker would otherwise write to every one of them and copy their pages into it
    gc.freeze()
    class_names = list(train_set.class_names)
    train_loader, val_loader = build_data_loaders(cfg, run, train_set, val_set, tricks)
    for loader in (train_loader, val_loader):  # their workers end with the job, not at the exit
        job.callback(end_workers, loader)
    iters_per_epoch = len(train_loader)
    if iters_per_epoch == 0:
        raise ValueError(
            f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_set)} training images"
        )

    # the detector (label smoothing acts in its class targets); sync BN, DDP
    model = build_model(
        cfg,
        len(class_names),
        run.device,
        run.channels_last,
        tricks.smoothing,
        trainable_bn=tricks.syncbn is not None,
    )
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, model_without_ddp = data_parallel(model, tricks.syncbn, run.device, run.world_size, run.local_rank)
    model = compiled(model, trainer.compile, run.device)
    # optimizer, per-iteration LR schedule (warmup, then step or cosine), gradient scaler
    optimization = build_optimization(cfg, model, run, tricks.lr_schedule, iters_per_epoch)

    run_log = RunLog(cfg, resolved, run.world_size, run.batch_per_process, num_params)
    run_log.plan(run.device, train_set, val_set, iters_per_epoch, tricks.describe(trainer.epochs))
    if run.main_process:
        samples, lr_figure = preview(
            train_loader, class_names, trainer, tricks, optimization.optimizer, iters_per_epoch
        )
        save_png(samples, out_dir / "train_samples.png")
        with writing(out_dir / "lr_schedule.png"):
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

    start_epoch, best_map, counts = restore(
        resume_path(trainer.resume, out_dir), model_without_ddp, *optimization, resolved
    )
    writer = None
    if run.main_process:
        writer = open_writer(
            out_dir,
            resolved,
            tricks.describe(trainer.epochs),
            samples,
            lr_figure,
            first_step=start_epoch * iters_per_epoch,
        )
        start_hparams(writer, hparams(cfg, run.world_size, run.batch_per_process))
    run_log.start(train_set, val_set, RunCounts(counts, run.world_size))
    epochs = Epochs(
        run,
        model_without_ddp,
        optimization,
        resolved,
        run_log.counts,
        "map",
        start_epoch,
        best_map,
        class_names,
        portable_config(cfg),
    )

    def train_epoch(epoch: int) -> None:
        train_loader.batch_sampler.set_epoch(epoch)
        train_metrics = train_one_epoch(model, train_loader, optimization, run, epoch, writer)
        run_log.epoch(epoch, trainer.epochs, train_metrics)

    evaluated = {}

    def validate(epoch: int) -> dict:  # every process a shard, gathered in evaluate
        metrics, evaluated["evaluator"], drawn = evaluate(
            model_without_ddp,
            val_loader,
            build_evaluator(val_set, trainer.voc07_metric),
            run.device,
            class_names,
            run.channels_last,
            run.amp,
            trainer.num_images_logged,
            trainer.progress and run.main_process,
        )
        if run.main_process:  # an epoch before start_epoch (a run recovered after its last checkpoint,
            # evaluated again) has its points in TensorBoard already: the log line only
            shown = writer if epoch >= start_epoch else None
            log_evaluation(shown, metrics, drawn, epoch, epoch_step(epoch, iters_per_epoch))
        return metrics

    def write_results(epoch: int) -> None:  # the official result files of the best evaluation
        evaluated["evaluator"].write_results(out_dir / "results")

    val_metrics = epochs.run_all(train_epoch, validate, on_best=write_results)
    if (
        run.main_process and "evaluator" in evaluated
    ):  # the final evaluation's, per image: bof-report's intervals
        evaluated["evaluator"].per_image_record().save(out_dir / RECORD_FILE)
    metrics = run_log.final(val_metrics, epochs.best, writer)
    epochs.finish(metrics)
    if run.main_process:
        run_log.where(out_dir)
    return metrics


def build_data_loaders(cfg: DictConfig, run: Run, train_set, val_set, tricks: Tricks):
    """Training loader (shuffled, augmented, mixed, one input size per batch) and validation loader
    (fixed size, resize only, in order); this process's share of the global batch and of the images."""
    train_loader = build_data_loader(
        train_set,
        tricks.augment,
        run.batch_per_process,
        tricks.random_shapes or FixedShape(cfg.model.train_size),
        shuffle=True,
        seed=cfg.seed,
        num_workers=run.trainer.num_workers,
        mixup=tricks.mixup,
        epochs=run.trainer.epochs,
        rank=run.rank,
        world_size=run.world_size,
        start_method=run.trainer.worker_start_method,
    )
    val_loader = build_data_loader(
        val_set,
        Resize(),
        run.batch_per_process,
        FixedShape(cfg.model.val_size),
        shuffle=False,
        seed=cfg.seed,
        num_workers=min(run.trainer.num_workers, 2),
        drop_last=False,
        rank=run.rank,
        world_size=run.world_size,
        start_method=run.trainer.worker_start_method,
    )
    return train_loader, val_loader


def run_job(cfg: DictConfig) -> float | None:
    """The Hydra job (:func:`bof.cli.train.main` calls it): trains in this process, or with
    ``trainer.devices=N`` (and no outer launcher such as torchrun) in N processes of one group. They
    share this job's one output directory: the config is resolved here, so
    ${hydra:runtime.output_dir} is fixed before any process starts."""
    try:
        check_scale(typed_choices())  # Hydra's runtime choices; none outside bof-train
        check_backbone(cfg)
        ensure_pretrained(cfg)  # before the processes start: they find it built
        devices = cfg.trainer.get("devices", 1)
        if devices > 1 and not distributed.launched_externally():
            build_tricks(cfg)  # the start-up checks before the config is resolved; each process repeats them
            distributed.check_local_gpus(cfg.trainer.device, devices)
            config = portable_config(cfg)  # resolves in the processes as here (Hydra's values fixed)
            distributed.spawn(train_process, devices, config)
            metrics_file = Path(cfg.trainer.output_dir) / "metrics.json"
            return json.loads(metrics_file.read_text()).get("map") if metrics_file.is_file() else None
        return train(cfg).get("map")
    except Exception as error:
        # one of several torchrun / SLURM processes: leave the group at once, so that peers blocked in a
        # collective fail now (gloo) or at trainer.collective_timeout_min (NCCL), not after half an hour
        in_group = distributed.world_size() > 1
        distributed.cleanup()
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # one failed job of a sweep must not stop the jobs after it: record it where its run would be. A
        # refused job (the directory holds another config's finished run, or a live run) changed nothing
        # there: refused.json, not a failed.json beside a run that did not fail
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        refused = is_refusal(error)
        record = out_dir / (REFUSED_FILE if refused else "failed.json")
        write_json_atomically(
            record, {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        )
        log.error(
            "this job %s (%s: %s); details in %s",
            "was refused" if refused else "failed",
            type(error).__name__,
            error,
            record,
        )
        if in_group:  # the launcher (torchrun, SLURM, submitit) must see this task fail: exit non-zero
            raise
        return None


def train_process(config: dict) -> dict:
    """One process of a ``trainer.devices=N`` job (``config``: :func:`portable_config`): rank 0 logs INFO
    to the console and to the job's train.log (as Hydra's job logging does), the others warnings and
    errors only."""
    rank = int(os.environ.get("RANK", "0"))
    cfg = OmegaConf.create(config)
    out_dir = Path(cfg.trainer.output_dir)
    handlers = [logging.StreamHandler()]
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out_dir / "train.log"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[%(asctime)s][%(name)s][%(levelname)s][rank {rank}] - %(message)s",
        handlers=handlers,
        force=True,
    )
    return train(cfg)


if __name__ == "__main__":  # python -m bof.train: the same as bof-train (its entry point, not an import edge)
    from bof.cli.train import main

    main()

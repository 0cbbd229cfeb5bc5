"""What a run shows: the training preview (samples and planned LR), evaluation logs and TensorBoard
scalars, the HParams of a run, and where to find it afterwards."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from bof.config import row_name
from bof.engine.epochs import RunCounts
from bof.engine.run_setup import Tricks
from bof.evaluation.coco_eval import STAT_NAMES as COCO_STATS
from bof.tricks.lr_schedule import curve_iterations
from bof.utils.atomic import naming
from bof.utils.drawing import draw_training_samples, lr_curve_figure
from bof.utils.fingerprint import fingerprint

log = logging.getLogger("bof.train")
METRIC_NAMES = {"voc07": "VOC07 mAP", "area": "VOC area mAP", "coco": "COCO AP@[.5:.95]"}
TRICK_GROUPS = Tricks._fields  # augment, mixup, smoothing, lr_schedule, random_shapes, syncbn


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


def hparams(cfg: DictConfig, world_size: int = 1, batch_per_process: int | None = None) -> dict:
    """A run's HParams row: each trick group's option as typed (``mixup=beta15``; the class name where the
    config was not composed by bof-train), lr, epochs, global batch, width, processes, seed and row."""
    typed = cfg.get("choices") or {}

    def choice(group: str) -> str:
        node = cfg.get(group)
        return typed.get(group) or ("off" if node is None else node["_target_"].rsplit(".", 1)[-1])

    experiment = typed.get("experiment")
    row = row_name(experiment) if cfg.get("row") and experiment else "-"  # table2/no_aug: no_aug
    return {
        "row": row,
        "seed": cfg.seed,
        "model": typed.get("model") or cfg.model.name,
        "data": typed.get("data") or cfg.data.name,
        "experiment": experiment or "-",
        "lr": cfg.optimizer.lr,
        "epochs": cfg.trainer.epochs,
        "batch": cfg.trainer.batch_size,
        "width": cfg.model.net.get("width", 1.0),
        "world_size": world_size,
        "batch_per_process": batch_per_process or cfg.trainer.batch_size,
        **{group: choice(group) for group in TRICK_GROUPS},
    }


HPARAM_METRICS = ("hparam/mAP", "hparam/best_mAP")


def start_hparams(writer: SummaryWriter, values: dict) -> None:
    """The run's HParams row, written into the run itself when it starts (a running or crashed run has
    its row too); :meth:`RunLog.final` adds the metrics and marks it finished."""
    experiment, session_start, _ = hparams_summaries(values, dict.fromkeys(HPARAM_METRICS, 0.0))
    writer.file_writer.add_summary(experiment)
    writer.file_writer.add_summary(session_start)


def epoch_step(epoch: int, iters_per_epoch: int) -> int:
    """The TensorBoard step of what is logged once per epoch (its evaluation): the global step of the
    epoch's last iteration. A resumed run's writer drops every tag's points from its first iteration's
    step on (``open_writer``), so the points of the epochs after its checkpoint go, in one purge, and
    those of the checkpoint's own epoch stay."""
    return (epoch + 1) * iters_per_epoch - 1


def log_evaluation(writer: SummaryWriter | None, metrics: dict, drawn: list, epoch: int, step: int) -> None:
    """The evaluation after ``epoch``: TensorBoard at ``step`` (:func:`epoch_step`; no ``writer``: the log
    line only) and the log."""
    if writer is not None:
        _write_evaluation(writer, metrics, drawn, step)
    log.info(
        "epoch %d: mAP %.4f | %s",
        epoch + 1,
        metrics["map"],
        " ".join(f"{k} {v:.3f}" for k, v in metrics["ap"].items()),
    )


def _write_evaluation(writer: SummaryWriter, metrics: dict, drawn: list, step: int) -> None:
    writer.add_scalar("val/mAP", metrics["map"], step)
    for name in COCO_STATS:
        if name in metrics:
            writer.add_scalar(f"val/coco/{name}", metrics[name], step)
    for name, ap in metrics["ap"].items():
        if ap == ap:  # nan: no positives of that class
            writer.add_scalar(f"val/AP/{name}", ap, step)
    for i, image in enumerate(drawn):
        writer.add_image(f"val/detections/{i}", image, step)
    for name, (tp, fp, positives) in metrics.get("pr_curves", {}).items():
        if len(tp):  # lowest threshold first, as the PR-curve plugin reads them
            tp, fp = tp[::-1].astype(float), fp[::-1].astype(float)
            writer.add_pr_curve_raw(
                f"val/PR/{name}",
                tp,
                fp,
                np.zeros_like(tp),
                positives - tp,
                tp / np.maximum(tp + fp, 1),
                tp / positives,
                step,
                num_thresholds=len(tp),
            )


def preview(train_loader, class_names, trainer, tricks: Tricks, optimizer, iters_per_epoch: int):
    """(grid of the first training samples of the first epoch exactly as the loader will produce them,
    figure of the planned LR over the run, at the iterations :func:`curve_iterations` samples). Built in
    the main process from the sampler's keys, so the loader, its workers and the RNG streams of the run
    are untouched."""
    sampler = train_loader.batch_sampler
    sampler.set_epoch(0)
    keys = next(iter(sampler))[: max(trainer.num_images_logged, 1)]
    images, targets = zip(*(train_loader.dataset[key] for key in keys), strict=True)
    base_lr = optimizer.param_groups[0]["initial_lr"]
    schedule = tricks.lr_schedule
    iterations = curve_iterations(schedule, iters_per_epoch, trainer.epochs)
    lrs = [base_lr * schedule.factor(i, iters_per_epoch, trainer.epochs) for i in iterations]
    figure = lr_curve_figure(iterations, lrs, iters_per_epoch, schedule.describe(trainer.epochs))
    return draw_training_samples(list(images), list(targets), class_names), figure


class EventWriter(SummaryWriter):
    """TensorBoard's SummaryWriter, whose errors name its folder: it writes on a background thread, and
    what fails there (a full disk) surfaces as a bare OSError at a later add, flush or close."""

    def _get_file_writer(self):
        file_writer = super()._get_file_writer()
        events = file_writer.event_writer
        if not getattr(events, "names_its_folder", False):
            for name in ("add_event", "flush", "close"):
                setattr(events, name, naming(self.log_dir, "TensorBoard's events in ")(getattr(events, name)))
            events.names_its_folder = True
        return file_writer


def open_writer(
    out_dir: Path, resolved: dict, tricks: list[str], samples, lr_figure, first_step: int = 0
) -> SummaryWriter:
    """The run's TensorBoard with its config, tricks, first training samples and planned LR. A resumed
    run (``first_step``: its first iteration's global step) drops the events its interrupted part wrote
    after its checkpoint; a run started afresh (0), those of an earlier run in its directory."""
    writer = EventWriter(str(out_dir / "tensorboard"), purge_step=first_step)
    writer.add_text("config", "```yaml\n" + OmegaConf.to_yaml(resolved) + "\n```")
    writer.add_text("tricks", "\n".join(f"* {line}" for line in tricks))
    writer.add_image("train/samples", samples, 0)  # as the run will see them: augmented, mixed, weighted
    writer.add_figure("plan/lr", lr_figure, 0)
    return writer


class RunLog:
    """The log lines of a detection run and what its metrics.json records: the plan, one line per
    epoch (loss, images/s over all processes, bad samples), the final metrics and where the run is."""

    def __init__(
        self, cfg: DictConfig, resolved: dict, world_size: int, batch_per_process: int, num_params: int
    ):
        self.cfg, self.resolved, self.num_params = cfg, resolved, num_params
        self.world_size, self.batch_per_process = world_size, batch_per_process
        self.counts, self.bad_at_load = RunCounts(world_size=world_size), 0
        self.iters_per_epoch = 1

    def plan(self, device, train_set, val_set, iters_per_epoch: int, tricks: list[str]) -> None:
        self.iters_per_epoch = iters_per_epoch
        log.info("config:\n%s", OmegaConf.to_yaml(self.resolved))
        log.info(
            "device %s x %d processes | %d trainable parameters | %d train / %d val images | "
            "%d iterations/epoch of %d images (%d per process)",
            device,
            self.world_size,
            self.num_params,
            len(train_set),
            len(val_set),
            iters_per_epoch,
            self.batch_per_process * self.world_size,
            self.batch_per_process,
        )
        log.info("tricks:\n  %s", "\n  ".join(tricks))

    def start(self, train_set, val_set, counts: RunCounts) -> None:
        """Training starts (``counts``: those of the checkpoint it resumes, carried over)."""
        self.counts = counts
        self.bad_at_load = len(getattr(train_set, "skipped", [])) + len(getattr(val_set, "skipped", []))

    def epoch(self, epoch: int, epochs: int, train_metrics: dict) -> None:
        self.counts.add_epoch(train_metrics)
        replaced = self.counts.replaced_in_training
        bad = self.bad_at_load or replaced
        log.info(
            "epoch %d/%d: loss %.3f, %.1f images/s%s",
            epoch + 1,
            epochs,
            train_metrics.get("loss", float("nan")),  # nan: every step of the epoch was skipped
            train_metrics["images_per_s"],
            f", {self.bad_at_load} bad samples left out at load, {replaced} replaced in training"
            if bad
            else "",
        )

    def final(self, val_metrics: dict, best_map: float, writer: SummaryWriter | None) -> dict:
        """The metrics.json of the run; the HParams of the run go to TensorBoard, which is closed."""
        if writer is not None:  # the HParams row's metrics, in the run itself, and its end
            # after the last iteration's step: the purge of a run recovered after its last checkpoint
            end = self.cfg.trainer.epochs * self.iters_per_epoch
            writer.add_scalar("hparam/mAP", val_metrics.get("map", float("nan")), end)
            writer.add_scalar("hparam/best_mAP", best_map, end)
            writer.file_writer.add_summary(hparams_summaries(hparams(self.cfg), {})[2])
            writer.close()
        metrics = {
            "map": val_metrics.get("map"),
            "best_map": best_map,
            "ap": val_metrics.get("ap", {}),
            "metric": val_metrics.get("metric"),  # voc07 | area | coco
            **{name: val_metrics[name] for name in COCO_STATS if name in val_metrics},  # the 12 COCO numbers
            "train_loss": self.counts.train_loss,  # the last epoch's, also when recovered from last.pt
            "num_params": self.num_params,
            "wall_time_s": self.counts.wall_time_s,
            "images_per_s": self.counts.mean_images_per_s,  # training only: bof-report's cost column
            "train_time_s": self.counts.train_time_s,
            "epochs": self.cfg.trainer.epochs,
            "world_size": self.world_size,  # data-parallel processes and the batch of each (sync BN's)
            "batch_per_process": self.batch_per_process,
            "bad_samples": {
                "skipped_at_load": self.bad_at_load,
                "replaced_in_training": self.counts.replaced_in_training,
                "dropped_from_evaluation": val_metrics.get("dropped_images", 0),
            },
            "nonfinite_steps_skipped": self.counts.nonfinite_skipped,
            "fingerprint": fingerprint(self.resolved),  # what a rerun compares (bof.utils.fingerprint)
            "config": self.resolved,
        }
        if metrics["map"] is not None:
            log.info(
                "final %s %.4f (best %.4f), %.0f s",
                METRIC_NAMES[metrics["metric"]],
                metrics["map"],
                best_map,
                metrics["wall_time_s"],
            )
        return metrics

    @staticmethod
    def where(out_dir: Path) -> None:
        log.info("run directory: %s\n  its TensorBoard: %s", shown(out_dir), tensorboard_command(out_dir))

"""bof-train: the training recipe, read top to bottom.

seed -> device -> data -> model -> optimizer -> LR schedule -> resume -> epochs (train, evaluate,
checkpoint) -> final metrics. ``main`` is the Hydra entry point; ``train(cfg)`` is the testable recipe
and the only place that reads the whole config: every component is built by ``hydra.utils.instantiate``
from its own group, so config keys are constructor arguments.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from bof.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from bof.config import validate_trainer
from bof.data.loader import build_data_loader
from bof.data.transforms import Resize
from bof.engine import evaluate, train_one_epoch
from bof.optim import param_groups
from bof.tricks.lr_schedule import build_lr_scheduler

log = logging.getLogger("bof.train")
# conf/ at the repository root (the package is installed editable, as the Makefile does)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def train(cfg: DictConfig) -> dict:
    """Runs the configured training and returns the final metrics (also written to metrics.json)."""
    trainer = validate_trainer(cfg.trainer)
    out_dir = Path(trainer.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, trainer.deterministic)
    device = pick_device(trainer.device)
    on_cuda = device.type == "cuda"
    amp, channels_last = trainer.amp and on_cuda, trainer.channels_last and on_cuda

    # data: the same VOC-layout loader for Pascal VOC and the built-in synthetic set
    train_set, val_set = instantiate(cfg.data.train), instantiate(cfg.data.val)
    class_names = list(train_set.class_names)
    train_loader, val_loader = build_data_loaders(cfg, trainer, train_set, val_set)
    iters_per_epoch = len(train_loader)
    if iters_per_epoch == 0:
        raise ValueError(
            f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_set)} training images"
        )

    # model, criterion, post-processing
    model, criterion, postprocess = build_model(cfg, len(class_names), device, channels_last)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # optimizer and per-iteration LR schedule (warmup, then step or cosine)
    # _partial_: Hydra would wrap the param-group dicts (holding tensors) into DictConfigs
    optimizer = instantiate(cfg.optimizer, _partial_=True)(
        param_groups(model, cfg.optimizer.weight_decay, trainer.no_wd)
    )
    lr_scheduler = build_lr_scheduler(
        optimizer, instantiate(cfg.lr_schedule), iters_per_epoch, trainer.epochs
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    log.info("config:\n%s", OmegaConf.to_yaml(resolved))
    log.info(
        "device %s | %d trainable parameters | %d train / %d val images | %d iterations/epoch of %d images",
        device,
        num_params,
        len(train_set),
        len(val_set),
        iters_per_epoch,
        trainer.batch_size,
    )
    if trainer.dry_run:
        log.info("dry run: exiting before training")
        return {
            "dry_run": True,
            "num_params": num_params,
            "iters_per_epoch": iters_per_epoch,
            "train_images": len(train_set),
            "val_images": len(val_set),
        }

    start_epoch, best_map = 0, -1.0
    checkpoint_path = resume_path(trainer.resume, out_dir)
    if checkpoint_path is not None:
        checkpoint = load_checkpoint(checkpoint_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        start_epoch, best_map = checkpoint["epoch"] + 1, checkpoint["best_map"]
        log.info("resumed from %s at epoch %d", checkpoint_path, start_epoch)

    writer = SummaryWriter(str(out_dir / "tensorboard"))
    writer.add_text("config", "```yaml\n" + OmegaConf.to_yaml(resolved) + "\n```")
    started, train_metrics, val_metrics, images_per_s = time.perf_counter(), {}, {}, []
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
            show_progress=trainer.progress,
        )
        images_per_s.append(train_metrics["images_per_s"])
        log.info(
            "epoch %d/%d: loss %.3f, %.1f images/s",
            epoch + 1,
            trainer.epochs,
            train_metrics["loss"],
            train_metrics["images_per_s"],
        )
        last_epoch = epoch + 1 == trainer.epochs
        if (epoch + 1) % trainer.eval_interval == 0 or last_epoch:
            val_metrics, evaluator, drawn = evaluate(
                model,
                postprocess,
                val_loader,
                device,
                class_names,
                trainer.voc07_metric,
                channels_last,
                amp,
                trainer.num_images_logged,
                trainer.progress,
            )
            log_evaluation(writer, val_metrics, drawn, epoch)
            if val_metrics["map"] > best_map:
                best_map = val_metrics["map"]
                evaluator.write_result_files(out_dir / "results")
                save_checkpoint(
                    checkpoint_state(model, optimizer, lr_scheduler, scaler, epoch, best_map, resolved),
                    out_dir / "best.pt",
                )
        save_checkpoint(
            checkpoint_state(model, optimizer, lr_scheduler, scaler, epoch, best_map, resolved),
            out_dir / "last.pt",
        )
    writer.close()

    metrics = {
        "map": val_metrics.get("map"),
        "best_map": best_map,
        "ap": val_metrics.get("ap", {}),
        "metric": "voc07" if trainer.voc07_metric else "area",
        "train_loss": train_metrics.get("loss"),
        "num_params": num_params,
        "wall_time_s": time.perf_counter() - started,
        "images_per_s": float(np.mean(images_per_s)) if images_per_s else None,
        "epochs": trainer.epochs,
        "config": resolved,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if metrics["map"] is not None:
        log.info(
            "final VOC07 mAP %.4f (best %.4f), %.0f s"
            if trainer.voc07_metric
            else "final area mAP %.4f (best %.4f), %.0f s",
            metrics["map"],
            best_map,
            metrics["wall_time_s"],
        )
    return metrics


def build_data_loaders(cfg: DictConfig, trainer, train_set, val_set):
    """Training loader (shuffled, one input size per batch) and validation loader (fixed size, in order)."""
    train_size, val_size = cfg.model.train_size, cfg.model.val_size
    train_loader = build_data_loader(
        train_set,
        Resize(),
        trainer.batch_size,
        lambda iteration: train_size,
        shuffle=True,
        seed=cfg.seed,
        num_workers=trainer.num_workers,
    )
    val_loader = build_data_loader(
        val_set,
        Resize(),
        trainer.batch_size,
        lambda iteration: val_size,
        shuffle=False,
        seed=cfg.seed,
        num_workers=min(trainer.num_workers, 2),
        drop_last=False,
    )
    return train_loader, val_loader


def build_model(cfg: DictConfig, num_classes: int, device: torch.device, channels_last: bool = False):
    """(model, criterion, postprocess) of the ``model`` group, on ``device``."""
    model = instantiate(cfg.model.net, num_classes=num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = instantiate(cfg.model.criterion, num_classes=num_classes).to(device)
    return model, criterion, instantiate(cfg.model.postprocess)


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
    """``trainer.resume``: false -> None; true -> <run dir>/last.pt; a string -> that checkpoint."""
    if resume is False or resume is None:
        return None
    path = out_dir / "last.pt" if resume is True else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"trainer.resume={resume}: no checkpoint at {path}"
            + (" (pass the old run directory with hydra.run.dir=<dir>)" if resume is True else "")
        )
    return path


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
    return train(cfg).get("map")


if __name__ == "__main__":
    main()

"""Training-throughput benchmark: where does a training step's time go?

Measures, for one model, batch and input size (any bof-train override applies):
  (a) bare forward + backward + optimizer step on a batch already on the device (images/s);
  (b) the full training step: data loading, augmentation, target assignment, loss, backward, step;
  (c) the ratio (b)/(a) (1.0 = the input pipeline and loss cost nothing);
  (d) data-pipeline images/s per worker (decode + transforms + collate, no model).

    python scripts/bench_train.py --workers 2          # the demo config
    python scripts/bench_train.py --width 1.0 --size 416 --batch-size 8 trainer.device=cuda trainer.amp=bf16
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import Subset

from bof.config import CONFIG_DIR, validate_trainer
from bof.engine import GradClip, prepare_batch, train_step
from bof.optim import param_groups
from bof.run import autocast_dtype, build_tricks, pick_device
from bof.train import build_data_loaders, build_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=float, default=None, help="model.net.width (default: the config's)")
    parser.add_argument(
        "--size", type=int, default=None, help="square input size (default: model.train_size)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="batch size (default: trainer.batch_size)"
    )
    parser.add_argument("--workers", type=int, default=None, help="data loader workers (default: trainer's)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations before each measurement")
    parser.add_argument("overrides", nargs="*", help="bof-train overrides, e.g. experiment=yolov3_voc")
    return parser.parse_args(argv)


def timed(step, iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (CUDA synchronised)."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - start) / iters


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    overrides = list(args.overrides)
    for key, value in (
        ("model.net.width", args.width),
        ("model.train_size", args.size),
        ("trainer.batch_size", args.batch_size),
        ("trainer.num_workers", args.workers),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides + ["trainer.output_dir=."])
    trainer = validate_trainer(cfg.trainer)
    device = pick_device(trainer.device)
    amp = autocast_dtype(trainer.amp, device)
    batch, size, workers = trainer.batch_size, cfg.model.train_size, trainer.num_workers

    train_set = instantiate(cfg.data.train)
    needed = batch * (args.iters + args.warmup) * 2
    subset = Subset(train_set, [i % len(train_set) for i in range(needed)])
    tricks = build_tricks(cfg)
    train_loader, _ = build_data_loaders(cfg, trainer, subset, subset, tricks)
    model = build_model(cfg, len(train_set.class_names), device, trainer.channels_last, tricks.smoothing)
    optimizer = instantiate(cfg.optimizer, _partial_=True)(param_groups(model, cfg.optimizer.weight_decay))
    model.train()

    images_u8, targets = next(iter(train_loader))
    images, targets = prepare_batch(images_u8, targets, device, trainer.channels_last)

    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def bare_step():
        if not hasattr(model, "net"):  # Faster R-CNN: its losses are part of its forward; one fixed batch
            train_step(model, images, targets, optimizer, scaler, amp)
            return
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            outputs = model.net(images)
        loss = sum(o.float().square().mean() for o in outputs)  # no targets, no criterion
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    stream = itertools.cycle(train_loader)

    def full_step():  # exactly the training loop's step
        images, targets = prepare_batch(*next(stream), device, trainer.channels_last)
        train_step(model, images, targets, optimizer, scaler, amp, GradClip.of(trainer))

    bare = batch / timed(bare_step, args.iters, args.warmup, device)
    full = batch / timed(full_step, args.iters, args.warmup, device)

    # (d): the main process iterating a loader without workers is exactly one worker's work
    single_trainer = trainer
    single_trainer.num_workers = 0
    pipeline_loader, _ = build_data_loaders(cfg, single_trainer, subset, subset, tricks)
    pipeline_stream = itertools.cycle(pipeline_loader)
    per_worker = batch / timed(lambda: next(pipeline_stream), args.iters, 1, torch.device("cpu"))

    rows = [
        (
            "model",
            f"{cfg.model.name}" + (f" width {cfg.model.net.width}" if "width" in cfg.model.net else ""),
        ),
        ("device / amp", f"{device} / {amp}"),
        ("batch x input", f"{batch} x {size}x{size}"),
        ("data loader workers", str(workers)),
        ("(a) bare fwd+bwd+step", f"{bare:.1f} images/s"),
        ("(b) full training step", f"{full:.1f} images/s"),
        ("(c) ratio (b)/(a)", f"{full / bare:.2f}"),
        ("(d) data pipeline per worker", f"{per_worker:.1f} images/s"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"| {k:<{width}} | {v} |" for k, v in rows))
    return {"bare": bare, "full": full, "ratio": full / bare, "per_worker": per_worker}


if __name__ == "__main__":
    main()

"""Training-throughput benchmark: where does a training step's time go?

Measures, for one model, batch and input size (any bof-train override applies):
  (a) bare forward + backward + optimizer step on a batch already on the device (images/s);
  (b) the full training step: data loading, augmentation, target assignment, loss, backward, step;
  (c) the ratio (b)/(a) (1.0 = the input pipeline and loss cost nothing), and the share of a full step
      spent outside forward + backward + optimizer (data wait, targets, loss, logging): 1 - (a)/(b) in time;
  (d) data-pipeline images/s per worker (decode + transforms + collate, no model).
(a) and (b) are measured interleaved, in ``--rounds`` rounds of ``--iters`` steps each, so that a busy
machine slows both alike; each is the median over the rounds, with the spread (min..max). On CUDA it
also reports peak memory and, from torch.utils.flop_counter on the first batch, the model's TFLOP/s
(and the model FLOPs utilisation with ``--peak-tflops``).

    python scripts/bench_train.py --workers 2          # the demo config
    python scripts/bench_train.py --width 1.0 --size 416 --batch-size 8 trainer.device=cuda trainer.amp=bf16
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import Subset
from torch.utils.flop_counter import FlopCounterMode

from bof.config import CONFIG_DIR, validate_trainer
from bof.engine.loops import GradClip, prepare_batch, train_step
from bof.engine.optim import param_groups
from bof.engine.run_setup import Run, autocast_dtype, build_tricks, pick_device
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
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per round and phase")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (a) and (b)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations before the first round")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak, for the MFU")
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
    return (time.perf_counter() - start) / max(iters, 1)


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
    train_loader, _ = build_data_loaders(cfg, Run(trainer, Path("."), device), subset, subset, tricks)
    model = build_model(cfg, len(train_set.class_names), device, trainer.channels_last, tricks.smoothing)
    optimizer = instantiate(cfg.optimizer, _partial_=True)(param_groups(model, cfg.optimizer.weight_decay))
    model.train()

    images_u8, targets = next(iter(train_loader))
    images, targets = prepare_batch(images_u8, targets, device, trainer.channels_last)

    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    flops = 0
    if device.type == "cuda":  # the model's FLOPs of one training step (forward + backward), first batch
        with FlopCounterMode(display=False) as counter:
            train_step(model, images, targets, optimizer, scaler, amp)
        flops = counter.get_total_flops()

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

    timed(bare_step, 0, args.warmup, device)
    timed(full_step, 0, args.warmup, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rounds = [
        (timed(bare_step, args.iters, 0, device), timed(full_step, args.iters, 0, device))
        for _ in range(max(args.rounds, 1))
    ]
    bare_s, full_s = (statistics.median(r[i] for r in rounds) for i in (0, 1))
    bare, full = batch / bare_s, batch / full_s
    spread = {
        k: (batch / max(r[i] for r in rounds), batch / min(r[i] for r in rounds))
        for i, k in enumerate(("bare", "full"))
    }
    outside = max(0.0, 1.0 - bare_s / full_s)

    # (d): the main process iterating a loader without workers is exactly one worker's work
    single_trainer = trainer
    single_trainer.num_workers = 0
    single_run = Run(single_trainer, Path("."), device)
    pipeline_loader, _ = build_data_loaders(cfg, single_run, subset, subset, tricks)
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
        ("(a) bare fwd+bwd+step", f"{bare:.1f} images/s ({spread['bare'][0]:.1f}..{spread['bare'][1]:.1f})"),
        ("(b) full training step", f"{full:.1f} images/s ({spread['full'][0]:.1f}..{spread['full'][1]:.1f})"),
        ("(c) ratio (b)/(a)", f"{full / bare:.2f}; {100 * outside:.1f}% of a step outside fwd+bwd+step"),
        ("(d) data pipeline per worker", f"{per_worker:.1f} images/s"),
    ]
    if device.type == "cuda":
        tflops = flops * full / batch / 1e12
        mfu = f", MFU {100 * tflops / args.peak_tflops:.1f}%" if args.peak_tflops else ""
        rows.append(("model TFLOP/s (full step)", f"{tflops:.1f}{mfu}"))
        rows.append(("peak memory", f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"| {k:<{width}} | {v} |" for k, v in rows))
    return {
        "bare": bare,
        "full": full,
        "ratio": full / bare,
        "per_worker": per_worker,
        "outside": outside,
        "spread": spread,
    }


if __name__ == "__main__":
    main()

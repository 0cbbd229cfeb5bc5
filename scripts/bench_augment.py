"""Data-pipeline benchmark: images/s of one data loader worker for the training pipelines.

Rows (one process, one thread, as a DataLoader worker runs; decode included):
  bof: augment=<augment> mixup=<mixup>   the real KeyedDataset fed by the real batch sampler's keys
  bof: augment=<augment>, no mixup
  bof: augment=none (resize only)
  torchvision.transforms.v2 reference    RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop, Resize,
                                         RandomHorizontalFlip, SanitizeBoundingBoxes; no mixup

Without a ``data=`` override it reads the built-in synthetic set rendered at VOC's 500 x 375 and at COCO's
640 x 480 (JPEG, generated once into the cache) and prints one column for each. Each row is timed in
``--rounds`` interleaved rounds after a warm-up; the table shows the median and the range.

    python scripts/bench_augment.py                        # augment=yolo mixup=beta15 at 416
    python scripts/bench_augment.py --size 608 --images 400 data=voc data.root=/data/VOCdevkit
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torchvision import tv_tensors
from torchvision.transforms import v2

from bof.config import CONFIG_DIR
from bof.data.loader import KeyedBatchSampler, KeyedDataset
from bof.engine.run_setup import build_tricks
from bof.utils.boxes import IMAGENET_MEAN, as_tv_tensors


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=416, help="square training input size")
    parser.add_argument("--images", type=int, default=200, help="timed images per row")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per row (interleaved)")
    parser.add_argument("--augment", default="yolo")
    parser.add_argument("--mixup", default="beta15")
    parser.add_argument("overrides", nargs="*", help="bof-train overrides for the data, e.g. data=voc")
    return parser.parse_args(argv)


def keyed(cfg, size: int, count: int):
    """The training dataset as the loader workers see it, with the sampler's keys of epoch 0."""
    tricks = build_tricks(cfg)
    train_set = instantiate(cfg.data.train)
    sampler = KeyedBatchSampler(
        range(len(train_set)),
        1,
        lambda it: size,
        seed=0,
        mixup=tricks.mixup,
        dataset_size=len(train_set),
        epochs=cfg.trainer.epochs,
    )
    keys = [batch[0] for batch in sampler][:count]
    dataset = KeyedDataset(train_set, tricks.augment)
    return lambda i: dataset[keys[i % len(keys)]], train_set


def torchvision_reference(train_set, size: int):
    fill = tuple(round(255 * m) for m in IMAGENET_MEAN)
    pipeline = v2.Compose(
        [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: fill, "others": 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
            v2.Resize((size, size), antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.SanitizeBoundingBoxes(labels_getter=lambda inputs: inputs[1]["labels"]),
        ]
    )
    return lambda i: pipeline(*as_tv_tensors(*train_set[i % len(train_set)]))


# photo-sized synthetic images when no data set is named: VOC's 500 x 375 and COCO's 640 x 480
PHOTO_SETS = {
    f"synthetic {w} x {h}": [
        f"++data.generator.image_size=[[{w},{w}],[{h},{h}]]",
        "++data.generator.num_train=300",
        "++data.generator.num_val=10",
        "++data.generator.num_test=10",
    ]
    for w, h in ((500, 375), (640, 480))
}
WARMUP = 10  # images before timing: first decodes, lazy imports, kernel selection


def timed(get, count: int) -> float:
    start = time.perf_counter()
    for i in range(WARMUP, WARMUP + count):
        get(i)
    return count / (time.perf_counter() - start)


def pipelines(args, data_overrides) -> dict:
    """label -> get(i) for the four rows, on one data set."""
    rows = {}
    for label, overrides in (
        (
            f"bof: augment={args.augment} mixup={args.mixup}",
            [f"augment={args.augment}", f"mixup={args.mixup}"],
        ),
        (f"bof: augment={args.augment}, no mixup", [f"augment={args.augment}", "mixup=off"]),
        ("bof: augment=none (resize only)", ["augment=none", "mixup=off"]),
    ):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, *data_overrides])
        rows[label], train_set = keyed(cfg, args.size, WARMUP + args.images)
    rows["torchvision.transforms.v2 reference, no mixup"] = torchvision_reference(train_set, args.size)
    for get in rows.values():
        for i in range(WARMUP):
            get(i)
    return rows


def main(argv=None) -> dict[str, dict[str, list[float]]]:
    """-> {data set: {row: images/s of each round}}; prints the median and range of the rounds."""
    args = parse_args(argv)
    named = any(o.startswith("data=") for o in args.overrides)
    data_sets = (
        {"data set": args.overrides}
        if named
        else {name: [*overrides, *args.overrides] for name, overrides in PHOTO_SETS.items()}
    )
    torch.set_num_threads(1)  # what a DataLoader worker gets
    results = {}
    for name, overrides in data_sets.items():
        rows = pipelines(args, overrides)
        speeds = {label: [] for label in rows}
        for _ in range(args.rounds):  # rows interleaved, so a busy moment does not hit one row only
            for label, get in rows.items():
                speeds[label].append(timed(get, args.images))
        results[name] = speeds
    width = max(len(label) for speeds in results.values() for label in speeds)
    names = list(results)
    print(
        f"| {'pipeline (1 worker, 1 thread, ' + str(args.size) + ' px)':<{width}} | "
        + " | ".join(f"{n} (median, min-max of {args.rounds})" for n in names)
        + " |"
    )
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(n) + 26) for n in names) + "|")
    for label in results[names[0]]:
        cells = []
        for n in names:
            v = sorted(results[n][label])
            cells.append(f"{statistics.median(v):.1f} img/s ({v[0]:.0f}-{v[-1]:.0f})".ljust(len(n) + 24))
        print(f"| {label:<{width}} | " + " | ".join(cells) + " |")
    return results


if __name__ == "__main__":
    main()

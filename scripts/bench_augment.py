"""Data-pipeline benchmark: images/s of one data loader worker for the training pipelines.

Rows (one process, one thread, as a DataLoader worker runs; decode included):
  bof: augment=<augment> mixup=<mixup>   the real KeyedDataset fed by the real batch sampler's keys
  bof: augment=<augment>, no mixup
  bof: augment=none (resize only)
  torchvision.transforms.v2 reference    RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop, Resize,
                                         RandomHorizontalFlip, SanitizeBoundingBoxes; no mixup

Without a ``data=`` override it reads the built-in synthetic set rendered at photo size (each side
375..640 px, JPEG: VOC's 500 x 375 and COCO's 640 x 480 lie in that range), generated once into the cache.

    python scripts/bench_augment.py                        # augment=yolo mixup=beta15 at 416
    python scripts/bench_augment.py --size 608 --images 400 data=voc data.root=/data/VOCdevkit
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torchvision import tv_tensors
from torchvision.transforms import v2

from bof.boxes import IMAGENET_MEAN, as_tv_tensors
from bof.config import CONFIG_DIR
from bof.data.loader import KeyedBatchSampler, KeyedDataset
from bof.run import build_tricks


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=416, help="square training input size")
    parser.add_argument("--images", type=int, default=200, help="timed images per row")
    parser.add_argument("--augment", default="yolo")
    parser.add_argument("--mixup", default="beta15")
    parser.add_argument("overrides", nargs="*", help="bof-train overrides for the data, e.g. data=voc")
    return parser.parse_args(argv)


def images_per_s(get, count: int) -> float:
    get(0)  # warm-up: first decode, lazy imports
    start = time.perf_counter()
    for i in range(count):
        get(i)
    return count / (time.perf_counter() - start)


def keyed(cfg, size: int, count: int):
    """The training dataset as the loader workers see it, with the sampler's keys of epoch 0."""
    tricks = build_tricks(cfg)
    train_set = instantiate(cfg.data.train)
    sampler = KeyedBatchSampler(
        range(len(train_set)), 1, lambda it: size, seed=0, mixup=tricks.mixup,
        dataset_size=len(train_set), epochs=cfg.trainer.epochs,
    )  # fmt: skip
    keys = [batch[0] for batch in sampler][:count]
    dataset = KeyedDataset(train_set, tricks.augment)
    return lambda i: dataset[keys[i % len(keys)]], train_set


def torchvision_reference(train_set, size: int):
    fill = tuple(round(255 * m) for m in IMAGENET_MEAN)
    pipeline = v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: fill, "others": 0}, side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(),
        v2.Resize((size, size), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.SanitizeBoundingBoxes(labels_getter=lambda inputs: inputs[1]["labels"]),
    ])  # fmt: skip
    return lambda i: pipeline(*as_tv_tensors(*train_set[i % len(train_set)]))


# photo-sized synthetic images when no data set is named (later overrides still win)
PHOTO_SIZED = ["++data.generator.image_size=[375,640]", "++data.generator.num_train=300",
               "++data.generator.num_val=10", "++data.generator.num_test=10"]  # fmt: skip


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    if not any(o.startswith("data=") for o in args.overrides):
        args.overrides = [*PHOTO_SIZED, *args.overrides]
    torch.set_num_threads(1)  # what a DataLoader worker gets
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
            cfg = compose("train", overrides=[*overrides, *args.overrides])
        get, train_set = keyed(cfg, args.size, args.images)
        rows[label] = images_per_s(get, args.images)
    rows["torchvision.transforms.v2 reference, no mixup"] = images_per_s(
        torchvision_reference(train_set, args.size), args.images
    )
    width = max(map(len, rows))
    print(f"| {'pipeline (1 worker, 1 thread, ' + str(args.size) + ' px)':<{width}} | images/s |")
    print(f"|{'-' * (width + 2)}|----------|")
    for label, value in rows.items():
        print(f"| {label:<{width}} | {value:8.1f} |")
    return rows


if __name__ == "__main__":
    main()

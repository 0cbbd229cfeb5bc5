"""CPU (or GPU) seconds per training iteration of the four Faster R-CNN models at 600 x 1000.

    python scripts/bench_faster_rcnn.py [--iters 2] [--device cpu]

One image per iteration (the paper's 1 image per GPU), 20 classes, 3 boxes, random weights; forward with
the losses, backward, SGD step. Also the seconds of one inference pass.
"""

from __future__ import annotations

import argparse
import time

import torch

from bof.models.faster_rcnn import FasterRCNNDetector

MODELS = {
    "faster_rcnn_r50_fpn": (50, "fpn"),
    "faster_rcnn_r101_fpn": (101, "fpn"),
    "faster_rcnn_r50_c4": (50, "c4"),
    "faster_rcnn_r101_c4": (101, "c4"),
}


def step(model, optimizer, image, target) -> None:
    losses = model([image], [target])
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def main(argv=None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    image = torch.randn(3, args.height, args.width, device=device)
    target = {
        "boxes": torch.tensor(
            [[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 500.0], [10.0, 10.0, 90.0, 80.0]]
        ),
        "labels": torch.tensor([3, 7, 11]),
    }
    target = {k: v.to(device) for k, v in target.items()}
    results = {}
    for name, (depth, design) in MODELS.items():
        model = FasterRCNNDetector(20, depth, design, min_size=args.height, max_size=args.width).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        model.train()
        step(model, optimizer, image, target)  # warm-up
        start = time.perf_counter()
        for _ in range(args.iters):
            step(model, optimizer, image, target)
        train_s = (time.perf_counter() - start) / args.iters
        model.eval()
        with torch.no_grad():
            model([image])
            start = time.perf_counter()
            model([image])
            infer_s = time.perf_counter() - start
        results[name] = (train_s, infer_s)
        print(f"| {name:<22} | {train_s:6.2f} s/iter train | {infer_s:6.2f} s inference |", flush=True)
    return results


if __name__ == "__main__":
    main()

"""CPU (or GPU) seconds per training iteration of the four Faster R-CNN models at 600 x 1000, or, with
``--mini``, of the narrow C4 models a CPU miniature can train, against the narrow YOLOv3.

    python scripts/bench_faster_rcnn.py [--iters 2] [--device cpu]
    python scripts/bench_faster_rcnn.py --mini [--iters 3] [--depths 50 101] [--widths 0.125 0.25]

Default: one image per iteration (the paper's 1 image per GPU), 20 classes, 3 boxes, random weights;
forward with the losses, backward, SGD step. Also the seconds of one inference pass.

``--mini``: the C4 design on a ResNet of ``--widths`` at the miniature's input size (shorter side 160,
longer at most 267; anchors 8..128, the paper's 32..512 x 160/600; proposals narrower than 4 px dropped,
the paper's 16 x 160/600), stem frozen and the backbone loaded from a classifier checkpoint whose BN
statistics are calibrated on random images (:func:`calibrated_backbone`), 6 classes, random images of
224..320 px a side with 1 to 6 random boxes, random weights. Training step (forward with the losses,
backward, SGD step) per ``--batch-sizes`` and ``--threads``, for ``rois_per_image`` 128 and 64 and for the
RPN's training proposals pre/post NMS at the paper's 12000/2000 and scaled by the image area (160/600)^2
to 850/150; inference seconds per image (a batch of 8, no gradient) at the paper's test proposals 6000/300
and at 430/25 scaled alike. The narrow YOLOv3 (``model=yolov3_narrow``: width 0.125 at 160 x 160, its loss
with target assignment) is timed in the same run as the reference; its images come already resized (its
data pipeline resizes), while Faster R-CNN's step includes its own resize. Each time is the median of
``--iters`` steps after one untimed step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bof.models.classifiers import load_backbone
from bof.models.faster_rcnn import FasterRCNNDetector
from bof.models.resnet import build_resnet
from bof.utils.checkpoint import save_checkpoint

MODELS = {
    "faster_rcnn_r50_fpn": (50, "fpn"),
    "faster_rcnn_r101_fpn": (101, "fpn"),
    "faster_rcnn_r50_c4": (50, "c4"),
    "faster_rcnn_r101_c4": (101, "c4"),
}

# --mini: the miniature's input size and the paper's C4 values scaled with it (conf/model/faster_rcnn_r50_c4)
MINI_SIZE, MINI_MAX_SIZE, PAPER_SIZE = 160, 267, 600
MINI_NET = dict(
    design="c4",
    min_size=MINI_SIZE,
    max_size=MINI_MAX_SIZE,
    anchor_sizes=(8, 16, 32, 64, 128),  # 32..512 x 160/600
    rpn_nms=0.7,
    rpn_min_size=4,  # 16 x 160/600
    roi_sampling_ratio=2,
    roi_box_beta=1.0,
    box_score_thresh=0.0001,
    box_nms=0.3,
    detections_per_image=None,
)
MINI_CLASSES = 6
# (pre, post) NMS proposals of the RPN: the paper's (GluonCV's VOC C4) and x (160/600)^2, as the anchors
TRAIN_PROPOSALS = {"12000/2000": (12000, 2000), "850/150": (850, 150)}
TEST_PROPOSALS = {"6000/300": (6000, 300), "430/25": (430, 25)}
INFERENCE_BATCH = 8


def step(model, optimizer, image, target) -> None:
    losses = model([image], [target])
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def train_step(model, optimizer, images, targets) -> None:
    losses = model(images, targets)
    optimizer.zero_grad()
    (losses["loss"] if "loss" in losses else sum(losses.values())).backward()  # YOLOv3's "loss": the sum
    optimizer.step()


def median_seconds(fn, iters: int) -> float:
    """Median seconds of ``iters`` calls of ``fn`` after one untimed call."""
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_scenes(count: int, seed: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """``count`` random normalised images of 224..320 px a side, each with 1 to 6 boxes of 5..60% of its
    sides (the synthetic set's range) and labels of ``MINI_CLASSES`` classes."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low, high, n=()):
        return low + (high - low) * torch.rand(n, generator=generator)

    scenes = []
    for _ in range(count):
        height, width = (int(torch.randint(224, 321, (), generator=generator)) for _ in range(2))
        boxes_n = int(torch.randint(1, 7, (), generator=generator))
        size = torch.stack([uniform(0.05, 0.6, boxes_n) * width, uniform(0.05, 0.6, boxes_n) * height], 1)
        corner = torch.rand(boxes_n, 2, generator=generator) * (torch.tensor([width, height]) - size)
        target = {
            "boxes": torch.cat([corner, corner + size], 1),
            "labels": torch.randint(0, MINI_CLASSES, (boxes_n,), generator=generator),
        }
        scenes.append((torch.randn(3, height, width, generator=generator), target))
    return scenes


def batches(scenes, batch_size: int) -> list[tuple[list, list]]:
    return [
        ([image for image, _ in scenes[i : i + batch_size]], [t for _, t in scenes[i : i + batch_size]])
        for i in range(0, len(scenes) - batch_size + 1, batch_size)
    ]


def as_square(images: list[torch.Tensor], targets: list[dict], size: int) -> tuple[torch.Tensor, list[dict]]:
    """The images resized to ``size`` x ``size`` as a batch, their boxes scaled alike (YOLOv3's input)."""
    resized, scaled = [], []
    for image, target in zip(images, targets, strict=True):
        height, width = image.shape[-2:]
        resized.append(torch.nn.functional.interpolate(image[None], (size, size), mode="bilinear")[0])
        factor = torch.tensor([size / width, size / height] * 2)
        scaled.append({**target, "boxes": target["boxes"] * factor})
    return torch.stack(resized), scaled


def calibrated_backbone(depth: int, width: float, directory: Path) -> Path:
    """A task=classify-like checkpoint of the narrow ResNet: random weights whose BN statistics are those
    of random 160 px images. A random ResNet under frozen identity BN grows its activations block by
    block (R101: feature std ~1e4), its random RPN then proposes degenerate boxes that the minimum size
    drops, and the RoI head sees only the ground truths: a step far cheaper than training's."""
    path = directory / f"r{depth}_{width}.pt"
    if not path.exists():
        torch.manual_seed(0)
        net = build_resnet(depth, width=width, num_classes=MINI_CLASSES)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # the running statistics: a cumulative average
        with torch.no_grad():
            for _ in range(4):
                net(torch.randn(8, 3, MINI_SIZE, MINI_MAX_SIZE))
        save_checkpoint({"model": net.state_dict(), "config": {"task": "classify"}}, path)
    return path


def mini_c4(depth: int, width: float, directory: Path, **kwargs) -> FasterRCNNDetector:
    """The miniature's C4 detector as ``model.backbone_checkpoint`` builds it: stem frozen, backbone from
    the (calibrated) classifier checkpoint."""
    torch.manual_seed(0)
    model = FasterRCNNDetector(MINI_CLASSES, depth, width=width, freeze_stem=True, **MINI_NET, **kwargs)
    return load_backbone(model, calibrated_backbone(depth, width, directory))


def narrow_yolov3():
    """``model=yolov3_narrow`` of the repository's config, behind the detector interface."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from bof.config import CONFIG_DIR
    from bof.models.yolov3 import YOLOv3Detector

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=yolov3_narrow"])
    model = YOLOv3Detector(
        instantiate(cfg.model.net, num_classes=MINI_CLASSES),
        instantiate(cfg.model.criterion, num_classes=MINI_CLASSES),
        instantiate(cfg.model.postprocess),
    )
    return model, cfg.model.train_size, cfg.model.net.width


def mini(args) -> dict[tuple, float]:
    """The --mini tables: {("train", name, width, rois, proposals, batch, threads) or ("infer", name, width,
    proposals, threads): seconds per step (train) or per image (infer)}."""
    scenes = random_scenes(max(args.batch_sizes) * (args.iters + 1), seed=0)
    directory = Path(tempfile.mkdtemp(prefix="bench_faster_rcnn_"))
    results = {}
    print(
        "| model | width | rois/image | RPN train pre/post | batch | threads | train s/step | images/s |",
        flush=True,
    )
    print("|---|---|---|---|---|---|---|---|", flush=True)

    def time_training(name, width, rois, proposals, build):
        for batch_size in args.batch_sizes:
            for threads in args.threads:
                torch.set_num_threads(threads)
                torch.manual_seed(0)
                model, prepare = build()
                model.train()
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
                data = [prepare(*b) for b in batches(scenes, batch_size)]
                cycle = iter(data * (args.iters + 1))
                seconds = median_seconds(
                    lambda m=model, o=optimizer, c=cycle: train_step(m, o, *next(c)), args.iters
                )
                results["train", name, width, rois, proposals, batch_size, threads] = seconds
                print(
                    f"| {name} | {width} | {rois} | {proposals} | {batch_size} | {threads} | {seconds:.3f} "
                    f"| {batch_size / seconds:.1f} |",
                    flush=True,
                )

    yolo_name = "yolov3_narrow"
    for depth in args.depths:
        for width in args.widths:
            name = f"faster_rcnn_r{depth}_c4"
            for rois in args.rois:
                for proposals in args.train_proposals:
                    pre, post = TRAIN_PROPOSALS[proposals]

                    def build(depth=depth, width=width, rois=rois, pre=pre, post=post):
                        net = mini_c4(
                            depth,
                            width,
                            directory,
                            rois_per_image=rois,
                            rpn_pre_nms_train=pre,
                            rpn_post_nms_train=post,
                        )
                        return net, lambda images, targets: (images, targets)

                    time_training(name, width, rois, proposals, build)

    def build_yolo():
        model, size, _ = narrow_yolov3()
        return model, lambda images, targets: as_square(images, targets, size)

    yolo_width = narrow_yolov3()[2]
    time_training(yolo_name, yolo_width, "-", "-", build_yolo)

    print("\n| model | width | RPN test pre/post | threads | inference s/image |", flush=True)
    print("|---|---|---|---|---|", flush=True)
    images = [image for image, _ in scenes[:INFERENCE_BATCH]]
    for depth in args.depths:
        for width in args.widths:
            name = f"faster_rcnn_r{depth}_c4"
            for proposals, (pre, post) in TEST_PROPOSALS.items():
                model = mini_c4(depth, width, directory, rpn_pre_nms_test=pre, rpn_post_nms_test=post).eval()
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    with torch.no_grad():
                        seconds = median_seconds(lambda model=model: model(images), args.iters) / len(images)
                    results["infer", name, width, proposals, threads] = seconds
                    print(f"| {name} | {width} | {proposals} | {threads} | {seconds:.4f} |", flush=True)
    model, size, width = narrow_yolov3()
    model.eval()
    square, _ = as_square(images, [{"boxes": torch.zeros(0, 4)}] * len(images), size)
    for threads in args.threads:
        torch.set_num_threads(threads)
        with torch.no_grad():
            seconds = median_seconds(lambda: model(square), args.iters) / len(images)
        results["infer", yolo_name, width, "-", threads] = seconds
        print(f"| {yolo_name} | {width} | - | {threads} | {seconds:.4f} |", flush=True)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--mini", action="store_true", help="the narrow C4 models of a CPU miniature")
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 101], help="--mini: ResNet depths")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.125, 0.25], help="--mini: widths")
    parser.add_argument("--rois", type=int, nargs="+", default=[128, 64], help="--mini: rois_per_image")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8], help="--mini: batch sizes")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="--mini: torch threads")
    parser.add_argument(
        "--train-proposals",
        nargs="+",
        choices=list(TRAIN_PROPOSALS),
        default=list(TRAIN_PROPOSALS),
        help="--mini: the RPN's training proposals pre/post NMS",
    )
    args = parser.parse_args(argv)
    if args.mini:
        return mini(args)
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

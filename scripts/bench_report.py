"""bof-report's paired bootstrap on simulated evaluations: its speed at the sizes of VOC07 test and COCO
val2017, and the coverage of its 95% intervals when two runs have the same expected AP.

    python scripts/bench_report.py speed      # VOC07-sized and COCO-sized, 1,000 replicates, two runs
    python scripts/bench_report.py coverage   # 200 simulated pairs of equally good runs (a few minutes)

Both run on one CPU core (BLAS threads set to 1 before numpy loads). A simulated evaluation is a per-image
record as an evaluator writes it (bof.evaluation.ranked_record): each image has objects (VOC07 test: 2.4
per image; COCO val2017: 7.4) and a difficulty shared by every run; a run finds each object with a
probability that falls with the difficulty, at an IoU drawn per detection (a true positive at the COCO
thresholds below it), adds duplicates and background detections up to its detections per image, and ranks
them by a score that is higher for the found objects. Two runs of one detector differ only in these draws.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the targets are stated
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bof.evaluation.bootstrap import resample_rows  # noqa: E402
from bof.evaluation.ranked_record import ranked_record  # noqa: E402
from bof.evaluation.weighted_ap import metric_under_weights  # noqa: E402

SIZES = {  # images, detections per image, classes, objects per image, metric
    "voc07": (4952, 100, 20, 2.4, "voc07"),
    "coco": (5000, 100, 80, 7.4, "coco"),
}


def simulate_images(rng, num_images: int, num_classes: int, objects_per_image: float):
    """The validation set: each image's objects (their classes) and its difficulty in [0, 1)."""
    counts = rng.poisson(objects_per_image, num_images)
    classes = [rng.integers(0, num_classes, n) for n in counts]
    return classes, rng.beta(2, 2, num_images)


def simulate_run(rng, images, num_classes: int, dets_per_image: int, metric: str, skill: float = 0.8):
    """One run's record on ``images``: found objects (score ~ Beta(4, 2), IoU ~ U(0.4, 1)), a duplicate
    for some, background false positives (score ~ Beta(1, 4)) up to ``dets_per_image``."""
    classes, difficulty = images
    thresholds = np.linspace(0.5, 0.95, 10) if metric == "coco" else np.array([0.5])
    positives = np.zeros((len(classes), num_classes), np.int32)
    det_class, det_image, det_score, det_iou = [], [], [], []
    for i, objects in enumerate(classes):
        np.add.at(positives[i], objects, 1)
        found = objects[rng.random(len(objects)) < skill * (1 - 0.6 * difficulty[i])]
        duplicates = found[rng.random(len(found)) < 0.3]
        background = max(dets_per_image - len(found) - len(duplicates), 0)
        det_class += [found, duplicates, rng.integers(0, num_classes, background)]
        det_image.append(np.full(len(found) + len(duplicates) + background, i))
        det_score += [rng.beta(4, 2, len(found)), rng.beta(2, 3, len(duplicates)), rng.beta(1, 4, background)]
        det_iou += [rng.uniform(0.4, 1.0, len(found)), np.zeros(len(duplicates)), np.zeros(background)]
    det_class, det_image = np.concatenate(det_class), np.concatenate(det_image)
    det_score, det_iou = np.concatenate(det_score), np.concatenate(det_iou)
    per_class = []
    for c in range(num_classes):
        mine = np.flatnonzero(det_class == c)
        mine = mine[np.argsort(-det_score[mine], kind="stable")]
        tp = det_iou[mine, None] >= thresholds[None, :]
        per_class.append((det_image[mine], det_score[mine], tp, ~tp))
    return ranked_record(
        metric, [str(i) for i in range(len(classes))], map(str, range(num_classes)), positives, per_class
    )


def speed(replicates: int) -> None:
    for name, (num_images, dets, num_classes, objects, metric) in SIZES.items():
        rng = np.random.default_rng(0)
        images = simulate_images(rng, num_images, num_classes, objects)
        runs = {row: [simulate_run(rng, images, num_classes, dets, metric)] for row in ("a", "b")}
        start = time.perf_counter()
        result = resample_rows(runs, replicates, seed=0)
        seconds = time.perf_counter() - start
        interval = result.interval("b", "a")
        points = {row: 100 * metric_under_weights(r[0], np.ones(num_images))[0] for row, r in runs.items()}
        print(
            f"{name}: {num_images} images x {dets} detections, {num_classes} classes, "
            f"{replicates} replicates, 2 runs: {seconds:.1f} s (one core) | "
            f"b - a = {points['b'] - points['a']:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"
        )


def coverage(pairs: int, replicates: int, num_images: int) -> None:
    """How often the 95% interval of b - a contains 0 when a and b are two runs of the same detector."""
    rng = np.random.default_rng(1)
    contains, widths = 0, []
    start = time.perf_counter()
    for _ in range(pairs):
        images = simulate_images(rng, num_images, 20, 2.4)  # a fresh validation set for every pair
        runs = {row: [simulate_run(rng, images, 20, 100, "voc07")] for row in ("a", "b")}
        interval = resample_rows(runs, replicates, seed=int(rng.integers(1 << 31))).interval("b", "a")
        contains += interval.low <= 0 <= interval.high
        widths.append(interval.high - interval.low)
    print(
        f"coverage: {pairs} pairs of equally good VOC07-style runs on {num_images} images, {replicates} "
        f"replicates: the 95% interval contains 0 in {contains}/{pairs} = {100 * contains / pairs:.1f}% "
        f"(median width {np.median(widths):.2f} mAP points; {time.perf_counter() - start:.0f} s)"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("speed", "coverage"))
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=200, help="coverage: simulated pairs of runs")
    parser.add_argument("--images", type=int, default=1000, help="coverage: validation images per pair")
    args = parser.parse_args(argv)
    if args.what == "speed":
        speed(args.replicates)
    else:
        coverage(args.pairs, args.replicates, args.images)


if __name__ == "__main__":
    main()

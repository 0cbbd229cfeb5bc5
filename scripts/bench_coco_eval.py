"""COCO bbox evaluation time: pycocotools against faster-coco-eval on a large synthetic result set.

    python scripts/bench_coco_eval.py --images 5000 --dets-per-image 100

Ground truth: ``--images`` images of 640 x 480 with 1-15 boxes of 80 categories; detections: jittered
copies of the true boxes plus random boxes, ``--dets-per-image`` per image (500k by default).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from bof.evaluation.coco_eval import BACKENDS, coco_api, evaluate_coco


def synthetic_coco(images: int, dets_per_image: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    dataset = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 81)],
    }
    results = []
    for image_id in range(1, images + 1):
        dataset["images"].append({"id": image_id, "width": 640, "height": 480})
        count = int(rng.integers(1, 16))
        xy = rng.uniform(0, 400, (count, 2))
        wh = rng.uniform(8, 240, (count, 2))
        cats = rng.integers(1, 81, count)
        for box, cat in zip(np.concatenate([xy, wh], 1).tolist(), cats.tolist(), strict=True):
            dataset["annotations"].append(
                {
                    "id": len(dataset["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        jitter = np.concatenate([xy, wh], 1)[rng.integers(0, count, dets_per_image)]
        jitter = jitter + rng.normal(0, 8, jitter.shape)
        jitter[:, 2:] = np.abs(jitter[:, 2:]) + 1
        labels = np.where(
            rng.random(dets_per_image) < 0.7,
            cats[rng.integers(0, count, dets_per_image)],
            rng.integers(1, 81, dets_per_image),
        )
        for box, cat, score in zip(
            jitter.round(2).tolist(), labels.tolist(), rng.random(dets_per_image).tolist(), strict=True
        ):
            results.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": score})
    return dataset, results


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets-per-image", type=int, default=100)
    args = parser.parse_args(argv)
    dataset, results = synthetic_coco(args.images, args.dets_per_image)
    timings, aps = {}, {}
    for backend in BACKENDS:
        try:
            COCO, _ = coco_api(backend)
        except ImportError as error:
            print(f"{backend}: skipped ({error})")
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "index created!"
            gt = COCO()
            gt.dataset = dataset
            gt.createIndex()
        start = time.perf_counter()
        aps[backend] = evaluate_coco(gt, results, backend)["AP"]
        timings[backend] = time.perf_counter() - start
    print(f"{len(results)} detections on {args.images} images")
    for backend, seconds in timings.items():
        print(f"| {backend:<16} | {seconds:7.1f} s | AP {aps[backend]:.6f} |")
    return timings


if __name__ == "__main__":
    main()

"""COCO at the size users have it (issue 28): build time of the training set without and with the
annotation cache, time to the first batch, and memory with N loader workers under fork and forkserver.

    python scripts/bench_scale.py                          # train2017's size: 118,287 images, 860,001 boxes
    python scripts/bench_scale.py --images 39429 --boxes 286667   # a third of it

Generates ``instances_train2017.json`` (boxes, crowd flags and a 24-point polygon per box, so the file
is about as large as the real one) in a temporary folder with one JPEG hard-linked under every file
name, then measures each step in a fresh process, as ``bof-train data=coco`` builds and iterates it
(``gc.freeze()`` after the build, a full collection in every worker before it loads). Memory is read
from ``/proc/<pid>/smaps_rollup`` after the batches: USS (private pages) and PSS (shared pages split
among their users) of the main process and of each worker; one rank = main + workers (PSS), the node
total = ranks x one rank (an upper bound: the ranks also share the libraries' pages). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 2**20


def generate(root: Path, images: int, boxes: int, seed: int = 0) -> Path:
    """``root/annotations/instances_train2017.json`` and ``root/train2017`` of hard links."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    source = root / "one.jpg"
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), np.uint8)).save(source, quality=90)
    categories = [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in range(1, 91) if c % 9]
    image_list = []
    for i in range(images):
        name = f"{i + 1:012d}.jpg"
        if i % 60000 == 0:  # a file takes at most 65,000 links on ext4
            link_source = shutil.copy(source, root / f"one{i}.jpg")
        os.link(link_source, root / "train2017" / name)
        image_list.append({"id": i + 1, "file_name": name, "width": 640, "height": 480})
    owner = np.sort(rng.integers(1, images + 1, boxes))  # about 1% of the images end up without a box
    xy = rng.uniform(0, 560, (boxes, 2)).round(2)
    wh = rng.uniform(2, 200, (boxes, 2)).round(2)
    cats = rng.choice([c["id"] for c in categories], boxes)
    crowd = rng.random(boxes) < 0.01
    path = root / "annotations" / "instances_train2017.json"
    with open(path, "w") as f:
        f.write('{"images": ' + json.dumps(image_list) + ', "categories": ' + json.dumps(categories))
        f.write(', "annotations": [')
        for start in range(0, boxes, 20000):
            chunk = []
            for j in range(start, min(start + 20000, boxes)):
                polygon = (np.tile(xy[j], 24) + rng.uniform(0, 1, 48) * np.tile(wh[j], 24)).round(2)
                chunk.append(
                    {
                        "id": j + 1,
                        "image_id": int(owner[j]),
                        "category_id": int(cats[j]),
                        "bbox": [*xy[j].tolist(), *wh[j].tolist()],
                        "area": float(wh[j, 0] * wh[j, 1]),
                        "iscrowd": int(crowd[j]),
                        "segmentation": [polygon.tolist()],
                    }
                )
            f.write(("," if start else "") + json.dumps(chunk)[1:-1])
        f.write("]}")
    return path


def memory(pid: int) -> dict:
    """USS and PSS in MiB from /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0]) * 1024
    return {
        "uss_mib": (fields["Private_Clean"] + fields["Private_Dirty"]) / MIB,
        "pss_mib": fields["Pss"] / MIB,
    }


class CollectFirst:
    """Resize that runs a full collection the first time it is called in a worker (what Python would
    do some time during training), so the workers' memory includes its page copies."""

    def __init__(self, size_transform):
        self.transform, self.collected = size_transform, False

    def __call__(self, image, target, size):
        if not self.collected:
            import gc

            gc.collect()
            self.collected = True
        return self.transform(image, target, size)


def child(args) -> dict:
    """One measurement in this fresh process: the build, or the build and the loader."""
    import gc

    from bof.data.coco import COCODetection

    start = time.perf_counter()
    dataset = COCODetection(args.root, "train2017")
    result = {"build_s": time.perf_counter() - start, "images": len(dataset), "boxes": len(dataset._labels)}
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.child == "build":  # and what a forkserver or spawn worker receives: the data set pickled
        import pickle

        result["pickled_mib"] = len(pickle.dumps(dataset)) / MIB
        return result
    from bof.data.loader import build_data_loader
    from bof.tricks.augment import Resize
    from bof.tricks.random_shapes import FixedShape

    gc.freeze()  # as bof.train does
    loader = build_data_loader(
        dataset,
        CollectFirst(Resize()),
        8,
        FixedShape(416),
        shuffle=True,
        seed=0,
        num_workers=args.workers,
        start_method=args.start_method,
    )
    batches = iter(loader)
    next(batches)
    result["first_batch_after_start_s"] = time.time() - args.started
    for _ in range(args.batches - 1):
        next(batches)
    workers = [w.pid for w in batches._workers]
    result["main"] = memory(os.getpid())
    result["workers"] = [memory(pid) for pid in workers]
    return result


def run_child(args, mode: str, start_method: str = "fork") -> dict:
    command = [sys.executable, __file__, "--child", mode, "--root", str(args.root)]
    command += ["--started", str(time.time()), "--workers", str(args.workers), "--batches", str(args.batches)]
    command += ["--start-method", start_method]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=118287)
    parser.add_argument("--boxes", type=int, default=860001)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--child", choices=["build", "load"])
    parser.add_argument("--root", type=Path)
    parser.add_argument("--started", type=float)
    parser.add_argument("--start-method", default="fork")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="bof-bench-scale-") as tmp:
        args.root = Path(tmp)
        start = time.perf_counter()
        path = generate(args.root, args.images, args.boxes)
        print(f"generated {path.stat().st_size / MIB:.0f} MiB of JSON in {time.perf_counter() - start:.0f} s")
        results = {"json_mib": path.stat().st_size / MIB, "cold": run_child(args, "build")}
        results["cached"] = run_child(args, "build")
        for method in ("fork", "forkserver"):
            results[method] = run_child(args, "load", method)
    report(results, args)


def report(results: dict, args) -> None:
    cold, cached = results["cold"], results["cached"]
    print(f"{cold['images']} images, {cold['boxes']} boxes, {results['json_mib']:.0f} MiB of JSON")
    print(f"build without the cache: {cold['build_s']:.1f} s (peak RSS {cold['peak_rss_mib']:.0f} MiB)")
    print(f"build with the cache:    {cached['build_s']:.2f} s (peak RSS {cached['peak_rss_mib']:.0f} MiB)")
    print(f"the data set pickles into {cached['pickled_mib']:.1f} MiB")
    for method in ("fork", "forkserver"):
        r = results[method]
        workers = r["workers"]
        rank = r["main"]["pss_mib"] + sum(w["pss_mib"] for w in workers)
        print(
            f"{method}: first batch {r['first_batch_after_start_s']:.1f} s after the start; main USS "
            f"{r['main']['uss_mib']:.0f} / PSS {r['main']['pss_mib']:.0f} MiB; per worker USS "
            f"{max(w['uss_mib'] for w in workers):.0f} / PSS {max(w['pss_mib'] for w in workers):.0f} MiB "
            f"(max of {len(workers)}); one rank {rank / 1024:.2f} GiB; {args.ranks} ranks x {len(workers)} "
            f"workers: {args.ranks * rank / 1024:.1f} GiB"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()

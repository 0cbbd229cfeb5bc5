"""Evaluates official Pascal VOC result files (``comp4_det_test_<class>.txt``) against a VOC split.

    python scripts/eval_voc.py --voc-root data/VOCdevkit/VOC2007 --split test --results runs/x/results \
        [--metric voc07|area] [--out result.json] [--classes voc|<comma list>]

Prints a per-class AP table and the mAP; ``--out`` writes ``{"map", "ap", "num_positives", ...}`` as
JSON (AP as fractions in [0, 1]; a class without positives gets ``null``). The matching rules are the
devkit's, see :mod:`bof.evaluation.voc_eval`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from bof.engine.evaluator import build_voc_evaluator
from bof.evaluation.voc_results import DEFAULT_PREFIX, format_results


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x  # NaN is not valid JSON


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc-root", required=True, help="a VOC year folder, e.g. VOCdevkit/VOC2007")
    parser.add_argument("--split", default="test", help="ImageSets/Main/<split>.txt (default: test)")
    parser.add_argument("--results", required=True, help="folder holding <prefix><class>.txt files")
    parser.add_argument(
        "--metric",
        choices=("voc07", "area"),
        default="voc07",
        help="voc07: VOC2007 11-point AP (the paper's); area: VOC2010+ AP (default: voc07)",
    )
    parser.add_argument("--classes", default="voc", help="'voc' (the 20 classes) or a comma-separated list")
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"result file prefix (default: {DEFAULT_PREFIX})"
    )
    parser.add_argument(
        "--iou-thresh", type=float, default=0.5, help="match when IoU >= this, as the devkit (default: 0.5)"
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    class_names = None if args.classes == "voc" else [c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        evaluator = build_voc_evaluator(
            args.voc_root,
            args.split,
            args.results,
            class_names=class_names,
            use_07_metric=args.metric == "voc07",
            iou_thresh=args.iou_thresh,
            prefix=args.prefix,
        )
        results = evaluator.compute()
    except (FileNotFoundError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2

    print(
        f"VOC {args.split} ({len(evaluator.image_ids)} images), {args.metric} AP at IoU >= {args.iou_thresh}"
    )
    print(format_results(results))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "map": _nan_to_none(results["map"]),
            "ap": {k: _nan_to_none(v) for k, v in results["ap"].items()},
            "num_positives": results["num_positives"],
            "metric": args.metric,
            "iou_thresh": args.iou_thresh,
            "split": args.split,
            "num_images": len(evaluator.image_ids),
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

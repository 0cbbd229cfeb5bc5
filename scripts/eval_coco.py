"""Evaluate a COCO detection results file (bbox) against a COCO instances annotation file.

    python scripts/eval_coco.py --ann instances_val2017.json \
        --results outputs/<run>/results/coco_results.json [--out result.json] [--backend faster_coco_eval]

Prints the 12 standard COCOeval numbers and writes them as JSON with the keys AP, AP50, AP75, APs, APm,
APl, AR1, AR10, AR100, ARs, ARm, ARl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bof.evaluation.coco_eval import BACKENDS, STAT_NAMES, check_results, evaluate_coco, load_coco
from bof.utils.atomic import write_json_atomically


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ann", required=True, help="COCO instances annotation JSON")
    parser.add_argument("--results", required=True, help="COCO results JSON (a list of detections)")
    parser.add_argument("--out", help="write the 12 numbers to this JSON file")
    parser.add_argument("--backend", choices=BACKENDS, default="pycocotools")
    args = parser.parse_args(argv)
    results_path = Path(args.results)
    if not results_path.is_file():
        sys.exit(f"results file not found: {results_path}")
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as error:
        sys.exit(f"{results_path}: not JSON ({error})")
    try:  # a missing, malformed or ambiguous file: one line naming it, not a traceback
        coco_gt = load_coco(args.ann, args.backend)
        check_results(results, coco_gt, str(results_path))
    except (FileNotFoundError, ValueError) as error:
        sys.exit(str(error))
    stats = evaluate_coco(coco_gt, results, args.backend)
    numbers = {k: stats[k] for k in STAT_NAMES}
    for name, value in numbers.items():
        print(f"{name:>6} {value:.4f}")
    if args.out:
        write_json_atomically(args.out, numbers)
    return numbers


if __name__ == "__main__":
    main()

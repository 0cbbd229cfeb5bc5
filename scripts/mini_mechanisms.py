"""The mechanism checks of the mini scale (docs/mini_scale.md "Design 1"): four small experiments on the
runs of Table 2's miniature, each with its figure, written down before they were run.

    python scripts/mini_mechanisms.py [--runs multirun/table2-mini] [--out docs/images]

1. Random shapes and scale: the rows "+ synchronize BN" and "+ random training shapes" (which differ only by
   random shapes), every seed, evaluated at test sizes 128, 160 and 224 (bof-eval, model.val_size).
2. Mixup out of context: the rows "+ class label smoothing" and "+ mixup" evaluated on the split ooc of
   the same scenes (data.val.split=ooc) beside their own evaluation on val, and the shift of mixup's
   difference between the splits (ooc minus val) with its interval.
3. Label smoothing and calibration: the expected calibration error of the detections of the rows "+ cosine
   lr schedule" and "+ class label smoothing" (bof.evaluation.calibration, their eval_record.npz), and per
   score band the share of false positives naming a class absent from their image.
4. Sync BN: Table 2's baseline trained as 4 gloo processes x 2 images with sync BN and without it
   (trainer.devices=4 on the CPU; into <runs>/../mechanisms-mini/), against the baseline's own run
   (1 process x 8 images), and sync BN against plain BN at 4 x 2.

Each difference gets the paired bootstrap interval of bof-report (1,000 image resamples, seeds resampled
where there are several). Evaluations and trainings already done are reused (a rerun only redraws); the
results are printed as Markdown tables and saved as mechanisms.json beside the runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bof.cli.evaluate import evaluate_checkpoint  # noqa: E402
from bof.evaluation.bootstrap import resample_rows  # noqa: E402
from bof.evaluation.calibration import absent_class_detections, calibration  # noqa: E402
from bof.evaluation.ranked_record import RECORD_FILE, RankedDetections  # noqa: E402
from bof.evaluation.weighted_ap import WeightedMetric  # noqa: E402

SIZES = (128, 160, 224)
SCORE_BANDS = np.array([0.0, 0.05, 0.3, 1.0])  # false positives at low, middle and high scores
SYNCBN_RUNS = {"4 x 2, sync BN": ["syncbn=on"], "4 x 2, plain BN": ["syncbn=off"]}


def seeds(runs: Path, row: str) -> list[Path]:
    """The finished runs of ``row``, one per seed, in seed order."""
    found = sorted((runs / row).glob("seed*"), key=lambda p: int(p.name[4:]))
    return [run for run in found if (run / "metrics.json").is_file()]


def own(run: Path) -> RankedDetections:
    """The record of ``run``'s final evaluation, on its validation split."""
    return RankedDetections.load(run / RECORD_FILE)


def evaluated(run: Path, name: str, overrides: list[str]) -> RankedDetections:
    """``run``'s last.pt evaluated with ``overrides`` into ``run/eval-<name>`` (reused when there)."""
    out = run / f"eval-{name}"
    if not (out / RECORD_FILE).is_file():
        with torch.inference_mode():
            evaluate_checkpoint(str(run / "last.pt"), [*overrides, "trainer.progress=false"], str(out))
    return RankedDetections.load(out / RECORD_FILE)


def compare(records: dict[str, list[RankedDetections]], reference: str, replicates=None) -> dict:
    """Each entry's mean metric over its seeds and its paired interval against ``reference`` (from
    ``replicates`` where given: :func:`resample_rows` of ``records``)."""
    replicates = replicates or resample_rows(records, replicates=1000, seed=0)
    result = {}
    for name in records:
        interval = replicates.interval(name, reference)
        result[name] = {
            "mean": float(np.mean([100 * metric_of(r) for r in records[name]])),
            "seeds": len(records[name]),
            "vs_reference": None if interval is None else [interval.low, interval.high],
        }
    return result


def metric_of(record: RankedDetections) -> float:
    """The record's own metric (all weights 1: the evaluator's number)."""
    return float(WeightedMetric(record)(np.ones((1, len(record.image_ids))))[0])


def random_shapes(runs: Path, out: Path) -> dict:
    rows = {"+ synchronize BN": "syncbn", "+ random training shapes": "random_shapes"}
    result = {}
    for size in SIZES:
        records = {
            label: [evaluated(run, f"size{size}", [f"model.val_size={size}"]) for run in seeds(runs, row)]
            for label, row in rows.items()
        }
        result[size] = compare(records, "+ synchronize BN")
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for label in rows:
        axes.plot(SIZES, [result[s][label]["mean"] for s in SIZES], marker="o", label=label)
    axes.set(xlabel="test size (px; trained at 160)", ylabel="VOC07 mAP (%)", xticks=SIZES)
    save(figure, axes, "Random shapes: mAP at three test sizes", out / "mechanism_random_shapes.png")
    return result


def out_of_context(runs: Path, out: Path) -> dict:
    rows = {"+ class label smoothing": "smoothing", "+ mixup": "mixup"}
    result, mixup_minus_reference = {}, {}
    for split in ("val", "ooc"):
        score = own if split == "val" else lambda run: evaluated(run, "ooc", ["data.val.split=ooc"])
        records = {label: [score(run) for run in seeds(runs, row)] for label, row in rows.items()}
        # the same seed: each replicate draws the same training seeds for both splits (paired by seed);
        # their images differ, so each split's image resample is its own
        replicates = resample_rows(records, replicates=1000, seed=0)
        result[split] = compare(records, "+ class label smoothing", replicates)
        mixup_minus_reference[split] = (
            replicates.values["+ mixup"] - replicates.values["+ class label smoothing"]
        )
    # out of context minus in context: how much mixup's difference grows away from the scenes' context
    shift = mixup_minus_reference["ooc"] - mixup_minus_reference["val"]
    means = {
        split: result[split]["+ mixup"]["mean"] - result[split]["+ class label smoothing"]["mean"]
        for split in result
    }
    result["shift"] = {
        "mean": means["ooc"] - means["val"],
        "interval": np.percentile(shift, [2.5, 97.5]).tolist(),
    }
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for offset, label in ((-0.18, "+ class label smoothing"), (0.18, "+ mixup")):
        means = [result[split][label]["mean"] for split in ("val", "ooc")]
        axes.bar(np.arange(2) + offset, means, 0.36, label=label)
    axes.set(xticks=[0, 1], xticklabels=["in context (val)", "out of context (ooc)"], ylabel="VOC07 mAP (%)")
    save(figure, axes, "Mixup in and out of context", out / "mechanism_mixup_ooc.png")
    return result


def calibration_check(runs: Path, out: Path) -> dict:
    rows = {"+ cosine lr schedule": "cosine", "+ class label smoothing": "smoothing"}
    result, figure = {}, plt.figure(figsize=(5, 4))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    for label, row in rows.items():
        records = [own(run) for run in seeds(runs, row)]
        fits = [calibration(record) for record in records]
        result[label] = {"ece": [fit.ece for fit in fits], "mean_ece": float(np.mean([f.ece for f in fits]))}
        # the hypothesis of docs/mini_scale.md: smoothed negatives make boxes name classes that are absent
        absent, false = np.sum([absent_class_detections(r, SCORE_BANDS) for r in records], axis=0)
        result[label]["false_positives_per_band"] = (false / len(records)).tolist()
        result[label]["absent_class_share_per_band"] = (absent / np.maximum(false, 1)).tolist()
        fit = fits[0]
        filled = fit.count > 0
        axes.plot(fit.mean_score[filled], fit.precision[filled], marker="o", label=f"{label} (seed 0)")
    axes.set(xlabel="detection score (bin mean)", ylabel="precision at IoU 0.5", xlim=(0, 1), ylim=(0, 1))
    save(figure, axes, "Label smoothing: score reliability", out / "mechanism_smoothing_calibration.png")
    return result


def sync_bn(runs: Path, out: Path) -> dict:
    baseline = seeds(runs, "baseline")[:1]
    records = {"1 x 8 (the table's baseline)": [own(run) for run in baseline]}
    for label, overrides in SYNCBN_RUNS.items():
        run = runs.parent / "mechanisms-mini" / overrides[0].replace("=", "_")
        if not (run / "metrics.json").is_file():
            command = [sys.executable, "-m", "bof.train", "experiment=table2/baseline", "scale=mini"]
            command += ["trainer.devices=4", "trainer.num_workers=0", "trainer.progress=false"]
            command += ["trainer.resume=auto", *overrides, f"hydra.run.dir={run}"]
            subprocess.run(command, check=True)
        records[label] = [own(run)]
    result = compare(records, "1 x 8 (the table's baseline)")
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.bar(range(len(result)), [entry["mean"] for entry in result.values()])
    labels = [textwrap.fill(label, 14) for label in result]
    axes.set(xticks=range(len(result)), xticklabels=labels, ylabel="VOC07 mAP (%)")
    save(figure, axes, "Sync BN: 4 processes x 2 images against 1 x 8", out / "mechanism_syncbn.png")
    # the design's second comparison: the same 4 x 2 processes with and without synchronising
    plain = compare({k: records[k] for k in SYNCBN_RUNS}, "4 x 2, plain BN")["4 x 2, sync BN"]
    result["sync BN vs plain BN, both 4 x 2"] = {"vs_reference": plain["vs_reference"]}
    return result


def save(figure, axes, title: str, path: Path) -> None:
    """The figure with its title (and legend, where it has labels) as ``path``."""
    axes.set_title(title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("multirun/table2-mini"), help="Table 2's miniature")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="where the figures go")
    parser.add_argument("--only", choices=("random_shapes", "mixup", "smoothing", "syncbn"), nargs="*")
    args = parser.parse_args(argv)
    checks = {"random_shapes": random_shapes, "mixup": out_of_context, "smoothing": calibration_check}
    checks["syncbn"] = sync_bn
    chosen = args.only or list(checks)
    results = {name: check(args.runs, args.out) for name, check in checks.items() if name in chosen}
    saved = args.runs / "mechanisms.json"  # --only updates its checks and keeps the others' results
    everything = json.loads(saved.read_text()) if saved.is_file() else {}
    saved.write_text(json.dumps(everything | results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

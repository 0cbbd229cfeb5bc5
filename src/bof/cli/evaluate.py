"""bof-eval: evaluates a trained detector's checkpoint on its run's validation data (or other data, by
overriding the stored config: it is resolved again, so data.root reaches data.val) and writes eval.json
with the result files. An override of a key the stored config lacks is an error (+key=value adds one).

    bof-eval checkpoint=outputs/2026-11-26/10-00-00/best.pt
    bof-eval checkpoint=run/last.pt data.root=/data/VOCdevkit output=run/eval-other
    bof-eval checkpoint=run/last.pt data.val.image_sets=[[VOC2007,val]] output=run/eval-val
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from bof.cli.args import parse_key_values, setup_logging
from bof.config import auto_workers
from bof.data.loader import build_data_loader, end_workers
from bof.engine.build_model import load_trained
from bof.engine.evaluator import build_evaluator
from bof.engine.loops import evaluate
from bof.engine.run_log import COCO_STATS, METRIC_NAMES
from bof.engine.run_setup import autocast_dtype, build_dataset, pick_device
from bof.evaluation.ranked_record import RECORD_FILE
from bof.tricks.augment import Resize
from bof.tricks.random_shapes import FixedShape
from bof.utils.atomic import write_json_atomically, writing
from bof.utils.fingerprint import fingerprint

log = logging.getLogger("bof.cli.evaluate")
USAGE = __doc__.strip()


def evaluate_checkpoint(checkpoint: str, overrides: list[str], output: str | None = None) -> dict:
    """Evaluates ``checkpoint`` under its stored config with ``overrides``; -> the eval.json dict."""
    device_name = next((o.split("=", 1)[1] for o in overrides if o.startswith("trainer.device=")), "auto")
    device = pick_device(device_name)
    cfg, model, stored = load_trained(checkpoint, overrides, device)
    val_set = build_dataset(cfg.data.val)
    class_names = list(val_set.class_names)
    loader = build_data_loader(
        val_set,
        Resize(),
        cfg.trainer.batch_size,
        FixedShape(cfg.model.val_size),
        shuffle=False,
        seed=cfg.seed,
        num_workers=min(auto_workers(1), 2),
        drop_last=False,
    )
    try:
        metrics, evaluator, _ = evaluate(
            model,
            loader,
            build_evaluator(val_set, cfg.trainer.voc07_metric),
            device,
            class_names,
            amp=autocast_dtype(cfg.trainer.amp, device),
            show_progress=cfg.trainer.progress,
        )
    finally:
        end_workers(loader)
    out_dir = Path(output) if output else Path(checkpoint).parent / "eval"
    with writing(out_dir, "bof-eval's output "):  # a full disk: an error naming the file, not a bare one
        evaluator.write_results(out_dir / "results")
        evaluator.per_image_record().save(out_dir / RECORD_FILE)  # what bof-report's intervals resample
    resolved = OmegaConf.to_container(cfg, resolve=True)
    result = {
        "map": metrics["map"],
        "ap": metrics["ap"],
        "metric": metrics["metric"],
        **{name: metrics[name] for name in COCO_STATS if name in metrics},
        "checkpoint": str(checkpoint),
        "epochs": stored.get("epoch", -1) + 1,
        "val_images": len(val_set),
        "fingerprint": fingerprint(resolved),
        "config": resolved,
    }
    write_json_atomically(out_dir / "eval.json", result)  # its errors name eval.json
    print(ap_table(result, class_names))
    log.info("wrote %s and the result files in %s", out_dir / "eval.json", out_dir / "results")
    return result


def ap_table(result: dict, class_names: list[str]) -> str:
    width = max(map(len, [*class_names, "mAP"]))
    rows = [f"| {'class':<{width}} |     AP |", f"|{'-' * (width + 2)}|--------|"]
    rows += [f"| {name:<{width}} | {result['ap'].get(name, float('nan')):6.4f} |" for name in class_names]
    rows.append(f"| {'mAP':<{width}} | {result['map']:6.4f} |  ({METRIC_NAMES[result['metric']]})")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    own, overrides = parse_key_values(
        sys.argv[1:] if argv is None else argv, {"checkpoint": ..., "output": None}, USAGE
    )
    with torch.inference_mode():
        evaluate_checkpoint(own["checkpoint"], overrides, own["output"])


if __name__ == "__main__":
    main()

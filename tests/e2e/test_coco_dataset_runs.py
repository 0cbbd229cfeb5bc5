"""The COCO loader on the real val2014 annotations of the fixture, and data=synthetic_coco end to end."""

import json

import numpy as np

from bof.evaluation.ranked_record import RankedDetections
from bof.evaluation.weighted_ap import metric_under_weights
from bof.train import train


def test_data_synthetic_coco_trains_and_evaluates_with_cocoeval(make_cfg, tmp_path):
    metrics = train(make_cfg("data=synthetic_coco"))
    assert metrics["metric"] == "coco" and 0.0 <= metrics["AP"] <= 1.0 and "AR100" in metrics
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved) >= {
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    }
    assert (tmp_path / "run" / "results" / "coco_results.json").is_file()
    # the final evaluation per image, beside metrics.json: all weights 1 give its AP exactly
    record = RankedDetections.load(tmp_path / "run" / "eval_record.npz")
    assert record.metric == "coco" and record.tp.shape[1] == 10
    assert metric_under_weights(record, np.ones(len(record.image_ids)))[0] == saved["map"]

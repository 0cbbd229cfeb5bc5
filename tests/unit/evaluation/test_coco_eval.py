"""COCO evaluation: the golden case of tests/fixtures/coco_val2014_100, exactly."""

import importlib.util
import json

import pytest

from bof.evaluation.coco_eval import STAT_NAMES, COCOEvaluator, evaluate_coco, load_coco
from tests.helpers import FIXTURES, SCRIPTS

GOLDEN = FIXTURES / "coco_val2014_100"
EXPECTED = {
    "AP": 0.5045806987249628,
    "AP50": 0.6969727247299577,
    "AP75": 0.5729816669904824,
    "APs": 0.5856257209410443,
    "APm": 0.5193996948036719,
    "APl": 0.5013978986347466,
    "AR1": 0.38681277964578054,
    "AR10": 0.5936795762842003,
    "AR100": 0.595352982877607,
    "ARs": 0.6398109626113442,
    "ARm": 0.5664205978994309,
    "ARl": 0.5642905982905982,
}


def golden_results():
    return json.loads((GOLDEN / "instances_val2014_fakebbox100_results.json").read_text())


def test_golden_coco_stats_exactly():
    stats = evaluate_coco(load_coco(GOLDEN / "instances_val2014_100.json"), golden_results())
    for name in STAT_NAMES:
        assert stats[name] == pytest.approx(EXPECTED[name], abs=1e-12), name
    assert stats["map"] == stats["AP"] and len(stats["ap"]) == 80


def test_evaluator_round_trips_xyxy_boxes_and_contiguous_labels():
    gt = load_coco(GOLDEN / "instances_val2014_100.json")
    cat_ids = sorted(gt.getCatIds())
    evaluator = COCOEvaluator(gt, cat_ids, [gt.cats[c]["name"] for c in cat_ids])
    for r in golden_results():
        x, y, w, h = r["bbox"]
        evaluator.add_detections(
            r["image_id"], [[x, y, x + w, y + h]], [r["score"]], [cat_ids.index(r["category_id"])]
        )
    assert evaluator.compute()["AP"] == pytest.approx(EXPECTED["AP"], abs=1e-4)  # 2-decimal rounding


def eval_coco_script():
    spec = importlib.util.spec_from_file_location("eval_coco", SCRIPTS / "eval_coco.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_coco_script_prints_and_writes_the_12_numbers(tmp_path, capsys):
    out = tmp_path / "result.json"
    eval_coco_script().main(
        [
            "--ann",
            str(GOLDEN / "instances_val2014_100.json"),
            "--results",
            str(GOLDEN / "instances_val2014_fakebbox100_results.json"),
            "--out",
            str(out),
        ]
    )
    written = json.loads(out.read_text())
    assert list(written) == list(STAT_NAMES)
    assert written["AP"] == pytest.approx(EXPECTED["AP"], abs=1e-12)
    assert "AP50 0.6970" in capsys.readouterr().out


def test_missing_or_malformed_annotation_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_coco(bad)


def test_faster_coco_eval_backend_gives_the_same_numbers():
    pytest.importorskip("faster_coco_eval")
    stats = evaluate_coco(
        load_coco(GOLDEN / "instances_val2014_100.json", "faster_coco_eval"),
        golden_results(),
        "faster_coco_eval",
    )
    for name in STAT_NAMES:
        assert stats[name] == pytest.approx(EXPECTED[name], abs=1e-6), name


def test_an_annotation_file_that_is_not_one_or_reuses_ids_is_named_not_a_traceback_or_a_wrong_score(tmp_path):
    """``{}`` loads in pycocotools and fails deep in COCOeval, a list fails its assert; a duplicated
    annotation id makes COCOeval score one object's box in place of another's, silently."""
    results = GOLDEN / "instances_val2014_fakebbox100_results.json"
    dataset = json.loads((GOLDEN / "instances_val2014_100.json").read_text())
    reused = dataset["annotations"][1]["id"] = dataset["annotations"][0]["id"]
    cases = {
        "empty.json": (
            {},
            r"empty.json: not a COCO instances file: it has no images, annotations, categories list",
        ),
        "list.json": ([], r"list.json: not a COCO instances file .*a JSON object with images, annotations"),
        "reused.json": (
            dataset,
            rf"reused.json: 1 annotation ids are used more than once \(e.g. \[{reused}\]\)",
        ),
    }
    for name, (content, error) in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(SystemExit, match=error):
            eval_coco_script().main(["--ann", str(tmp_path / name), "--results", str(results)])

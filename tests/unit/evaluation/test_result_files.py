"""Result files are checked before they are scored: every number finite, every box well formed, every id
known; each kind of problem named once, with the file (and line)."""

import json

import pytest

from bof.evaluation.coco_eval import check_results, load_coco
from bof.evaluation.voc_results import read_result_files
from tests.helpers import FIXTURES

GOLDEN = FIXTURES / "coco_val2014_100"


@pytest.fixture(scope="module")
def coco_gt():
    return load_coco(GOLDEN / "instances_val2014_100.json")


def test_malformed_coco_results_are_refused_naming_each_kind_of_problem(coco_gt):
    good = json.loads((GOLDEN / "instances_val2014_fakebbox100_results.json").read_text())[:5]
    bad = [
        {**good[0], "score": float("nan")},
        {**good[1], "bbox": [1.0, 2.0, -3.0, 4.0]},
        {**good[2], "image_id": 10**9},
        {**good[3], "category_id": 9999},
        {**good[4], "bbox": [1.0, float("inf"), 3.0, 4.0]},
        {"image_id": good[0]["image_id"], "score": 0.5},
    ]
    with pytest.raises(ValueError) as error:
        check_results(good + bad, coco_gt, "results.json")
    message = str(error.value)
    for kind in (
        "score that is not a finite number (first: detection 5)",
        "negative width or height",
        "image_id not in the annotations",
        "category_id not in the annotations",
        "bbox that is not four finite numbers",
        "not an object with image_id",
    ):
        assert kind in message, kind
    assert check_results(good, coco_gt, "results.json") == good
    with pytest.raises(ValueError, match="a JSON list of detections, not a str"):
        check_results("results.json", coco_gt, "results.json")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("000001 inf 1 1 10 10", "not finite"),
        ("000001 0.5 nan 1 10 10", "not finite"),
        ("000001 0.5 10 1 2 10", "an inverted box"),
    ],
)
def test_malformed_voc_result_lines_name_the_file_and_line(tmp_path, line, message):
    (tmp_path / "comp4_det_test_dog.txt").write_text(f"000002 0.9 1 1 5 5\n{line}\n")
    with pytest.raises(ValueError, match=rf"comp4_det_test_dog.txt:2: .*{message}"):
        read_result_files(tmp_path, ["dog"])


def test_a_voc_result_file_that_is_not_utf8_names_the_file(tmp_path):
    (tmp_path / "comp4_det_test_dog.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="comp4_det_test_dog.txt: not a UTF-8 text file"):
        read_result_files(tmp_path, ["dog"])

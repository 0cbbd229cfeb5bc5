"""One rule for "a number" wherever bof reads one it did not compute: config values, metrics.json entries
(bof-report) and detections' boxes and scores (COCO results)."""

import math

import pytest

from bof.cli import report_plots, report_runs
from bof.evaluation import coco_eval
from bof.utils import checks


@pytest.mark.parametrize(
    ("value", "number", "finite"),
    [(1, True, True), (0.5, True, True), (math.inf, True, False), (math.nan, True, False)]
    + [(True, False, False), ("1", False, False), (None, False, False), ([1], False, False)],
)
def test_a_number_is_an_int_or_float_not_a_bool_and_finite_when_asked(value, number, finite):
    assert checks.is_number(value) is number and checks.is_number(value, finite=True) is finite


def test_bof_report_and_the_coco_checks_share_the_one_rule():
    assert report_runs.is_number is report_plots.is_number is coco_eval.is_number is checks.is_number

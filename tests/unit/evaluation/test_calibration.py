"""The expected calibration error of a record's detections (bof.evaluation.calibration)."""

import numpy as np
import pytest

from bof.evaluation.calibration import calibration
from bof.evaluation.ranked_record import ranked_record


def record(scores, outcomes):
    """One class, one image; outcome per detection: 1 true positive, 0 false positive, None ignored."""
    order = np.argsort(scores)[::-1]
    scores, outcomes = np.asarray(scores)[order], [outcomes[i] for i in order]
    tp = np.array([[o == 1] for o in outcomes])
    fp = np.array([[o == 0] for o in outcomes])
    return ranked_record(
        "voc07",
        ["a"],
        ["thing"],
        np.array([[sum(o == 1 for o in outcomes)]]),
        [(np.zeros(len(scores), np.int32), scores, tp, fp)],
    )


def test_calibrated_scores_have_no_error_and_overconfident_ones_their_gap():
    # in the bin [0.8, 0.867): 4 detections at 0.8, 3 of them right (precision 0.75): |0.75 - 0.8| = 0.05;
    # in the bin of 0.2: 5 detections at 0.2, 1 right: 0
    scores = [0.8] * 4 + [0.2] * 5
    outcomes = [1, 1, 1, 0] + [1, 0, 0, 0, 0]
    result = calibration(record(scores, outcomes), bins=15)
    assert result.ece == pytest.approx(4 / 9 * 0.05)
    assert result.count.sum() == 9 and np.nanmax(result.precision) == pytest.approx(0.75)
    overconfident = calibration(record([0.95] * 4, [1, 0, 0, 0]))  # scores 0.95, precision 0.25
    assert overconfident.ece == pytest.approx(0.70)
    assert calibration(record([0.5] * 2, [1, 0])).ece == pytest.approx(0.0)


def test_ignored_detections_are_left_out_and_a_score_of_one_is_binned():
    with_ignored = calibration(record([1.0, 1.0, 0.3], [1, None, 0]))
    assert with_ignored.count.sum() == 2  # the detection matched to a difficult box does not count
    assert with_ignored.count[-1] == 1 and with_ignored.ece == pytest.approx((0 + 0.3) / 2)

"""The expected calibration error of a record's detections (bof.evaluation.calibration)."""

import numpy as np
import pytest

from bof.evaluation.calibration import absent_class_detections, calibration
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


def test_absent_class_detections_count_false_positives_of_classes_not_in_the_image():
    # two images, two classes; image 0 holds one "a", image 1 one "b"
    tp = np.array([[True], [False], [False], [False]])
    fp = ~tp
    rec = ranked_record(
        "voc07",
        ["i0", "i1"],
        ["a", "b"],
        np.array([[1, 0], [0, 1]]),
        [
            (np.array([0, 0], np.int32), np.array([0.9, 0.02]), tp[:2], fp[:2]),  # a: hit; a in image 0 again
            (np.array([0, 1], np.int32), np.array([0.4, 0.03]), tp[2:], fp[2:]),  # b where absent; b present
        ],
    )
    absent, false = absent_class_detections(rec, np.array([0.0, 0.05, 0.3, 1.0]))
    # false positives: a@0.02 in image 0 (a is there), b@0.4 in image 0 (absent), b@0.03 in image 1 (there)
    assert false.tolist() == [2, 0, 1] and absent.tolist() == [0, 0, 1]

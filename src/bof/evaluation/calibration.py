"""How well a detector's scores are calibrated: the expected calibration error of its detections, from a
run's per-image evaluation record (:mod:`bof.evaluation.ranked_record`).

A detection is *correct* when the evaluator counted it a true positive at the record's first IoU threshold
(VOC: 0.5; COCO: 0.5 too, the first of its ten); detections matched to a difficult or crowd box are left
out, as the metric leaves them out. The scores are cut into equal-width bins over [0, 1]; the error is the
mean over detections of |precision of its bin - mean score of its bin| (Guo et al., 2017, for detections
as Kueppers et al., 2020). Label smoothing's claim (Mueller et al., 2019, which the paper cites) is that it
lowers over-confidence, that is this error where the scores exceed the precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bof.evaluation.ranked_record import RankedDetections


@dataclass(frozen=True)
class Calibration:
    """``ece``: the expected calibration error; per bin (``edges``: its bounds, len bins + 1) the number of
    detections, their mean score and their precision (NaN where a bin is empty)."""

    ece: float
    edges: np.ndarray
    count: np.ndarray
    mean_score: np.ndarray
    precision: np.ndarray


def calibration(record: RankedDetections, bins: int = 15) -> Calibration:
    """The calibration of ``record``'s detections over ``bins`` equal-width score bins."""
    counted = record.tp[:, 0] | record.fp[:, 0]
    scores = np.clip(record.det_score[counted], 0.0, 1.0)
    correct = record.tp[counted, 0].astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = bin_of(scores, edges)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, scores, minlength=bins) / count
        precision = np.bincount(which, correct, minlength=bins) / count
    filled = count > 0
    ece = float((count[filled] * np.abs(precision[filled] - mean_score[filled])).sum() / max(count.sum(), 1))
    return Calibration(ece, edges, count, mean_score, precision)


def absent_class_detections(record: RankedDetections, edges) -> tuple[np.ndarray, np.ndarray]:
    """Per score band (``edges``: its bounds), the false positives of a class that has no box in their
    image, and all false positives: how often a detector names a class that is not there (a smoothed
    sigmoid target teaches every class a floor score, which may cross the detection threshold)."""
    false = record.fp[:, 0]
    absent = false & (record.positives[record.det_image, record.det_class] == 0)
    band = bin_of(record.det_score, edges)
    return np.bincount(band[absent], minlength=len(edges) - 1), np.bincount(
        band[false], minlength=len(edges) - 1
    )


def bin_of(scores: np.ndarray, edges) -> np.ndarray:
    """Each score's bin among ``edges`` (its bounds), a score on the top edge in the last bin."""
    return np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)

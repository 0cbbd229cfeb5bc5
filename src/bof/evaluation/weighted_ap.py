"""A run's metric with every validation image counted ``w_i`` times, for many weight vectors at once: the
replicates of an image bootstrap, without matching detections again.

Matching is per image, so an image counted twice contributes its detections' outcomes twice. Per class and
IoU threshold the precision/recall curve is then made of weighted cumulative sums over the ranked
detections. Only the points at true positives matter: recall rises only there, and a false positive's
point has the recall of the true positive before it and a lower precision, so it never sets the envelope
(the maximum precision at recall >= r) that VOC's and COCO's interpolations read. So each replicate needs
the weighted count of true positives up to each true positive (a gather and a cumulative sum) and of false
positives before it (one sparse product of the weights with a [images x true positives] count matrix), in
float64, where these integer sums are exact. The arithmetic after that is the evaluators' own, operation by
operation: with all weights 1 the result equals :class:`bof.evaluation.voc_eval.VOCEvaluator`'s mAP and
pycocotools' AP bit for bit, and with integer weights the evaluators' result on the resampled image set with
each image repeated ``w_i`` times (tests/unit/evaluation/test_weighted_ap.py). One caveat: detections of
one class and image with exactly equal scores are ranked as the evaluator ranked them once, while a
resampled set would interleave the copies; such exact ties are rare in real detectors' float scores.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from bof.evaluation.ranked_record import RankedDetections

VOC07_THRESHOLDS = np.arange(0.0, 1.1, 0.1)  # the devkit's, quirks included (bof.evaluation.voc_matching)
COCO_RECALLS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # COCOeval's
_CHUNK_VALUES = 1 << 22  # replicates x true-positive points held at once (32 MB per float64 array)


class WeightedMetric:
    """The record's metric under weight vectors: ``WeightedMetric(record)(weights [B, N]) -> [B]``.

    Built once per record (the per-class, per-threshold true-positive points and the sparse counts of false
    positives before each), then evaluated for any number of weight vectors, in chunks of replicates.
    """

    def __init__(self, record: RankedDetections):
        self.record = record
        self.blocks = []  # (class, threshold, first column, end column)
        tp_image, fp_rows, fp_cols = [], [], []
        column = 0
        for c, rows in enumerate(record.class_slices()):
            images = record.det_image[rows]
            for t in range(record.num_thresholds):
                tp_at = np.flatnonzero(record.tp[rows, t])
                fp_at = np.flatnonzero(record.fp[rows, t])
                segment = np.searchsorted(tp_at, fp_at)  # a false positive counts for every later TP
                before_a_tp = segment < len(tp_at)
                self.blocks.append((c, t, column, column + len(tp_at)))
                tp_image.append(images[tp_at])
                fp_rows.append(images[fp_at[before_a_tp]])
                fp_cols.append(column + segment[before_a_tp])
                column += len(tp_at)
        self.num_columns = column
        self.tp_image = np.concatenate([np.zeros(0, np.int64), *tp_image]).astype(np.int64)
        rows, cols = np.concatenate([[], *fp_rows]), np.concatenate([[], *fp_cols])
        # [columns, images]: how many false positives of each image come just before each TP point
        self.fp_counts = sparse.csr_matrix(
            (np.ones(len(rows)), (cols.astype(np.int64), rows.astype(np.int64))),
            shape=(column, len(record.image_ids)),
        )
        self.positives = record.positives.astype(np.float64)

    def __call__(self, weights) -> np.ndarray:
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if weights.shape[1] != len(self.record.image_ids) or (weights < 0).any():
            raise ValueError(
                f"weights must be [B, {len(self.record.image_ids)}] and non-negative, got {weights.shape}"
            )
        step = max(1, _CHUNK_VALUES // max(self.num_columns, 1))
        return np.concatenate([self._chunk(weights[a : a + step]) for a in range(0, len(weights), step)])

    def _chunk(self, weights: np.ndarray) -> np.ndarray:
        cum_tp = np.cumsum(weights[:, self.tp_image], axis=1)
        cum_fp = np.cumsum(np.asarray((self.fp_counts @ weights.T).T), axis=1)
        positives = weights @ self.positives  # [B, C]; integer sums, exact
        metric = self.record.metric
        thresholds = COCO_RECALLS if metric == "coco" else VOC07_THRESHOLDS
        num_classes, num_t = len(self.record.class_names), self.record.num_thresholds
        # per class and threshold: the interpolated precision at each recall threshold (VOC07, COCO) or
        # the area AP (VOC2010+); -1 where the class has no positives in the replicate
        per_block = np.full((len(weights), num_t, len(thresholds), num_classes), -1.0)
        area = np.full((len(weights), num_classes), np.nan)
        for c, t, a, b in self.blocks:
            tp = cum_tp[:, a:b] - (cum_tp[:, a - 1 : a] if a else 0.0)
            fp = cum_fp[:, a:b] - (cum_fp[:, a - 1 : a] if a else 0.0)
            npos = positives[:, c : c + 1]
            has_positives = npos[:, 0] > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                recall = tp / npos
            if metric == "coco":
                precision = tp / (fp + tp + np.spacing(1))  # COCOeval.accumulate's expression
            else:
                precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)  # the devkit's
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            if metric == "area":
                area[:, c] = [
                    _area(row, n, e) if n > 0 else np.nan
                    for row, n, e in zip(tp, npos[:, 0], envelope, strict=True)
                ]
                continue
            interpolated = _at_recalls(recall, envelope, thresholds)
            per_block[:, t, :, c] = np.where(has_positives[:, None], interpolated, -1.0)
        if metric == "area":
            return np.array(
                [np.mean(row[~np.isnan(row)]) if (~np.isnan(row)).any() else np.nan for row in area]
            )
        if metric == "voc07":
            ap = np.zeros((len(weights), num_classes))
            for i in range(len(thresholds)):  # the devkit's accumulation order, for identical floats
                ap = ap + per_block[:, 0, i, :] / 11.0
            valid = per_block[:, 0, 0, :] > -1
            return np.array(
                [np.mean(row[ok]) if ok.any() else np.nan for row, ok in zip(ap, valid, strict=True)]
            )
        # COCO: the mean of precision[T, R, K] over categories with positives, as COCOeval.summarize takes it
        return np.array([np.mean(p[p > -1]) if (p > -1).any() else -1.0 for p in per_block])


def _at_recalls(recall: np.ndarray, envelope: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """[B, R]: the envelope at the first point whose recall reaches each threshold (0 when none does).
    Recall is non-decreasing along a row, so that point's index is the number of points that reach
    fewer thresholds; the histogram of "thresholds reached" per row gives it for all R at once."""
    rows, points = recall.shape
    if points == 0:
        return np.zeros((rows, len(thresholds)))
    reached = np.searchsorted(thresholds, recall, side="right")  # thresholds <= recall, per point
    flat = reached + (len(thresholds) + 1) * np.arange(rows)[:, None]
    counts = np.bincount(flat.ravel(), minlength=rows * (len(thresholds) + 1)).reshape(rows, -1)
    first = np.cumsum(counts, axis=1)[:, : len(thresholds)]
    values = np.take_along_axis(envelope, np.minimum(first, points - 1), axis=1)
    return np.where(first < points, values, 0.0)


def _area(tp: np.ndarray, positives: float, envelope: np.ndarray) -> float:
    """VOC2010+ AP of one class in one replicate: the devkit's sum over the points where recall changes,
    the sentinel recall of 1 included. With integer weights a true positive of weight w is w points of the
    resampled set, one per copy (each raising recall by 1/positives, all with this envelope value): the
    same terms in the same order as the devkit on that set, so the same float."""
    steps = np.diff(tp, prepend=0.0)
    if np.array_equal(steps, steps.round()):
        counts = steps.astype(np.int64)
        tp = np.arange(1, counts.sum() + 1, dtype=np.float64)
        envelope = np.repeat(envelope, counts)
        steps = np.ones(len(tp))
    recall = tp / positives
    previous = (tp - steps) / positives
    changes = recall != previous
    terms = (recall - previous)[changes] * envelope[changes]
    last = recall[-1] if len(recall) else 0.0
    if last != 1.0:
        terms = np.append(terms, (1.0 - last) * 0.0)
    return float(np.sum(terms))


def metric_under_weights(record: RankedDetections, weights) -> np.ndarray:
    """``WeightedMetric(record)(weights)``: the metric (VOC mAP or COCO AP, 0-1) per weight vector."""
    return WeightedMetric(record)(weights)

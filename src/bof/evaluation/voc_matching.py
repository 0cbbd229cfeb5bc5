"""VOC AP math: box IoU with the devkit's +1 pixel convention, the per-class greedy matching of
detections to ground truth, and the 11-point / area AP (the rules: :mod:`bof.evaluation.voc_eval`)."""

from __future__ import annotations

import numpy as np

# IoU pairs (detections x GT slots) computed per numpy call; bounds the temporary [n, G] arrays.
_IOU_CHUNK = 1 << 21


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Average precision from a precision/recall curve, exactly as the VOC devkit computes it.

    ``recall``, ``precision``: float [D], the cumulative curve over detections sorted by descending
    score (recall non-decreasing). Empty arrays (no detections) give 0.0.

    ``use_07_metric=True``: VOC2007 11-point interpolated AP, the mean over the thresholds
    ``np.arange(0.0, 1.1, 0.1)`` of the maximum precision at recall >= threshold (0 when no point
    reaches it). The thresholds are kept as numpy builds them, quirks included: the 4th is
    0.30000000000000004, so a recall of exactly 3/10 does *not* reach it (likewise 0.6 and 0.7).
    ``use_07_metric=False``: VOC2010+ AP, the area under the monotone precision envelope, summed over
    the points where recall changes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            reached = recall >= t
            p = np.max(precision[reached]) if reached.any() else 0.0
            ap = ap + p / 11.0  # same accumulation order as the devkit, for bit-identical results
        return float(ap)
    # Sentinels: recall 0 -> 1 at the ends, precision 0 past the last detection.
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    # Precision envelope: max precision at any recall >= this one (the devkit's backward loop).
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU with the devkit's +1 widths; broadcasts ``boxes`` [..., 4] against ``gt`` [..., 4].

    The operations and their order are the devkit's, so the floats are bit-identical to it.
    """
    ixmin = np.maximum(gt[..., 0], boxes[..., 0])
    iymin = np.maximum(gt[..., 1], boxes[..., 1])
    ixmax = np.minimum(gt[..., 2], boxes[..., 2])
    iymax = np.minimum(gt[..., 3], boxes[..., 3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    uni = (
        (boxes[..., 2] - boxes[..., 0] + 1.0) * (boxes[..., 3] - boxes[..., 1] + 1.0)
        + (gt[..., 2] - gt[..., 0] + 1.0) * (gt[..., 3] - gt[..., 1] + 1.0)
        - inters
    )
    return inters / uni


def match_class(
    det_img: np.ndarray,
    det_scores: np.ndarray,
    det_boxes: np.ndarray,
    gt_img: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    num_images: int,
    iou_thresh: float,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Devkit matching of one class.

    ``det_img`` int [D] image index, ``det_scores`` [D], ``det_boxes`` [D, 4] VOC; ``gt_img`` int [G]
    (non-decreasing), ``gt_boxes`` [G, 4] VOC, ``gt_difficult`` bool [G]; images are 0..num_images-1.
    Returns ``tp``, ``fp`` float64 [D] (0/1, in descending-score order; both 0 = ignored), npos and the
    ranking (``order``: the detections' indices in that order).
    """
    npos = int(np.count_nonzero(~gt_difficult))
    num_dets = len(det_scores)
    order = np.argsort(-det_scores, kind="stable")
    det_img, det_boxes = det_img[order], det_boxes[order]
    tp, fp = np.zeros(num_dets), np.ones(num_dets)
    if num_dets == 0 or len(gt_img) == 0:
        return tp, fp, npos, order  # every detection is a FP

    # GT of this class padded per image to [R + 1, S, ...]: R = images holding some, S = most per image.
    # Row -1 (the extra last one) is all padding, so row_of_image = -1 for images without GT of the class.
    images, first, counts = np.unique(gt_img, return_index=True, return_counts=True)
    num_slots = int(counts.max())
    rows = np.repeat(np.arange(len(images)), counts)
    slots = np.arange(len(gt_img)) - np.repeat(first, counts)  # GT order within an image is kept
    pad_boxes = np.zeros((len(images) + 1, num_slots, 4))
    pad_valid = np.zeros((len(images) + 1, num_slots), dtype=bool)
    pad_gt = np.zeros((len(images) + 1, num_slots), dtype=np.int64)  # index into this class's GT
    pad_boxes[rows, slots] = gt_boxes
    pad_valid[rows, slots] = True
    pad_gt[rows, slots] = np.arange(len(gt_img))
    row_of_image = np.full(num_images, -1, dtype=np.int64)
    row_of_image[images] = np.arange(len(images))
    det_row = row_of_image[det_img]

    best_iou = np.empty(num_dets)
    best_gt = np.empty(num_dets, dtype=np.int64)
    chunk = max(1, _IOU_CHUNK // num_slots)
    for a in range(0, num_dets, chunk):
        r = det_row[a : a + chunk]
        iou = voc_iou(det_boxes[a : a + chunk, None, :], pad_boxes[r])  # [n, S]
        iou[~pad_valid[r]] = -np.inf  # padding never wins; all padding -> -inf -> unmatched
        j = np.argmax(iou, axis=1)  # first maximum, like np.argmax in the devkit
        best_iou[a : a + chunk] = iou[np.arange(len(r)), j]
        best_gt[a : a + chunk] = pad_gt[r, j]

    matched = best_iou >= iou_thresh  # the Matlab devkit's `ovmax >= minoverlap`
    ignored = matched & gt_difficult[best_gt]
    claims = np.flatnonzero(matched & ~ignored)
    # The devkit's sequential claim loop, vectorised: a detection's best GT never depends on earlier
    # claims (no fall-back), so among the score-sorted detections whose best GT is the same
    # non-difficult box, exactly the first one is a TP and the rest are duplicates (FP).
    _, first_claim = np.unique(best_gt[claims], return_index=True)
    tp[claims[first_claim]] = 1.0
    fp[tp == 1.0] = 0.0
    fp[ignored] = 0.0
    return tp, fp, npos, order

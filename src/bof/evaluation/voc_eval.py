"""Pascal VOC detection evaluation, matching the official devkit rules exactly.

The matching and AP code follow py-faster-rcnn's ``voc_eval.py`` (the Python port of the Matlab
``VOCevaldet.m`` that GluonCV, Detectron and detectron2 inherited), vectorised with numpy:

* Boxes are VOC boxes: ``x1, y1, x2, y2`` = 1-based *inclusive* pixel indices, so widths and heights
  are ``x2 - x1 + 1`` and ``y2 - y1 + 1``. Predictions in continuous 0-based xyxy must be converted
  first with :func:`bof.data.voc.xyxy_to_voc` (``x1 + 1, y1 + 1, x2, y2``).
* Per class, detections are sorted by descending score (stable: ties keep insertion order). Each one
  takes the single ground truth (GT) box of its class in its image with the largest IoU (the first one
  on ties, no fall-back to the second best). If that IoU is at least ``iou_thresh`` (the Matlab
  devkit's ``ovmax >= VOCopts.minoverlap`` and GluonCV's ``VOCMApMetric``): a difficult GT makes the
  detection "ignored" (neither TP nor FP); an unclaimed GT makes it a TP that claims the GT; an already
  claimed GT makes it a FP (duplicate). Otherwise it is a FP. Only non-difficult GT boxes count as positives.

  Note: py-faster-rcnn's Python port uses a strict ``ovmax > ovthresh``; we follow the official devkit
  and the paper's code (docs/fidelity.md "Evaluation": IoU >= 0.5). The rules differ only for an IoU
  exactly at the threshold.
* AP is the VOC2007 11-point interpolated AP (``use_07_metric=True``, the paper's VOC metric) or the
  VOC2010+ area under the precision envelope; see :func:`voc_ap`.

The AP math is :mod:`bof.evaluation.voc_matching`; result files are :mod:`bof.evaluation.voc_results`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bof.evaluation.ranked_record import RankedDetections, ranked_record
from bof.evaluation.voc_matching import match_class, voc_ap
from bof.evaluation.voc_results import DEFAULT_PREFIX, ClassDetections, write_result_files


def _to_numpy(x, dtype) -> np.ndarray:
    """numpy array from a numpy array, a torch tensor (any device) or a sequence; no torch import."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    return boxes


class VOCEvaluator:
    """Accumulates ground truth and detections, then computes per-class VOC AP and the mAP.

    ``class_names``: the K foreground class names; labels passed in are indices into it.
    ``use_07_metric``: 11-point VOC2007 AP (True) or VOC2010+ area AP (False), see :func:`voc_ap`.
    ``iou_thresh``: a detection matches its best GT when IoU >= ``iou_thresh`` (devkit).

    Every evaluated image must be registered with :meth:`add_ground_truth` (with empty arrays if it has
    no objects); detections on an image without ground truth raise in :meth:`compute`, as in the devkit.
    """

    def __init__(self, class_names: Sequence[str], use_07_metric: bool = True, iou_thresh: float = 0.5):
        self.class_names = tuple(class_names)
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"duplicate class names in {self.class_names}")
        self.use_07_metric = use_07_metric
        self.iou_thresh = float(iou_thresh)
        self._class_index = {n: i for i, n in enumerate(self.class_names)}
        self.reset()

    def reset(self) -> None:
        """Forgets all ground truth and detections."""
        # image_id -> (boxes float64 [N, 4], labels int64 [N], difficult bool [N])
        self._gt: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # per class: chunks of (image ids, scores [m], boxes [m, 4]) in insertion order
        self._dets: list[list[tuple[list[str], np.ndarray, np.ndarray]]] = [[] for _ in self.class_names]
        self._record: RankedDetections | None = None

    def remove_ground_truth(self, image_ids) -> None:
        """Takes images out of the evaluation (bad samples dropped while evaluating)."""
        for image_id in image_ids:
            self._gt.pop(str(image_id), None)

    @property
    def image_ids(self) -> list[str]:
        """Ids of the images with registered ground truth, in insertion order."""
        return list(self._gt)

    def add_ground_truth(self, image_id: str, boxes, labels, difficult=None) -> None:
        """Registers one image's ground truth.

        ``boxes``: [N, 4] VOC boxes (1-based inclusive ``xmin, ymin, xmax, ymax``); ``labels``: int [N]
        class indices; ``difficult``: bool [N] (None = none difficult). numpy arrays or torch tensors.
        An image may have N = 0 objects. Each image id may be added once.
        """
        image_id = str(image_id)
        if not image_id or len(image_id.split()) != 1 or image_id.strip() != image_id:
            raise ValueError(
                f"image id {image_id!r} must be non-empty without whitespace (result-file format)"
            )
        if image_id in self._gt:
            raise ValueError(f"ground truth for image {image_id!r} was already added")
        boxes = _check_boxes(_to_numpy(boxes, np.float64), f"ground truth of {image_id!r}")
        labels = _to_numpy(labels, np.int64).reshape(-1)
        difficult = (
            np.zeros(len(labels), dtype=bool) if difficult is None else _to_numpy(difficult, bool).reshape(-1)
        )
        if not len(boxes) == len(labels) == len(difficult):
            raise ValueError(
                f"ground truth of {image_id!r}: {len(boxes)} boxes, {len(labels)} labels, "
                f"{len(difficult)} difficult flags"
            )
        self._check_labels(labels, f"ground truth of {image_id!r}")
        self._gt[image_id] = (boxes, labels, difficult)

    def add_detections(self, image_id: str, boxes, scores, labels) -> None:
        """Adds one image's detections (all classes).

        ``boxes``: [M, 4] VOC boxes (1-based inclusive; convert model xyxy with ``xyxy_to_voc``);
        ``scores``: float [M]; ``labels``: int [M] class indices. numpy arrays or torch tensors.
        """
        image_id = str(image_id)
        boxes = _check_boxes(_to_numpy(boxes, np.float64), f"detections of {image_id!r}")
        scores = _to_numpy(scores, np.float64).reshape(-1)
        labels = _to_numpy(labels, np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"detections of {image_id!r}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        self._check_labels(labels, f"detections of {image_id!r}")
        self._check_scores(scores, f"detections of {image_id!r}")
        for c in np.unique(labels):
            keep = labels == c
            n = int(keep.sum())
            self._dets[c].append(([image_id] * n, scores[keep], boxes[keep]))

    def add_class_detections(self, class_name: str, image_ids: Sequence[str], scores, boxes) -> None:
        """Adds detections of one class over many images (e.g. one result file, see
        :func:`read_result_files`). ``image_ids``: M strings; ``scores``: float [M]; ``boxes``: [M, 4]
        VOC boxes."""
        if class_name not in self._class_index:
            raise ValueError(f"unknown class {class_name!r}; classes are {self.class_names}")
        image_ids = [str(i) for i in image_ids]
        boxes = _check_boxes(_to_numpy(boxes, np.float64), f"detections of class {class_name!r}")
        scores = _to_numpy(scores, np.float64).reshape(-1)
        if not len(image_ids) == len(scores) == len(boxes):
            raise ValueError(
                f"detections of class {class_name!r}: {len(image_ids)} image ids, {len(scores)} scores, "
                f"{len(boxes)} boxes"
            )
        self._check_scores(scores, f"detections of class {class_name!r}")
        if image_ids:
            self._dets[self._class_index[class_name]].append((image_ids, scores, boxes))

    def class_detections(self, class_index: int) -> ClassDetections:
        """All detections of one class, concatenated in insertion order."""
        chunks = self._dets[class_index]
        if not chunks:
            return ClassDetections([], np.zeros(0), np.zeros((0, 4)))
        return ClassDetections(
            [i for ids, _, _ in chunks for i in ids],
            np.concatenate([s for _, s, _ in chunks]),
            np.concatenate([b for _, _, b in chunks]),
        )

    def compute(self) -> dict:
        """Per-class AP and mAP over everything added so far.

        Returns ``{"map": float, "ap": {class_name: float}, "num_positives": {class_name: int},
        "pr_curves": {class_name: (true positives [T], false positives [T], positives)}}``, the curve's
        cumulative counts at up to 200 points, best score first (TensorBoard's PR curves).
        A class with no non-difficult ground truth box (no positives) has AP ``nan`` and is left out of
        the mAP, which is the mean over the classes that have positives (``nan`` if none has).
        """
        image_index = {image_id: i for i, image_id in enumerate(self._gt)}
        if self._gt:
            gt_img = np.concatenate(
                [np.full(len(lab), i, dtype=np.int64) for i, (_, lab, _) in enumerate(self._gt.values())]
            )
            gt_boxes = np.concatenate([b for b, _, _ in self._gt.values()])
            gt_labels = np.concatenate([lab for _, lab, _ in self._gt.values()])
            gt_difficult = np.concatenate([d for _, _, d in self._gt.values()])
        else:
            gt_img, gt_labels = np.zeros(0, np.int64), np.zeros(0, np.int64)
            gt_boxes, gt_difficult = np.zeros((0, 4)), np.zeros(0, bool)

        ap, num_positives, curves, ranked = {}, {}, {}, []
        for c, name in enumerate(self.class_names):
            dets = self.class_detections(c)
            det_img = np.fromiter(
                (image_index.get(i, -1) for i in dets.image_ids), np.int64, len(dets.scores)
            )
            if (det_img < 0).any():
                unknown = sorted({i for i, k in zip(dets.image_ids, det_img, strict=True) if k < 0})
                raise ValueError(
                    f"class {name!r}: detections on {len(unknown)} image(s) without ground truth "
                    f"(not in the evaluated image set?), e.g. {unknown[:5]}"
                )
            keep = gt_labels == c
            tp, fp, npos, order = match_class(
                det_img,
                dets.scores,
                dets.boxes,
                gt_img[keep],
                gt_boxes[keep],
                gt_difficult[keep],
                len(image_index),
                self.iou_thresh,
            )
            num_positives[name] = npos
            ranked.append((det_img[order], dets.scores[order], tp[:, None] > 0, fp[:, None] > 0))
            if npos == 0:
                ap[name] = float("nan")  # recall is undefined; the devkit would divide by zero
                continue
            tp, fp = np.cumsum(tp), np.cumsum(fp)
            points = np.unique(np.linspace(0, len(tp) - 1, min(len(tp), 200)).round().astype(int))
            curves[name] = (tp[points], fp[points], npos)
            recall = tp / float(npos)
            # eps guard as in the devkit: only 0 when every detection so far was ignored (difficult)
            precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            ap[name] = voc_ap(recall, precision, self.use_07_metric)

        valid = [v for name, v in ap.items() if num_positives[name] > 0]
        mean_ap = float(np.mean(valid)) if valid else float("nan")
        positives = np.zeros((len(image_index), len(self.class_names)), np.int32)
        np.add.at(positives, (gt_img[~gt_difficult], gt_labels[~gt_difficult]), 1)
        self._record = ranked_record(
            "voc07" if self.use_07_metric else "area", list(image_index), self.class_names, positives, ranked
        )
        return {"map": mean_ap, "ap": ap, "num_positives": num_positives, "pr_curves": curves}

    def per_image_record(self) -> RankedDetections:
        """What the last :meth:`compute` decided for every detection, per image (bof-report's bootstrap,
        :mod:`bof.evaluation.weighted_ap`)."""
        if self._record is None:
            raise RuntimeError("per_image_record() needs compute() first")
        return self._record

    def write_result_files(self, out_dir: str | os.PathLike, prefix: str = DEFAULT_PREFIX) -> list[Path]:
        """The official result files, one per class (:func:`voc_results.write_result_files`)."""
        detections = {name: self.class_detections(c) for c, name in enumerate(self.class_names)}
        return write_result_files(out_dir, detections, prefix)

    def _check_labels(self, labels: np.ndarray, what: str) -> None:
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(
                f"{what}: labels must lie in [0, {len(self.class_names)}), got {labels.tolist()}"
            )

    @staticmethod
    def _check_scores(scores: np.ndarray, what: str) -> None:
        if np.isnan(scores).any():
            raise ValueError(f"{what}: NaN scores cannot be ranked")

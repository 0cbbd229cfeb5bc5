"""Evaluators of the validation data: the one place that knows both a data set and its metric, so data
sets and evaluators know nothing of each other. The training loop gets its evaluator from
:func:`build_evaluator`; ``scripts/eval_voc.py`` builds one from a VOC devkit and result files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bof.data.coco import COCODetection
from bof.data.voc import VOC_CLASSES, VOCDetection, parse_voc_xml, read_image_set
from bof.evaluation.coco_eval import COCOEvaluator
from bof.evaluation.ranked_record import RankedDetections
from bof.evaluation.voc_eval import VOCEvaluator
from bof.evaluation.voc_results import DEFAULT_PREFIX, read_result_files
from bof.utils.boxes import clip_boxes, voc_to_xyxy, xyxy_to_voc


def build_evaluator(dataset, use_07_metric: bool = True):
    """A fresh evaluator holding ``dataset``'s ground truth: VOC AP (11-point or area) for a VOC-layout
    set, COCOeval for a COCO one (``use_07_metric`` is a VOC notion, ignored there)."""
    if isinstance(dataset, COCODetection):  # the ground truth loads when the scoring process needs it
        return COCOEvaluator(
            dataset.ground_truth,
            dataset.category_ids,
            dataset.class_names,
            dataset.eval_backend,
            dataset.image_ids.tolist(),
        )
    if isinstance(dataset, VOCDetection):
        return VOCDatasetEvaluator(dataset, use_07_metric)
    raise TypeError(f"no evaluator for a {type(dataset).__name__}")


class VOCDatasetEvaluator:
    """:class:`bof.evaluation.voc_eval.VOCEvaluator` filled with a VOCDetection's ground truth, taking
    detections as xyxy pixels in the original image frame (converted with :func:`xyxy_to_voc`)."""

    def __init__(self, dataset: VOCDetection, use_07_metric: bool = True):
        self.use_07_metric = use_07_metric
        self.voc = VOCEvaluator(dataset.class_names, use_07_metric=use_07_metric)
        for index, image_id in enumerate(dataset.image_ids):  # ground truth as training sees it: clipped
            ann = dataset.get_annotation(index)
            gt = {"boxes": voc_to_xyxy(ann.boxes), "labels": ann.labels, "difficult": ann.difficult}
            gt = clip_boxes({k: torch.from_numpy(v) for k, v in gt.items()}, ann.height, ann.width)
            boxes, labels, difficult = (gt[k].numpy() for k in ("boxes", "labels", "difficult"))
            self.voc.add_ground_truth(image_id, xyxy_to_voc(boxes), labels, difficult)

    def add_detections(self, image_id: str, boxes, scores, labels) -> None:
        self.voc.add_detections(image_id, xyxy_to_voc(boxes), scores, labels)

    def exclude(self, image_ids) -> None:
        """Images dropped as bad samples: their ground truth leaves the evaluation too."""
        self.voc.remove_ground_truth(image_ids)

    def compute(self) -> dict:
        return {**self.voc.compute(), "metric": "voc07" if self.use_07_metric else "area"}

    def per_image_record(self) -> RankedDetections:
        return self.voc.per_image_record()

    def write_results(self, out_dir) -> list[Path]:
        """The official per-class result files ``comp4_det_test_<class>.txt``."""
        return self.voc.write_result_files(out_dir)


def add_voc_ground_truth(evaluator: VOCEvaluator, voc_root: str | os.PathLike, split: str) -> list[str]:
    """Parses ``<voc_root>/Annotations/<id>.xml`` for every id of the split into ``evaluator``.

    ``voc_root`` is one year folder (``VOCdevkit/VOC2007``). Objects of VOC classes that are not among
    the evaluator's classes are skipped, so a class subset can be evaluated on real VOC annotations;
    an object of a class in neither list raises ValueError. Returns the image ids.
    """
    voc_root = Path(voc_root)
    if not voc_root.is_dir():
        raise FileNotFoundError(f"VOC root folder not found: {voc_root}")
    image_ids = read_image_set(voc_root, split)
    parse_names = tuple(VOC_CLASSES) + tuple(n for n in evaluator.class_names if n not in VOC_CLASSES)
    parse_index = {n: i for i, n in enumerate(parse_names)}
    # parse index -> evaluator index, -1 for VOC classes that are not evaluated
    to_eval = np.array([evaluator._class_index.get(n, -1) for n in parse_names], dtype=np.int64)
    for image_id in image_ids:
        xml = voc_root / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            raise FileNotFoundError(f"VOC annotation not found: {xml}")
        ann = parse_voc_xml(xml, parse_index)
        labels = to_eval[ann.labels]
        keep = labels >= 0
        evaluator.add_ground_truth(image_id, ann.boxes[keep], labels[keep], ann.difficult[keep])
    return image_ids


def build_voc_evaluator(
    voc_root: str | os.PathLike,
    split: str,
    results_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    use_07_metric: bool = True,
    iou_thresh: float = 0.5,
    prefix: str = DEFAULT_PREFIX,
) -> VOCEvaluator:
    """A :class:`VOCEvaluator` filled with a VOC split's annotations and a directory of result files.

    ``voc_root``: a year folder (``VOCdevkit/VOC2007``) with ``ImageSets/Main/<split>.txt`` and
    ``Annotations/``; ``class_names``: default the 20 VOC classes. Call ``.compute()`` on the result.
    Missing paths raise FileNotFoundError naming them.
    """
    if class_names is None:
        class_names = VOC_CLASSES
    evaluator = VOCEvaluator(class_names, use_07_metric=use_07_metric, iou_thresh=iou_thresh)
    results_dir = Path(results_dir)
    if not results_dir.is_dir():  # checked first: cheaper than parsing thousands of XML files
        raise FileNotFoundError(f"results directory not found: {results_dir}")
    add_voc_ground_truth(evaluator, voc_root, split)
    for name, dets in read_result_files(results_dir, evaluator.class_names, prefix).items():
        evaluator.add_class_detections(name, dets.image_ids, dets.scores, dets.boxes)
    return evaluator

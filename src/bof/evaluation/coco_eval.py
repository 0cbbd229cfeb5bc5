"""COCO bbox evaluation with pycocotools' COCOeval (docs/fidelity.md "Evaluation"), or the drop-in
faster-coco-eval (same numbers, compiled; ``backend="faster_coco_eval"``).

Detections are in the original image frame, xyxy pixels, with contiguous 0-based labels; they go to
COCOeval as ``[x, y, w, h]`` with the dataset's category ids. The 12 standard numbers are returned under
:data:`STAT_NAMES`, with ``map`` = AP@[.5:.95] and per-category AP (IoU .5:.95, all areas, 100 dets).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bof.evaluation.ranked_record import RankedDetections, ranked_record
from bof.utils.atomic import write_text_atomically
from bof.utils.checks import is_number

log = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("pycocotools", "faster_coco_eval")


def coco_api(backend: str = "pycocotools"):
    """(COCO, COCOeval) classes of the chosen backend."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        except ImportError as error:
            raise ImportError("eval backend faster_coco_eval: pip install faster-coco-eval") from error
    else:
        raise ValueError(f"unknown COCO eval backend {backend!r}; choose one of {BACKENDS}")
    return COCO, COCOeval


def load_coco(annotation_file: str | Path, backend: str = "pycocotools"):
    """A COCO ground-truth object, quietly (pycocotools prints); errors name the file."""
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    COCO, _ = coco_api(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco = COCO(str(path))
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as error:  # assert: not a dict
            raise ValueError(f"{path}: not a COCO instances file ({error}); {INSTANCES}") from error
    check_instances(coco.dataset, path)
    return coco


INSTANCES = "one is a JSON object with images, annotations and categories lists"


def check_instances(dataset, path: Path) -> None:
    """What COCOeval needs of the annotation file and pycocotools does not check: the three lists (an
    empty object loads, then fails deep in COCOeval), and one annotation per id (pycocotools indexes
    annotations by id, so a duplicated id silently scores one object's box in place of another's)."""
    missing = [
        key for key in ("images", "annotations", "categories") if not isinstance(dataset.get(key), list)
    ]
    if missing:
        raise ValueError(
            f"{path}: not a COCO instances file: it has no {', '.join(missing)} list; {INSTANCES}"
        )
    ids = Counter(ann.get("id") for ann in dataset["annotations"] if isinstance(ann, dict))
    duplicated = [i for i, n in ids.items() if n > 1]
    if duplicated:
        raise ValueError(
            f"{path}: {len(duplicated)} annotation ids are used more than once (e.g. {duplicated[:3]}): "
            "COCOeval looks annotations up by id and would score one object's box in place of another's. "
            "Give every annotation its own id"
        )


def check_results(results, coco_gt, source: str) -> list[dict]:
    """A COCO results list, checked before COCOeval sees it: a list of objects, each with a known
    ``image_id`` and ``category_id``, a ``bbox`` of four finite numbers with w, h >= 0 and a finite
    ``score``. Every kind of problem found is named once, with its count and first detection."""
    if not isinstance(results, list):
        raise ValueError(
            f"{source}: a COCO results file is a JSON list of detections, not a {type(results).__name__}"
        )
    images, categories = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    problems: dict[str, tuple[int, int]] = {}

    def problem(kind: str, index: int) -> None:
        count, first = problems.get(kind, (0, index))
        problems[kind] = (count + 1, first)

    for i, det in enumerate(results):
        if not isinstance(det, dict) or not {"image_id", "category_id", "bbox", "score"} <= det.keys():
            problem("not an object with image_id, category_id, bbox and score", i)
            continue
        if det["image_id"] not in images:
            problem("an image_id not in the annotations", i)
        if det["category_id"] not in categories:
            problem("a category_id not in the annotations", i)
        box, score = det["bbox"], det["score"]
        if not (isinstance(box, list) and len(box) == 4 and all(is_number(v, finite=True) for v in box)):
            problem("a bbox that is not four finite numbers [x, y, w, h]", i)
        elif box[2] < 0 or box[3] < 0:
            problem("a bbox with a negative width or height", i)
        if not is_number(score, finite=True):
            problem("a score that is not a finite number", i)
    if problems:
        listed = "; ".join(
            f"{n} with {kind} (first: detection {first})" for kind, (n, first) in problems.items()
        )
        raise ValueError(f"{source}: {listed}")
    return results


def evaluate_coco(
    coco_gt, results: list[dict], backend: str = "pycocotools", class_names=None, image_ids=None
) -> dict:
    """The 12 COCOeval bbox numbers (and ``map``, ``ap`` per class) of ``results`` (COCO result dicts),
    over ``image_ids`` (default: every image of ``coco_gt``)."""
    if not results:
        log.warning("no detections: every COCO number is 0")
        return {**dict.fromkeys(STAT_NAMES, 0.0), "map": 0.0, "ap": {}, "metric": "coco"}
    return coco_stats(run_cocoeval(coco_gt, results, backend, image_ids, summarize=True), class_names)


def coco_stats(coco_eval, class_names=None) -> dict:
    """The numbers of a summarized COCOeval."""
    stats = dict(zip(STAT_NAMES, (float(s) for s in coco_eval.stats[:12]), strict=True))
    # precision [T IoUs, R recalls, K categories, A areas, M max-dets]; -1 where a category has no GT
    precision = np.asarray(coco_eval.eval["precision"])[:, :, :, 0, -1]
    cat_ids = coco_eval.params.catIds
    names = class_names or [coco_eval.cocoGt.cats[c]["name"] for c in cat_ids]
    per_class = {}
    for k, name in enumerate(names):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        per_class[name] = float(valid.mean()) if valid.size else float("nan")
    return {**stats, "map": stats["AP"], "ap": per_class, "metric": "coco"}


def run_cocoeval(coco_gt, results: list[dict], backend: str, image_ids=None, summarize: bool = False):
    """COCOeval's ``evaluate()`` (with ``summarize``, also ``accumulate()`` and ``summarize()``), quiet."""
    _, COCOeval = coco_api(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(image_ids)
        coco_eval.evaluate()
        if summarize:
            coco_eval.accumulate()
            coco_eval.summarize()
    return coco_eval


def coco_record(coco_eval, class_names: Sequence[str]) -> RankedDetections:
    """The per-image record of a pycocotools ``COCOeval`` after ``evaluate()``: for each category, the
    detections in the order ``accumulate()`` ranks them (images in ``params.imgIds`` order, each image's
    best 100, then a stable sort by score) with their outcome at the 10 IoU thresholds, all areas; per
    image, the boxes that are not ignored (crowd). What AP@[.5:.95] needs, and nothing else."""
    params = coco_eval.params
    num_images, num_areas, max_det = len(params.imgIds), len(params.areaRng), params.maxDets[-1]
    num_t = len(params.iouThrs)
    positives = np.zeros((num_images, len(params.catIds)), np.int32)
    per_class = []
    for k in range(len(params.catIds)):
        images, scores, matched, ignored = [np.zeros(0, np.int64)], [np.zeros(0)], [np.zeros((num_t, 0))], []
        ignored.append(np.zeros((num_t, 0), bool))
        for i in range(num_images):
            e = coco_eval.evalImgs[(k * num_areas) * num_images + i]  # area range 0: all
            if e is None:
                continue
            positives[i, k] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            scores.append(np.asarray(e["dtScores"][:max_det], np.float64))
            images.append(np.full(len(scores[-1]), i))
            matched.append(e["dtMatches"][:, :max_det])
            ignored.append(e["dtIgnore"][:, :max_det].astype(bool))
        score = np.concatenate(scores)
        order = np.argsort(-score, kind="mergesort")  # accumulate()'s ranking
        dtm, dt_ignored = np.concatenate(matched, 1)[:, order], np.concatenate(ignored, 1)[:, order]
        per_class.append(
            (
                np.concatenate(images)[order],
                score[order],
                ((dtm != 0) & ~dt_ignored).T,
                ((dtm == 0) & ~dt_ignored).T,
            )
        )
    return ranked_record("coco", params.imgIds, class_names, positives, per_class)


def xyxy_to_coco_results(image_id: int, boxes, scores, labels, category_ids: Sequence[int]) -> list[dict]:
    """Detections of one image (boxes [N, 4] xyxy pixels, labels 0-based) -> COCO result dicts."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).round(2)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(c)]),
            "bbox": b,
            "score": round(float(s), 5),
        }
        for b, s, c in zip(
            xywh.tolist(), np.asarray(scores).tolist(), np.asarray(labels).tolist(), strict=True
        )
    ]


class COCOEvaluator:
    """Accumulates detections of a COCO-layout validation set; ``compute()`` runs COCOeval over
    ``image_ids`` (the images the data set kept; default all of ``coco_gt``), less those excluded.

    ``coco_gt``: a COCO object, or a function returning one, called when it is first needed (with
    ``image_ids`` given, in ``compute()``): in a process group only the rank that scores loads it."""

    def __init__(
        self,
        coco_gt,
        category_ids: Sequence[int],
        class_names: Sequence[str],
        backend: str = "pycocotools",
        image_ids: Sequence[int] | None = None,
    ):
        self._coco_gt, self.category_ids, self.class_names = coco_gt, list(category_ids), list(class_names)
        self.backend, self.results, self._record = backend, [], None
        self.image_ids = set(self.coco_gt.getImgIds() if image_ids is None else image_ids)
        coco_api(backend)  # fail at start-up, not after the first epoch

    @property
    def coco_gt(self):
        if callable(self._coco_gt):
            self._coco_gt = self._coco_gt()
        return self._coco_gt

    def add_detections(self, image_id, boxes, scores, labels) -> None:
        """boxes [N, 4] xyxy pixels in the original image frame; labels 0-based contiguous."""
        self.results.extend(xyxy_to_coco_results(image_id, boxes, scores, labels, self.category_ids))

    def exclude(self, image_ids) -> None:
        """Images dropped as bad samples: their ground truth leaves the evaluation too."""
        self.image_ids -= set(image_ids)

    def compute(self) -> dict:
        self._record = None
        if not self.results:
            return evaluate_coco(self.coco_gt, self.results, self.backend, self.class_names, self.image_ids)
        coco_eval = run_cocoeval(self.coco_gt, self.results, self.backend, self.image_ids, summarize=True)
        if self.backend == "pycocotools":  # its per-image results are at hand: kept compact, not whole
            self._record = coco_record(coco_eval, self.class_names)
        return coco_stats(coco_eval, self.class_names)

    def per_image_record(self) -> RankedDetections:
        """The detections' outcomes per image (bof-report's bootstrap, :mod:`bof.evaluation.weighted_ap`),
        from pycocotools' per-image evaluation, whichever backend computed the metrics (faster-coco-eval
        keeps its per-image results in C++): at COCO's size one more ``evaluate()``, once per run."""
        if not self.results:  # no detections: only the positives
            empty = (np.zeros(0), np.zeros(0), np.zeros((0, 10), bool), np.zeros((0, 10), bool))
            image_ids = sorted(self.image_ids)
            row = {image_id: i for i, image_id in enumerate(image_ids)}
            column = {cat: k for k, cat in enumerate(self.category_ids)}
            positives = np.zeros((len(image_ids), len(self.category_ids)), np.int32)
            for ann in self.coco_gt.loadAnns(self.coco_gt.getAnnIds(imgIds=image_ids)):
                if not ann.get("iscrowd", 0) and ann["category_id"] in column:
                    positives[row[ann["image_id"]], column[ann["category_id"]]] += 1
            return ranked_record("coco", image_ids, self.class_names, positives, [empty] * len(column))
        if self._record is not None:
            return self._record
        coco_eval = run_cocoeval(self.coco_gt, self.results, "pycocotools", self.image_ids)
        if list(coco_eval.params.catIds) != sorted(self.category_ids):
            raise ValueError("the COCO annotations' categories differ from the data set's")
        return coco_record(coco_eval, self.class_names)

    def write_results(self, out_dir: str | Path) -> Path:
        return write_text_atomically(Path(out_dir) / "coco_results.json", json.dumps(self.results))

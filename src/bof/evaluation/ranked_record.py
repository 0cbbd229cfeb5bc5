"""A run's per-image evaluation record: what the evaluator's matching decided for every detection, kept
so that the metric can be recomputed under any per-image weights without matching again (the paired
bootstrap of bof-report, :mod:`bof.evaluation.weighted_ap`).

Per class, the detections in the order the metric ranks them (score descending, ties as the evaluator broke
them), each with its image and, at each IoU threshold (1 for VOC, COCO's 10), whether it was a true
positive, a false positive or neither (matched to a difficult / crowd box: ignored); per image and class,
the ground truth boxes that count as positives. For VOC07-sized evaluations it weighs a few MB.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bof.utils.atomic import write_atomically

METRICS = ("voc07", "area", "coco")  # VOC 11-point, VOC area under the envelope, COCO AP@[.5:.95]
RECORD_FILE = "eval_record.npz"  # beside a run's metrics.json: its final evaluation


@dataclass(frozen=True)
class RankedDetections:
    """``metric``: one of :data:`METRICS`. ``image_ids`` str [N], ``class_names`` str [C];
    ``positives`` int32 [N, C]: per image and class, the boxes a detector must find (VOC: not difficult;
    COCO: not crowd, all areas). ``det_class`` int32 [D], non-decreasing; ``det_image`` int32 [D];
    ``det_score`` float64 [D], descending within a class; ``tp``, ``fp`` bool [D, T]."""

    metric: str
    image_ids: np.ndarray
    class_names: np.ndarray
    positives: np.ndarray
    det_class: np.ndarray
    det_image: np.ndarray
    det_score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray

    def __post_init__(self):
        n, c, d = len(self.image_ids), len(self.class_names), len(self.det_class)
        problems = []
        if self.metric not in METRICS:
            problems.append(f"metric {self.metric!r} is not one of {METRICS}")
        if self.positives.shape != (n, c):
            problems.append(f"positives has shape {self.positives.shape}, not ({n}, {c})")
        if not (len(self.det_image) == len(self.det_score) == len(self.tp) == len(self.fp) == d):
            problems.append("det_class, det_image, det_score, tp and fp differ in length")
        elif self.tp.ndim != 2 or self.tp.shape != self.fp.shape or (self.tp & self.fp).any():
            problems.append("tp and fp must be [D, T] with no detection both")
        elif d and (
            np.diff(self.det_class).min(initial=0) < 0
            or self.det_class.min() < 0
            or self.det_class.max() >= c
            or self.det_image.min() < 0
            or self.det_image.max() >= n
        ):
            problems.append("detections must be grouped by class, with class and image indices in range")
        if problems:
            raise ValueError("not a valid per-image record: " + "; ".join(problems))

    @property
    def num_thresholds(self) -> int:
        return self.tp.shape[1]

    def class_slices(self) -> list[slice]:
        """The rows of each class's detections (they are grouped by class)."""
        bounds = np.searchsorted(self.det_class, np.arange(len(self.class_names) + 1))
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def save(self, path: str | Path) -> Path:
        """One compressed ``.npz``, written atomically."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        return write_atomically(path, lambda file: np.savez_compressed(file, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> RankedDetections:
        """The record in ``path``; a missing, truncated or foreign file raises ValueError naming it."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {f.name: data[f.name] for f in fields(cls)}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as error:
            raise ValueError(f"{path}: not a readable per-image evaluation record ({error})") from error
        values["metric"] = str(values["metric"])
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error


def ranked_record(
    metric: str,
    image_ids,
    class_names,
    positives: np.ndarray,
    per_class: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> RankedDetections:
    """The record from each class's ranked ``(image indices [D_c], scores [D_c], tp [D_c, T], fp [D_c, T])``
    (``per_class[c]``, in ranking order), ``positives`` [N, C]."""
    thresholds = next((tp.shape[1] for _, _, tp, _ in per_class if tp.ndim == 2), 1)
    sizes = [len(images) for images, *_ in per_class]
    return RankedDetections(
        metric=metric,
        image_ids=np.asarray([str(i) for i in image_ids], dtype=str),
        class_names=np.asarray(list(class_names), dtype=str),
        positives=np.asarray(positives, dtype=np.int32).reshape(len(image_ids), len(per_class)),
        det_class=np.repeat(np.arange(len(per_class), dtype=np.int32), sizes),
        det_image=np.concatenate([np.zeros(0, np.int32)] + [np.asarray(p[0], np.int32) for p in per_class]),
        det_score=np.concatenate([np.zeros(0)] + [np.asarray(p[1], np.float64) for p in per_class]),
        tp=np.concatenate(
            [np.zeros((0, thresholds), bool)] + [p[2].reshape(-1, thresholds) for p in per_class]
        ),
        fp=np.concatenate(
            [np.zeros((0, thresholds), bool)] + [p[3].reshape(-1, thresholds) for p in per_class]
        ),
    )

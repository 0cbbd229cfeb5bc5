"""COCO 2017 detection data, scored by pycocotools (docs/fidelity.md "Evaluation"; issue: COCO).

Layout (the official one)::

    <root>/annotations/instances_<split>.json      split: train2017 | val2017
    <root>/<split>/<file_name>                     the images

Category ids (1..90 with gaps in COCO) map to contiguous 0-based labels in sorted id order and back
(:attr:`COCODetection.category_ids`). Crowd boxes (``iscrowd=1``) are never training targets, and
COCOeval treats them as crowd regions. Boxes are clipped to the image and degenerate ones dropped.
For training (``train=True``) images without any usable box are skipped; for evaluation every image
is kept, since a detection on an empty image is a false positive.

The data set holds numpy arrays only (:mod:`bof.data.coco_cache` reads them from a cache beside the JSON
after the first build): it pickles in a few MiB and its workers share its pages. The pycocotools object
COCOeval scores with is loaded from the JSON only when an evaluator asks for it (:meth:`ground_truth`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bof.data.bad_samples import BadSampleError, check_policy
from bof.data.coco_cache import load_annotations
from bof.data.decode import MAX_IMAGE_PIXELS, check_pixel_limit, decode_rgb, read_size
from bof.evaluation.coco_eval import load_coco

logger = logging.getLogger(__name__)
PREPARE_HINT = "see scripts/prepare_coco.sh to download and lay out COCO 2017"


class COCODetection(Dataset):
    """``dataset[i]`` -> (image uint8 [3, H, W], target with ``boxes`` [N, 4] xyxy pixels, ``labels``
    [N] int64 contiguous, ``difficult`` [N] all False, ``image_id`` int, ``orig_size`` (h, w)).

    ``annotation_file`` / ``image_dir`` override the official layout under ``root`` (the synthetic COCO
    set points at its own)."""

    check = staticmethod(check_pixel_limit)  # the arguments start-up checks before anything is read

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train2017",
        train: bool = True,
        annotation_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        eval_backend: str = "pycocotools",
        on_bad_sample: str = "error",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        check_images: bool = False,
    ):
        self.check(max_image_pixels)
        self.root, self.split, self.train, self.eval_backend = Path(root), split, train, eval_backend
        self.max_image_pixels = max_image_pixels
        self.on_bad_sample = check_policy(on_bad_sample)
        self.skipped: list[str] = []
        annotation_file = Path(annotation_file or self.root / "annotations" / f"instances_{split}.json")
        self.image_dir = Path(image_dir or self.root / split)
        if not annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file} ({PREPARE_HINT})")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {self.image_dir} ({PREPARE_HINT})")
        self.annotation_file, self._coco_gt = annotation_file, None
        a = load_annotations(annotation_file)
        self.category_ids = a.category_ids.tolist()
        self.class_names = tuple(a.category_names.tolist())
        problems = dict(zip(a.problem_index.tolist(), a.problem_text.tolist(), strict=True))
        keep = np.ones(len(a.image_ids), bool)
        for i in range(len(keep)) if check_images else sorted(problems):
            try:
                if i in problems:
                    raise ValueError(problems[i])
                # reached with check_images only (validation): every header read before the first epoch
                path = self.image_dir / a.file_names[i].decode()
                if not path.is_file():
                    raise BadSampleError(f"COCO image not found: {path}")
                read_size(path, max_image_pixels)
            except ValueError as error:  # a malformed annotation, or a file outside the image folder
                problem = f"{annotation_file}: image {a.image_ids[i]}: {error}"
                if self.on_bad_sample == "error":
                    raise BadSampleError(problem) from None
                logger.warning("skipping a bad sample: %s", problem)
                self.skipped.append(problem)
                keep[i] = False
        counts = np.diff(a.offsets)
        skipped = int((keep & (counts == 0)).sum()) if train else 0
        keep &= (counts > 0) | (not train)
        if not keep.any():
            raise ValueError(f"{annotation_file}: no usable images for split {split!r}")
        self.image_ids, self.file_names = a.image_ids[keep], a.file_names[keep]
        self._offsets = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        box_kept = np.repeat(keep, counts)
        self._boxes, self._labels = a.boxes[box_kept], a.labels[box_kept]
        logger.info(
            "COCODetection %s: %d images, %d objects%s",
            split,
            len(self),
            len(self._labels),
            f" ({skipped} images without objects skipped)" if skipped else "",
        )

    def ground_truth(self):
        """The COCO object COCOeval scores with, loaded from the annotation file on first use: by the
        process that scores a validation set, never by a training one; not pickled to workers."""
        if self._coco_gt is None:
            self._coco_gt = load_coco(self.annotation_file, self.eval_backend)
        return self._coco_gt

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_coco_gt": None}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        path = self.image_dir / self.file_names[i].decode()
        if not path.is_file():
            raise FileNotFoundError(f"COCO image not found: {path} ({PREPARE_HINT})")
        image = decode_rgb(path, self.max_image_pixels)
        a, b = self._offsets[i], self._offsets[i + 1]
        target = {
            "boxes": torch.from_numpy(self._boxes[a:b].copy()),
            "labels": torch.from_numpy(self._labels[a:b].copy()),
            "difficult": torch.zeros(int(b - a), dtype=torch.bool),
            "image_id": int(self.image_ids[i]),
            "orig_size": (int(image.shape[1]), int(image.shape[2])),
        }
        return image, target

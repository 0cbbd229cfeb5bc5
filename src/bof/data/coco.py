"""COCO 2017 detection data through pycocotools (docs/fidelity.md "Evaluation"; issue: COCO).

Layout (the official one)::

    <root>/annotations/instances_<split>.json      split: train2017 | val2017
    <root>/<split>/<file_name>                     the images

Category ids (1..90 with gaps in COCO) map to contiguous 0-based labels in sorted id order and back
(:attr:`COCODetection.category_ids`). Crowd boxes (``iscrowd=1``) are never training targets, and
COCOeval treats them as crowd regions. Boxes are clipped to the image and degenerate ones dropped.
For training (``train=True``) images without any usable box are skipped; for evaluation every image
is kept, since a detection on an empty image is a false positive.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bof.data.bad_samples import BadSampleError, check_policy
from bof.data.decode import MAX_IMAGE_PIXELS, check_pixel_limit, decode_rgb, read_size
from bof.evaluation.coco_eval import load_coco
from bof.utils.boxes import clip_boxes

logger = logging.getLogger(__name__)
PREPARE_HINT = "see scripts/prepare_coco.sh to download and lay out COCO 2017"


def coco_boxes(annotations: list[dict], width: int, height: int, category_index: dict[int, int]):
    """Non-crowd COCO annotations -> (boxes [N, 4] float32 xyxy clipped to the image, labels [N] int64),
    dropping boxes with no area after clipping."""
    anns = [a for a in annotations if not a.get("iscrowd", 0)]
    for a in anns:
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise ValueError(f"annotation {a.get('id')} has no bbox of four numbers: {box!r}")
        if not np.isfinite(box).all() or box[2] < 0 or box[3] < 0:
            raise ValueError(f"annotation {a.get('id')} has a bbox that is not finite or negative: {box}")
        if a.get("category_id") not in category_index:
            raise ValueError(f"annotation {a.get('id')} has an unknown category {a.get('category_id')!r}")
    xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    labels = np.asarray([category_index[a["category_id"]] for a in anns], dtype=np.int64)
    kept = clip_boxes({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}, height, width)
    return kept["boxes"].numpy(), kept["labels"].numpy()


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
        self.coco = load_coco(annotation_file, eval_backend)
        self.category_ids = sorted(self.coco.getCatIds())
        self.class_names = tuple(self.coco.cats[c]["name"] for c in self.category_ids)
        index = {c: i for i, c in enumerate(self.category_ids)}
        self.image_ids, self.file_names, sizes, boxes, labels, counts = [], [], [], [], [], []
        skipped = 0
        for image_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[image_id]
            try:
                b, lab = coco_boxes(
                    self.coco.imgToAnns.get(image_id, []), info["width"], info["height"], index
                )
                if Path(info["file_name"]).is_absolute() or ".." in Path(info["file_name"]).parts:
                    raise ValueError(f"file_name {info['file_name']!r} is not a path inside {self.image_dir}")
                if check_images:  # validation: every image checked by its header before the first epoch
                    path = self.image_dir / info["file_name"]
                    if not path.is_file():
                        raise BadSampleError(f"COCO image not found: {path}")
                    read_size(path, max_image_pixels)
            except ValueError as error:  # a malformed annotation, or a file outside the image folder
                problem = f"{annotation_file}: image {image_id}: {error}"
                if self.on_bad_sample == "error":
                    raise BadSampleError(problem) from None
                logger.warning("skipping a bad sample: %s", problem)
                self.skipped.append(problem)
                continue
            if train and not len(lab):
                skipped += 1
                continue
            self.image_ids.append(image_id)
            self.file_names.append(info["file_name"])
            sizes.append((info["height"], info["width"]))
            boxes.append(b)
            labels.append(lab)
            counts.append(len(lab))
        if not self.image_ids:
            raise ValueError(f"{annotation_file}: no usable images for split {split!r}")
        self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._boxes = np.concatenate(boxes)
        self._labels = np.concatenate(labels)
        logger.info(
            "COCODetection %s: %d images, %d objects%s",
            split,
            len(self),
            len(self._labels),
            f" ({skipped} images without objects skipped)" if skipped else "",
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        path = self.image_dir / self.file_names[i]
        if not path.is_file():
            raise FileNotFoundError(f"COCO image not found: {path} ({PREPARE_HINT})")
        image = decode_rgb(path, self.max_image_pixels)
        a, b = self._offsets[i], self._offsets[i + 1]
        target = {
            "boxes": torch.from_numpy(self._boxes[a:b].copy()),
            "labels": torch.from_numpy(self._labels[a:b].copy()),
            "difficult": torch.zeros(int(b - a), dtype=torch.bool),
            "image_id": self.image_ids[i],
            "orig_size": (int(image.shape[1]), int(image.shape[2])),
        }
        return image, target

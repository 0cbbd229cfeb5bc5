"""A COCO instances file in compact arrays, parsed once and cached (docs/data.md "Annotation cache").

:class:`Annotations` holds every image of the file in id order with its usable boxes (crowd boxes out,
clipped to the image, empty ones dropped) and the problem of each malformed image, so a data set built
from the cache applies ``train`` and ``on_bad_sample`` exactly as one built from the JSON. The cache is
``<json>.bof-cache.npz`` beside the JSON, or ``$BOF_CACHE_DIR/coco/`` (default ``~/.cache/bof``) when
that folder is read-only; it is keyed by the JSON's size and modification time and :data:`FORMAT`,
written atomically, read without pickle or JSON, and rebuilt with a warning when it cannot be read.
In a process group rank 0 builds it while the others wait, then they read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from bof.utils import distributed
from bof.utils.atomic import write_atomically
from bof.utils.boxes import clip_boxes

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the arrays or their meaning change: older caches are then rebuilt
SUFFIX = ".bof-cache.npz"


class Annotations(NamedTuple):
    category_ids: np.ndarray  # int64 [C], sorted
    category_names: np.ndarray  # str [C]
    image_ids: np.ndarray  # int64 [I], sorted
    file_names: np.ndarray  # bytes [I], UTF-8
    offsets: np.ndarray  # int64 [I + 1]: image i's boxes are boxes[offsets[i]:offsets[i + 1]]
    boxes: np.ndarray  # float32 [N, 4], xyxy pixels
    labels: np.ndarray  # int64 [N], contiguous 0-based
    problem_index: np.ndarray  # int64 [P]: images that cannot be used...
    problem_text: np.ndarray  # str [P]: ...and why


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


def parse(annotation_file: Path) -> Annotations:
    """The JSON's images, boxes and problems (the slow path: json.load and a loop over the images)."""
    try:
        with open(annotation_file, "rb") as f:
            data = json.load(f)
        images = {image["id"]: image for image in data.get("images", [])}
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        per_image = defaultdict(list)
        for ann in data.get("annotations", []):
            per_image[ann["image_id"]].append(ann)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{annotation_file}: not a COCO instances file ({error})") from error
    del data
    category_ids = sorted(categories)
    index = {c: i for i, c in enumerate(category_ids)}
    image_ids, file_names, counts, boxes, labels, problems = [], [], [], [], [], {}
    for image_id in sorted(images):
        info = images[image_id]
        try:
            b, lab = coco_boxes(per_image.get(image_id, []), info["width"], info["height"], index)
            if Path(info["file_name"]).is_absolute() or ".." in Path(info["file_name"]).parts:
                raise ValueError(f"file_name {info['file_name']!r} is not a path inside the image folder")
        except ValueError as error:  # a malformed annotation, or a file outside the image folder
            problems[len(image_ids)] = str(error)
            b, lab = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        image_ids.append(image_id)
        file_names.append(str(info["file_name"]).encode())
        counts.append(len(lab))
        boxes.append(b)
        labels.append(lab)
    return Annotations(
        np.asarray(category_ids, np.int64),
        np.asarray([categories[c] for c in category_ids], dtype=str),
        np.asarray(image_ids, np.int64),
        np.asarray(file_names, dtype=bytes),
        np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        np.concatenate(boxes or [np.zeros((0, 4), np.float32)]).astype(np.float32),
        np.concatenate(labels or [np.zeros(0, np.int64)]).astype(np.int64),
        np.asarray(list(problems), np.int64),
        np.asarray(list(problems.values()), dtype=str),
    )


def cache_paths(annotation_file: Path) -> tuple[Path, Path]:
    """(beside the JSON, under $BOF_CACHE_DIR): the second, named by the JSON's absolute path, is for a
    read-only data folder."""
    root = Path(os.environ.get("BOF_CACHE_DIR") or "~/.cache/bof").expanduser()
    name = annotation_file.name + SUFFIX
    key = hashlib.sha256(str(annotation_file.resolve()).encode()).hexdigest()[:16]
    return annotation_file.with_name(name), root / "coco" / f"{key}-{name}"


def load_annotations(annotation_file: Path) -> Annotations:
    """The file's :class:`Annotations`, from its cache when that matches the JSON, else parsed and
    cached (by rank 0 first in a process group)."""
    stat = annotation_file.stat()
    key = np.asarray([FORMAT, stat.st_size, stat.st_mtime_ns], np.int64)
    with distributed.main_first():
        paths = cache_paths(annotation_file)
        for path in paths:
            if path.is_file() and (annotations := read_cache(path, key)) is not None:
                return annotations
        annotations = parse(annotation_file)
        write_cache(paths, key, annotations)
        return annotations


def read_cache(path: Path, key: np.ndarray) -> Annotations | None:
    """The cached arrays, or None when they belong to another JSON (or format) or cannot be trusted."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if not np.array_equal(cache["key"], key):
                log.info("%s is out of date: rebuilding it", path)
                return None
            annotations = Annotations(*(cache[name] for name in Annotations._fields))
        check(annotations)
    except Exception as error:  # whatever is wrong with it, the cache is rebuilt, never trusted
        log.warning(
            "annotation cache %s cannot be read (%s: %s): rebuilding it", path, type(error).__name__, error
        )
        return None
    return annotations


def check(a: Annotations) -> None:
    """The arrays' shapes and offsets agree (a cache written by this code always passes)."""
    images, boxes = len(a.image_ids), len(a.boxes)
    if not (
        a.offsets.shape == (images + 1,)
        and len(a.file_names) == images
        and a.boxes.ndim == 2
        and a.boxes.shape[1] == 4
        and len(a.labels) == boxes
        and a.offsets[0] == 0
        and a.offsets[-1] == boxes
        and (np.diff(a.offsets) >= 0).all()
        and len(a.problem_index) == len(a.problem_text)
        and ((a.labels >= 0) & (a.labels < len(a.category_ids))).all()
    ):
        raise ValueError("inconsistent arrays")


def write_cache(paths: tuple[Path, Path], key: np.ndarray, annotations: Annotations) -> None:
    """Beside the JSON when that folder is writable, else under $BOF_CACHE_DIR; neither: no cache."""
    arrays = {"key": key, **annotations._asdict()}
    for path in paths:
        if not os.access(path.parent, os.W_OK) and path.parent.exists():
            continue
        try:
            write_atomically(path, lambda f: np.savez(f, **arrays))
            log.info("annotation cache written: %s", path)
            return
        except OSError as error:
            log.info("cannot write the annotation cache %s (%s)", path, error)
    log.warning("no writable place for the annotation cache (%s): every build parses the JSON", paths)

"""Pascal VOC detection data: XML annotation parsing, box-convention helpers and a torch Dataset.

Box conventions
---------------
* **VOC** (what the XML files and the official result files use): ``xmin, ymin, xmax, ymax`` are
  1-based *inclusive* pixel indices, so a box covering the first pixel column only has
  ``xmin = xmax = 1`` and its width is ``xmax - xmin + 1``.
* **xyxy** (what the models, the transforms and torchvision use): continuous 0-based pixel coordinates
  where pixel ``i`` (0-based) covers ``[i, i + 1)``. The VOC box above covers ``[0, 1)``.

:func:`voc_to_xyxy` and :func:`xyxy_to_voc` convert between them; they are exact inverses. The dataset
returns xyxy boxes for training, and the VOC evaluator converts predictions back with
:func:`xyxy_to_voc` so that its ``x2 - x1 + 1`` widths match the devkit's.

Layout read by :class:`VOCDetection` (the VOCdevkit layout)::

    <root>/<year_dir>/ImageSets/Main/<split>.txt   one image id per line
    <root>/<year_dir>/Annotations/<id>.xml
    <root>/<year_dir>/JPEGImages/<id>.jpg
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bof.data.bad_samples import BadSampleError, check_policy
from bof.data.decode import MAX_IMAGE_PIXELS, check_pixel_limit, decode_rgb, read_size
from bof.utils.boxes import clip_boxes, voc_to_xyxy

logger = logging.getLogger(__name__)
MAX_PIXELS_PER_SIDE = 1e5  # a coordinate beyond this is a corrupt annotation, not a photo

VOC_CLASSES: tuple[str, ...] = tuple(
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person "
    "pottedplant sheep sofa train tvmonitor".split()
)

PREPARE_HINT = "see scripts/prepare_voc.sh to download and lay out Pascal VOC"


@dataclass
class VOCAnnotation:
    """One image's annotation, exactly as written in its XML file.

    ``boxes``: float32 [N, 4] RAW VOC boxes (1-based inclusive ``xmin, ymin, xmax, ymax``);
    ``labels``: int64 [N] indices into the class-name tuple; ``difficult``: bool [N].
    """

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def _text(elem: ET.Element | None) -> str | None:
    return None if elem is None or elem.text is None else elem.text.strip()


def _number(elem: ET.Element, tag: str, path: str | os.PathLike) -> float:
    value = _text(elem.find(tag))
    if value is None or value == "":
        raise ValueError(f"{path}: <{tag}> missing in <{elem.tag}>")
    try:
        number = float(value)  # coordinates are sometimes written as floats ("273.0")
    except ValueError:
        raise ValueError(f"{path}: <{tag}> is not a number: {value!r}") from None
    if not math.isfinite(number) or abs(number) > MAX_PIXELS_PER_SIDE:
        raise ValueError(f"{path}: <{tag}> is {value!r}, not a pixel coordinate or size")
    return number


def parse_voc_xml(
    path: str | os.PathLike, class_names: Sequence[str] | dict[str, int] = VOC_CLASSES
) -> VOCAnnotation:
    """Parses one Pascal VOC annotation file.

    Handles the original devkit layout, labelImg re-saves and the VOC2012 native layout (``<occluded>``,
    ``<difficult>`` after ``<bndbox>``). A missing ``<difficult>`` means 0. Zero-object files are valid.

    ``class_names``: the class tuple (or a prebuilt name -> index dict, for speed).
    Raises ValueError (naming the file) for malformed XML, a class not in ``class_names``, a missing or
    non-numeric coordinate, or a box with ``xmax < xmin`` / ``ymax < ymin``.
    """
    index = class_names if isinstance(class_names, dict) else {n: i for i, n in enumerate(class_names)}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: malformed annotation XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: <size> missing")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    filename = _text(root.find("filename")) or ""

    boxes, labels, difficult = [], [], []
    for obj in root.findall("object"):  # direct children: <part>s of VOC persons are nested
        name = _text(obj.find("name"))
        if name not in index:
            raise ValueError(f"{path}: unknown class {name!r} (not in the {len(index)} class names)")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{path}: object {name!r} has no <bndbox>")
        box = [_number(bndbox, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"{path}: object {name!r} has an inverted box {box} (xmin, ymin, xmax, ymax)")
        diff = _text(obj.find("difficult")) or "0"
        if diff not in ("0", "1", "0.0", "1.0"):
            raise ValueError(f"{path}: object {name!r} has <difficult>{diff}</difficult>; 0 or 1 expected")
        boxes.append(box)
        labels.append(index[name])
        difficult.append(diff.startswith("1"))

    return VOCAnnotation(
        filename=filename,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
    )


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: {path} ({PREPARE_HINT})")


def read_image_set(year_path: str | os.PathLike, split: str) -> list[str]:
    """The image ids of ``<year_path>/ImageSets/Main/<split>.txt``, the first token of each line
    (Main/<split>.txt has ids only, per-class lists add a +-1 flag). A missing file, an empty set, an id
    listed twice or an id that is a path raises, naming the file."""
    split_file = Path(year_path) / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise _missing(split_file, "VOC image-set file")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{split_file}: empty image set")
    if twice := sorted(i for i, n in Counter(ids).items() if n > 1):
        raise ValueError(f"{split_file}: image ids listed more than once: {twice[:5]}")
    if paths := [i for i in ids if "/" in i or "\\" in i or i.startswith(".")]:
        raise ValueError(f"{split_file}: image ids are file names in the data root, not paths: {paths[:3]}")
    return ids


class VOCDetection(Dataset):
    """Pascal VOC detection dataset over one or more ``(year_dir, split)`` image sets.

    ``root``: a VOCdevkit folder. ``image_sets``: e.g. ``[["VOC2007", "trainval"], ["VOC2012", "trainval"]]``
    (the paper's VOC07+12 training set) or ``[["VOC2007", "test"]]`` (its test set).

    All annotations are parsed once at construction and kept in a few flat numpy arrays (no per-image
    Python objects besides the id strings, so forked data-loader workers share them cheaply). Missing
    files raise FileNotFoundError naming the path at construction, not in the middle of training.

    If the same image id appears in two image sets (impossible in real VOC07+12, possible by mistake),
    both entries are kept as two samples (a warning is logged); their ``image_id`` strings are equal, so
    an evaluator keyed by id would merge them.

    ``dataset[i]`` -> ``(image, target)``: image uint8 [3, H, W] RGB; target dict with ``boxes`` float32
    [N, 4] xyxy (continuous 0-based pixels, see :func:`voc_to_xyxy`), ``labels`` int64 [N],
    ``difficult`` bool [N] (difficult objects are kept for training and marked for evaluation),
    ``image_id`` str and ``orig_size`` (h, w).
    """

    check = staticmethod(check_pixel_limit)  # the arguments start-up checks before anything is read

    def __init__(
        self,
        root: str | os.PathLike,
        image_sets: Sequence[Sequence[str]],
        class_names: Sequence[str] = VOC_CLASSES,
        on_bad_sample: str = "error",
        skip_empty: bool = False,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        check_images: bool = False,
    ):
        self.check(max_image_pixels)
        self.root, self.max_image_pixels, self.check_images = Path(root), max_image_pixels, check_images
        self.on_bad_sample = check_policy(on_bad_sample)
        self.skipped: list[str] = []  # the problems of the images left out at load time
        self.size_mismatches: list[str] = []  # annotations whose <size> is not their image's (validation)
        self.class_names = tuple(class_names)
        self.image_sets = [(str(year), str(split)) for year, split in image_sets]
        if not self.root.is_dir():
            raise _missing(self.root, "VOC root folder")
        index = {n: i for i, n in enumerate(self.class_names)}

        self.year_dirs: list[str] = []
        self.image_ids: list[str] = []
        year_of_image: list[int] = []
        sizes, boxes, labels, difficult, counts = [], [], [], [], []
        for year, split in self.image_sets:
            year_path = self.root / year
            if not year_path.is_dir():
                raise _missing(year_path, "VOC year folder")
            ids = read_image_set(year_path, split)
            if year not in self.year_dirs:
                self.year_dirs.append(year)
            y = self.year_dirs.index(year)
            for image_id in ids:
                try:
                    ann = self._load_annotation(year_path, image_id, index, skip_empty)
                except (ValueError, FileNotFoundError) as error:  # each names the file and the problem
                    if self.on_bad_sample == "error":
                        raise
                    logger.warning("skipping a bad sample: %s", error)
                    self.skipped.append(str(error))
                    continue
                self.image_ids.append(image_id)
                year_of_image.append(y)
                sizes.append((ann.height, ann.width))
                boxes.append(ann.boxes)
                labels.append(ann.labels)
                difficult.append(ann.difficult)
                counts.append(len(ann.labels))

        if not self.image_ids:
            raise ValueError(f"VOCDetection {self.image_sets}: no usable image ({len(self.skipped)} skipped)")
        if self.size_mismatches:
            logger.warning(
                "%d annotations' <size> differ from their image's, whose size is used: %s",
                len(self.size_mismatches),
                "; ".join(self.size_mismatches[:3]),
            )
        if len(set(self.image_ids)) != len(self.image_ids):
            logger.warning(
                "VOCDetection %s: some image ids appear in more than one image set", self.image_sets
            )
        self._year = np.asarray(year_of_image, dtype=np.int16)
        self._sizes = np.asarray(sizes, dtype=np.int32).reshape(-1, 2)
        self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
        self._labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
        self._difficult = np.concatenate(difficult) if difficult else np.zeros((0,), bool)
        logger.info(
            "VOCDetection %s: %d images, %d objects (%d difficult)",
            self.image_sets,
            len(self),
            len(self._labels),
            int(self._difficult.sum()),
        )

    def _load_annotation(self, year_path: Path, image_id: str, index: dict, skip_empty: bool):
        xml = year_path / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            raise _missing(xml, "VOC annotation")
        jpg = year_path / "JPEGImages" / f"{image_id}.jpg"
        if not jpg.is_file():
            raise _missing(jpg, "VOC image")
        ann = parse_voc_xml(xml, index)
        if self.check_images:  # validation: every image checked by its header before the first epoch
            width, height = read_size(jpg, self.max_image_pixels)
            if (width, height) != (ann.width, ann.height):  # swapped by EXIF-rotating tools, or 0
                # the evaluator clips ground truth to this size, detections to the decoded one
                self.size_mismatches.append(
                    f"{xml}: <size> {ann.width} x {ann.height}, image {width} x {height}"
                )
                ann = replace(ann, width=width, height=height)
        if skip_empty and not len(ann.labels):
            raise BadSampleError(f"{xml}: no objects (a training image needs at least one)")
        return ann

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, i: int) -> Path:
        return self.root / self.year_dirs[self._year[i]] / "JPEGImages" / f"{self.image_ids[i]}.jpg"

    def annotation_path(self, i: int) -> Path:
        return self.root / self.year_dirs[self._year[i]] / "Annotations" / f"{self.image_ids[i]}.xml"

    def get_annotation(self, i: int) -> VOCAnnotation:
        """The cached annotation of image ``i`` (raw VOC boxes, no image decode); arrays are copies.

        ``filename`` is the file actually read, ``<image_id>.jpg`` (the XML's ``<filename>`` is not kept:
        labelImg re-saves sometimes disagree with the file name).
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        a, b = self._offsets[i], self._offsets[i + 1]
        h, w = self._sizes[i]
        return VOCAnnotation(
            filename=f"{self.image_ids[i]}.jpg",
            width=int(w),
            height=int(h),
            boxes=self._boxes[a:b].copy(),
            labels=self._labels[a:b].copy(),
            difficult=self._difficult[a:b].copy(),
        )

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        ann = self.get_annotation(i)
        i = i % len(self)
        path = self.image_path(i)
        if not path.is_file():
            raise _missing(path, "VOC image")
        image = decode_rgb(path, self.max_image_pixels)
        target = {
            "boxes": torch.from_numpy(voc_to_xyxy(ann.boxes)),
            "labels": torch.from_numpy(ann.labels),
            "difficult": torch.from_numpy(ann.difficult),
            "image_id": self.image_ids[i],
            "orig_size": (int(image.shape[1]), int(image.shape[2])),
        }
        return image, clip_boxes(target, *target["orig_size"])

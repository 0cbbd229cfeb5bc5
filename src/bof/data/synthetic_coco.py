"""The built-in synthetic data set in the COCO layout: the same images as :mod:`bof.data.synthetic`, their
annotations written once as a COCO instances JSON beside the VOC files, so that the COCO loader and
COCOeval run end to end on a CPU."""

from __future__ import annotations

import json
import os

from bof.data.coco import COCODetection
from bof.data.synthetic import SYNTHETIC_CLASSES, ensure_synthetic_voc
from bof.data.voc import VOCDetection
from bof.utils.atomic import write_text_atomically


def synthetic_coco(
    cache_dir: str | os.PathLike,
    split: str,
    generator: dict | None = None,
    train: bool = True,
    eval_backend: str = "pycocotools",
    **checks,
) -> COCODetection:
    """The same synthetic images in the COCO layout: what ``conf/data/synthetic_coco.yaml`` instantiates,
    so the COCO loader and COCOeval run end to end on a CPU (``checks`` as for
    :func:`bof.data.synthetic.synthetic_voc`). The instances JSON is written once beside the VOC files
    (``coco/instances_<split>.json``, category ids 1..6); VOC's ``difficult`` flag has no COCO
    counterpart, so those objects are ordinary boxes here."""
    year_dir = ensure_synthetic_voc(cache_dir, **dict(generator or {}))
    annotation_file = year_dir / "coco" / f"instances_{split}.json"
    if not annotation_file.is_file():
        voc = VOCDetection(year_dir.parent, [[year_dir.name, split]], class_names=SYNTHETIC_CLASSES)
        write_text_atomically(annotation_file, json.dumps(voc_as_coco(voc)))
    return COCODetection(
        year_dir,
        split,
        train=train,
        annotation_file=annotation_file,
        image_dir=year_dir / "JPEGImages",
        eval_backend=eval_backend,
        **checks,
    )


# start-up checks its data sets' arguments before anything is generated (bof.engine.run_setup)
synthetic_coco.check = COCODetection.check


def voc_as_coco(voc: VOCDetection) -> dict:
    """A VOCDetection's annotations as a COCO instances dict (VOC 1-based inclusive boxes -> xywh)."""
    images, annotations = [], []
    for index, image_id in enumerate(voc.image_ids):
        ann = voc.get_annotation(index)
        images.append(
            {"id": index + 1, "file_name": f"{image_id}.jpg", "width": ann.width, "height": ann.height}
        )
        for box, label in zip(ann.boxes.tolist(), ann.labels.tolist(), strict=True):
            x1, y1, w, h = box[0] - 1, box[1] - 1, box[2] - box[0] + 1, box[3] - box[1] + 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(voc.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}

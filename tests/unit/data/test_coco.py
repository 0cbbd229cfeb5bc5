"""The COCO loader on the real val2014 annotations of the fixture, and data=synthetic_coco end to end."""

import json
import shutil

import numpy as np
import pytest
import torch

from bof.data.coco import COCODetection
from bof.data.coco_cache import coco_boxes
from bof.data.synthetic_coco import synthetic_coco
from tests.helpers import FIXTURES

ANNOTATIONS = FIXTURES / "coco_val2014_100" / "instances_val2014_100.json"


def dataset(tmp_path, train_split):
    annotations = tmp_path / ANNOTATIONS.name  # a copy: its annotation cache is written beside it
    if not annotations.is_file():
        shutil.copy(ANNOTATIONS, annotations)
    return COCODetection(
        tmp_path, "val2014", train=train_split, annotation_file=annotations, image_dir=tmp_path
    )


def test_crowd_boxes_are_not_targets_and_labels_are_contiguous(tmp_path):
    raw = json.loads(ANNOTATIONS.read_text())
    evaluation = dataset(tmp_path, train_split=False)
    assert len(evaluation) == len(raw["images"]) == 100  # every image kept for evaluation
    crowd = sum(a["iscrowd"] for a in raw["annotations"])
    assert crowd == 9 and len(evaluation._labels) <= len(raw["annotations"]) - crowd
    assert (
        evaluation.category_ids == sorted(c["id"] for c in raw["categories"])
        and len(evaluation.class_names) == 80
    )
    assert evaluation._labels.min() >= 0 and evaluation._labels.max() < 80
    # label -> category id -> name round trip
    first = next(a for a in raw["annotations"] if not a["iscrowd"])
    i = evaluation.image_ids.tolist().index(first["image_id"])
    labels = evaluation._labels[evaluation._offsets[i] : evaluation._offsets[i + 1]]
    assert evaluation.category_ids[labels[0]] in {
        a["category_id"] for a in raw["annotations"] if a["image_id"] == first["image_id"]
    }


def test_images_without_objects_are_skipped_for_training_only(tmp_path):
    raw = json.loads(ANNOTATIONS.read_text())
    raw["images"] += [
        {"id": 990001, "file_name": "empty.jpg", "width": 64, "height": 48},
        {"id": 990002, "file_name": "crowd_only.jpg", "width": 64, "height": 48},
    ]
    raw["annotations"].append(
        {"id": 990003, "image_id": 990002, "category_id": 1, "bbox": [1, 1, 9, 9], "area": 81, "iscrowd": 1}
    )
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(raw))
    training = COCODetection(tmp_path, "x", train=True, annotation_file=path, image_dir=tmp_path)
    evaluation = COCODetection(tmp_path, "x", train=False, annotation_file=path, image_dir=tmp_path)
    assert 990001 not in training.image_ids and 990002 not in training.image_ids and len(training) == 100
    assert {990001, 990002} <= set(evaluation.image_ids) and len(evaluation) == 102


def test_boxes_are_clipped_and_degenerate_ones_dropped():
    anns = [
        {"bbox": [-5, 10, 20, 20], "category_id": 3, "iscrowd": 0},  # sticks out left
        {"bbox": [90, 90, 30, 30], "category_id": 3, "iscrowd": 0},  # sticks out right/bottom
        {"bbox": [120, 5, 10, 10], "category_id": 3, "iscrowd": 0},  # entirely outside: dropped
        {"bbox": [10, 10, 0, 5], "category_id": 3, "iscrowd": 0},  # zero width: dropped
        {"bbox": [1, 1, 5, 5], "category_id": 3, "iscrowd": 1},  # crowd: not a target
    ]
    boxes, labels = coco_boxes(anns, 100, 100, {3: 0})
    assert np.allclose(boxes, [[0, 10, 15, 30], [90, 90, 100, 100]]) and labels.tolist() == [0, 0]


def test_missing_annotation_file_names_it_and_the_prepare_script(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_val2017.json.*prepare_coco.sh"):
        COCODetection(tmp_path, "val2017")


def test_synthetic_coco_matches_the_voc_boxes(cache_dir):
    from tests.helpers import TINY

    generator = {
        o.split("=")[0].split(".")[-1]: o.split("=")[1] for o in TINY if o.startswith("++data.generator")
    }
    generator = {k: (json.loads(v) if v.startswith("[") else int(v)) for k, v in generator.items()}
    coco = synthetic_coco(cache_dir, "train", generator)
    image, target = coco[0]
    assert image.dtype == torch.uint8 and len(target["boxes"]) == len(target["labels"]) > 0
    assert coco.class_names == ("circle", "square", "triangle", "cross", "diamond", "ring")

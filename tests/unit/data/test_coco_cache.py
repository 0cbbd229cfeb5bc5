"""The COCO annotation cache (docs/data.md "Annotation cache") and what the data set keeps: written on the
first build, read (without json.load) by the next, rebuilt when the JSON changes or the cache is corrupt,
under BOF_CACHE_DIR for a read-only data folder; compact arrays that pickle small and load the same
batches in fork and forkserver workers."""

import json
import logging
import pickle

import numpy as np
import pytest
import torch

from bof.data import coco_cache
from bof.data.coco import COCODetection
from bof.data.loader import build_data_loader
from bof.engine.evaluator import build_evaluator
from bof.evaluation.coco_eval import evaluate_coco, load_coco, xyxy_to_coco_results
from bof.tricks.augment import Resize
from bof.tricks.random_shapes import FixedShape
from tests.helpers.generated import make_coco


@pytest.fixture
def coco(tmp_path):
    """A generated COCO folder whose training JSON also has an image without boxes and a malformed one."""
    root = make_coco(tmp_path, images_per_split=6, width=160, height=120)
    path = root / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["images"] += [
        {"id": 7001, "file_name": "empty.jpg", "width": 160, "height": 120},
        {"id": 7002, "file_name": "bad.jpg", "width": 160, "height": 120},
    ]
    data["annotations"].append({"id": 9999, "image_id": 7002, "category_id": 1, "bbox": [1, 2], "iscrowd": 0})
    path.write_text(json.dumps(data))
    return root


def build(root, **kwargs):
    return COCODetection(root, "train2017", on_bad_sample="skip", **kwargs)


def same(a: COCODetection, b: COCODetection) -> bool:
    arrays = ("image_ids", "file_names", "_offsets", "_boxes", "_labels")
    return (
        all(np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays)
        and a.skipped == b.skipped
        and (a.category_ids, a.class_names) == (b.category_ids, b.class_names)
    )


def no_json(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the JSON was parsed")

    monkeypatch.setattr(coco_cache.json, "load", fail)


def cache_file(root):
    return root / "annotations" / f"instances_train2017.json{coco_cache.SUFFIX}"


def test_the_cache_is_written_then_read_without_parsing_and_gives_the_same_samples(coco, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING):
        parsed = build(coco)
    assert cache_file(coco).is_file() and "bad.jpg" not in parsed.file_names.tolist()
    assert len(parsed) == 6 and 7001 not in parsed.image_ids and 7002 not in parsed.image_ids
    first_warnings, caplog.records[:] = [r.getMessage() for r in caplog.records], []
    no_json(monkeypatch)
    with caplog.at_level(logging.WARNING):
        cached = build(coco)
    assert same(parsed, cached) and [r.getMessage() for r in caplog.records] == first_warnings
    image, target = cached[2]
    expected_image, expected = parsed[2]
    assert torch.equal(image, expected_image) and type(target["image_id"]) is int
    assert all(torch.equal(target[k], expected[k]) for k in ("boxes", "labels"))
    evaluation = COCODetection(coco, "train2017", train=False, on_bad_sample="skip")
    assert {7001} <= set(evaluation.image_ids.tolist()) and len(evaluation) == 7  # from the same cache
    with pytest.raises(ValueError, match=r"instances_train2017.json: image 7002: .*bbox of four numbers"):
        COCODetection(coco, "train2017")  # on_bad_sample=error from the cache too


def test_a_changed_json_rebuilds_the_cache(coco):
    before = build(coco)
    path = coco / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != before.image_ids[0]]
    path.write_text(json.dumps(data))
    after = build(coco)
    assert before.image_ids[0] not in after.image_ids and len(after) == len(before) - 1
    assert same(after, build(coco))


@pytest.mark.parametrize("damage", ["garbage", "inconsistent"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(coco, caplog, monkeypatch, damage):
    good = build(coco)
    cache = cache_file(coco)
    if damage == "garbage":
        cache.write_bytes(b"PK\x03\x04 not a zip")
    else:  # readable, of the right JSON, but its offsets disagree with its boxes
        with np.load(cache) as f:
            arrays = dict(f)
        arrays["offsets"] = arrays["offsets"] + 1
        with open(cache, "wb") as f:
            np.savez(f, **arrays)
    with caplog.at_level(logging.WARNING):
        rebuilt = build(coco)
    assert same(good, rebuilt) and "cannot be read" in caplog.text and "rebuilding" in caplog.text
    caplog.clear()
    no_json(monkeypatch)
    with caplog.at_level(logging.WARNING):  # written again, whole
        assert same(good, build(coco)) and "cannot be read" not in caplog.text


def test_a_read_only_data_folder_gets_its_cache_under_bof_cache_dir(coco, tmp_path, monkeypatch):
    annotations = coco / "annotations"
    real_access = coco_cache.os.access
    monkeypatch.setattr(coco_cache.os, "access", lambda p, mode: p != annotations and real_access(p, mode))
    monkeypatch.setenv("BOF_CACHE_DIR", str(tmp_path / "cache"))
    parsed = build(coco)
    assert not cache_file(coco).exists()
    assert [p.name for p in (tmp_path / "cache" / "coco").iterdir()][0].endswith(
        "instances_train2017.json.bof-cache.npz"
    )
    no_json(monkeypatch)
    assert same(parsed, build(coco))


def test_the_data_set_holds_arrays_that_pickle_small_and_scoring_loads_the_ground_truth(coco):
    train, val = build(coco), COCODetection(coco, "val2017", train=False)
    assert not hasattr(train, "coco") and train._coco_gt is None
    arrays = sum(
        getattr(train, k).nbytes for k in ("image_ids", "file_names", "_offsets", "_boxes", "_labels")
    )
    assert len(pickle.dumps(train)) < arrays + 4096  # the arrays and a few paths and names
    evaluator = build_evaluator(val)
    assert val._coco_gt is None  # not before it is needed
    results = []
    for i in range(len(val)):
        _, target = val[i]
        boxes, labels = target["boxes"].numpy(), target["labels"].numpy()
        evaluator.add_detections(target["image_id"], boxes, np.linspace(0.9, 0.5, len(boxes)), labels)
        results += xyxy_to_coco_results(
            target["image_id"], boxes, np.linspace(0.9, 0.5, len(boxes)), labels, val.category_ids
        )
    metrics = evaluator.compute()
    assert val._coco_gt is not None and pickle.loads(pickle.dumps(val))._coco_gt is None
    reference = evaluate_coco(load_coco(val.annotation_file), results, class_names=val.class_names)
    assert metrics["AP"] == reference["AP"] > 0.9  # and per class (NaN: a category without boxes)
    assert json.dumps(metrics["ap"]) == json.dumps(reference["ap"])


def test_fork_and_forkserver_workers_load_the_same_batches(coco):
    train = build(coco)

    def batches(start_method):
        loader = build_data_loader(
            train, Resize(), 2, FixedShape(64), True, seed=3, num_workers=2, start_method=start_method
        )
        assert loader.multiprocessing_context.get_start_method() == start_method
        return list(loader)

    forked, served = batches("fork"), batches("forkserver")
    assert len(forked) == len(served) == 3
    for (images_a, targets_a), (images_b, targets_b) in zip(forked, served, strict=True):
        assert torch.equal(images_a, images_b)
        for a, b in zip(targets_a, targets_b, strict=True):
            assert a["image_id"] == b["image_id"] and torch.equal(a["boxes"], b["boxes"])

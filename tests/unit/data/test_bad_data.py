"""Bad input, one test per case: with data.on_bad_sample=error a message naming the file and the
problem; with skip a warning, a count, and training goes on. Plus non-finite losses and config mistakes."""

import json
import logging
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from bof.config import CONFIG_DIR
from bof.data.bad_samples import BadSampleError
from bof.data.coco import COCODetection
from bof.data.loader import KeyedDataset, SampleKey
from bof.data.voc import VOCDetection
from bof.tricks.augment import Resize
from bof.utils.boxes import clip_boxes
from tests.helpers.generated import make_devkit

SETS = [["VOC2007", "trainval"], ["VOC2012", "trainval"]]


@pytest.fixture
def devkit(tmp_path):
    return make_devkit(tmp_path / "VOCdevkit")


def break_voc(devkit, case: str) -> str:
    """Damages one image of the devkit; returns the file name the message must mention."""
    year = devkit / "VOC2012"
    if case == "missing image":
        (year / "JPEGImages" / "2007_000032.jpg").unlink()
        return "2007_000032.jpg"
    if case == "malformed XML":
        (year / "Annotations" / "2007_000032.xml").write_text("<annotation><size>")
        return "2007_000032.xml"
    if case == "unknown class":
        path = year / "Annotations" / "2007_000032.xml"
        path.write_text(re.sub(r"<name>\w+</name>", "<name>unicorn</name>", path.read_text(), count=1))
        return "2007_000032.xml"
    if case == "inverted box":
        path = year / "Annotations" / "2007_000032.xml"
        path.write_text(re.sub(r"<xmax>\d+</xmax>", "<xmax>0</xmax>", path.read_text(), count=1))
        return "2007_000032.xml"
    if case == "no objects":
        path = year / "Annotations" / "2007_000032.xml"
        path.write_text(re.sub(r"<object>.*?</object>", "", path.read_text(), flags=re.S))
        return "2007_000032.xml"
    raise ValueError(case)


CASES = ["missing image", "malformed XML", "unknown class", "inverted box", "no objects"]


@pytest.mark.parametrize("case", CASES)
def test_bad_voc_sample_errors_naming_the_file(devkit, case):
    name = break_voc(devkit, case)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(name)):
        VOCDetection(devkit, SETS, on_bad_sample="error", skip_empty=True)


@pytest.mark.parametrize("case", CASES)
def test_bad_voc_sample_is_skipped_logged_and_counted(devkit, case, caplog):
    name = break_voc(devkit, case)
    with caplog.at_level(logging.WARNING):
        dataset = VOCDetection(devkit, SETS, on_bad_sample="skip", skip_empty=True)
    assert len(dataset) == 4 and "2007_000032" not in dataset.image_ids
    assert len(dataset.skipped) == 1 and name in dataset.skipped[0] and name in caplog.text


def test_empty_split_is_an_error_naming_the_file(devkit):
    (devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("")
    with pytest.raises(ValueError, match=r"trainval.txt: empty image set"):
        VOCDetection(devkit, SETS, on_bad_sample="skip")


def test_corrupt_image_found_while_training(devkit, caplog):
    path = devkit / "VOC2012" / "JPEGImages" / "2007_000032.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated JPEG
    strict = VOCDetection(devkit, SETS)
    with pytest.raises(BadSampleError, match="2007_000032.jpg: cannot decode"):
        KeyedDataset(strict, Resize())[SampleKey(1, 64, 0)]
    lenient = KeyedDataset(VOCDetection(devkit, SETS, on_bad_sample="skip"), Resize())
    with caplog.at_level(logging.WARNING):
        image, target = lenient[SampleKey(1, 64, 0)]
    assert target["skipped"] == 1 and target["image_id"] == "2007_000170"  # the next image instead
    assert "2007_000032.jpg" in caplog.text and image.shape == (3, 64, 64)


def test_boxes_outside_the_image_are_clipped_and_degenerate_ones_dropped():
    target = {
        "boxes": torch.tensor([[-5.0, 2.0, 20.0, 30.0], [50.0, 50.0, 80.0, 90.0], [70.0, 10.0, 90.0, 20.0]]),
        "labels": torch.tensor([1, 2, 3]),
        "difficult": torch.tensor([False, True, False]),
    }
    clipped = clip_boxes(target, height=60, width=64)
    assert clipped["boxes"].tolist() == [[0.0, 2.0, 20.0, 30.0], [50.0, 50.0, 64.0, 60.0]]
    assert clipped["labels"].tolist() == [1, 2] and clipped["difficult"].tolist() == [False, True]


def test_voc_training_targets_stay_inside_the_image(devkit):
    path = devkit / "VOC2012" / "Annotations" / "2007_000032.xml"
    path.write_text(re.sub(r"<xmax>\d+</xmax>", "<xmax>9999</xmax>", path.read_text(), count=1))
    image, target = VOCDetection(devkit, SETS)[1]
    assert (target["boxes"][:, 2] <= image.shape[2]).all()


def coco_file(tmp_path, annotations):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_malformed_coco_json_names_the_file(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match="instances.json"):
        COCODetection(tmp_path, annotation_file=path, image_dir=tmp_path)


def test_coco_unknown_category_errors_or_is_skipped(tmp_path):
    path = coco_file(
        tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    )
    with pytest.raises(BadSampleError, match=r"instances.json: image 1: .*unknown category 7"):
        COCODetection(tmp_path, train=False, annotation_file=path, image_dir=tmp_path)
    with pytest.raises(ValueError, match="no usable images"):  # the only image is skipped
        COCODetection(tmp_path, train=False, annotation_file=path, image_dir=tmp_path, on_bad_sample="skip")


def test_unknown_policy_names_the_key(devkit):
    with pytest.raises(ValueError, match="data.on_bad_sample"):
        VOCDetection(devkit, SETS, on_bad_sample="ignore")


def test_unknown_group_option_names_it():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="mixup.*beta99|beta99"):
            compose("train", overrides=["mixup=beta99"])

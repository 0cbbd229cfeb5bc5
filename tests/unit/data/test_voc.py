"""Pascal VOC parsing and the VOCDetection dataset, on the genuine annotation fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bof.data.voc import VOC_CLASSES, VOCDetection, parse_voc_xml
from bof.utils.boxes import voc_to_xyxy, xyxy_to_voc
from tests.helpers import FIXTURES
from tests.helpers.generated import LAYOUT, make_devkit

VOC_XML = FIXTURES / "voc_xml"
HINT = "scripts/prepare_voc.sh"

# file -> (objects, difficult), from tests/fixtures/README.md
COUNTS = {
    "voc2007_000002.xml": (1, 0),
    "voc2012_labelimg_2007_000032.xml": (4, 0),
    "voc2012_labelimg_2007_000170.xml": (6, 1),
    "voc2012_labelimg_2008_000008.xml": (2, 0),
    "voc2012_native_2008_000041.xml": (12, 1),
}


def names(ann) -> list[str]:
    return [VOC_CLASSES[i] for i in ann.labels]


@pytest.mark.parametrize("filename", sorted(COUNTS))
def test_fixture_counts_and_dtypes(filename):
    ann = parse_voc_xml(VOC_XML / filename, VOC_CLASSES)
    n, n_difficult = COUNTS[filename]
    assert ann.boxes.shape == (n, 4) and ann.boxes.dtype == np.float32
    assert ann.labels.shape == (n,) and ann.labels.dtype == np.int64
    assert ann.difficult.shape == (n,) and ann.difficult.dtype == bool
    assert int(ann.difficult.sum()) == n_difficult
    assert (ann.boxes[:, 2] >= ann.boxes[:, 0]).all() and (ann.boxes[:, 3] >= ann.boxes[:, 1]).all()
    assert (ann.boxes >= 1).all()
    assert (ann.boxes[:, 2] <= ann.width).all() and (ann.boxes[:, 3] <= ann.height).all()


def test_fixture_exact_values():
    a = parse_voc_xml(VOC_XML / "voc2007_000002.xml", VOC_CLASSES)
    assert (a.filename, a.width, a.height) == ("000002.jpg", 335, 500)
    assert names(a) == ["train"] and a.boxes.tolist() == [[139, 200, 207, 301]]

    a = parse_voc_xml(VOC_XML / "voc2012_labelimg_2007_000170.xml", VOC_CLASSES)
    assert (a.width, a.height) == (500, 375)
    assert names(a) == ["bottle"] * 4 + ["person"] * 2
    assert a.difficult.tolist() == [False, False, False, True, False, False]
    assert a.boxes[3].tolist() == [426, 157, 443, 195]  # the difficult bottle
    assert a.boxes[5].tolist() == [1, 15, 461, 375]  # truncated person: from x=1 to the image height

    a = parse_voc_xml(VOC_XML / "voc2012_labelimg_2007_000032.xml", VOC_CLASSES)
    assert names(a) == ["aeroplane", "aeroplane", "person", "person"]
    assert a.boxes[0].tolist() == [104, 78, 375, 183]

    a = parse_voc_xml(VOC_XML / "voc2012_native_2008_000041.xml", VOC_CLASSES)  # <difficult> after <bndbox>
    assert names(a)[6:11] == ["chair", "chair", "chair", "diningtable", "pottedplant"]
    assert np.flatnonzero(a.difficult).tolist() == [10]
    assert a.boxes[10].tolist() == [54, 189, 84, 214]
    assert a.boxes[4].tolist() == [457, 212, 500, 297]  # touches the right border (width 500)


def _xml(objects: str, size: str = "<width>100</width><height>80</height>") -> str:
    return f"<annotation><filename>x.jpg</filename><size>{size}<depth>3</depth></size>{objects}</annotation>"


def _obj(name="dog", box=("10", "20", "30", "40"), extra="<difficult>1</difficult>") -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name>{extra}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def test_parse_variants(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(_xml(_obj(box=("273.0", "20.0", "300.5", "40")) + _obj(name="cat", extra="")))
    a = parse_voc_xml(p, VOC_CLASSES)
    assert a.boxes.tolist() == [[273, 20, 300.5, 40], [10, 20, 30, 40]]
    assert names(a) == ["dog", "cat"]
    assert a.difficult.tolist() == [True, False]  # missing <difficult> means 0

    p.write_text(_xml(""))  # zero objects is valid
    a = parse_voc_xml(p, VOC_CLASSES)
    assert a.boxes.shape == (0, 4) and a.boxes.dtype == np.float32
    assert a.labels.shape == (0,) and a.labels.dtype == np.int64
    assert a.difficult.shape == (0,) and a.difficult.dtype == bool
    assert (a.width, a.height) == (100, 80)


@pytest.mark.parametrize(
    "content, message",
    [
        (_xml(_obj(name="unicorn")), "unicorn"),
        (_xml(_obj(box=("30", "20", "10", "40"))), "inverted"),
        (_xml(_obj(box=("10", "40", "30", "20"))), "inverted"),
        (_xml(_obj()).replace("</annotation>", ""), "malformed"),
        (_xml(_obj(box=("10", "a", "30", "40"))), "not a number"),
    ],
)
def test_parse_errors_name_the_file(tmp_path, content, message):
    p = tmp_path / "bad_file.xml"
    p.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        parse_voc_xml(p, VOC_CLASSES)
    assert str(p) in str(e.value)


def test_box_conversion_round_trip():
    b = np.array([[1, 1, 1, 1], [139, 200, 207, 301], [1, 15, 461, 375]], np.float32)
    xyxy = voc_to_xyxy(b)
    assert xyxy.tolist() == [[0, 0, 1, 1], [138, 199, 207, 301], [0, 14, 461, 375]]
    assert b.tolist()[0] == [1, 1, 1, 1]  # input not modified
    # the VOC width xmax - xmin + 1 is the continuous width x2 - x1
    np.testing.assert_array_equal(xyxy[:, 2] - xyxy[:, 0], b[:, 2] - b[:, 0] + 1)
    np.testing.assert_array_equal(xyxy_to_voc(xyxy), b)
    t = torch.from_numpy(b)
    assert torch.equal(xyxy_to_voc(voc_to_xyxy(t)), t)
    assert torch.equal(voc_to_xyxy(t), torch.from_numpy(xyxy))
    assert voc_to_xyxy(np.array([[3, 4, 5, 6]])).dtype == np.float32  # ints become float32
    assert voc_to_xyxy(torch.tensor([[3, 4, 5, 6]])).dtype == torch.float32


@pytest.fixture(scope="module")
def devkit(tmp_path_factory) -> Path:
    return make_devkit(tmp_path_factory.mktemp("VOCdevkit"))


def test_dataset_loads_voc07_plus_12(devkit):
    ds = VOCDetection(devkit, [["VOC2007", "trainval"], ["VOC2012", "trainval"]])
    assert len(ds) == 5 and ds.class_names == VOC_CLASSES
    assert ds.image_ids == ["000002", "2007_000032", "2007_000170", "2008_000008", "2008_000041"]
    assert ds.image_path(0) == devkit / "VOC2007" / "JPEGImages" / "000002.jpg"
    assert ds.image_path(2) == devkit / "VOC2012" / "JPEGImages" / "2007_000170.jpg"
    total = 0
    for i, (fixture, _) in enumerate(LAYOUT.items()):
        expected = parse_voc_xml(VOC_XML / fixture, VOC_CLASSES)
        ann = ds.get_annotation(i)
        np.testing.assert_array_equal(ann.boxes, expected.boxes)
        np.testing.assert_array_equal(ann.labels, expected.labels)
        np.testing.assert_array_equal(ann.difficult, expected.difficult)
        assert (ann.width, ann.height) == (expected.width, expected.height)

        image, target = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, expected.height, expected.width)
        assert target["orig_size"] == (expected.height, expected.width)
        assert target["image_id"] == ds.image_ids[i]
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (len(expected.labels), 4)
        assert torch.equal(target["boxes"], torch.from_numpy(voc_to_xyxy(expected.boxes)))
        assert target["labels"].dtype == torch.int64
        assert target["difficult"].dtype == torch.bool
        assert torch.equal(target["difficult"], torch.from_numpy(expected.difficult))  # difficult kept
        total += len(expected.labels)
    assert total == sum(n for n, _ in COUNTS.values())
    # the truncated person of 2007_000170 starts at the first pixel column and ends at the bottom edge
    assert ds[2][1]["boxes"][5].tolist() == [0, 14, 461, 375]


def test_dataset_single_image_set_and_duplicates(devkit):
    assert len(VOCDetection(devkit, [["VOC2007", "trainval"]])) == 1
    ds = VOCDetection(devkit, [["VOC2012", "trainval"], ["VOC2012", "trainval"]])  # a mistake, kept
    assert len(ds) == 8 and ds.image_ids[:4] == ds.image_ids[4:]


def _copy(devkit: Path, tmp_path: Path) -> Path:
    root = tmp_path / "VOCdevkit"
    shutil.copytree(devkit, root)
    return root


@pytest.mark.parametrize(
    "missing",
    [
        "",
        "VOC2012",
        "VOC2012/ImageSets/Main/trainval.txt",
        "VOC2012/Annotations/2008_000008.xml",
        "VOC2012/JPEGImages/2008_000008.jpg",
    ],
)
def test_missing_files_name_the_path(devkit, tmp_path, missing):
    root = _copy(devkit, tmp_path)
    path = root / missing
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    with pytest.raises(FileNotFoundError) as e:
        VOCDetection(root, [["VOC2007", "trainval"], ["VOC2012", "trainval"]])
    assert str(path) in str(e.value) and HINT in str(e.value)


def test_missing_jpeg_after_construction(devkit, tmp_path):
    root = _copy(devkit, tmp_path)
    ds = VOCDetection(root, [["VOC2007", "trainval"]])
    ds.image_path(0).unlink()
    with pytest.raises(FileNotFoundError, match="000002.jpg") as e:
        ds[0]
    assert HINT in str(e.value)
    assert len(ds.get_annotation(0).labels) == 1  # annotations stay available (cached)


def test_unknown_class_names_the_file(devkit):
    with pytest.raises(ValueError, match="horse") as e:
        VOCDetection(devkit, [["VOC2012", "trainval"]], class_names=("aeroplane", "person", "bottle"))
    assert "2008_000008.xml" in str(e.value)

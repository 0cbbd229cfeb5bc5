"""The built-in synthetic dataset: determinism, VOC layout, statistics, caching."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from bof.data import synthetic, synthetic_render
from bof.data.synthetic import (
    SYNTHETIC_CLASSES,
    ensure_synthetic_voc,
    generate_synthetic_voc,
    synthetic_voc_name,
)
from bof.data.voc import VOCDetection, parse_voc_xml

SMALL = dict(num_train=6, num_val=6, num_test=6)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_synthetic_voc(tmp_path_factory.mktemp("syn") / "small", **SMALL, seed=3)


@pytest.fixture(scope="module")
def hundred(tmp_path_factory) -> VOCDetection:
    out = generate_synthetic_voc(tmp_path_factory.mktemp("syn") / "hundred", 100, 0, 0, seed=0)
    return VOCDetection(out.parent, [[out.name, "train"]], class_names=SYNTHETIC_CLASSES)


def test_same_seed_identical_bytes_other_seed_differs(small, tmp_path):
    again = files(generate_synthetic_voc(tmp_path / "again", **SMALL, seed=3))
    first = files(small)
    assert len(first) == 18 * 2 + 3 + 1  # jpg + xml per image, 3 split files, manifest
    assert again == first
    other = files(generate_synthetic_voc(tmp_path / "other", **SMALL, seed=4))
    assert other.keys() == first.keys()
    assert all(other[k] != first[k] for k in first if k.startswith("JPEGImages"))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folders left


def test_images_do_not_depend_on_split_sizes(small, tmp_path):
    fewer = files(generate_synthetic_voc(tmp_path / "fewer", num_train=2, num_val=0, num_test=1, seed=3))
    first = files(small)
    for k in ("JPEGImages/train_000001.jpg", "Annotations/train_000001.xml", "JPEGImages/test_000000.jpg"):
        assert fewer[k] == first[k]


def test_voc_layout_reads_back(small):
    for split in ("train", "val", "test"):
        ds = VOCDetection(small.parent, [[small.name, split]], class_names=SYNTHETIC_CLASSES)
        assert len(ds) == 6 and ds.image_ids[0] == f"{split}_000000"
        for i in range(len(ds)):
            image, target = ds[i]
            ann = ds.get_annotation(i)
            assert image.shape == (3, ann.height, ann.width)
            assert 224 <= ann.width <= 320 and 224 <= ann.height <= 320
            assert len(target["labels"]) >= 1
    xml = (small / "Annotations" / "train_000000.xml").read_text()
    for tag in ("<size>", "<object>", "<name>", "<difficult>", "<bndbox>", "<xmin>"):
        assert tag in xml
    assert (
        parse_voc_xml(small / "Annotations" / "train_000000.xml", SYNTHETIC_CLASSES).boxes.dtype == np.float32
    )


def test_statistics_over_a_hundred_images(hundred):
    side_ratios, labels, difficult, overlaps = [], [], [], 0
    for i in range(len(hundred)):
        ann = hundred.get_annotation(i)
        b = ann.boxes
        assert ((b[:, :2] >= 1) & (b[:, 2:] >= b[:, :2])).all()  # VOC 1-based inclusive
        assert (b[:, 2] <= ann.width).all() and (b[:, 3] <= ann.height).all()
        assert (b == np.round(b)).all()
        assert 1 <= len(b) <= synthetic_render.MAX_OBJECTS
        side = min(ann.width, ann.height)
        side_ratios += list(np.sqrt((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)) / side)
        labels += ann.labels.tolist()
        difficult += ann.difficult.tolist()
        for j, k in itertools.combinations(range(len(b)), 2):
            iw = min(b[j, 2], b[k, 2]) - max(b[j, 0], b[k, 0]) + 1
            ih = min(b[j, 3], b[k, 3]) - max(b[j, 1], b[k, 1]) + 1
            overlaps += bool(iw > 0 and ih > 0)
    side_ratios = np.array(side_ratios)
    assert len(set(labels)) == len(SYNTHETIC_CLASSES) >= 6
    assert side_ratios.min() < 0.07 and side_ratios.max() > 0.45
    assert (side_ratios < 0.15).mean() > 0.2  # small objects are common
    assert 0 < np.mean(difficult) < 0.15  # some difficult objects, a minority
    assert overlaps >= 10


def test_backgrounds_are_textured(hundred):
    for i in range(0, len(hundred), 5):
        image, target = hundred[i]
        free = np.ones(image.shape[1:], bool)
        for x1, y1, x2, y2 in target["boxes"].int().tolist():
            free[y1:y2, x1:x2] = False
        grey = image.float().mean(0).numpy()[free]
        assert grey.size > 1000 and grey.std() > 5, (hundred.image_ids[i], grey.std())


def test_class_colours_are_distinct():
    colours = np.array(synthetic_render.CLASS_COLOURS, float)
    assert len(colours) == len(SYNTHETIC_CLASSES)
    dist = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert dist[~np.eye(len(colours), dtype=bool)].min() > 140


def test_ensure_is_idempotent_and_keyed_by_params(tmp_path):
    a = ensure_synthetic_voc(tmp_path, num_train=3, num_val=1, num_test=1)
    assert a.parent == tmp_path and a.name == synthetic_voc_name(num_train=3, num_val=1, num_test=1)
    assert a.name.startswith("synthetic-") and (a / "manifest.json").is_file()
    stamp = (a / "JPEGImages" / "train_000000.jpg").stat().st_mtime_ns
    assert ensure_synthetic_voc(tmp_path, num_train=3, num_val=1, num_test=1) == a
    assert (a / "JPEGImages" / "train_000000.jpg").stat().st_mtime_ns == stamp  # not regenerated
    b = ensure_synthetic_voc(tmp_path, num_train=3, num_val=1, num_test=1, seed=1)
    c = ensure_synthetic_voc(tmp_path, num_train=3, num_val=1, num_test=1, image_size=(64, 96))
    assert len({a, b, c}) == 3 and b.parent == c.parent == tmp_path
    assert synthetic_voc_name() == synthetic_voc_name(
        num_train=800, image_size=[224, 320]
    )  # defaults applied
    ds = VOCDetection(tmp_path, [[c.name, "train"]], class_names=SYNTHETIC_CLASSES)
    assert len(ds) == 3 and all(64 <= s <= 96 for s in ds[0][1]["orig_size"])
    with pytest.raises(TypeError, match="num_trian"):
        ensure_synthetic_voc(tmp_path, num_trian=3)


def test_a_fixed_photo_size_per_side(tmp_path):
    """((w_min, w_max), (h_min, h_max)) renders e.g. VOC's 500 x 375 exactly (the pipeline benchmark)."""
    d = ensure_synthetic_voc(tmp_path, num_train=2, num_val=1, num_test=1, image_size=[[80, 80], [48, 48]])
    ds = VOCDetection(tmp_path, [[d.name, "train"]], class_names=SYNTHETIC_CLASSES)
    assert [tuple(ds[i][0].shape) for i in range(2)] == [(3, 48, 80)] * 2
    assert d != ensure_synthetic_voc(tmp_path, num_train=2, num_val=1, num_test=1, image_size=[48, 80])
    with pytest.raises(ValueError, match="w_min, w_max"):
        ensure_synthetic_voc(tmp_path, image_size=[[80, 60], [48, 48]])


def test_existing_folder_and_interrupted_generation(tmp_path, monkeypatch):
    out = generate_synthetic_voc(tmp_path / "d", 1, 0, 0)
    with pytest.raises(FileExistsError):
        generate_synthetic_voc(out, 1, 0, 0)
    generate_synthetic_voc(out, 2, 0, 0, overwrite=True)
    assert (out / "ImageSets" / "Main" / "train.txt").read_text().split() == ["train_000000", "train_000001"]

    calls = []

    def failing(rng, image_size):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return render(rng, image_size)

    render = synthetic.render_synthetic_image
    monkeypatch.setattr(synthetic, "render_synthetic_image", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_voc(tmp_path / "interrupted", 5, 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # neither a half dataset nor a temp folder

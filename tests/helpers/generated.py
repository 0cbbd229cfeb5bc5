"""Files the tests generate in the exact formats and layouts users bring: a VOCdevkit tree, a COCO 2017
tree, darknet's weight file format, torchvision's cached ResNet weights and task=classify checkpoints.

The real data sets and weights cannot be downloaded here; these stand in for them byte-format for
byte-format (random content), so the loaders that read them are the real ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from bof.data.voc import VOC_CLASSES, parse_voc_xml
from bof.models.darknet import ConvBNLeaky, Darknet53
from bof.utils.checkpoint import save_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth, photo-like random picture (JPEG-compressible like a real one)."""
    coarse = rng.integers(0, 256, (height // 25 + 1, width // 25 + 1, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BILINEAR)


def _objects(rng: np.random.Generator, width: int, height: int, num: int) -> list[tuple[int, int, int, int]]:
    """``num`` boxes (x1, y1, x2, y2), 1-based inclusive pixels as VOC writes them."""
    boxes = []
    for _ in range(num):
        w, h = int(rng.integers(40, width // 2)), int(rng.integers(40, height // 2))
        x1, y1 = int(rng.integers(1, width - w)), int(rng.integers(1, height - h))
        boxes.append((x1, y1, x1 + w, y1 + h))
    return boxes


def make_vocdevkit(root: Path, images_per_set: int = 2, width: int = 500, height: int = 375) -> Path:
    """``root``/VOCdevkit with VOC2007 (trainval, test) and VOC2012 (trainval), ``width`` x ``height``
    JPEGs and devkit-layout XML, the layout scripts/prepare_voc.sh produces: ``images_per_set`` test
    images, and as many trainval images split over the two years. -> the VOCdevkit folder."""
    devkit = root / "VOCdevkit"
    rng = np.random.default_rng(0)
    for year, splits in (("VOC2007", ("trainval", "test")), ("VOC2012", ("trainval",))):
        year_dir = devkit / year
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (year_dir / sub).mkdir(parents=True, exist_ok=True)
        for split in splits:
            count = images_per_set if split == "test" else (images_per_set + (year == "VOC2007")) // 2
            ids = [f"{year[-4:]}_{split}_{i:06d}" for i in range(count)]
            for image_id in ids:
                _photo(rng, width, height).save(year_dir / "JPEGImages" / f"{image_id}.jpg", quality=90)
                objects = "".join(
                    f"\t<object>\n\t\t<name>{VOC_CLASSES[int(rng.integers(len(VOC_CLASSES)))]}</name>\n"
                    f"\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n"
                    f"\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
                    f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>\n"
                    for x1, y1, x2, y2 in _objects(rng, width, height, 3)
                )
                (year_dir / "Annotations" / f"{image_id}.xml").write_text(
                    f"<annotation>\n\t<folder>{year}</folder>\n\t<filename>{image_id}.jpg</filename>\n"
                    f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
                    f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n"
                )
            (year_dir / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return devkit


def make_coco(root: Path, images_per_split: int = 2, width: int = 640, height: int = 480) -> Path:
    """``root``/coco with annotations/instances_{train,val}2017.json (COCO's 80 categories and their
    non-contiguous ids, taken from the real fixture) and train2017/, val2017/ of ``width`` x ``height``
    JPEGs: the layout scripts/prepare_coco.sh produces. -> the coco folder."""
    coco = root / "coco"
    categories = json.loads((FIXTURES / "coco_val2014_100" / "instances_val2014_100.json").read_text())[
        "categories"
    ]
    rng = np.random.default_rng(1)
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    annotation_id = 1
    for offset, split in enumerate(("train2017", "val2017")):
        (coco / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(images_per_split):
            image_id = 1000 * (offset + 1) + i
            name = f"{image_id:012d}.jpg"
            _photo(rng, width, height).save(coco / split / name, quality=90)
            images.append({"id": image_id, "file_name": name, "width": width, "height": height})
            for x1, y1, x2, y2 in _objects(rng, width, height, 3):
                w, h = float(x2 - x1), float(y2 - y1)
                category = categories[int(rng.integers(len(categories)))]["id"]
                annotations.append(
                    {
                        "id": annotation_id,
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [float(x1), float(y1), w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
                annotation_id += 1
        (coco / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    return coco


def make_imagenet(root: Path, classes: int = 2, images_per_class: int = 2) -> Path:
    """``root``/imagenet in the ImageFolder layout of ILSVRC2012 (``train/<wnid>/*.JPEG``, ``val/<wnid>/``)
    with 500x375 JPEGs. -> the imagenet folder."""
    imagenet, rng = root / "imagenet", np.random.default_rng(2)
    for split in ("train", "val"):
        for c in range(classes):
            folder = imagenet / split / f"n{1440764 + c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_class):
                _photo(rng, 500, 375).save(folder / f"{split}_{c}_{i}.JPEG", quality=90)
    return imagenet


def write_darknet_weights(backbone: Darknet53, path: Path, seen: int = 32013312) -> Path:
    """``backbone`` in darknet's weight file format, as darknet53.conv.74 is written: int32 major 0,
    minor 2, revision 0, int64 images seen, then per convolution BN beta, gamma, running mean, running
    variance and the convolution weights, all float32 little-endian."""
    values = []
    for conv, bn, _ in (m for m in backbone.modules() if isinstance(m, ConvBNLeaky)):
        for tensor in (bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight):
            values.append(tensor.detach().reshape(-1).numpy().astype("<f4"))
    with open(path, "wb") as f:
        f.write(np.array([0, 2, 0], dtype="<i4").tobytes() + np.array([seen], dtype="<i8").tobytes())
        f.write(np.concatenate(values).tobytes())
    return path


def random_darknet53(seed: int = 0) -> Darknet53:
    """A full-size Darknet-53 with random weights and non-trivial BN statistics (positive variances)."""
    torch.manual_seed(seed)
    backbone = Darknet53()
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return backbone


def cache_torchvision_resnets(torch_home: Path) -> Path:
    """Randomly initialised ResNet-50/101 state dicts where torchvision caches its ImageNet weights
    (``$TORCH_HOME/hub/checkpoints/<file of the weights' URL>``), so pretrained_backbone=true loads them
    without a download."""
    from bof.models.faster_rcnn import RESNETS

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for builder, weights in RESNETS.values():
        torch.save(builder(weights=None).state_dict(), checkpoints / Path(weights.url).name)
    return torch_home


def classify_checkpoint(classifier: nn.Module, path: Path) -> Path:
    """A checkpoint as ``bof-train task=classify`` writes it (one dict; the backbone under ``model``)."""
    return save_checkpoint({"model": classifier.state_dict(), "epoch": 0}, path)


# fixture file -> (year dir, image id) in the generated devkit tree
LAYOUT = {
    "voc2007_000002.xml": ("VOC2007", "000002"),
    "voc2012_labelimg_2007_000032.xml": ("VOC2012", "2007_000032"),
    "voc2012_labelimg_2007_000170.xml": ("VOC2012", "2007_000170"),
    "voc2012_labelimg_2008_000008.xml": ("VOC2012", "2008_000008"),
    "voc2012_native_2008_000041.xml": ("VOC2012", "2008_000041"),
}


def make_devkit(root: Path) -> Path:
    """VOCdevkit with VOC2007 (000002 in trainval) and VOC2012 (the four others in trainval)."""
    ids: dict[str, list[str]] = {}
    for fixture, (year, image_id) in LAYOUT.items():
        d = root / year
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / "voc_xml" / fixture, d / "Annotations" / f"{image_id}.xml")
        ann = parse_voc_xml(FIXTURES / "voc_xml" / fixture, VOC_CLASSES)
        pixels = np.random.default_rng(len(ids)).integers(0, 256, (ann.height, ann.width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / "JPEGImages" / f"{image_id}.jpg", quality=50)
        ids.setdefault(year, []).append(image_id)
    for year, year_ids in ids.items():
        (root / year / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(year_ids) + "\n")
    return root

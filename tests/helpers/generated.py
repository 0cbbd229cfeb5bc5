"""Files the tests generate in the exact formats and layouts users bring: a VOCdevkit tree, a COCO 2017
tree, darknet's weight file format, torchvision's cached ResNet weights and task=classify checkpoints;
and a run's per-image evaluation record (what bof-report resamples) of a simulated detector.

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
from bof.evaluation.ranked_record import RankedDetections
from bof.evaluation.voc_eval import VOCEvaluator
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


# GluonCV's model zoo files: MXNet's NDArray-list format (mx.nd.save / save_parameters), written from the
# format's description (mxnet src/ndarray/ndarray.cc) and named from GluonCV's architecture definitions
# (gluoncv/model_zoo/yolo/darknet.py, resnetv1b.py), not from bof's modules


def write_mxnet_params(path: Path, arrays: dict[str, np.ndarray], version: int = 2) -> Path:
    """``arrays`` as ``mx.nd.save(path, arrays)`` writes them: NDArray V2 (``version=3``: V3, numpy shape
    semantics; ``1``: V1; ``0``: the legacy layout with uint32 dimensions), dense, on cpu(0)."""
    flags = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2, np.dtype("int32"): 4}
    magic = {1: 0xF993FAC8, 2: 0xF993FAC9, 3: 0xF993FACA}
    out = [np.array([0x112, 0, len(arrays)], "<u8").tobytes()]
    for array in arrays.values():
        if version == 0:
            out.append(np.array([array.ndim, *array.shape], "<u4").tobytes())
        else:
            out.append(np.array([magic[version]], "<u4").tobytes())
            if version >= 2:
                out.append(np.array([0], "<i4").tobytes())  # dense storage
            out.append(np.array([array.ndim], "<i4").tobytes() + np.array(array.shape, "<i8").tobytes())
        out.append(np.array([1, 0, flags[array.dtype]], "<i4").tobytes())  # cpu(0), dtype flag
        out.append(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes())
    out.append(np.array([len(arrays)], "<u8").tobytes())
    for name in arrays:
        out.append(np.array([len(name.encode())], "<u8").tobytes() + name.encode())
    path.write_bytes(b"".join(out))
    return path


def _gluon_bn(name: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.{leaf}": (channels,) for leaf in ("gamma", "beta", "running_mean", "running_var")}


def _gluon_conv_bn(prefix: str, conv: str, bn: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}{conv}.weight": shape} | _gluon_bn(prefix + bn, shape[0])


def gluoncv_darknet53_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of GluonCV's ``darknet53()`` (DarknetV3, layers [1, 2, 8, 8, 4], channels [32, 64,
    128, 256, 512, 1024], 1000 classes) as ``save_parameters`` names them."""
    layers, channels = (1, 2, 8, 8, 4), (32, 64, 128, 256, 512, 1024)
    names = _gluon_conv_bn("features.0.", "0", "1", (32, 3, 3, 3))
    index = 1
    for nlayer, (previous, channel) in zip(layers, zip(channels, channels[1:], strict=False), strict=True):
        names |= _gluon_conv_bn(f"features.{index}.", "0", "1", (channel, previous, 3, 3))
        index += 1
        for _ in range(nlayer):
            body = f"features.{index}.body."
            names |= _gluon_conv_bn(body + "0.", "0", "1", (channel // 2, channel, 1, 1))
            names |= _gluon_conv_bn(body + "1.", "0", "1", (channel, channel // 2, 3, 3))
            index += 1
    return names | {"output.weight": (1000, 1024), "output.bias": (1000,)}


def gluoncv_resnet_shapes(depth: int, variant: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of GluonCV's ``resnet<depth>_<variant>`` (ResNetV1b with Bottleneck blocks; v1d:
    ``deep_stem=True, stem_width=32, avg_down=True``) as ``save_parameters`` names them."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    if variant == "v1d":
        names = _gluon_conv_bn("conv1.", "0", "1", (32, 3, 3, 3))
        names |= _gluon_conv_bn("conv1.", "3", "4", (32, 32, 3, 3))
        names |= {"conv1.6.weight": (64, 32, 3, 3)} | _gluon_bn("bn1", 64)
    else:
        names = _gluon_conv_bn("", "conv1", "bn1", (64, 3, 7, 7))
    inplanes = 64
    for stage, count in enumerate(blocks):
        planes = 64 * 2**stage
        for block in range(count):
            prefix = f"layer{stage + 1}.{block}."
            names |= _gluon_conv_bn(prefix, "conv1", "bn1", (planes, inplanes, 1, 1))
            names |= _gluon_conv_bn(prefix, "conv2", "bn2", (planes, planes, 3, 3))
            names |= _gluon_conv_bn(prefix, "conv3", "bn3", (planes * 4, planes, 1, 1))
            if block == 0:  # v1d: downsample.0 is the AvgPool2D (no parameters)
                conv, bn = ("1", "2") if variant == "v1d" else ("0", "1")
                names |= _gluon_conv_bn(prefix + "downsample.", conv, bn, (planes * 4, inplanes, 1, 1))
            inplanes = planes * 4
    return names | {"fc.weight": (1000, 2048), "fc.bias": (1000,)}


def random_arrays(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays of these shapes (running variances positive)."""
    rng = np.random.default_rng(seed)
    arrays = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
    return {k: np.abs(v) + 0.5 if k.endswith("running_var") else v for k, v in arrays.items()}


def simulated_voc_record(seed: int, skill: float = 0.5, num_images: int = 60) -> RankedDetections:
    """The per-image record of a VOC evaluation of a detector that finds each object with probability
    ``skill`` (plus 3 false positives per image), on a fixed set of images (their ground truth from seed
    0, the detections from ``seed``): the same seed gives the same record."""
    images, detector = np.random.default_rng(0), np.random.default_rng(seed)
    evaluator = VOCEvaluator(["a", "b"])
    for i in range(num_images):
        n = images.integers(1, 4)
        xy = images.uniform(0, 200, (n, 2))
        gt = np.concatenate([xy, xy + 50], 1)
        labels = images.integers(0, 2, n)
        evaluator.add_ground_truth(f"{i}", gt, labels)
        found = detector.random(n) < skill
        false = detector.uniform(0, 200, (3, 2))
        boxes = np.concatenate([gt[found], np.concatenate([false, false + 30], 1)])
        scores = np.concatenate([detector.uniform(0.3, 1, found.sum()), detector.uniform(0, 0.7, 3)])
        evaluator.add_detections(f"{i}", boxes, scores, np.concatenate([labels[found], [0, 1, 0]]))
    evaluator.compute()
    return evaluator.per_image_record()

"""GluonCV's published backbones (darknet53, resnet50_v1b, resnet101_v1d .params) at full size into bof's
detectors: every array lands once, and a file that does not fit names what did not."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bof.models.classifiers import load_backbone
from bof.models.faster_rcnn import FasterRCNNDetector
from bof.models.yolov3 import YOLOv3
from tests.helpers.generated import (
    gluoncv_darknet53_shapes,
    gluoncv_resnet_shapes,
    random_arrays,
    write_mxnet_params,
)

BN = {"gamma": "weight", "beta": "bias"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("gluoncv")
    shapes = {
        "darknet53": gluoncv_darknet53_shapes(),
        "resnet50_v1b": gluoncv_resnet_shapes(50, "v1b"),
        "resnet101_v1d": gluoncv_resnet_shapes(101, "v1d"),
    }
    out = {}
    for seed, (name, shape) in enumerate(shapes.items()):
        arrays = random_arrays(shape, seed)
        out[name] = write_mxnet_params(root / f"{name}.params", arrays), arrays
    return out


def landed(arrays: dict, state: dict, rename) -> int:
    """How many of the file's arrays (heads aside) equal the tensor of ``rename(name)`` in ``state``."""
    count = 0
    for name, array in arrays.items():
        if name.startswith(("fc.", "output.")):
            continue
        module, _, leaf = name.rpartition(".")
        key = rename(f"{module}.{BN.get(leaf, leaf)}")
        assert torch.equal(state[key], torch.from_numpy(array)), (name, key)
        count += 1
    return count


def test_published_parameter_counts():
    counts = {
        "darknet53": gluoncv_darknet53_shapes(),
        "resnet50_v1b": gluoncv_resnet_shapes(50, "v1b"),
        "resnet101_v1d": gluoncv_resnet_shapes(101, "v1d"),
    }
    sizes = {k: sum(int(np.prod(s)) for n, s in v.items() if "running" not in n) for k, v in counts.items()}
    # Darknet-53's 40,584,928 + the 1000-class head; torchvision's ResNet-50; torchvision's ResNet-101
    # (44,549,160) with the deep stem (3x3 convs 32, 32, 64 and two BN of 32) for the 7x7 conv
    deep_stem = 32 * 3 * 9 + 32 * 32 * 9 + 64 * 32 * 9 + 2 * 2 * 32 - 64 * 3 * 49
    assert sizes == {
        "darknet53": 40_584_928 + 1024 * 1000 + 1000,
        "resnet50_v1b": 25_557_032,
        "resnet101_v1d": 44_549_160 + deep_stem,
    }


def test_darknet53_lands_in_yolov3_backbone(files):
    path, arrays = files["darknet53"]
    model = YOLOv3(num_classes=20)
    heads = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    load_backbone(model, path)
    stage_of, index = {0: "stem"}, 1  # GluonCV features.<i> -> the stem, stage s's downsample or blocks
    for stage, blocks in enumerate((1, 2, 8, 8, 4)):
        for block in range(blocks + 1):
            stage_of[index] = f"stages.{stage}.{block}"
            index += 1

    def rename(name):
        _, i, rest = name.split(".", 2)
        return f"{stage_of[int(i)]}.{rest}"

    assert landed(arrays, model.backbone.state_dict(), rename) == 52 * 5
    assert all(torch.equal(v, heads[k]) for k, v in model.state_dict().items() if k in heads)


@pytest.mark.parametrize(
    ("name", "depth", "variant"), [("resnet50_v1b", 50, "v1b"), ("resnet101_v1d", 101, "v1d")]
)
@pytest.mark.parametrize("design", ["c4", "fpn"])
def test_resnets_land_in_faster_rcnn(files, name, depth, variant, design):
    path, arrays = files[name]
    model = FasterRCNNDetector(3, depth=depth, design=design, variant=variant, min_size=64, max_size=96)
    load_backbone(model, path)
    if design == "fpn":
        state, rename = model.detector.backbone.body.state_dict(), lambda key: key
    else:
        c4 = {"conv1": "backbone.0", "bn1": "backbone.1", "layer1": "backbone.4", "layer2": "backbone.5"}
        c4 |= {"layer3": "backbone.6", "layer4": "roi_heads.box_head.0"}
        state = model.detector.state_dict()

        def rename(key):
            module, _, rest = key.partition(".")
            return f"{c4[module]}.{rest}"

    assert landed(arrays, state, rename) == len(arrays) - 2


def test_a_missing_an_extra_and_a_misshaped_array_are_named(files, tmp_path):
    _, arrays = files["resnet50_v1b"]
    changed = dict(arrays)
    del changed["layer2.1.bn2.beta"]
    changed["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    changed["layer3.0.conv2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    path = write_mxnet_params(tmp_path / "bad.params", changed)
    model = FasterRCNNDetector(3, depth=50, design="fpn", min_size=64, max_size=96)
    with pytest.raises(ValueError) as error:
        load_backbone(model, path)
    message = str(error.value)
    assert "1 missing (e.g. ['layer2.1.bn2.bias'])" in message
    assert "1 unused (e.g. ['layer9.0.conv1.weight'])" in message
    assert "layer3.0.conv2.weight (256, 256, 1, 1) for layer3.0.conv2.weight (256, 256, 3, 3)" in message


def test_a_resnet_file_of_another_variant_or_family_is_refused(files):
    with pytest.raises(ValueError, match=r"unused \(e.g. \['conv1.0.weight'"):
        load_backbone(
            FasterRCNNDetector(3, depth=101, design="c4", min_size=64, max_size=96), files["resnet101_v1d"][0]
        )
    with pytest.raises(ValueError, match="missing"):
        load_backbone(YOLOv3(num_classes=3), files["resnet50_v1b"][0])


def test_legacy_prefixed_names_are_refused_by_name(tmp_path):
    path = write_mxnet_params(
        tmp_path / "old.params", {"darknetv30_conv0_weight": np.zeros((32, 3, 3, 3), np.float32)}
    )
    with pytest.raises(ValueError, match="darknetv30_conv0_weight.*save_params before Gluon 1.3"):
        load_backbone(YOLOv3(num_classes=3, width=0.125), path)

"""Pretrained backbones: darknet's own weight file (darknet53.conv.74) at full size, and the paper's YOLOv3
experiments refusing to start without one."""

import pytest
import torch

from bof.models.classifiers import load_backbone
from bof.models.darknet import Darknet53, load_darknet_weights
from bof.models.faster_rcnn import FasterRCNNDetector
from bof.models.yolov3 import YOLOv3
from tests.helpers.generated import random_darknet53, write_darknet_weights

DARKNET53_CONV74_FLOATS = 40_620_640  # (162,482,580 bytes - 20 header bytes) / 4


def test_darknet53_conv74_format_loads_into_a_full_size_yolov3(tmp_path):
    source = random_darknet53(seed=1)
    path = write_darknet_weights(source, tmp_path / "darknet53.conv.74")
    assert path.stat().st_size == 162_482_580
    model = YOLOv3(num_classes=20)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    assert load_darknet_weights(model, path) == DARKNET53_CONV74_FLOATS
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(model.backbone.state_dict()[key], value), key
    for key, value in model.state_dict().items():  # the detection heads are untouched
        if not key.startswith("backbone."):
            assert torch.equal(value, head_before[key]), key


def test_backbone_checkpoint_tells_darknet_files_from_torch_checkpoints(tmp_path):
    source = Darknet53(width=0.125)
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.fill_(2.0)
    model = YOLOv3(num_classes=6, width=0.125)
    load_backbone(model, write_darknet_weights(source, tmp_path / "narrow.weights"))
    assert torch.equal(model.backbone.stages[4][0][1].running_var, source.stages[4][0][1].running_var)


@pytest.mark.parametrize("change", [-1, 1])
def test_a_darknet_file_of_the_wrong_length_says_expected_and_found(tmp_path, change):
    path = write_darknet_weights(Darknet53(width=0.125), tmp_path / "x.weights")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4] if change < 0 else data + b"\0\0\0\0")
    needed = (len(data) - 20) // 4
    found = f"{needed + change:,}"
    with pytest.raises(ValueError, match=rf"holds {found} floats.*needs {needed:,}"):
        load_darknet_weights(Darknet53(width=0.125), path)


def test_a_darknet_file_does_not_fit_faster_rcnn(tmp_path):
    path = write_darknet_weights(Darknet53(width=0.125), tmp_path / "x.weights")
    model = FasterRCNNDetector(num_classes=3, design="c4", min_size=64, max_size=96)
    with pytest.raises(ValueError, match="only fits a Darknet-53"):
        load_backbone(model, path)

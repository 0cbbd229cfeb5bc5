"""The ResNets of the paper's Faster R-CNN rows, as GluonCV names them (gluoncv/model_zoo/resnetv1b.py):

* ``v1b``: torchvision's ResNet-50/101 (stride 2 on the bottleneck's 3x3 convolution, a 7x7 stem,
  1x1 stride-2 projection shortcuts); GluonCV's ``resnet50_v1b`` (Table 4/6's ResNet-50 rows);
* ``v1d``: He et al. 2019's ResNet-D: a deep stem (3x3 convolutions 32, 32, 64, the first stride 2, BN and
  ReLU between them) and, in each stage's first block, the shortcut's downsampling by average pooling
  (AvgPool2d(stride), ceil mode, padding not counted) before a 1x1 stride-1 convolution and BN;
  GluonCV's ``resnet101_v1d`` (Table 4/6's ResNet-101 rows).

Module names follow GluonCV's (``conv1.0``/``conv1.3``/``conv1.6`` the stem's convolutions,
``downsample.1``/``downsample.2`` the v1d shortcut's convolution and BN), so a GluonCV ``.params`` file
maps onto them name by name (:mod:`bof.models.gluoncv`). ``last_gamma``: the last BN of each residual
block starts at gamma 0 (GluonCV's ``--last-gamma``; torchvision's ``zero_init_residual``).

``width`` (``model.net.width``, miniature runs only): a channel multiplier. 1.0 is torchvision's model
itself (the paper's); below it, :class:`NarrowResNet` scales the stem and every stage's planes
(64, 128, 256, 512) by it, with torchvision's blocks, names and initialisation, so a ``task=classify``
checkpoint of a narrow ResNet still maps onto a narrow detector name by name.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101
from torchvision.models.resnet import Bottleneck, ResNet

from bof.utils.checks import positive, require

RESNETS = {50: (resnet50, ResNet50_Weights.IMAGENET1K_V1), 101: (resnet101, ResNet101_Weights.IMAGENET1K_V1)}
STAGE_BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}  # Bottlenecks per stage, as torchvision's builders
VARIANTS = ("v1b", "v1d")
STEM_WIDTH = 32


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, rounded, at least 1."""
    return max(1, round(channels * width))


def conv_init(conv: nn.Conv2d) -> None:
    """torchvision's ResNet initialisation of a convolution (ResNet.__init__)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


class NarrowResNet(ResNet):
    """torchvision's ResNet with the stem and every stage's planes times ``width``: its ``__init__`` and
    ``_make_layer`` build the blocks (same names, same initialisation); the stem's convolution and BN and
    the classifier, whose sizes torchvision fixes, are rebuilt at the narrow size. The stem has
    2 * scaled(32) channels (64 at width 1; v1d's deep stem 32, 32, 64 scales alike), so the deep stem's
    halving stays exact."""

    def __init__(self, block, layers: list[int], width: float, num_classes: int = 1000, **kwargs):
        self.width = width  # read by _make_layer while torchvision's __init__ builds the stages
        self.stem_channels = 2 * scaled(STEM_WIDTH, width)
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        self.conv1 = nn.Conv2d(3, self.stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(self.stem_channels)  # weight 1, bias 0: torchvision's BN initialisation
        conv_init(self.conv1)
        self.fc = nn.Linear(self.inplanes, num_classes)  # torchvision's default Linear initialisation

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False):
        if planes == 64:  # layer1 (torchvision asks for 64 planes only there): it takes the narrow stem
            self.inplanes = self.stem_channels
        return super()._make_layer(block, scaled(planes, self.width), blocks, stride, dilate)


def deep_stem(norm_layer, stem_width: int = STEM_WIDTH) -> nn.Sequential:
    """GluonCV's ``deep_stem`` (``stem_width=32`` at width 1): [B, 3, H, W] -> [B, 2 * stem_width, H/2, W/2]
    (bn1 follows)."""
    return nn.Sequential(
        nn.Conv2d(3, stem_width, 3, 2, 1, bias=False),
        norm_layer(stem_width),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False),
        norm_layer(stem_width),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, 2 * stem_width, 3, 1, 1, bias=False),
    )


def average_shortcut(downsample: nn.Sequential, stride: int) -> nn.Sequential:
    """A v1b projection shortcut (1x1 conv with ``stride``, BN) as v1d's: AvgPool2d(stride), 1x1 conv
    stride 1, the same BN."""
    conv, norm = downsample
    return nn.Sequential(
        nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(conv.in_channels, conv.out_channels, 1, 1, bias=False),
        norm,
    )


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(
            f"model.net.variant: one of {', '.join(VARIANTS)} (GluonCV's ResNet names), got {variant!r}"
        )


def build_resnet(
    depth: int,
    variant: str = "v1b",
    norm_layer=nn.BatchNorm2d,
    last_gamma: bool = False,
    pretrained: bool = False,
    num_classes: int = 1000,
    width: float = 1.0,
) -> ResNet:
    """ResNet-``depth`` of ``variant`` with its classifier head (``fc``). ``pretrained``: torchvision's
    ImageNet weights, which exist for v1b at width 1 only. ``width``: the channel multiplier (1.0:
    torchvision's model; else :class:`NarrowResNet`)."""
    check_variant(variant)
    require("model.net.width", width, positive, "a channel multiplier > 0 (1.0: the paper's network)")
    builder, weights = RESNETS[depth]
    if pretrained and width != 1:
        raise ValueError(
            f"model.net.width={width}: torchvision's ImageNet weights are for width 1.0 only; set "
            "model.net.pretrained_backbone=false (and model.backbone_checkpoint=<a task=classify checkpoint "
            "of the same width>) or model.net.width=1.0"
        )
    if pretrained and variant != "v1b":
        raise ValueError(
            f"model.net.variant={variant}: torchvision has no ImageNet weights for it; set "
            "model.net.pretrained_backbone=false and model.backbone_checkpoint=<GluonCV's resnet"
            f"{depth}_{variant} .params or a task=classify checkpoint>"
        )
    if width == 1:
        resnet = builder(
            weights=weights if pretrained else None,
            norm_layer=norm_layer,
            zero_init_residual=last_gamma,
            **({} if pretrained else {"num_classes": num_classes}),
        )
    else:
        resnet = NarrowResNet(
            Bottleneck,
            STAGE_BLOCKS[depth],
            width,
            num_classes=num_classes,
            norm_layer=norm_layer,
            zero_init_residual=last_gamma,
        )
    if variant == "v1d":
        resnet.conv1 = deep_stem(norm_layer, scaled(STEM_WIDTH, width))
        replaced = list(resnet.conv1.modules())
        for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            block = layer[0]
            block.downsample = average_shortcut(block.downsample, block.conv2.stride[0])
            replaced.append(block.downsample[1])
        for module in replaced:  # torchvision's ResNet initialisation for the convolutions replaced
            if isinstance(module, nn.Conv2d):
                conv_init(module)
    return resnet

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
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101
from torchvision.models.resnet import ResNet

RESNETS = {50: (resnet50, ResNet50_Weights.IMAGENET1K_V1), 101: (resnet101, ResNet101_Weights.IMAGENET1K_V1)}
VARIANTS = ("v1b", "v1d")
STEM_WIDTH = 32


def deep_stem(norm_layer) -> nn.Sequential:
    """GluonCV's ``deep_stem`` with ``stem_width=32``: [B, 3, H, W] -> [B, 64, H/2, W/2] (bn1 follows)."""
    return nn.Sequential(
        nn.Conv2d(3, STEM_WIDTH, 3, 2, 1, bias=False),
        norm_layer(STEM_WIDTH),
        nn.ReLU(inplace=True),
        nn.Conv2d(STEM_WIDTH, STEM_WIDTH, 3, 1, 1, bias=False),
        norm_layer(STEM_WIDTH),
        nn.ReLU(inplace=True),
        nn.Conv2d(STEM_WIDTH, 2 * STEM_WIDTH, 3, 1, 1, bias=False),
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
) -> ResNet:
    """ResNet-``depth`` of ``variant`` with its classifier head (``fc``). ``pretrained``: torchvision's
    ImageNet weights, which exist for v1b only."""
    check_variant(variant)
    builder, weights = RESNETS[depth]
    if pretrained and variant != "v1b":
        raise ValueError(
            f"model.net.variant={variant}: torchvision has no ImageNet weights for it; set "
            "model.net.pretrained_backbone=false and model.backbone_checkpoint=<GluonCV's resnet"
            f"{depth}_{variant} .params or a task=classify checkpoint>"
        )
    resnet = builder(
        weights=weights if pretrained else None,
        norm_layer=norm_layer,
        zero_init_residual=last_gamma,
        **({} if pretrained else {"num_classes": num_classes}),
    )
    if variant == "v1d":
        resnet.conv1 = deep_stem(norm_layer)
        replaced = list(resnet.conv1.modules())
        for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            block = layer[0]
            block.downsample = average_shortcut(block.downsample, block.conv2.stride[0])
            replaced.append(block.downsample[1])
        for module in replaced:  # torchvision's ResNet initialisation for the convolutions replaced
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return resnet

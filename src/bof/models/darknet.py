"""Darknet-53, the YOLOv3 backbone, exactly as darknet's ``yolov3.cfg`` (Redmon & Farhadi, 2018).

Every convolution is conv (no bias) -> BatchNorm (eps 1e-5, momentum 0.1) -> LeakyReLU(0.1).
Stages hold 1, 2, 8, 8, 4 residual blocks. With ``width=1`` the backbone has 40,584,928 trainable
parameters (docs/fidelity.md "YOLOv3"); ``width`` scales every channel count for small CPU runs.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bof.utils.checks import positive, require

STAGE_BLOCKS = (1, 2, 8, 8, 4)
STAGE_CHANNELS = (64, 128, 256, 512, 1024)


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, at least 4 and even (halved inside residual blocks)."""
    return max(4, int(round(channels * width / 2)) * 2)


class ConvBNLeaky(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1),
            nn.LeakyReLU(0.1, inplace=True),
        )


class Residual(nn.Module):
    """1x1 conv to half the channels, 3x3 conv back, plus the identity (darknet ``[shortcut]``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNLeaky(channels, channels // 2, 1), ConvBNLeaky(channels // 2, channels, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Darknet53(nn.Module):
    """Returns the stride 8, 16 and 32 feature maps (darknet layers 36, 61 and 74).

    x: [B, 3, H, W], H and W multiples of 32
    -> ([B, C3, H/8, W/8], [B, C4, H/16, W/16], [B, C5, H/32, W/32]).
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.check(width)
        self.width = width
        self.stem = ConvBNLeaky(3, scaled(32, width), 3)
        stages, in_channels = [], scaled(32, width)
        for blocks, channels in zip(STAGE_BLOCKS, STAGE_CHANNELS, strict=True):
            out = scaled(channels, width)
            stages.append(
                nn.Sequential(
                    ConvBNLeaky(in_channels, out, 3, stride=2), *[Residual(out) for _ in range(blocks)]
                )
            )
            in_channels = out
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(scaled(c, width) for c in STAGE_CHANNELS[2:])

    @staticmethod
    def check(width: float = 1.0) -> None:
        require("model.net.width", width, positive, "a channel multiplier > 0 (1.0: the paper's network)")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.stages[1](self.stages[0](x))
        c3 = self.stages[2](x)
        c4 = self.stages[3](c3)
        c5 = self.stages[4](c4)
        return c3, c4, c5


# darknet's own weight files (darknet53.conv.74 is the ImageNet-pretrained Darknet-53 its authors publish:
# bof.utils.published)


def read_darknet_weights(path: str | Path) -> np.ndarray:
    """The float32 values of a darknet weight file, after its header: int32 major, minor, revision, then
    the number of images seen as int64 when major * 10 + minor >= 2 (darknet's parser.c), else int32."""
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12:
            raise ValueError(f"{path}: {len(header)} bytes, too short for a darknet weight file header")
        major, minor, _revision = np.frombuffer(header, dtype="<i4")
        f.read(8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4)
        return np.fromfile(f, dtype="<f4")


def load_darknet_weights(module: nn.Module, path: str | Path) -> int:
    """Loads darknet's weight file (``darknet53.conv.74``) into a :class:`Darknet53`, or into the backbone
    of a model that has one as ``.backbone`` (YOLOv3). Returns the number of floats read.

    For each convolution in darknet's order (which is this module's registration order) the file holds
    BatchNorm beta, gamma, running mean, running variance, then the convolution weights [out, in, k, k].
    A file that is shorter or longer than the model needs is an error stating both counts."""
    backbone = module if isinstance(module, Darknet53) else getattr(module, "backbone", None)
    if not isinstance(backbone, Darknet53):
        raise ValueError(
            f"{path} is a darknet weight file, which only fits a Darknet-53 backbone (model=yolov3), "
            f"not {type(module).__name__}"
        )
    values = torch.from_numpy(read_darknet_weights(path))
    layers = [m for m in backbone.modules() if isinstance(m, ConvBNLeaky)]
    needed = sum(conv.weight.numel() + 4 * bn.num_features for conv, bn, _ in layers)
    if values.numel() != needed:
        raise ValueError(
            f"{path}: the darknet weight file holds {values.numel():,} floats after its header; this "
            f"Darknet-53 (width {backbone.width}, {len(layers)} convolutions) needs {needed:,} "
            f"({'shorter' if values.numel() < needed else 'longer'} than expected: darknet53.conv.74 "
            "fits model.net.width=1.0)"
        )
    offset = 0
    with torch.no_grad():
        for conv, bn, _ in layers:
            for tensor in (bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight):
                tensor.copy_(values[offset : offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()
    return offset


def is_darknet_weights(path: str | Path) -> bool:
    """torch.save writes a zip archive; darknet's weight files are raw little-endian numbers."""
    return not zipfile.is_zipfile(path)

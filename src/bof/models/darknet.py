"""Darknet-53, the YOLOv3 backbone, exactly as darknet's ``yolov3.cfg`` (Redmon & Farhadi, 2018).

Every convolution is conv (no bias) -> BatchNorm (eps 1e-5, momentum 0.1) -> LeakyReLU(0.1).
Stages hold 1, 2, 8, 8, 4 residual blocks. With ``width=1`` the backbone has 40,584,928 trainable
parameters (docs/fidelity.md "YOLOv3"); ``width`` scales every channel count for small CPU runs.
"""

from __future__ import annotations

import torch
from torch import nn

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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.stages[1](self.stages[0](x))
        c3 = self.stages[2](x)
        c4 = self.stages[3](c3)
        c5 = self.stages[4](c4)
        return c3, c4, c5

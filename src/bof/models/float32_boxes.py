"""torchvision's Faster R-CNN parts with their box math in float32 under autocast (docs/fidelity.md
"Box math under mixed precision").

Under ``torch.autocast`` (``trainer.amp=bf16``, the default on CUDA) torchvision makes the anchors in the
feature maps' dtype, and its ``BoxCoder.decode`` casts the reference boxes to the deltas' dtype, so the
anchors, proposals, RoI regression targets and detections would all be rounded to bfloat16: steps of 4 px
between 512 and 1024 and of 8 px above, which covers COCO's 800 x 1333 frame. These parts hand float32 to
every encode and decode; the convolutions and linear layers still run in the autocast dtype. Their state
dicts are torchvision's, and none calls ``super().forward`` (TorchScript, bof-export). Also each design's
anchors (:func:`anchor_generator`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead

from bof.utils.checks import positive, require


class Float32Anchors(AnchorGenerator):
    """torchvision's anchors, made in float32 whatever the feature maps' dtype: torchvision makes them in
    the features' dtype, bfloat16 under autocast (steps of 4 px between 512 and 1024), and every proposal,
    RPN target and detection is decoded from them. (Written out, not through super(): TorchScript.)"""

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        height, width = image_list.tensors.shape[-2], image_list.tensors.shape[-1]
        device = feature_maps[0].device
        grid_sizes = [list(f.shape[-2:]) for f in feature_maps]
        strides = [
            [torch.tensor(height // g[0], device=device), torch.tensor(width // g[1], device=device)]
            for g in grid_sizes
        ]
        self.set_cell_anchors(torch.float32, device)
        per_level = self.grid_anchors(grid_sizes, strides)
        return [torch.cat(per_level) for _ in image_list.image_sizes]


class Float32RPNHead(RPNHead):
    """torchvision's RPN head whose outputs (objectness logits, box deltas) leave it in float32, so that
    the proposals are decoded and filtered in float32 under autocast; its convolutions run in the autocast
    dtype."""

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for feature in x:
            hidden = self.conv(feature)
            logits.append(self.cls_logits(hidden).float())
            deltas.append(self.bbox_pred(hidden).float())
        return logits, deltas


class Float32Predictor(FastRCNNPredictor):
    """torchvision's box predictor whose class scores and box deltas leave it in float32: torchvision's
    decode casts the proposals to the deltas' dtype, which would round every detection to bfloat16."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x).float(), self.bbox_pred(x).float()


# anchor sides (input pixels) per design: C4 one stride-16 map with all five (GluonCV's base 16 x scales
# 2..32), FPN one per level (torchvision's); aspect ratios 0.5, 1, 2 at every size
ANCHOR_SIZES = {"c4": (32, 64, 128, 256, 512), "fpn": (32, 64, 128, 256, 512)}
FPN_LEVELS = 5


def anchor_generator(design: str, anchor_sizes: Sequence[float] | None) -> Float32Anchors:
    """The design's anchors: ``anchor_sizes`` None is its own (:data:`ANCHOR_SIZES`); else the sides to use
    instead (C4: any number, all on its one map; FPN: one per level, five)."""
    if anchor_sizes is None:
        sizes = ANCHOR_SIZES[design]
    else:
        sizes = tuple(float(size) for size in anchor_sizes)
        for size in sizes:
            require("model.net.anchor_sizes", size, positive, "anchor sides in input pixels, each > 0")
        if not sizes or (design == "fpn" and len(sizes) != FPN_LEVELS):
            raise ValueError(
                f"model.net.anchor_sizes={list(anchor_sizes)}: "
                + ("one side per FPN level, 5" if design == "fpn" else "at least one side")
                + f" (null: {list(ANCHOR_SIZES[design])})"
            )
    if design == "fpn":
        return Float32Anchors(tuple((size,) for size in sizes), ((0.5, 1.0, 2.0),) * FPN_LEVELS)
    return Float32Anchors((sizes,), ((0.5, 1.0, 2.0),))

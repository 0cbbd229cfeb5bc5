"""bof-export: a trained detector as one graph for deployment.

YOLOv3, ONNX (onnxruntime, TensorRT) or TorchScript: the graph takes uint8 images [B, 3, S, S] (RGB,
resized to S = the run's model.val_size, as bof-eval feeds them) and returns boxes [B, N, 4] (xyxy input
pixels, clipped) and scores [B, N, K] (sigmoid(objectness) x sigmoid(class)): normalisation, the network
and the box decoding inside, the batch size free. The last step, the per-class NMS, is left to the
runtime that has one (``bof.models.yolov3.YOLOv3PostProcess.select`` is the reference: the exported
outputs through it give the PyTorch model's detections, tests/e2e/test_beyond_training.py).

Faster R-CNN, TorchScript (torchvision's scriptable detector; its ONNX path needs the legacy exporter
and fixed image sizes, so it is not offered): a list of uint8 images [3, H_i, W_i] of any sizes in, per
image a dict of ``boxes`` (xyxy pixels of that image, after torchvision's resize and back), ``scores``
and ``labels`` (0-based) out, NMS included. torchvision's scripted resize may round a resized side one
pixel differently from its eager one, so images that torchvision resizes can get slightly different
detections; images already at the model's size (``model.net.min_size``) get the same ones.

    bof-export checkpoint=run/best.pt format=onnx             # -> run/best.onnx
    bof-export checkpoint=run/best.pt format=torchscript output=model.ts
"""

from __future__ import annotations

import copy
import logging
import sys
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from bof.cli.args import parse_key_values, setup_logging
from bof.engine.build_model import load_trained
from bof.utils.atomic import atomic_path
from bof.utils.boxes import IMAGENET_MEAN, IMAGENET_STD, normalize_batch

log = logging.getLogger("bof.cli.export")
USAGE = __doc__.strip()
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


class ExportedYOLOv3(nn.Module):
    """uint8 images -> (boxes, scores): a YOLOv3Detector's network and its post-processing before NMS."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.net, self.postprocess = detector.net, detector.postprocess

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.net(normalize_batch(images))
        return self.postprocess.boxes_and_scores(outputs, tuple(images.shape[-2:]))


class ExportedFasterRCNN(nn.Module):
    """uint8 images [3, H_i, W_i] -> per image boxes, scores, labels (0-based): the whole Faster R-CNN."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        graph = copy.deepcopy(detector.detector).eval()
        # in eval our loss-weighting subclasses run torchvision's forward unchanged: script that one
        graph.rpn.__class__, graph.roi_heads.__class__ = RegionProposalNetwork, RoIHeads
        self.detector = graph
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        _, detections = self.detector([(image.float() - self.mean) / self.std for image in images])
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in detections]


def export(checkpoint: str, fmt: str, output: str | None, overrides: list[str]) -> Path:
    if fmt not in SUFFIXES:
        raise SystemExit(f"format={fmt}: one of {', '.join(SUFFIXES)}")
    cfg, model, _ = load_trained(checkpoint, overrides, torch.device("cpu"))
    path = Path(output) if output else Path(checkpoint).with_suffix(SUFFIXES[fmt])
    if not hasattr(model, "postprocess"):  # Faster R-CNN
        if fmt != "torchscript":
            raise SystemExit(
                f"checkpoint={checkpoint} is a {cfg.model.name}: export it with format=torchscript"
            )
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")  # torchvision's "scripted models return (losses, detections)"
            torch.jit.save(torch.jit.script(ExportedFasterRCNN(model).eval()), str(tmp))
        log.info("wrote %s: uint8 images [3, H, W] (a list) -> boxes, scores, labels per image", path)
        return path
    graph, size = ExportedYOLOv3(model).eval(), cfg.model.val_size
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    # written beside the output and renamed: a kill never leaves a truncated file under its name
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes
        if fmt == "onnx":
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                dynamo=True,
                input_names=["images"],
                output_names=["boxes", "scores"],
                dynamic_shapes=({0: batch},),
            )
        else:
            torch.jit.save(torch.jit.trace(graph, (example,)), str(tmp))
    log.info(
        "wrote %s: uint8 images [B, 3, %d, %d] -> boxes [B, N, 4], scores [B, N, %d]",
        path,
        size,
        size,
        model.criterion.num_classes,
    )
    return path


def main(argv: list[str] | None = None) -> Path:
    setup_logging()
    own_keys = {"checkpoint": ..., "format": "onnx", "output": None}
    own, overrides = parse_key_values(sys.argv[1:] if argv is None else argv, own_keys, USAGE)
    return export(own["checkpoint"], own["format"], own["output"], overrides)


def cli() -> None:
    """The ``bof-export`` console script: exit status 0 on success (``main`` returns the path, which a
    console-script wrapper would pass to ``sys.exit`` as an error message)."""
    main()


if __name__ == "__main__":
    cli()

"""Backbone pretraining (paper Tables 5-6): the classifier of a detector's backbone, and the hand-over
of its weights to the detector (``model.backbone_checkpoint``).

``bof-train task=classify`` trains the backbone of the configured detector as an image classifier:
YOLOv3 -> Darknet-53 (at the model's width) with darknet53.cfg's head (global average pooling, one fully
connected layer); Faster R-CNN -> torchvision's ResNet-50/101 (at the model's width) with its own head.
The classifier's checkpoint then loads into the detector's backbone, without the classifier head.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bof.models.darknet import Darknet53, is_darknet_weights, load_darknet_weights
from bof.models.gluoncv import gluoncv_state
from bof.models.resnet import build_resnet
from bof.utils.checkpoint import load_checkpoint
from bof.utils.mxnet_params import is_mxnet_params
from bof.utils.published import DARKNET53_CONV74_URL, GLUONCV_MODEL_ZOO

# ResNet module name in the classifier -> its name in the C4 Faster R-CNN (backbone is a Sequential)
C4_NAMES = {
    "conv1": "detector.backbone.0",
    "bn1": "detector.backbone.1",
    "layer1": "detector.backbone.4",
    "layer2": "detector.backbone.5",
    "layer3": "detector.backbone.6",
    "layer4": "detector.roi_heads.box_head.0",
}


class Darknet53Classifier(nn.Module):
    """Darknet-53 (darknet53.cfg): the backbone, global average pooling, a fully connected layer."""

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        self.backbone = Darknet53(width)
        self.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(images)[-1].mean((2, 3)))


class SoftTargetClassifier(nn.Module):
    """A classifier behind the detectors' interface, so that one loop (:mod:`bof.engine.loops`) trains
    both: in training ``model(images, targets)`` -> ``{"loss": cross-entropy against soft targets [B, K]}``
    (smoothed and mixed, :mod:`bof.classify`); in eval ``model(images)`` -> logits [B, K]."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.net(images)
        if not self.training:
            return logits
        return {"loss": torch.sum(-targets * F.log_softmax(logits.float(), 1), 1).mean()}


def build_classifier(net_cfg, num_classes: int) -> nn.Module:
    """The classifier of the backbone that ``model.net`` (a detector config) would build."""
    target = net_cfg["_target_"]
    if target.endswith("YOLOv3"):
        return Darknet53Classifier(num_classes, net_cfg.get("width", 1.0))
    if target.endswith("FasterRCNNDetector"):
        return build_resnet(
            net_cfg.get("depth", 50),
            net_cfg.get("variant", "v1b"),
            last_gamma=net_cfg.get("last_gamma", False),
            num_classes=num_classes,
            width=net_cfg.get("width", 1.0),
        )
    raise ValueError(f"task=classify: no classifier for model.net._target_={target}")


def backbone_state(model: nn.Module, checkpoint: dict, path: Path) -> tuple[nn.Module, dict]:
    """(module to load into, its state dict) from a classifier checkpoint, for this detector."""
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith("fc.")}
    if hasattr(model, "backbone") and isinstance(model.backbone, Darknet53):  # YOLOv3
        return model.backbone, {k.removeprefix("backbone."): v for k, v in state.items()}
    if hasattr(model, "detector"):  # Faster R-CNN
        body = model.detector.backbone
        if hasattr(body, "body"):  # FPN: an IntermediateLayerGetter over the ResNet's modules
            return body.body, state
        renamed = {}
        for key, value in state.items():
            module, _, rest = key.partition(".")
            if module not in C4_NAMES:
                raise ValueError(f"{path}: unexpected key {key} for a C4 Faster R-CNN backbone")
            renamed[f"{C4_NAMES[module]}.{rest}"] = value
        return model, renamed
    raise ValueError(f"model.backbone_checkpoint: {type(model).__name__} has no known backbone")


def load_backbone(model: nn.Module, path: str | Path) -> nn.Module:
    """Loads a backbone file into ``model``: a ``task=classify`` checkpoint, GluonCV's model zoo ``.params``
    (darknet53, resnet50_v1b, resnet101_v1d; :mod:`bof.models.gluoncv`) or darknet's own weight file
    (``darknet53.conv.74``), told apart by their first bytes. The classifier head is dropped and the
    detector's heads are untouched; every other tensor of the file must fill one of the backbone's, with its
    shape, else the error names what did not fit (another architecture, width or ResNet variant)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.backbone_checkpoint: no file at {path} (a task=classify checkpoint, GluonCV's "
            f"{GLUONCV_MODEL_ZOO}<name>-<hash>.zip, or darknet's darknet53.conv.74 from "
            f"{DARKNET53_CONV74_URL})"
        )
    origin = {}
    if is_mxnet_params(path):
        state, origin = gluoncv_state(path)
        checkpoint = {"model": state}
    elif is_darknet_weights(path):
        load_darknet_weights(model, path)
        return model
    else:
        checkpoint = load_checkpoint(path)
    target, state = backbone_state(model, checkpoint, path)
    if origin:  # the file's names, after backbone_state's renaming
        origin = dict(zip(state, origin.values(), strict=True))
    # C4: the backbone is spread over the detector; only the keys under its modules must be filled
    within = tuple(f"{name}." for name in C4_NAMES.values()) if target is model else ("",)
    fit_state(target, state, within, path, origin, type(model).__name__)
    return model


def fit_state(
    target: nn.Module, state: dict, within: tuple[str, ...], path: Path, origin: dict[str, str], owner: str
):
    """Loads ``state`` into ``target`` when every tensor fills one of ``target``'s with its shape and every
    one of ``target``'s whose name starts with one of ``within`` is filled. ``origin``: the file's own
    names for the keys of ``state``, for the error."""
    own = target.state_dict()
    # frozen BN (FrozenBatchNorm2d) has no num_batches_tracked; the classifier's trainable BN has
    state = {k: v for k, v in state.items() if k in own or not k.endswith("num_batches_tracked")}
    missing = [
        k for k in own if k.startswith(within) and k not in state and not k.endswith("num_batches_tracked")
    ]
    unexpected = [origin.get(k, k) for k in state if k not in own]
    wrong = [
        f"{origin.get(k, k)} {tuple(v.shape)} for {k} {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"model.backbone_checkpoint={path} does not fit {owner}'s backbone: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unused "
            f"(e.g. {unexpected[:3]}), {len(wrong)} of another shape (e.g. {wrong[:3]}); is it for the same "
            "model and width (and ResNet variant, backbones.resnet_variant)?"
        )
    target.load_state_dict(state, strict=False)

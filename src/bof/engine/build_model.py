"""The detector of a config, built, initialised (backbone file, or a trained detection checkpoint to
fine-tune from) and, for bof-eval and bof-predict, restored from a run's checkpoint with its config."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bof.config import check_stored_targets
from bof.models.classifiers import load_backbone
from bof.models.yolov3 import YOLOv3Detector
from bof.tricks.label_smoothing import LabelSmoothing
from bof.utils.checkpoint import load_checkpoint
from bof.utils.stored_config import with_overrides

log = logging.getLogger(__name__)


def build_model(
    cfg: DictConfig,
    num_classes: int,
    device: torch.device,
    channels_last: bool = False,
    smoothing: LabelSmoothing | None = None,
    trainable_bn: bool = False,
):
    """The detector of the ``model`` group on ``device``, behind torchvision's interface (losses in
    training, detections in eval). YOLOv3 (a ``criterion`` and ``postprocess`` in its config) is wrapped
    into a :class:`YOLOv3Detector`; its class head is a sigmoid one, so label smoothing takes the sigmoid
    rule. Faster R-CNN computes its own losses and detections: its RoI classifier is a softmax one
    (softmax rule), and ``trainable_bn`` (syncbn=on) replaces its frozen BatchNorms by trainable ones."""
    if cfg.model.get("criterion") is None:
        epsilon = smoothing.softmax_epsilon() if smoothing is not None else None
        # a backbone file replaces torchvision's ImageNet weights: no download, but the stem stays frozen
        # as for any pretrained backbone
        replaced = {"pretrained_backbone": False, "freeze_stem": True} if backbone_file(cfg) else {}
        net = instantiate(
            cfg.model.net,
            num_classes=num_classes,
            label_smoothing=epsilon,
            trainable_bn=trainable_bn,
            **replaced,
        )
        model = with_backbone(net, cfg)
    else:
        net = with_backbone(instantiate(cfg.model.net, num_classes=num_classes), cfg)
        epsilon = smoothing.sigmoid_epsilon(num_classes) if smoothing is not None else None
        criterion = instantiate(cfg.model.criterion, num_classes=num_classes, label_smoothing=epsilon)
        model = YOLOv3Detector(net, criterion, instantiate(cfg.model.postprocess))
    model = with_detector_weights(model, cfg.model.get("init_checkpoint")).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def backbone_file(cfg: DictConfig) -> str | None:
    path = cfg.model.get("backbone_checkpoint")
    return None if path in (None, "", "none") else path


def with_backbone(model, cfg: DictConfig):
    """``model.backbone_checkpoint``: darknet53.conv.74 or a ``task=classify`` checkpoint initialises the
    backbone (Tables 1-2, 4-6); null or none: no backbone file."""
    path = backbone_file(cfg)
    if path:
        load_backbone(model, path)
        log.info("backbone initialised from %s", path)
    return model


def with_detector_weights(model, path: str | None):
    """``model.init_checkpoint``: fine-tune from a trained detector (its model weights only). Tensors whose
    shape differs (another class count's heads) keep their fresh initialisation and are named."""
    if path in (None, "", "none"):
        return model
    state = load_checkpoint(path, expect=("model",))["model"]
    own = model.state_dict()
    fresh = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    # every tensor of the model must come from the file (but heads of another shape); BatchNorm's counter
    # is the one load_state_dict itself forgives
    unfilled = [
        k for k in own if k not in loaded and k not in fresh and not k.endswith("num_batches_tracked")
    ]
    foreign = [k for k in state if k not in own]
    if unfilled or foreign:
        raise ValueError(
            f"model.init_checkpoint={path} does not initialise this model: {len(loaded)} of its {len(own)} "
            f"tensors match, {len(unfilled)} would stay unset (e.g. {unfilled[:2]}) and {len(foreign)} of "
            f"the file's have no place (e.g. {foreign[:2]}). The file's keys look like {list(state)[:2]}, "
            f"the model's like {list(own)[:2]}; a task=classify checkpoint goes to model.backbone_checkpoint"
        )
    model.load_state_dict(loaded, strict=False)
    log.info(
        "model initialised from %s; %d tensors of another shape left fresh: %s",
        path,
        len(fresh),
        ", ".join(fresh) or "none",
    )
    return model


def load_trained(path: str | Path, overrides: list[str], device: torch.device):
    """(config, detector in eval mode, checkpoint) of a run's checkpoint: the config stored in it, with
    ``overrides`` (``key=value``, e.g. ``data.root=...``) applied and re-resolved, so that an override
    reaches every key that interpolates it; no backbone or init file is read."""
    checkpoint = load_checkpoint(path, expect=("model",))
    if "config" not in checkpoint:
        raise ValueError(f"checkpoint={path} stores no config; it predates bof-eval")
    where = f"checkpoint={path}"
    check_stored_targets(checkpoint["config"], where)  # before anything is instantiated
    source = checkpoint.get("config_source")  # unresolved: ${data.root} still an interpolation
    if source is not None:
        check_stored_targets(source, where)
    else:  # a checkpoint of before: its resolved config holds the old root as a literal
        source = moved_root(checkpoint["config"], overrides, where)
    cfg = with_overrides(source, overrides, where)
    for part in ("model", "data"):  # what is instantiated, resolved: an interpolation may build a node
        if isinstance(cfg.get(part), DictConfig):
            resolved = OmegaConf.to_container(cfg[part], resolve=True)
            check_stored_targets(resolved, f"{where} {overrides}", part)
    if cfg.get("task", "detect") != "detect":
        raise ValueError(
            f"checkpoint={path} is a task={cfg.task} run; bof-eval and bof-predict take detectors"
        )
    cfg.model.backbone_checkpoint, cfg.model.init_checkpoint = None, None  # the checkpoint has them all
    if cfg.model.get("criterion") is None:
        cfg.model.net.pretrained_backbone = False  # no download: the checkpoint holds the backbone
    if not checkpoint.get("class_names"):  # written before checkpoints named their classes
        checkpoint["class_names"] = list(instantiate(cfg.data.val).class_names)
    num_classes = len(checkpoint["class_names"])
    model = build_model(cfg, num_classes, device, trainable_bn=cfg.get("syncbn") is not None)
    model.load_state_dict(checkpoint["model"])
    bad = [k for k, t in checkpoint["model"].items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:  # its detections would be garbage scored as mAP 0, not an answer
        raise ValueError(
            f"checkpoint={path} holds {len(bad)} non-finite tensors ({', '.join(bad[:3])}): nothing to run"
        )
    return cfg, model.eval(), checkpoint


def moved_root(config: dict, overrides: list[str], where: str) -> dict:
    """A checkpoint written before checkpoints stored their unresolved config: ``data.root=NEW`` replaces
    the old root where the resolved data set keys hold it (``data.val.root``, ``data.train.cache_dir``),
    as ``${data.root}`` would have; said in a log line, and an error where no key holds it."""
    new = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("data.root=")), None)
    old = (config.get("data") or {}).get("root")
    if new is None or not isinstance(old, str) or "${" in old:
        return config
    moved = []

    def move(node, key: str):
        if isinstance(node, dict):
            return {k: move(v, f"{key}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [move(v, f"{key}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and (node == old or node.startswith(old.rstrip("/") + "/")):
            moved.append(key)
            return new if node == old else new.rstrip("/") + node[len(old.rstrip("/")) :]
        return node

    data = {k: v if k == "root" else move(v, f"data.{k}") for k, v in config["data"].items()}
    if not moved and not any("${data.root}" in str(v) for v in config["data"].values()):
        raise ValueError(
            f"{where}: data.root={new} would reach no data set key (none holds the old root {old}); "
            "override the data set's own keys instead (data.val.root=...)"
        )
    if moved:
        log.info(
            "%s stores only its resolved config (written before bof stored the unresolved one): "
            "data.root=%s replaces the old root %s in %s",
            where,
            new,
            old,
            ", ".join(moved),
        )
    return {**config, "data": data}

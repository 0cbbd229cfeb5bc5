"""The training step never waits for the device: the YOLOv3 loss has no data-dependent shape (it runs on
the ``meta`` device, where any ``.item()``, ``nonzero`` or boolean-mask indexing raises), and the loop
copies the loss terms to the host once every ``log_interval`` iterations, for detection and for
classification (counted: every Python-level route from a tensor to a host value is wrapped)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bof.classify import SoftTargets
from bof.config import TrainerConfig
from bof.engine.loops import train_one_epoch
from bof.engine.optim import Optimization
from bof.engine.run_setup import Run
from bof.models.classifiers import Darknet53Classifier, SoftTargetClassifier
from bof.models.yolo_loss import YOLOv3Loss
from bof.models.yolov3 import YOLOv3, YOLOv3Detector, YOLOv3PostProcess
from bof.tricks.label_smoothing import LabelSmoothing
from bof.tricks.mixup import ClassificationMixup

HOST_VALUES = ("item", "tolist", "numpy", "nonzero", "__bool__", "__int__", "__float__")


def detector(num_classes: int = 3, smoothing: float | None = 0.05):
    torch.manual_seed(0)
    return YOLOv3Detector(
        YOLOv3(num_classes, width=0.0625),
        YOLOv3Loss(num_classes, label_smoothing=smoothing),
        YOLOv3PostProcess(),
    )


def boxes(count: int, device="cpu", seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=generator) * 40
    box = torch.cat([xy, xy + 4 + torch.rand(count, 2, generator=generator) * 20], 1)
    labels = torch.randint(0, 3, (count,), generator=generator)
    return {"boxes": box.to(device), "labels": labels.to(device), "weights": torch.rand(count).to(device)}


def test_the_yolov3_training_step_runs_on_the_meta_device():
    model = detector().to("meta").train()
    images = torch.empty(2, 3, 64, 64, device="meta")
    targets = [boxes(3, "meta"), boxes(0, "meta")]  # an image without boxes too
    losses = model(images, targets)
    losses["loss"].backward()
    assert losses["loss"].device.type == "meta" and set(losses) == {
        "loss",
        "loss_obj",
        "loss_xy",
        "loss_wh",
        "loss_cls",
    }
    assert all(p.grad is not None for p in model.parameters())


class HostTransfers:
    """Counts the calls of ``torch.Tensor``'s routes to host values while active."""

    def __init__(self, monkeypatch):
        self.calls: dict[str, int] = dict.fromkeys(HOST_VALUES, 0)
        for name in HOST_VALUES:
            real = getattr(torch.Tensor, name)

            def counted(tensor, *args, _name=name, _real=real, **kwargs):
                self.calls[_name] += 1
                return _real(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def run_epoch(model, batches, monkeypatch, **kwargs) -> tuple[dict, dict]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    transfers = HostTransfers(monkeypatch)
    run = Run(TrainerConfig(progress=False, log_interval=4), Path("."), torch.device("cpu"))
    metrics = train_one_epoch(model, batches, Optimization(optimizer, schedule, scaler), run, 0, **kwargs)
    monkeypatch.undo()
    return transfers.calls, metrics


@pytest.mark.parametrize("smoothing", [None, 0.05])
def test_a_detection_epoch_copies_the_loss_to_the_host_once_per_log_interval(monkeypatch, smoothing):
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=generator),
            [boxes(2 + i % 3, seed=i), boxes(i % 2, seed=i + 100)],
        )
        for i in range(8)
    ]
    calls, metrics = run_epoch(detector(smoothing=smoothing), batches, monkeypatch)
    assert calls == {**dict.fromkeys(HOST_VALUES, 0), "tolist": 2}  # 8 iterations, log_interval 4
    assert np.isfinite(metrics["loss"]) and metrics["nonfinite_skipped"] == 0


def test_a_classification_epoch_with_mixup_copies_the_loss_to_the_host_once_per_log_interval(monkeypatch):
    torch.manual_seed(0)
    model = SoftTargetClassifier(Darknet53Classifier(num_classes=4, width=0.0625))
    tricks = SimpleNamespace(mixup=ClassificationMixup(0.2), smoothing=LabelSmoothing(0.1))
    soft_targets = SoftTargets(4, tricks, seed=0, rank=0, epochs=1)
    assert soft_targets.mixing and soft_targets.epsilon == 0.1
    batches = [(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 4, (4,)))] * 8
    calls, metrics = run_epoch(model, batches, monkeypatch, batch_transform=soft_targets)
    assert calls == {**dict.fromkeys(HOST_VALUES, 0), "tolist": 2}
    assert np.isfinite(metrics["loss"])

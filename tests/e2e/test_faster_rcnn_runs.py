"""Faster R-CNN: torchvision's parameter counts, trick-aware losses, training runs, and the free lunch."""

import subprocess
import sys

import pytest

from bof.train import train


@pytest.mark.parametrize("name", ["faster_rcnn_r50_fpn", "faster_rcnn_r50_c4"])
def test_each_family_trains_and_evaluates_on_synthetic_data(make_cfg, tmp_path, name):
    metrics = train(make_cfg(f"model={name}", "trainer.epochs=1", "mixup=beta15", "smoothing=on"))
    assert metrics["train_loss"] > 0 and 0.0 <= metrics["map"] <= 1.0
    assert (tmp_path / "run" / "results").is_dir()


def test_random_shapes_with_faster_rcnn_is_refused_before_the_processes_start(tmp_path):
    """bof-train checks it first: a multi-process job resolves the whole config before it spawns."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bof.train",
            "experiment=table3/mixup",
            "random_shapes=on",
            "trainer.devices=2",
            "trainer.device=cpu",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "model=faster_rcnn_r50_c4 does not have" in done.stderr

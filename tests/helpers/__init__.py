"""What the tests share, imported from here only (never from conftest.py or from another test file):
the repository's paths, the tiny configs every run test composes, and small readers of a run's output.
Files generated in the formats users bring live in :mod:`tests.helpers.generated`."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bof.config import CONFIG_DIR, validate_trainer
from bof.engine.run_setup import Run

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
FIXTURES = REPO / "tests" / "fixtures"  # real VOC XML and a golden COCO case (README there)

# a YOLOv3 of width 1/16 on 16 synthetic 64-96 px images: a training epoch takes about a second
TINY_YOLO = ["model.net.width=0.0625", "model.train_size=64", "model.val_size=64"]
TINY_FASTER_RCNN = [
    "model.net.min_size=64",
    "model.net.max_size=96",
    "model.net.rois_per_image=16",
    "model.net.pretrained_backbone=false",  # no internet in tests
]
TINY = [
    *TINY_YOLO,
    "++data.generator.num_train=16",
    "++data.generator.num_val=8",
    "++data.generator.num_test=4",
    "++data.generator.image_size=[64,96]",
    "++data.generator.num_ooc=0",
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.eval_interval=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.num_images_logged=2",
]
# scale=mini: its backbones pretrained in a second (built once per test session in the cache), the
# narrow detectors at the width the miniature's backbones have
TINY_MINI = [
    "mini.pretrain_overrides=['data.generator.num_train=12','data.generator.num_val=6',"
    "'data.generator.image_size=[64,96]','trainer.epochs=1','trainer.batch_size=4','trainer.num_workers=0']",
    "model.net.width=0.125",
]
# runs whose weights two process counts must move alike (tests/e2e/e2e/test_distributed.py)
DETERMINISTIC = [
    "augment=none",
    "augment.interpolation=bilinear",
    "mixup=off",
    "syncbn=on",
    "trainer.epochs=2",
    "trainer.grad_clip=null",
]


def config_maker(tmp_path: Path, cache_dir: Path):
    """compose("train", TINY + overrides) writing into ``tmp_path / "run"`` (or ``output_dir``), with the
    synthetic data cached in ``cache_dir``: the ``make_cfg`` fixture's function, for any fixture scope."""

    def make(*overrides: str, output_dir: Path | None = None):
        tiny = TINY
        own_sizes = ("model=faster_rcnn", "experiment=faster_rcnn", "experiment=resnet")
        if any(o.startswith(own_sizes) for o in overrides):
            tiny = [o for o in TINY if o not in TINY_YOLO] + TINY_FASTER_RCNN
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    *tiny,
                    f"data.root={cache_dir}",
                    f"trainer.output_dir={output_dir or tmp_path / 'run'}",
                    *overrides,
                ],
            )

    return make


def bof_train(*args: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """``bof-train <args>`` in a subprocess, as a user runs it (one thread: the CI machine has 2 cores)."""
    return subprocess.run(
        [sys.executable, "-m", "bof.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def cpu_run(cfg, output_dir: Path | None = None) -> Run:
    """The :class:`Run` of a single CPU process for a composed config (what ``start_run`` would give)."""
    return Run(validate_trainer(cfg.trainer), Path(output_dir or cfg.trainer.output_dir), torch.device("cpu"))


def scalar_tags(run_dir: Path) -> EventAccumulator:
    """A run's TensorBoard events, loaded."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def assert_weights_moved_alike(cfg, run: Path, other: Path) -> None:
    """The final weights of two runs moved the same way from cfg's initial ones, within 1% of the
    distance moved (float reordering of a sum over 1 or 2 processes: tests/e2e/e2e/test_distributed.py)."""
    torch.manual_seed(cfg.seed)
    initial = instantiate(cfg.model.net, num_classes=6).state_dict()
    final = [torch.load(d / "last.pt", weights_only=True)["model"] for d in (run, other)]
    moved = 0
    for key, start in initial.items():
        if start.is_floating_point():
            key = f"net.{key}"  # the network inside the YOLOv3Detector
            delta_one, delta_two = final[0][key] - start, final[1][key] - start
            # + 1e-6: a few float32 ulps of weights of magnitude ~1 (BN scales) that barely moved
            assert (delta_one - delta_two).abs().max() <= 1e-2 * delta_one.abs().max() + 1e-6, key
            moved += bool(delta_one.abs().max() > 0)
    assert moved > 100  # the comparison is not between untrained copies


OFF = {
    "augment": "yolo",
    "mixup": "off",
    "smoothing": "off",
    "lr_schedule": "step",
    "random_shapes": "off",
    "syncbn": "off",
}
ALL_YOLO = {
    "augment": "yolo",
    "mixup": "beta15",
    "smoothing": "on",
    "lr_schedule": "cosine",
    "random_shapes": "on",
    "syncbn": "on",
}
# Table 4's YOLOv3 "all freebies" (and Table 5, built on it): the command behind the published 37.0 used the
# step schedule (docs/tables.md "Table 4"); the VOC Table 2's last row is cosine
ALL_YOLO_COCO = {**ALL_YOLO, "lr_schedule": "step"}
ALL_RCNN = {**OFF, "augment": "rcnn", "mixup": "fixed05", "smoothing": "on", "lr_schedule": "cosine"}
RCNN = {**OFF, "augment": "rcnn"}
# every row of the paper (docs/tables.md), in its table's order (the sweeps', conf/sweep/) -> the tricks it
# names; Tables 2-3 stack one trick per row
PAPER_ROWS = {
    "table1/fixed05": {**OFF, "mixup": "fixed05"},
    "table1/beta1": {**OFF, "mixup": "beta1"},
    "table1/beta15": {**OFF, "mixup": "beta15"},
    "table2/no_aug": {**OFF, "augment": "none"},
    "table2/baseline": OFF,
    "table2/syncbn": {**OFF, "syncbn": "on"},
    "table2/random_shapes": {**OFF, "syncbn": "on", "random_shapes": "on"},
    "table2/cosine": {**OFF, "syncbn": "on", "random_shapes": "on", "lr_schedule": "cosine"},
    "table2/smoothing": {**ALL_YOLO, "mixup": "off"},
    "table2/mixup": ALL_YOLO,
    "table3/no_aug": {**RCNN, "augment": "none"},
    "table3/baseline": RCNN,
    "table3/cosine": {**RCNN, "lr_schedule": "cosine"},
    "table3/smoothing": {**RCNN, "lr_schedule": "cosine", "smoothing": "on"},
    "table3/mixup": ALL_RCNN,
    "table4/frcnn_r50-original": RCNN,
    "table4/frcnn_r50-bof": ALL_RCNN,
    "table4/frcnn_r101-original": RCNN,
    "table4/frcnn_r101-bof": ALL_RCNN,
    "table4/yolov3-original": OFF,
    "table4/yolov3-bof": ALL_YOLO_COCO,
    "table5/plain-plain": {**ALL_YOLO_COCO, "mixup": "off"},
    "table5/plain-mixup": ALL_YOLO_COCO,
    "table5/mixup-plain": {**ALL_YOLO_COCO, "mixup": "off"},
    "table5/mixup-mixup": ALL_YOLO_COCO,
    "table6/plain-plain": {**ALL_RCNN, "mixup": "off"},
    "table6/plain-mixup": ALL_RCNN,
    "table6/mixup-plain": {**ALL_RCNN, "mixup": "off"},
    "table6/mixup-mixup": ALL_RCNN,
}
# the leave-one-out and add-one designs of the stacked Tables 2-3 (docs/tables.md "Beyond the stack"):
# conf/sweep/<design>.yaml -> the table whose tricks it rearranges
DESIGNS = {f"{table}_{design}": table for table in ("table2", "table3") for design in ("loo", "add_one")}
TRICK_NAMES = {"lr_schedule": "cosine"}  # a design row's row.trick: its group, but for this one


def stacked_tricks(table: str) -> dict[str, tuple[str, str, str, str]]:
    """A stacked table's tricks (Tables 2-3: each row changes one group of the row above), in its order:
    group -> (its choice off, its choice on, the row above, the row that switches it on)."""
    rows = [row for row in PAPER_ROWS if row.split("/")[0] == table]
    steps = {}
    for above, row in pairwise(rows):
        (group,) = (g for g in PAPER_ROWS[row] if PAPER_ROWS[row][g] != PAPER_ROWS[above][g])
        steps[group] = (PAPER_ROWS[above][group], PAPER_ROWS[row][group], above, row)
    return steps


def design_rows(design: str) -> dict[str, dict]:
    """A design's rows in its sweep's order -> their tricks: its baseline row (leave-one-out: ``all``, the
    table's last row; add-one: the table's ``baseline``), then one row per trick of the table: the
    baseline row with that trick on (``<trick>``) or, where it has it, off (``no_<trick>``, augmentation's
    ``no_aug`` as in the table); the rows adding a trick first."""
    table = DESIGNS[design]
    rows = [row for row in PAPER_ROWS if row.split("/")[0] == table]
    loo = design.endswith("_loo")
    base = PAPER_ROWS[rows[-1] if loo else f"{table}/baseline"]
    designed = {f"{design}/{'all' if loo else 'baseline'}": base}
    steps = stacked_tricks(table)
    for group in sorted(steps, key=lambda g: base[g] == steps[g][1]):  # stable: each part in table order
        off, on, *_ = steps[group]
        trick = TRICK_NAMES.get(group, group)
        if base[group] == on:
            designed[f"{design}/no_{'aug' if trick == 'augment' else trick}"] = {**base, group: off}
        else:
            designed[f"{design}/{trick}"] = {**base, group: on}
    return designed


DESIGN_ROWS = {row: tricks for design in DESIGNS for row, tricks in design_rows(design).items()}


def full_disk(*args, **kwargs):
    """Monkeypatched over a write (os.replace, a file's write): what a full disk raises."""
    raise OSError(errno.ENOSPC, "No space left on device")


def compose_row(*overrides: str):
    """conf/train.yaml with ``overrides`` and Hydra's own node (its runtime choices, the sweeper)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def rows_of(table: str) -> list[str]:
    """The experiments a table's sweep lists, in the table's order: ``table2/no_aug``, ..."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"+sweep={table}"], return_hydra_config=True)
    return cfg.hydra.sweeper.params["experiment"].split(",")

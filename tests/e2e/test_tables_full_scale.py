"""Every row of the paper's Tables 1-6 at full scale (`make test-tables`, not part of `make test`).

Each row is composed exactly as its sweep composes it (`+sweep=tableN experiment=tableN/<row>`, no
`scale=mini`), built at full size (YOLOv3 Darknet-53 at 416/608, Faster R-CNN C4 at 600x1000 / 800x1333),
started from the backbone files a user passes (a darknet53.conv.74-format file, torchvision's cached
ResNet weights, task=classify checkpoints), and trained for two epochs of one or two iterations on a small
data set in the table's own layout (a VOCdevkit of 500x375 JPEGs for Tables 1-3, COCO 2017 of 640x480 for
Tables 4-6; 2 training images), then evaluated on 2 images. Only sizes that do not change what runs are
overridden: the data root, the batch (2 YOLOv3 / 1 Faster R-CNN images; the lr scaled linearly with it,
the rule users follow for another batch), one process, and one epoch, or two for mixup rows (mixup is off
in a run's last epoch: it mixes in the first).

The logged trick description must name exactly the tricks of the paper's row (docs/tables.md);
PAPER_ROWS (tests/helpers), the paper's rows in order, is also what tests/e2e/test_sweeps.py checks the
sweeps' lists against. The leave-one-out and add-one rows of Tables 2-3 (DESIGN_ROWS) run the same way,
but those with a row of the table's tricks: their config is that row's, which runs here already."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bof.config import CONFIG_DIR
from bof.models.classifiers import Darknet53Classifier
from bof.models.resnet import build_resnet
from bof.train import train
from tests.helpers import DESIGN_ROWS, DESIGNS, PAPER_ROWS
from tests.helpers.generated import (
    cache_torchvision_resnets,
    classify_checkpoint,
    make_coco,
    make_imagenet,
    make_vocdevkit,
    random_darknet53,
    write_darknet_weights,
)

pytestmark = pytest.mark.tables
# what the logged description says for each choice (Tricks.describe)
SAYS = {
    "augment": {"yolo": "yolo augmentation", "rcnn": "flip + resize", "none": "resize ("},
    "mixup": {
        "off": "off",
        "beta15": "mixup Beta(1.5, 1.5)",
        "beta1": "mixup Beta(1.0, 1.0)",
        "fixed05": "mixup lambda=0.5",
    },
    "smoothing": {"off": "off", "on": "label smoothing"},
    "lr_schedule": {"step": "step lr", "cosine": "cosine lr"},
    "random_shapes": {"off": "off", "on": "random shapes 320..608"},
    "syncbn": {"off": "off", "on": "synchronized BatchNorm"},
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The user's files, generated once: data sets, backbone weights, torchvision's cache."""
    root = tmp_path_factory.mktemp("tables")
    darknet = write_darknet_weights(random_darknet53(), root / "darknet53.conv.74")
    assert darknet.stat().st_size == 162_482_580  # the size of darknet's published file
    yield {
        "voc": make_vocdevkit(root),
        "coco": make_coco(root),
        "darknet": darknet,
        "torch_home": cache_torchvision_resnets(root / "torch_home"),
        "darknet_plain": classify_checkpoint(Darknet53Classifier(1000), root / "darknet53_plain.pt"),
        "darknet_mixup": classify_checkpoint(Darknet53Classifier(1000), root / "darknet53_mixup.pt"),
        "resnet101_plain": classify_checkpoint(build_resnet(101, "v1d"), root / "resnet101_plain.pt"),
        "resnet101_mixup": classify_checkpoint(build_resnet(101, "v1d"), root / "resnet101_mixup.pt"),
    }
    shutil.rmtree(root, ignore_errors=True)  # about 1.2 GB of generated weights


@pytest.fixture
def run_dir(tmp_path):
    """The row's run directory, removed after the test: full-size checkpoints weigh up to 1.5 GB a row,
    and pytest keeps its temporary directories (29 rows would fill a CI disk)."""
    yield tmp_path / "run"
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def run_at_full_scale(row: str, assets, run_dir, monkeypatch, caplog) -> None:
    """Trains a row of a sweep (``table2/mixup``, ``table2_loo/no_cosine``) as its sweep composes it and
    checks the run did what the row says (its tricks: PAPER_ROWS or DESIGN_ROWS)."""
    sweep = row.split("/")[0]
    table = DESIGNS.get(sweep, sweep)  # a design's rows are its table's setup
    tricks = {**PAPER_ROWS, **DESIGN_ROWS}[row]
    monkeypatch.setenv("TORCH_HOME", str(assets["torch_home"]))
    yolo = table not in ("table3", "table6") and not row.startswith("table4/frcnn")
    coco = table in ("table4", "table5", "table6")
    epochs = 2 if tricks["mixup"] != "off" else 1
    overrides = [
        f"+sweep={sweep}",
        f"experiment={row}",
        f"data.root={assets['coco' if coco else 'voc']}",
        "trainer.devices=1",
        f"trainer.epochs={epochs}",
        f"trainer.eval_interval={epochs}",
        f"trainer.batch_size={2 if yolo else 1}",
        "trainer.num_workers=0",
        "trainer.progress=false",
        "trainer.num_images_logged=1",
        f"trainer.output_dir={run_dir}",
    ]
    if table in ("table5", "table6"):
        net = "darknet" if table == "table5" else "resnet101"
        overrides += [f"backbones.{kind}={assets[f'{net}_{kind}']}" for kind in ("plain", "mixup")]
    else:  # as the README's commands pass it, to every row (the Faster R-CNN rows do not read it)
        overrides.append(f"backbones.darknet53={assets['darknet']}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    # the paper's lr is for its global batch: scaled linearly to this one (Goyal et al.), as a user would
    paper_batch = cfg.paper_setup.world_size * cfg.paper_setup.batch_per_process
    cfg.optimizer.lr *= cfg.trainer.batch_size / paper_batch
    # the full-size recipe: nothing scaled down but the data and the batch
    assert cfg.get("scale") is None and cfg.model.net.get("width", 1.0) == 1.0
    if yolo:
        assert (cfg.model.train_size, cfg.model.val_size) == (416, 608 if coco else 416)
    else:
        assert (cfg.model.net.min_size, cfg.model.net.max_size) == ((800, 1333) if coco else (600, 1000))

    with caplog.at_level(logging.INFO, logger="bof"):
        metrics = train(cfg)

    log = caplog.text
    described = log.split("tricks:\n", 1)[1]
    for group, choice in tricks.items():
        line = next(line for line in described.splitlines() if line.strip().startswith(f"{group}:"))
        assert SAYS[group][choice] in line, (group, choice, line)
    backbone = {"table5": "darknet", "table6": "resnet101"}.get(table)
    if backbone:  # the row's pretrained backbone (with or without classification mixup)
        which = "mixup" if row.split("/")[1].startswith("mixup-") else "plain"
        assert f"backbone initialised from {assets[f'{backbone}_{which}']}" in log
    elif yolo:
        assert f"backbone initialised from {assets['darknet']}" in log
    assert "the paper's setup is" in log  # one process, not the paper's 8 (or 4): said, and recorded
    if epochs == 2:  # the first epoch mixed: its samples carry the mixup ratio as box weights
        assert "mixes epochs 1-1 of 2" in described
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["world_size"] == 1 and saved["batch_per_process"] == (2 if yolo else 1)
    assert saved["metric"] == ("coco" if coco else "voc07") and 0.0 <= metrics["map"] <= 1.0
    assert saved["train_loss"] is not None and saved["train_loss"] == saved["train_loss"]  # finite, trained


@pytest.mark.parametrize("row", list(PAPER_ROWS))
def test_row_runs_at_full_scale(row, assets, run_dir, monkeypatch, caplog):
    run_at_full_scale(row, assets, run_dir, monkeypatch, caplog)


def paper_row_with_the_tricks_of(row: str) -> str | None:
    """The row of a design row's table with the same tricks (``table2_loo/all``: ``table2/mixup``)."""
    table = DESIGNS[row.split("/")[0]]
    same = (r for r in PAPER_ROWS if r.split("/")[0] == table and PAPER_ROWS[r] == DESIGN_ROWS[row])
    return next(same, None)


@pytest.mark.parametrize("row", [r for r in DESIGN_ROWS if paper_row_with_the_tricks_of(r) is None])
def test_design_row_runs_at_full_scale(row, assets, run_dir, monkeypatch, caplog):
    run_at_full_scale(row, assets, run_dir, monkeypatch, caplog)


@pytest.mark.parametrize("row", [r for r in DESIGN_ROWS if paper_row_with_the_tricks_of(r)])
def test_design_row_with_the_tricks_of_a_paper_row_is_that_row(row):
    """No need to train it again: but for its row block and where its jobs land (its sweep's hydra
    settings), its config is the paper row's, which test_row_runs_at_full_scale trains."""

    def composed(row: str) -> dict:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"+sweep={row.split('/')[0]}", f"experiment={row}"])
        return {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "row"}

    assert composed(row) == composed(paper_row_with_the_tricks_of(row))


@pytest.mark.parametrize("experiment", ["darknet53_imagenet", "resnet101_imagenet"])
def test_backbone_pretraining_recipe_runs_at_full_scale(experiment, tmp_path, run_dir, caplog):
    """Tables 5-6's ImageNet recipes: the full-size classifier at 224 px, one iteration on an ImageFolder
    tree, through the same training loop; its checkpoint is what backbones.plain/mixup take."""
    overrides = [
        f"experiment={experiment}",
        f"data.root={make_imagenet(tmp_path)}",
        "trainer.devices=1",
        "trainer.epochs=1",
        "trainer.batch_size=2",
        "trainer.num_workers=0",
        "trainer.progress=false",
        f"trainer.output_dir={run_dir}",
        "mixup=classification",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert (cfg.optimizer.lr, cfg.lr_schedule.warmup_epochs, cfg.smoothing.epsilon) == (0.4, 5, 0.1)
    assert cfg.data.image_size == 224 and cfg.model.net.get("width", 1.0) == 1.0
    with caplog.at_level(logging.INFO, logger="bof"):
        metrics = train(cfg)
    assert metrics["task"] == "classify" and metrics["world_size"] == 1
    assert "the paper's setup is 8 x 128" in caplog.text and (run_dir / "last.pt").is_file()

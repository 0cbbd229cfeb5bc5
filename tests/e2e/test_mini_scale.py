"""scale=mini, the miniature of the paper's regime (docs/mini_scale.md "Design 1"): every row of every
table becomes its own family's miniature on the synthetic scenes, from a backbone pretrained on synthetic
crops that the first run builds and every later run reuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bof.config import check_scale
from bof.engine.build_model import build_model
from bof.models.classifiers import build_classifier
from bof.pretrained import ensure_pretrained, run_overrides
from bof.train import train
from bof.utils.fingerprint import RunConflict
from tests.helpers import TINY_MINI, compose_row, rows_of

PAPER_TABLES = ["table1", "table2", "table3", "table4", "table5", "table6"]
# the backbone each row's miniature starts from (docs/mini_scale.md "Backbones"), by its row file
YOLO_MIXUP, YOLO_PLAIN = "darknet53_mixup", "darknet53_plain"
R50, R101, R101_MIXUP = "resnet50_v1b_plain", "resnet101_v1d_plain", "resnet101_v1d_mixup"


def expected_backbone(row: str) -> str:
    table, name = row.split("/")
    if table in ("table1", "table2") or name.startswith("yolov3"):
        return YOLO_MIXUP
    if table == "table5":
        return YOLO_MIXUP if name.startswith("mixup") else YOLO_PLAIN
    if table == "table3" or name.startswith("frcnn_r50"):
        return R50
    if table == "table6":
        return R101_MIXUP if name.startswith("mixup") else R101
    return R101  # Table 4's R101 rows


@pytest.mark.parametrize("table", PAPER_TABLES)
def test_every_row_becomes_its_own_familys_miniature(table):
    """The row keeps its tricks and its detector family, on the scenes in its table's layout (VOC or
    COCO), narrow, one CPU process, the family's schedule, from the backbone the authors' row used."""
    for row in rows_of(table):
        backbones = (f"backbones.{b}=x" for b in ("darknet53", "plain", "mixup"))
        full = compose_row(f"experiment={row}", *backbones)
        mini = compose_row(f"+sweep={table}", f"experiment={row}", "scale=mini")
        choices = full.hydra.runtime.choices
        assert mini.hydra.runtime.choices.scale_setup == f"mini_{full.data.name}_{choices.model}"
        assert mini.data.name == "synthetic_scenes" and mini.data.generator.context == 0.8
        layout = "synthetic_voc" if full.data.name == "voc" else "synthetic_coco"
        assert mini.data.train._target_.endswith(layout) and mini.data.val._target_.endswith(layout)
        assert mini.model.net._target_ == full.model.net._target_ and mini.model.net.width == 0.125
        yolo = full.model.net._target_.endswith("YOLOv3")
        assert (mini.trainer.epochs, mini.trainer.batch_size) == ((24, 8) if yolo else (20, 4))
        assert mini.trainer.devices == 1 and mini.trainer.device == "cpu" and mini.paper_setup is None
        for group in ("augment", "mixup", "smoothing", "lr_schedule", "random_shapes", "syncbn"):
            assert mini.hydra.runtime.choices[group] == full.hydra.runtime.choices[group], (row, group)
        assert mini.row == full.row
        backbone = Path(mini.model.backbone_checkpoint)
        assert backbone == Path(mini.data.root) / "pretrained" / expected_backbone(row) / "last.pt", row
        if not yolo:  # the detector's ResNet is the one its recipe pretrains, or its weights do not load
            recipe = mini.mini.pretrained[expected_backbone(row)]
            pretraining = compose_row(*OmegaConf.to_container(recipe, resolve=True)["recipe"], "scale=mini")
            built = (pretraining.model.net.depth, pretraining.model.net.variant)
            assert (mini.model.net.depth, mini.model.net.variant) == built, row


@pytest.mark.parametrize("row", ["table3/baseline", "table4/frcnn_r101-original", "table6/mixup-plain"])
def test_a_faster_rcnn_row_loads_the_backbone_its_recipe_pretrains(row, tmp_path):
    """The classifier the row's backbone recipe trains (task=classify), saved as a checkpoint, loads into
    the row's detector at mini scale: every tensor of the backbone filled, with its shape."""
    table = row.split("/")[0]
    mini = compose_row(f"+sweep={table}", f"experiment={row}", "scale=mini")
    recipe = mini.mini.pretrained[expected_backbone(row)]
    pretraining = compose_row(*OmegaConf.to_container(recipe, resolve=True)["recipe"], "scale=mini")
    classifier = build_classifier(pretraining.model.net, num_classes=6)
    torch.save({"model": classifier.state_dict()}, tmp_path / "last.pt")
    mini.model.backbone_checkpoint = str(tmp_path / "last.pt")
    detector = build_model(mini, num_classes=6, device=torch.device("cpu"))
    stem = next(iter(detector.detector.backbone.state_dict().values()))
    assert torch.equal(stem, next(iter(classifier.state_dict().values())))


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        (["experiment=table2/baseline", "model=faster_rcnn_r50_fpn"], "mini_voc_faster_rcnn_r50_fpn"),
        ([], "mini_synthetic_yolov3_narrow"),  # the demo has no miniature: it is one
    ],
)
def test_scale_mini_without_a_setup_stops_at_start_up_naming_the_setups(overrides, missing):
    """Without its conf/scale_setup file (an optional default), scale=mini would give the row the shared
    values only and train the paper-size model on one CPU process: bof-train stops before anything."""
    cfg = compose_row(*overrides, "scale=mini")
    assert cfg.hydra.runtime.choices.scale_setup == missing
    with pytest.raises(ValueError, match=rf"no conf/scale_setup/{missing}\.yaml.*mini_voc_yolov3"):
        check_scale(cfg.hydra.runtime.choices)
    for row in ("table2/baseline", "table3/baseline", "table4/frcnn_r101-bof"):
        check_scale(compose_row(f"experiment={row}", "scale=mini").hydra.runtime.choices)  # setups exist
    check_scale(compose_row(*overrides).hydra.runtime.choices)  # scale=paper has no setups


def test_bof_train_checks_the_setup_before_it_starts(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bof.cli.train", "scale=mini", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "no conf/scale_setup/mini_synthetic_yolov3_narrow.yaml" in done.stderr
    assert not list((tmp_path / "run").glob("*.pt"))  # stopped before any training


@pytest.mark.parametrize("name", [YOLO_MIXUP, YOLO_PLAIN, R50, R101, R101_MIXUP])
def test_each_backbone_recipe_pretrains_the_narrow_backbone_of_its_rows(name):
    """The recipe is the paper's ImageNet experiment at mini scale: crops of scenes of another seed, the
    narrow net of the rows that load it, mixup 5/3 as long as without."""
    mini = compose_row("experiment=table2/baseline", "scale=mini")
    recipe = mini.mini.pretrained[name]
    cfg = compose_row(*OmegaConf.to_container(recipe, resolve=True)["recipe"], "scale=mini")
    assert cfg.task == "classify" and cfg.data.name == "synthetic_scenes_crops"
    assert cfg.data.generator.seed != mini.data.generator.seed  # no pretraining image is a detection image
    assert cfg.model.net.width == 0.125 and cfg.trainer.devices == 1
    mixup = cfg.hydra.runtime.choices.mixup == "classification"
    assert mixup == name.endswith("mixup")
    assert cfg.trainer.epochs == mini.mini.pretrain_epochs["mixup" if mixup else "plain"]
    if name.startswith("resnet"):
        assert (cfg.model.net.depth, cfg.model.net.variant) == ((50, "v1b") if name == R50 else (101, "v1d"))
        # gamma 1, not --last-gamma's 0: a few epochs leave those near 0, and the detector's frozen BN keeps
        # them there (docs/mini_scale.md "Amendment 2")
        assert cfg.model.net.last_gamma is False


def test_a_backbone_built_by_an_earlier_recipe_stops_the_run(tmp_path):
    """A cached backbone whose stored recipe is not conf/scale/mini.yaml's now stops the run, naming both
    recipes and the folder to delete; one built by today's recipe is used as it is (not built again), even
    by a run with another display and data folder."""
    cfg = compose_row(
        "+sweep=table4", "experiment=table4/frcnn_r101-original", "scale=mini", f"data.root={tmp_path}"
    )
    path = Path(cfg.model.backbone_checkpoint)
    recipe = list(cfg.mini.pretrained[R101].recipe)
    run = run_overrides(cfg, path)
    path.parent.mkdir(parents=True)
    earlier = [o for o in recipe if o != "backbones.resnet_last_gamma=false"]  # design 1's recipe
    torch.save({"model": {}, "config": {"overrides": [*earlier, *run]}}, path)
    with pytest.raises(
        RunConflict, match=rf"built by the recipe .*now .*resnet_last_gamma=false.*delete {path.parent}"
    ):
        ensure_pretrained(cfg)
    moved = ("trainer.progress=", "data.root=")  # another display, the data set copied elsewhere
    elsewhere = [f"{o.split('=')[0]}=elsewhere" if o.startswith(moved) else o for o in run]
    torch.save({"model": {}, "config": {"overrides": [*recipe, *elsewhere]}}, path)  # how, not what
    built = path.stat().st_mtime_ns
    ensure_pretrained(cfg)
    assert path.stat().st_mtime_ns == built


def test_a_mini_row_builds_its_backbone_once_and_loads_it(make_cfg, cache_dir):
    """The first mini run pretrains its backbone into the cache (task=classify, the recipe); the detector
    starts from those weights; a second row finds the file and does not build it again."""
    first = make_cfg("experiment=table2/baseline", "scale=mini", *TINY_MINI, "trainer.epochs=1")
    path = Path(OmegaConf.to_container(first, resolve=True)["model"]["backbone_checkpoint"])
    assert path.is_relative_to(cache_dir)
    metrics = train(first)
    assert path.is_file() and metrics["map"] is not None
    pretrained = torch.load(path, map_location="cpu", weights_only=True)
    assert pretrained["config"]["task"] == "classify"
    assert pretrained["config"]["trainer"]["progress"] is False  # the detection run's display, inherited
    detector = build_model(first, num_classes=6, device=torch.device("cpu"))  # as the run starts
    backbone = detector.net.backbone.state_dict()
    assert backbone and all(torch.equal(v, pretrained["model"][f"backbone.{k}"]) for k, v in backbone.items())
    built = path.stat().st_mtime_ns
    second_dir = Path(first.trainer.output_dir).with_name("second")
    row = ("experiment=table2/no_aug", "scale=mini", *TINY_MINI, "trainer.epochs=1")
    second = make_cfg(*row, output_dir=second_dir)
    train(second)
    assert path.stat().st_mtime_ns == built


def test_the_mechanism_checks_score_rows_on_their_sizes_splits_and_calibration(make_cfg, tmp_path):
    """scripts/mini_mechanisms.py on one tiny mini run standing for every row it reads (so every
    difference is exactly 0, [0, 0]): random shapes evaluated at three test sizes, mixup on the split ooc
    (other images than val), label smoothing's calibration error; each with its figure."""
    import importlib.util
    import shutil

    from tests.helpers import SCRIPTS

    run = tmp_path / "one"
    ooc = "++data.generator.num_ooc=6"  # the scenes out of context of this tiny data set
    train(make_cfg("experiment=table2/baseline", "scale=mini", *TINY_MINI, ooc, output_dir=run))
    runs = tmp_path / "multirun" / "table2-mini"
    for row in ("syncbn", "random_shapes", "cosine", "smoothing", "mixup"):
        shutil.copytree(run, runs / row / "seed0")
    spec = importlib.util.spec_from_file_location("mini_mechanisms", SCRIPTS / "mini_mechanisms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = tmp_path / "figures"
    only = ["--only", "random_shapes", "mixup", "smoothing"]  # sync BN trains: tests/e2e/test_distributed.py
    (runs / "mechanisms.json").write_text(json.dumps({"syncbn": {"kept": True}}))  # an earlier --only syncbn
    results = module.main(["--runs", str(runs), "--out", str(figures), *only])
    assert sorted(p.name for p in figures.glob("*.png")) == [
        "mechanism_mixup_ooc.png",
        "mechanism_random_shapes.png",
        "mechanism_smoothing_calibration.png",
    ]
    for size in module.SIZES:  # one checkpoint per size, scored at that size
        assert (runs / "random_shapes" / "seed0" / f"eval-size{size}" / "eval.json").is_file()
        assert results["random_shapes"][size]["+ random training shapes"]["vs_reference"] == [0.0, 0.0]
    ooc = json.loads((runs / "mixup" / "seed0" / "eval-ooc" / "eval.json").read_text())
    assert ooc["val_images"] == 6 and results["mixup"]["ooc"]["+ mixup"]["vs_reference"] == [0.0, 0.0]
    assert results["mixup"]["shift"] == {"mean": 0.0, "interval": [0.0, 0.0]}  # mixup's gain out of context
    rows = ("+ cosine lr schedule", "+ class label smoothing")
    eces = [results["smoothing"][row]["mean_ece"] for row in rows]
    assert eces[0] == eces[1] and 0 <= eces[0] <= 1
    for row in rows:  # per score band, how many false positives name a class absent from their image
        shares = results["smoothing"][row]["absent_class_share_per_band"]
        assert len(shares) == 3 and all(0 <= share <= 1 for share in shares)
    saved = json.loads((runs / "mechanisms.json").read_text())  # this run's checks added, the other's kept
    assert saved["syncbn"] == {"kept": True} and set(saved) == {"syncbn", *results}

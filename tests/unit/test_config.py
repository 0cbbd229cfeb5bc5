"""Every option of every config group composes and builds; the VOC path trains on real XML fixtures."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from bof.config import CONFIG_DIR
from bof.engine.build_model import build_model
from bof.engine.optim import param_groups
from bof.engine.run_log import TRICK_GROUPS
from bof.engine.run_setup import build_tricks
from bof.models.classifiers import build_classifier
from bof.train import train
from tests.helpers.generated import make_devkit

# the groups of conf/train.yaml's defaults; sweep and debug are appended (+), see e2e/test_sweeps.py; the
# scale and the setups it picks for each data set and model are tested row by row in e2e/test_mini_scale.py
OWN_TESTS = ("hydra", "sweep", "debug", "scale", "scale_setup")
GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name not in OWN_TESTS)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def devkit(tmp_path_factory) -> Path:
    root = make_devkit(tmp_path_factory.mktemp("VOCdevkit"))
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("000002\n")
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """The official COCO layout with one 64 x 48 image and one box per split."""
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(root / split / "1.jpg")
        instances = {
            "images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 5, 30, 20], "area": 600, "iscrowd": 0}
            ],
            "categories": [{"id": 3, "name": "car"}],
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
    return root


def test_every_group_has_options():
    tricks = {"augment", "mixup", "smoothing", "lr_schedule", "random_shapes", "syncbn"}
    assert {"data", "model", "optimizer", "experiment"} | tricks <= set(GROUPS)
    for trick in tricks - {"augment", "lr_schedule"}:
        assert "off" in options(trick), trick  # every trick can be switched off
    for group in GROUPS:
        assert options(group), group


@pytest.fixture(scope="module")
def image_folder_root(tmp_path_factory) -> Path:
    """The ImageNet layout with two classes of one 40 x 40 image each, for train and val."""
    root = tmp_path_factory.mktemp("imagenet")
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (root / split / wnid).mkdir(parents=True)
            Image.fromarray(np.full((40, 40, 3), 60, np.uint8)).save(root / split / wnid / "a.JPEG")
    return root


CLASSIFICATION_DATA = ("imagenet", "synthetic_cls")
# the paper's YOLOv3 experiments require a pretrained Darknet-53 (tests/unit/models/test_backbone.py);
# here: from scratch
FROM_SCRATCH = {e: ["model.backbone_checkpoint=none"] for e in ("yolov3_voc", "yolov3_coco")}


@pytest.mark.parametrize("experiment", options("experiment"))
@pytest.mark.parametrize("schedule", options("lr_schedule"))
def test_every_experiment_takes_every_lr_schedule(make_cfg, experiment, schedule):
    """An experiment's decay epochs live in lr_decay, read by the step schedule only: both compose."""
    cfg = make_cfg(f"experiment={experiment}", f"lr_schedule={schedule}")
    built = instantiate(cfg.lr_schedule)
    assert built.describe(cfg.trainer.epochs).startswith(schedule)
    assert 0.0 <= built.factor(100, 10, cfg.trainer.epochs) <= 1.0


def test_yolov3_on_coco_scores_what_gluoncvs_coco_metric_scored(make_cfg):
    """GluonCV's COCODetectionMetric drops detections under 0.05 (docs/fidelity.md "Evaluation"), also
    in the COCO miniature (its scenes in the COCO layout); VOC keeps the net's 0.01."""
    coco = make_cfg("experiment=yolov3_coco", *FROM_SCRATCH["yolov3_coco"])
    mini_coco = make_cfg("experiment=yolov3_coco", "scale=mini")
    assert instantiate(coco.model.postprocess).score_thresh == 0.05
    assert instantiate(mini_coco.model.postprocess).score_thresh == 0.05
    assert instantiate(make_cfg("experiment=yolov3_voc").model.postprocess).score_thresh == 0.01


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_builds(make_cfg, devkit, coco_root, image_folder_root, group, option):
    roots = {
        "voc": devkit,
        "yolov3_voc": devkit,
        "faster_rcnn_r50_voc": devkit,
        "coco": coco_root,
        "yolov3_coco": coco_root,
        "faster_rcnn_r50_coco": coco_root,
        "faster_rcnn_r101_coco": coco_root,
        "imagenet": image_folder_root,
    }
    roots |= {"darknet53_imagenet": image_folder_root, "resnet101_imagenet": image_folder_root}
    cfg = make_cfg(
        f"{group}={option}",
        f"++data.root={roots[option]}" if option in roots else "seed=0",
        *FROM_SCRATCH.get(option, []),
    )
    if cfg.task == "classify" or option in CLASSIFICATION_DATA:  # ImageFolder + the backbone's classifier
        train_set = instantiate(cfg.data.train)
        classifier = build_classifier(cfg.model.net, len(train_set.classes))
        assert classifier(torch.zeros(2, 3, 32, 32)).shape == (2, len(train_set.classes))
        return
    train_set = instantiate(cfg.data.train)
    num_classes = len(train_set.class_names)
    tricks = build_tricks(cfg)
    if group in TRICK_GROUPS and option != "off":
        assert getattr(tricks, group) is not None
    image, target = train_set[0]
    augmented, _ = tricks.augment(image, {**target, "weights": torch.ones(len(target["boxes"]))}, 64)
    assert augmented.shape == (3, 64, 64)
    model = build_model(cfg, num_classes, torch.device("cpu"), smoothing=tricks.smoothing)
    optimizer = instantiate(cfg.optimizer, _partial_=True)(param_groups(model, cfg.optimizer.weight_decay))
    schedule = instantiate(cfg.lr_schedule)
    assert 0.0 <= schedule.factor(5, 10, cfg.trainer.epochs) <= 1.0
    size = cfg.model.train_size or 64
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([0])}]
    # one interface: losses in training, one detection dict per image in eval
    images = torch.zeros(1, 3, size, size) if cfg.model.train_size else [torch.zeros(3, size, size)]
    assert sum(v for k, v in model(images, targets).items() if k != "loss").isfinite()
    assert len(model.eval()(images)) == 1 and optimizer.param_groups


def test_yolov3_voc_trains_on_the_real_xml_fixtures(make_cfg, devkit, tmp_path):
    scratch = FROM_SCRATCH["yolov3_voc"]
    cfg = make_cfg("experiment=yolov3_voc", f"data.root={devkit}", "trainer.epochs=1", *scratch)
    metrics = train(cfg)
    assert len(metrics["ap"]) == 20 and 0.0 <= metrics["map"] <= 1.0
    assert (tmp_path / "run" / "results" / "comp4_det_test_train.txt").is_file()  # 000002 holds a train


def test_slurm_launcher_config_is_a_submitit_launcher():
    launcher = OmegaConf.load(Path(CONFIG_DIR) / "hydra" / "launcher" / "slurm.yaml")
    assert launcher.defaults == ["submitit_slurm"]
    assert launcher.tasks_per_node == launcher.gpus_per_node  # one process per GPU

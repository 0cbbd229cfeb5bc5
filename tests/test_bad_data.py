"""Bad input, one test per case: with data.on_bad_sample=error a message naming the file and the
problem; with skip a warning, a count, and training goes on. Plus non-finite losses and config mistakes."""

import json
import logging
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException

import bof
from bof.config import CONFIG_DIR, VALUE_RULES
from bof.data.bad_samples import BadSampleError
from bof.data.coco import COCODetection
from bof.data.loader import KeyedDataset, SampleKey
from bof.data.voc import VOCDetection
from bof.train import run_job, train
from bof.tricks.augment import Resize
from bof.tricks.label_smoothing import LabelSmoothing
from bof.utils.boxes import clip_boxes
from tests.test_voc_dataset import make_devkit

SETS = [["VOC2007", "trainval"], ["VOC2012", "trainval"]]


@pytest.fixture
def devkit(tmp_path):
    return make_devkit(tmp_path / "VOCdevkit")


def break_voc(devkit, case: str) -> str:
    """Damages one image of the devkit; returns the file name the message must mention."""
    year = devkit / "VOC2012"
    if case == "missing image":
        (year / "JPEGImages" / "2007_000032.jpg").unlink()
        return "2007_000032.jpg"
    if case == "malformed XML":
        (year / "Annotations" / "2007_000032.xml").write_text("<annotation><size>")
        return "2007_000032.xml"
    if case == "unknown class":
        path = year / "Annotations" / "2007_000032.xml"
        path.write_text(re.sub(r"<name>\w+</name>", "<name>unicorn</name>", path.read_text(), count=1))
        return "2007_000032.xml"
    if case == "inverted box":
        path = year / "Annotations" / "2007_000032.xml"
        path.write_text(re.sub(r"<xmax>\d+</xmax>", "<xmax>0</xmax>", path.read_text(), count=1))
        return "2007_000032.xml"
    if case == "no objects":
        path = year / "Annotations" / "2007_000032.xml"
        path.write_text(re.sub(r"<object>.*?</object>", "", path.read_text(), flags=re.S))
        return "2007_000032.xml"
    raise ValueError(case)


CASES = ["missing image", "malformed XML", "unknown class", "inverted box", "no objects"]


@pytest.mark.parametrize("case", CASES)
def test_bad_voc_sample_errors_naming_the_file(devkit, case):
    name = break_voc(devkit, case)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(name)):
        VOCDetection(devkit, SETS, on_bad_sample="error", skip_empty=True)


@pytest.mark.parametrize("case", CASES)
def test_bad_voc_sample_is_skipped_logged_and_counted(devkit, case, caplog):
    name = break_voc(devkit, case)
    with caplog.at_level(logging.WARNING):
        dataset = VOCDetection(devkit, SETS, on_bad_sample="skip", skip_empty=True)
    assert len(dataset) == 4 and "2007_000032" not in dataset.image_ids
    assert len(dataset.skipped) == 1 and name in dataset.skipped[0] and name in caplog.text


def test_empty_split_is_an_error_naming_the_file(devkit):
    (devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("")
    with pytest.raises(ValueError, match=r"trainval.txt: empty image set"):
        VOCDetection(devkit, SETS, on_bad_sample="skip")


def test_corrupt_image_found_while_training(devkit, caplog):
    path = devkit / "VOC2012" / "JPEGImages" / "2007_000032.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated JPEG
    strict = VOCDetection(devkit, SETS)
    with pytest.raises(BadSampleError, match="2007_000032.jpg: cannot decode"):
        KeyedDataset(strict, Resize())[SampleKey(1, 64, 0)]
    lenient = KeyedDataset(VOCDetection(devkit, SETS, on_bad_sample="skip"), Resize())
    with caplog.at_level(logging.WARNING):
        image, target = lenient[SampleKey(1, 64, 0)]
    assert target["skipped"] == 1 and target["image_id"] == "2007_000170"  # the next image instead
    assert "2007_000032.jpg" in caplog.text and image.shape == (3, 64, 64)


def test_boxes_outside_the_image_are_clipped_and_degenerate_ones_dropped():
    target = {
        "boxes": torch.tensor([[-5.0, 2.0, 20.0, 30.0], [50.0, 50.0, 80.0, 90.0], [70.0, 10.0, 90.0, 20.0]]),
        "labels": torch.tensor([1, 2, 3]),
        "difficult": torch.tensor([False, True, False]),
    }
    clipped = clip_boxes(target, height=60, width=64)
    assert clipped["boxes"].tolist() == [[0.0, 2.0, 20.0, 30.0], [50.0, 50.0, 64.0, 60.0]]
    assert clipped["labels"].tolist() == [1, 2] and clipped["difficult"].tolist() == [False, True]


def test_voc_training_targets_stay_inside_the_image(devkit):
    path = devkit / "VOC2012" / "Annotations" / "2007_000032.xml"
    path.write_text(re.sub(r"<xmax>\d+</xmax>", "<xmax>9999</xmax>", path.read_text(), count=1))
    image, target = VOCDetection(devkit, SETS)[1]
    assert (target["boxes"][:, 2] <= image.shape[2]).all()


def coco_file(tmp_path, annotations):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_malformed_coco_json_names_the_file(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match="instances.json"):
        COCODetection(tmp_path, annotation_file=path, image_dir=tmp_path)


def test_coco_unknown_category_errors_or_is_skipped(tmp_path):
    path = coco_file(
        tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    )
    with pytest.raises(BadSampleError, match=r"instances.json: image 1: .*unknown category 7"):
        COCODetection(tmp_path, train=False, annotation_file=path, image_dir=tmp_path)
    with pytest.raises(ValueError, match="no usable images"):  # the only image is skipped
        COCODetection(tmp_path, train=False, annotation_file=path, image_dir=tmp_path, on_bad_sample="skip")


def test_unknown_policy_names_the_key(devkit):
    with pytest.raises(ValueError, match="data.on_bad_sample"):
        VOCDetection(devkit, SETS, on_bad_sample="ignore")


def test_skipped_samples_reach_the_epoch_log_and_metrics(make_cfg, tmp_path, caplog, cache_dir):
    cfg = make_cfg("data.on_bad_sample=skip", "trainer.epochs=1")
    from hydra.utils import instantiate

    train_set = instantiate(cfg.data.train)
    victim = train_set.image_path(3)
    original = victim.read_bytes()
    victim.write_bytes(original[:100])
    try:
        with caplog.at_level(logging.INFO):
            metrics = train(cfg)
    finally:
        victim.write_bytes(original)  # the cache is shared by the session
    assert metrics["bad_samples"]["replaced_in_training"] >= 1
    assert "replaced in training" in caplog.text and victim.name in caplog.text
    assert (
        json.loads((tmp_path / "run" / "metrics.json").read_text())["bad_samples"]["replaced_in_training"]
        >= 1
    )


def test_nonfinite_loss_stops_naming_the_iteration_and_keeps_the_checkpoint(make_cfg, tmp_path, monkeypatch):
    """NaN images make a NaN loss: the step is never applied (skipped on the device by the fused SGD),
    then either training stops naming the iteration or, with skip_nonfinite, goes on and counts it."""
    import bof.engine.loops

    train(make_cfg("trainer.epochs=1"))
    good = (tmp_path / "run" / "last.pt").read_bytes()
    real_prepare = bof.engine.loops.prepare_batch
    calls = iter(range(100))

    def poisoned(images, targets, *args):  # every second training batch (evaluation passes no targets)
        images, targets = real_prepare(images, targets, *args)
        return (images * float("nan") if targets and next(calls) % 2 else images), targets

    monkeypatch.setattr(bof.engine.loops, "prepare_batch", poisoned)
    with pytest.raises(FloatingPointError, match=r"epoch 2 iteration 1 .*last good checkpoint"):
        train(make_cfg("trainer.epochs=2", "trainer.resume=true"))
    assert (tmp_path / "run" / "last.pt").read_bytes() == good
    calls = iter(range(100))
    metrics = train(make_cfg("trainer.epochs=2", "trainer.resume=true", "trainer.skip_nonfinite=true",
                             "trainer.log_interval=3"))  # fmt: skip
    assert metrics["nonfinite_steps_skipped"] == 2  # 4 iterations, every second one poisoned
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(w.isfinite().all() for w in weights.values() if w.is_floating_point())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: must be a number > 0"),
        ("mixup=beta15", "mixup.alpha=0: must be a number > 0"),
        ("trainer.batch_size=0", "trainer.batch_size must be >= 1"),
        ("trainer.epochs=0", "trainer.epochs must be >= 1"),
    ],
)
def test_config_mistakes_fail_at_start_naming_the_key(make_cfg, override, message):
    extra = ["mixup.alpha=0"] if override == "mixup=beta15" else []
    with pytest.raises((ValueError, InstantiationException), match=re.escape(message)):
        train(make_cfg(override, *extra))


def test_unknown_group_option_names_it():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="mixup.*beta99|beta99"):
            compose("train", overrides=["mixup=beta99"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.train_size=100"],
            "model.train_size=100: YOLOv3 takes square inputs of a multiple of 32 (e.g. 96)",
        ),
        (["model.val_size=0"], "model.val_size=0: YOLOv3 takes square inputs of a multiple of 32"),
        (["random_shapes=on", "model.random_shape_range=[64,100]"], "model.random_shape_range[1]=100"),
        (["random_shapes=on", "random_shapes.step=0"], "min_size and step must be positive multiples of 32"),
    ],
)
def test_sizes_that_cannot_work_fail_in_the_dry_run_naming_the_key(make_cfg, overrides, message):
    with pytest.raises((ValueError, InstantiationException), match=re.escape(message)):
        train(make_cfg(*overrides, "trainer.dry_run=true"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=abc"], "optimizer.lr='abc': must be a number > 0"),
        (["optimizer.momentum=1.5"], "optimizer.momentum=1.5: must be a number in [0, 1)"),
        (["lr_schedule.warmup_epochs=-1"], "lr_schedule.warmup_epochs=-1: must be a number of epochs >= 0"),
        (["smoothing=on", "smoothing.epsilon=2"], "smoothing.epsilon=2: must be a number in [0, 0.5)"),
        (["mixup=beta15", "mixup.max_off_fraction=2"], "mixup.max_off_fraction=2: must be a fraction"),
        (["augment=yolo", "augment.max_expand=0.5"], "augment.max_expand=0.5: must be a canvas side ratio"),
        (["model.net.width=0"], "model.net.width=0: must be a channel multiplier > 0"),
        (["data.max_image_pixels=1.5"], "data.max_image_pixels=1.5: must be a whole number of pixels"),
        (["model.net.objectness_prior=1"], "model.net.objectness_prior=1: must be in (0, 1)"),
        (["augment=none", "augment.interpolation=cubic"], "augment.interpolation='cubic': must be one of"),
        (["augment=yolo", "+augment.jitter=1"], "augment: YOLOAugment.__init__() got an unexpected keyword"),
    ],
)
def test_values_out_of_range_fail_in_the_dry_run_naming_the_key(make_cfg, overrides, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        train(make_cfg(*overrides, "trainer.dry_run=true"))


def test_a_key_has_one_rule_in_its_constructor_which_start_up_applies(make_cfg, tmp_path):
    """smoothing.epsilon was [0, 1) at start-up and [0, 0.5) in LabelSmoothing: 0.6 passed the one and
    failed the other. Now each key has one rule, in the constructor that takes it (or its ``check``), and
    start-up applies that rule before anything is read or generated."""
    message = "smoothing.epsilon=0.6: must be a number in [0, 0.5)"
    with pytest.raises(ValueError, match=re.escape(message)):
        LabelSmoothing(epsilon=0.6)
    with pytest.raises(ValueError, match=re.escape(message)):
        train(make_cfg("smoothing=on", "smoothing.epsilon=0.6", "trainer.dry_run=true"))
    assert LabelSmoothing(epsilon=0.49).epsilon == 0.49  # the rule's edge, the same both ways
    empty_cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=re.escape("data.max_image_pixels=0: must be")):
        train(make_cfg("data.max_image_pixels=0", f"data.root={empty_cache}", "trainer.dry_run=true"))
    assert not empty_cache.exists()  # refused before the synthetic set was generated
    # one rule per key (mixup.alpha: two classes, one rule), none of them in the start-up table, which
    # keeps only what no constructor takes
    rules, rule = defaultdict(set), re.compile(r'require\(\s*"([\w.]+)", \w+, (.+?), "([^"]*)"')
    for path in Path(bof.__file__).parent.rglob("*.py"):
        for key, test, expected in rule.findall(path.read_text()):
            rules[key].add((test, expected))
    assert len(rules) > 10 and all(len(r) == 1 for r in rules.values()), rules
    assert not set(rules) & set(VALUE_RULES), set(rules) & set(VALUE_RULES)


def test_the_config_is_checked_once_per_job(make_cfg, monkeypatch):
    """One start-up pass per job (it used to run in run_job and again when the tricks were built)."""
    calls = []

    def counted(check):
        return lambda cfg: calls.append(check(cfg))

    for module in [m for name, m in sys.modules.items() if name.startswith("bof")]:
        if hasattr(module, "check_config"):
            monkeypatch.setattr(module, "check_config", counted(module.check_config))
    assert run_job(make_cfg("trainer.dry_run=true")) is None  # a dry run has no mAP
    assert len(calls) == 1

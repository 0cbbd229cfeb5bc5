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
from hydra.errors import InstantiationException

import bof
from bof.config import VALUE_RULES
from bof.train import run_job, train
from bof.tricks.label_smoothing import LabelSmoothing


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
    metrics = train(
        make_cfg(
            "trainer.epochs=2", "trainer.resume=true", "trainer.skip_nonfinite=true", "trainer.log_interval=3"
        )
    )
    assert metrics["nonfinite_steps_skipped"] == 2  # 4 iterations, every second one poisoned
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(w.isfinite().all() for w in weights.values() if w.is_floating_point())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: must be a finite number > 0"),
        ("mixup=beta15", "mixup.alpha=0: must be a number > 0"),
        ("trainer.batch_size=0", "trainer.batch_size must be >= 1"),
        ("trainer.epochs=0", "trainer.epochs must be >= 1"),
    ],
)
def test_config_mistakes_fail_at_start_naming_the_key(make_cfg, override, message):
    extra = ["mixup.alpha=0"] if override == "mixup=beta15" else []
    with pytest.raises((ValueError, InstantiationException), match=re.escape(message)):
        train(make_cfg(override, *extra))


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
        (["optimizer.lr=abc"], "optimizer.lr='abc': must be a finite number > 0"),
        (["optimizer.lr=inf"], "optimizer.lr=inf: must be a finite number > 0"),
        (["lr_decay.milestones=[abc]"], "lr_decay.milestones[0]='abc': must be a whole epoch > 0"),
        (["lr_decay.milestones=[0,5]"], "lr_decay.milestones[0]=0: must be a whole epoch > 0"),
        (
            ["lr_decay.reference_epochs=-2"],
            "lr_decay.reference_epochs=-2: must be a whole number of epochs > 0",
        ),
        (["seed=abc"], "seed='abc': must be a whole number in [0, 2**32)"),
        (["seed=-1"], "seed=-1: must be a whole number in [0, 2**32)"),
        (["seed=1.5"], "seed=1.5: must be a whole number in [0, 2**32)"),
        (["task=segment"], "task='segment': must be one of detect, classify"),
        (
            ["eval.coco_backend=fast"],
            "eval.coco_backend='fast': must be one of pycocotools, faster_coco_eval",
        ),
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

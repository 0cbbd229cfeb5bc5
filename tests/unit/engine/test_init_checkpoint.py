"""model.init_checkpoint fills the whole detector from a trained detector's weights, or fails: a file that
initialises nothing of the model, or only part of it (a task=classify checkpoint: ``backbone.*`` where the
detector has ``net.backbone.*``), is an error naming both layouts, never "initialised"."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from bof.config import CONFIG_DIR
from bof.engine.build_model import build_model, with_detector_weights
from bof.models.classifiers import Darknet53Classifier


def tiny_detector():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["+debug=fast"])
    return build_model(cfg, 6, torch.device("cpu"))


def test_a_classifier_checkpoint_initialises_nothing_and_says_so(tmp_path):
    classifier = Darknet53Classifier(6)
    torch.save({"model": classifier.state_dict()}, tmp_path / "classify_last.pt")
    with pytest.raises(
        ValueError, match=r"does not initialise this model: 0 of its .*'backbone\.stem.*'net\.backbone"
    ):
        with_detector_weights(tiny_detector(), tmp_path / "classify_last.pt")


def test_part_of_a_detector_is_not_a_detector(tmp_path):
    model = tiny_detector()
    half = {k: v for k, v in model.state_dict().items() if k.startswith("net.backbone.")}
    torch.save({"model": half}, tmp_path / "backbone_only.pt")
    own = model.state_dict()
    unset = sum(not k.startswith("net.backbone.") and not k.endswith("num_batches_tracked") for k in own)
    with pytest.raises(
        ValueError, match=rf"{len(half)} of its {len(own)} tensors match, {unset} would stay unset"
    ):
        with_detector_weights(tiny_detector(), tmp_path / "backbone_only.pt")
    torch.save({"model": model.state_dict()}, tmp_path / "whole.pt")
    other = with_detector_weights(tiny_detector(), tmp_path / "whole.pt")
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())

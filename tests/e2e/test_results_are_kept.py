"""Never lose a result, never accept a bad number: a run stopped after its last checkpoint still gets its
numbers, a non-finite state is never saved, stale temporary files go, and annotations with numbers that
are not coordinates, ids listed twice or ids that are paths fail naming the file."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from bof.data.voc import VOC_CLASSES, VOCDetection, parse_voc_xml
from bof.engine.evaluator import VOCDatasetEvaluator
from bof.train import train
from tests.helpers import scalar_tags

XML = """<annotation><size><width>100</width><height>80</height><depth>3</depth></size>
<object><name>dog</name><difficult>{difficult}</difficult>
<bndbox><xmin>{xmin}</xmin><ymin>10</ymin><xmax>{xmax}</xmax><ymax>50</ymax></bndbox></object></annotation>"""


def test_a_run_stopped_after_its_last_checkpoint_gets_its_final_numbers(make_cfg, tmp_path):
    first = train(make_cfg())
    (tmp_path / "run" / "metrics.json").unlink()  # killed after last.pt of the final epoch
    again = train(make_cfg("trainer.resume=true"))
    assert again["map"] == pytest.approx(first["map"]) and again["ap"] == pytest.approx(first["ap"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["map"] is not None and saved["train_loss"] == first["train_loss"] is not None
    # its final evaluation, run again, is in TensorBoard once
    assert len(scalar_tags(tmp_path / "run").Scalars("val/mAP")) == 2


def test_counts_and_wall_time_cover_the_whole_run_across_a_resume(make_cfg, tmp_path):
    from hydra.utils import instantiate

    cfg = make_cfg("data.on_bad_sample=skip", "mixup=off", "trainer.epochs=1")
    victim = instantiate(cfg.data.train).image_path(3)
    original = victim.read_bytes()
    victim.write_bytes(original[:2000])  # the header is intact: replaced each time an epoch reaches it
    try:
        train(cfg)
        first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["counts"]
        resumed = train(make_cfg("data.on_bad_sample=skip", "mixup=off", "trainer.resume=true"))
    finally:
        victim.write_bytes(original)  # the cache is shared by the session
    assert first["replaced_in_training"] == 1
    assert resumed["bad_samples"]["replaced_in_training"] == 2  # both epochs, not the resumed one only
    assert resumed["wall_time_s"] > first["wall_time_s"] and len(first["images_per_s"]) == 1


@pytest.mark.parametrize("skip", [False, True])
def test_a_huge_learning_rate_never_saves_a_non_finite_state(make_cfg, tmp_path, skip):
    train(make_cfg("trainer.epochs=1"))
    good = (tmp_path / "run" / "last.pt").read_bytes()
    huge = ["trainer.epochs=3", "optimizer.lr=1e12", "trainer.grad_clip=null", "trainer.max_skipped_steps=3"]
    with pytest.raises(FloatingPointError, match="last good checkpoint"):  # a new run into the same directory
        train(make_cfg(*huge, f"trainer.skip_nonfinite={skip}"))
    assert (tmp_path / "run" / "last.pt").read_bytes() == good
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(w.isfinite().all() for w in weights.values() if w.is_floating_point())


def test_stale_temporary_files_of_a_killed_write_are_removed(make_cfg, tmp_path, caplog):
    (tmp_path / "run").mkdir()
    stale = tmp_path / "run" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.WARNING, logger="bof"):
        train(make_cfg("trainer.epochs=1"))
    assert not stale.exists() and "left by a write that was killed" in caplog.text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"xmin": "nan"}, "<xmin> is 'nan', not a pixel coordinate"),
        ({"xmax": "inf"}, "<xmax> is 'inf', not a pixel coordinate"),
        ({"xmax": "1e30"}, "<xmax> is '1e30', not a pixel coordinate"),
        ({"difficult": "abc"}, "<difficult>abc</difficult>; 0 or 1 expected"),
    ],
)
def test_numbers_that_are_not_coordinates_fail_naming_the_file(tmp_path, values, message):
    path = tmp_path / "000001.xml"
    path.write_text(XML.format(**{"xmin": "10", "xmax": "60", "difficult": "0", **values}))
    with pytest.raises(ValueError, match=rf"000001.xml: .*{message}".replace("(", r"\(").replace(")", r"\)")):
        parse_voc_xml(path, VOC_CLASSES)


def devkit_with_ids(root, ids: list[str]):
    year = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    (year / "Annotations" / "000001.xml").write_text(XML.format(xmin=60, xmax=400, difficult=0))
    Image.new("RGB", (100, 80)).save(year / "JPEGImages" / "000001.jpg")
    (year / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids) + "\n")
    return VOCDetection(root, [("VOC2007", "val")])


@pytest.mark.parametrize(
    ("ids", "message"),
    [(["000001", "000001"], "listed more than once: \\['000001'\\]"), (["../../etc/passwd"], "not paths")],
)
def test_image_sets_with_an_id_twice_or_a_path_fail_naming_the_file(tmp_path, ids, message):
    with pytest.raises(ValueError, match=f"val.txt: image ids .*{message}"):
        devkit_with_ids(tmp_path, ids)


def test_validation_boxes_are_clipped_to_the_image_as_training_boxes_are(tmp_path):
    dataset = devkit_with_ids(tmp_path, ["000001"])  # the dog's box runs to x = 400 in a 100 px image
    evaluator = VOCDatasetEvaluator(dataset)
    # a perfect detector sees the dog as training showed it: clipped to the image
    evaluator.add_detections(
        "000001",
        torch.tensor([[59.0, 9.0, 100.0, 50.0]]),
        torch.tensor([0.9]),
        torch.tensor([VOC_CLASSES.index("dog")]),
    )
    assert evaluator.compute()["ap"]["dog"] == pytest.approx(1.0)
    assert np.isnan(evaluator.compute()["ap"]["cat"])


def test_checkpoint_load_errors_name_the_file_and_the_way_on(make_cfg, tmp_path):
    train(make_cfg("trainer.epochs=1"))
    with pytest.raises(
        ValueError, match=r"last.pt does not fit this model .*model.net.width: 0.0625 -> 0.125"
    ):
        train(make_cfg("trainer.epochs=2", "trainer.resume=true", "model.net.width=0.125"))
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match=r"last.pt is not a readable torch checkpoint .*Delete it.*best.pt"):
        train(make_cfg("trainer.epochs=2", "trainer.resume=true"))

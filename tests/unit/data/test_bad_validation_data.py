"""A bad validation image is an error before training, or is left out of the evaluation with its ground
truth and counted: never replaced by another image (which would be scored twice while the bad one's
ground truth stayed, so a perfect detector would lose points)."""

import hashlib

import numpy as np
import pytest
import torch

from bof.data.bad_samples import BadSampleError
from bof.data.coco import COCODetection
from bof.data.loader import build_data_loader
from bof.data.voc import VOCDetection
from bof.engine.evaluator import build_evaluator
from bof.engine.loops import evaluate, prepare_batch
from bof.evaluation.coco_eval import COCOEvaluator
from bof.tricks.augment import Resize
from bof.tricks.random_shapes import FixedShape
from tests.helpers.generated import make_coco, make_vocdevkit

CPU = torch.device("cpu")


class PerfectDetector(torch.nn.Module):
    """Answers each input image with its own ground truth (looked up by the image's bytes)."""

    def __init__(self, answers: dict):
        super().__init__()
        self.answers = answers

    def forward(self, images):
        return [self.answers[key(image)] for image in images]


def key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


def perfect_detector(loader) -> PerfectDetector:
    answers = {}
    for images_u8, targets, _ in loader:
        images, _ = prepare_batch(images_u8, [], CPU, False)
        for image, target in zip(images, targets, strict=True):
            n = len(target["labels"])
            answers[key(image)] = {
                "boxes": target["boxes"],
                "scores": torch.ones(n),
                "labels": target["labels"],
            }
    return PerfectDetector(answers)


def validation(devkit, policy: str):
    val_set = VOCDetection(devkit, [["VOC2007", "test"]], on_bad_sample=policy, check_images=True)
    loader = build_data_loader(
        val_set, Resize(), 2, FixedShape(96), shuffle=False, seed=0, num_workers=0, drop_last=False
    )
    return val_set, loader


def test_an_image_that_fails_to_decode_in_evaluation_is_left_out_with_its_ground_truth(tmp_path):
    devkit = make_vocdevkit(tmp_path, images_per_set=5, width=160, height=120)
    val_set, loader = validation(devkit, "skip")
    model = perfect_detector(loader)
    victim = val_set.image_path(1)
    victim.write_bytes(victim.read_bytes()[:2000])  # the header is intact, the pixels are not
    metrics, _, _ = evaluate(model, loader, build_evaluator(val_set), CPU, val_set.class_names)
    assert metrics["map"] == pytest.approx(1.0)  # replaced by the next image (scored twice), it was below 1
    assert metrics["dropped_images"] == 1
    with pytest.raises(BadSampleError, match=f"{victim.name}: cannot decode"):
        evaluate(model, validation(devkit, "error")[1], build_evaluator(val_set), CPU, val_set.class_names)


def test_coco_evaluation_covers_the_images_kept_less_those_dropped(tmp_path):
    coco = make_coco(tmp_path, images_per_split=2, width=160, height=120)
    val_set = COCODetection(coco, "val2017", train=False, check_images=True)
    first, second = val_set.image_ids
    evaluator = build_evaluator(val_set)
    assert isinstance(evaluator, COCOEvaluator)
    _, target = val_set[0]  # perfect detections of the first image only
    evaluator.add_detections(first, target["boxes"], np.ones(len(target["labels"])), target["labels"])
    assert evaluator.compute()["map"] < 0.9  # the second image's objects are missed
    evaluator.exclude([second])
    assert evaluator.compute()["map"] == pytest.approx(1.0)


def test_an_annotation_size_that_is_not_the_images_is_counted_and_the_images_is_used(tmp_path, caplog):
    """An XML <size> with width and height swapped (EXIF-rotating labelling tools) or 0: the evaluator
    would clip the ground truth to it while detections live in the decoded image (a perfect detector at
    0.82-0.88); the image's own size is used, and the mismatches are counted and said."""
    devkit = make_vocdevkit(tmp_path, images_per_set=4, width=160, height=120)
    for i, (w, h) in enumerate([(120, 160), (0, 0)]):
        image_id = (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()[i]
        xml = devkit / "VOC2007" / "Annotations" / f"{image_id}.xml"
        text = xml.read_text().replace("<width>160</width>", f"<width>{w}</width>")
        xml.write_text(text.replace("<height>120</height>", f"<height>{h}</height>"))
    with caplog.at_level("WARNING"):
        val_set, loader = validation(devkit, "error")
    assert len(val_set.size_mismatches) == 2 and "<size> 120 x 160, image 160 x 120" in caplog.text
    assert all((a.width, a.height) == (160, 120) for a in map(val_set.get_annotation, range(len(val_set))))
    metrics, _, _ = evaluate(
        perfect_detector(loader), loader, build_evaluator(val_set), CPU, val_set.class_names
    )
    assert metrics["map"] == pytest.approx(1.0)

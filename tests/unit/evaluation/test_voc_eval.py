"""Pascal VOC evaluation: the devkit's matching rules, both AP variants, result files and the CLI."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bof.engine.evaluator import build_voc_evaluator
from bof.evaluation import voc_matching
from bof.evaluation.voc_eval import VOCEvaluator
from bof.evaluation.voc_matching import voc_ap, voc_iou
from bof.evaluation.voc_results import read_result_files
from bof.evaluation.weighted_ap import metric_under_weights
from tests.helpers import FIXTURES, REPO

VOC_XML = FIXTURES / "voc_xml"
VOC = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person "
    "pottedplant sheep sofa train tvmonitor"
).split()


def _load_script():
    spec = importlib.util.spec_from_file_location("eval_voc", REPO / "scripts" / "eval_voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------
# A literal port of py-faster-rcnn's voc_eval.py / voc_ap (loops and all), the reference for the
# vectorised implementation. Only change: a stable argsort, so that score ties have a defined order.
# ---------------------------------------------------------------------------------------------------
def devkit_voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def devkit_voc_eval(class_recs, detections, ovthresh, use_07_metric):
    """class_recs: {image_id: (bbox [N,4], difficult [N])}; detections: [(image_id, score, box)]."""
    recs = {k: {"bbox": b, "difficult": d, "det": [False] * len(b)} for k, (b, d) in class_recs.items()}
    npos = sum(int((~d).sum()) for _, d in class_recs.values())
    image_ids = [x[0] for x in detections]
    confidence = np.array([x[1] for x in detections], dtype=float)
    BB = np.array([x[2] for x in detections], dtype=float).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = (
                (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0)
                - inters
            )
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax >= ovthresh:  # VOCevaldet.m
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return devkit_voc_ap(rec, prec, use_07_metric)


def single_class(gt_boxes, dets, difficult=None, use_07_metric=True, **kw) -> dict:
    """One image "img", one class "c": GT boxes (+ difficult flags) and (score, box) detections."""
    ev = VOCEvaluator(["c"], use_07_metric=use_07_metric, **kw)
    gt_boxes = np.asarray(gt_boxes, dtype=float).reshape(-1, 4)
    ev.add_ground_truth("img", gt_boxes, np.zeros(len(gt_boxes), int), difficult)
    if dets:
        ev.add_detections("img", [b for _, b in dets], [s for s, _ in dets], np.zeros(len(dets), int))
    return ev.compute()


# ---------------------------------------------------------------------------------------------------
# matching rules
# ---------------------------------------------------------------------------------------------------
def test_best_gt_difficult_is_ignored_without_fallback_to_second_best():
    difficult_gt, easy_gt = [1, 1, 100, 100], [1, 1, 100, 90]
    det = [1, 1, 100, 100]  # IoU 1.0 with the difficult GT, 0.9 with the non-difficult one
    assert voc_iou(np.array(det, float), np.array(easy_gt, float)) == pytest.approx(0.9)
    res = single_class([difficult_gt, easy_gt], [(0.9, det)], difficult=[True, False])
    # No fall-back: the detection is ignored instead of claiming the second-best GT.
    assert res["num_positives"]["c"] == 1
    assert res["ap"]["c"] == 0.0
    assert (
        devkit_voc_eval(
            {"img": (np.array([difficult_gt, easy_gt]), np.array([True, False]))},
            [("img", 0.9, det)],
            0.5,
            True,
        )
        == 0.0
    )


def test_ignored_detection_is_not_a_false_positive():
    difficult_gt, easy_gt = [1, 1, 100, 100], [201, 1, 300, 100]
    # 0.9 matches the difficult GT (ignored), 0.8 the easy one (TP). Were the ignored one a FP, the TP
    # would come at precision 1/2 and the 11-point AP would be 0.5.
    res = single_class([difficult_gt, easy_gt], [(0.9, difficult_gt), (0.8, easy_gt)], difficult=[1, 0])
    assert res["ap"]["c"] == pytest.approx(1.0)


def test_duplicate_detection_higher_score_is_tp_lower_is_fp():
    gt, other = [1, 1, 100, 100], [301, 1, 400, 100]  # `other` is never detected: npos = 2
    loose = [1, 1, 100, 142]  # IoU 100/142 ~ 0.70 with gt
    # The higher-scored (looser) box claims the GT; the exact lower-scored box is the duplicate FP:
    # tp = [1, 0], precision [1, 1/2], recall [1/2, 1/2] -> thresholds 0 .. 0.5 reach precision 1.
    res = single_class([gt, other], [(0.9, loose), (0.8, gt)])
    assert res["ap"]["c"] == pytest.approx(6 / 11)
    # Swapping the scores swaps which one is the TP, but the first detection is still the TP.
    assert single_class([gt, other], [(0.8, loose), (0.9, gt)])["ap"]["c"] == pytest.approx(6 / 11)
    # Sanity check of the observable: a FP ranked first gives precision 1/2 at the TP -> 6 * 0.5 / 11.
    res = single_class([gt, other], [(0.9, [501, 1, 600, 100]), (0.8, gt)])
    assert res["ap"]["c"] == pytest.approx(3 / 11)


def test_iou_exactly_half_is_a_match():
    gt = [1, 1, 10, 20]  # 10 x 20 pixels with the +1 convention
    det = [1, 1, 10, 10]  # 10 x 10, inside it: IoU = 100 / 200
    iou = voc_iou(np.array(det, float), np.array([gt], float))
    assert iou[0] == 0.5  # exactly, in floating point
    assert single_class([gt], [(0.9, det)])["ap"]["c"] == pytest.approx(1.0)  # devkit >=: a match
    # One pixel row less of overlap -> IoU 100/210 < 0.5 -> FP.
    assert single_class([[1, 1, 10, 21]], [(0.9, det)])["ap"]["c"] == 0.0
    # Without the +1 (plain xyxy) the IoU would be 81/171, not 0.5: the convention matters.
    assert (9 * 9) / (9 * 19) != 0.5


def test_score_ties_keep_insertion_order():
    gt = [1, 1, 100, 100]
    fp_box = [501, 1, 600, 100]
    # Equal scores: stable sort keeps the order the detections were added in.
    first_tp = single_class([gt], [(0.5, gt), (0.5, fp_box)])["ap"]["c"]
    first_fp = single_class([gt], [(0.5, fp_box), (0.5, gt)])["ap"]["c"]
    assert first_tp == pytest.approx(1.0)
    assert first_fp == pytest.approx(0.5)


def test_detection_on_image_without_gt_of_its_class_is_fp():
    ev = VOCEvaluator(["a", "b"])
    ev.add_ground_truth("1", [[1, 1, 50, 50]], [0], [False])
    ev.add_ground_truth("2", [[1, 1, 50, 50]], [1], [False])  # no "a" object here
    ev.add_detections("2", [[1, 1, 50, 50]], [0.9], [0])  # "a" on image 2: FP
    ev.add_detections("1", [[1, 1, 50, 50]], [0.8], [0])  # TP at precision 1/2
    res = ev.compute()
    assert res["ap"]["a"] == pytest.approx(0.5)
    assert res["ap"]["b"] == 0.0  # positives but no detections


def test_detection_on_unregistered_image_raises():
    ev = VOCEvaluator(["a"])
    ev.add_ground_truth("1", [[1, 1, 50, 50]], [0], [False])
    ev.add_detections("nope", [[1, 1, 50, 50]], [0.9], [0])
    with pytest.raises(ValueError, match="nope"):
        ev.compute()


def test_input_validation():
    ev = VOCEvaluator(["a"])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        ev.add_ground_truth("1", [[1, 1, 50]], [0], [False])
    with pytest.raises(ValueError, match="labels"):
        ev.add_detections("1", [[1, 1, 5, 5]], [0.5], [3])
    with pytest.raises(ValueError, match="NaN"):
        ev.add_detections("1", [[1, 1, 5, 5]], [float("nan")], [0])
    ev.add_ground_truth("1", np.zeros((0, 4)), [], [])
    with pytest.raises(ValueError, match="already"):
        ev.add_ground_truth("1", np.zeros((0, 4)), [], [])


def test_torch_tensors_are_accepted():
    ev = VOCEvaluator(["a", "b"])
    ev.add_ground_truth(
        "x",
        torch.tensor([[1.0, 1, 50, 50], [60, 60, 90, 90]]),
        torch.tensor([0, 1]),
        torch.tensor([False, False]),
    )
    ev.add_detections("x", torch.tensor([[1.0, 1, 50, 50]]), torch.tensor([0.7]), torch.tensor([1]))
    ev.add_detections("x", torch.tensor([[60.0, 60, 90, 90]]), torch.tensor([0.6]), torch.tensor([1]))
    res = ev.compute()
    assert res["ap"] == {"a": 0.0, "b": pytest.approx(0.5)}  # "b": FP then TP


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07_metric", [True, False])
def test_matches_literal_devkit_port_on_random_data(seed, use_07_metric, monkeypatch):
    """Crowded random scenes on a coarse grid (ties in IoU and score, duplicates, difficult boxes,
    IoU exactly 0.5 possible): every class AP must equal the devkit's loop bit for bit."""
    if seed % 2:  # tiny IoU chunks: a few detections per numpy call, across image boundaries
        monkeypatch.setattr(voc_matching, "_IOU_CHUNK", 13)
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    ev = VOCEvaluator(classes, use_07_metric=use_07_metric)
    gt_per_class = {c: {} for c in range(3)}
    dets_per_class = {c: [] for c in range(3)}

    def random_boxes(n):
        xy = rng.integers(1, 8, size=(n, 2)) * 5
        wh = rng.integers(0, 6, size=(n, 2)) * 5 + 4
        return np.concatenate([xy, xy + wh], axis=1).astype(float)

    for i in range(12):
        image_id = f"{i:06d}"
        n = int(rng.integers(0, 7))
        boxes, labels, difficult = random_boxes(n), rng.integers(0, 3, n), rng.random(n) < 0.2
        ev.add_ground_truth(image_id, boxes, labels, difficult)
        for c in range(3):
            gt_per_class[c][image_id] = (boxes[labels == c], difficult[labels == c])
        m = int(rng.integers(0, 15))
        det_boxes = np.concatenate([boxes, random_boxes(m)])[rng.permutation(n + m)]
        det_scores = rng.integers(0, 5, n + m) / 4  # few distinct values: many ties
        det_labels = rng.integers(0, 3, n + m)
        ev.add_detections(image_id, det_boxes, det_scores, det_labels)
        for b, s, lab in zip(det_boxes, det_scores, det_labels, strict=True):
            dets_per_class[int(lab)].append((image_id, s, b))

    res = ev.compute()
    for c, name in enumerate(classes):
        expected = devkit_voc_eval(gt_per_class[c], dets_per_class[c], 0.5, use_07_metric)
        assert res["ap"][name] == expected  # exact
    assert res["map"] == pytest.approx(np.mean(list(res["ap"].values())))
    # the bootstrap's metric under all-ones weights is this mAP, ties and all (bof.evaluation.weighted_ap)
    assert metric_under_weights(ev.per_image_record(), np.ones(12))[0] == res["map"]


# ---------------------------------------------------------------------------------------------------
# AP
# ---------------------------------------------------------------------------------------------------
def test_recall_exactly_0_3_does_not_reach_the_arange_threshold():
    thresholds = np.arange(0.0, 1.1, 0.1)
    assert thresholds[3] == 0.30000000000000004 and 3 / 10 < thresholds[3]
    # Recall 3/10 reaches thresholds 0, 0.1, 0.2 only: 3/11, not 4/11.
    assert voc_ap(np.array([3 / 10]), np.array([1.0])) == pytest.approx(3 / 11, abs=1e-15)
    # The same through the evaluator: 10 positives, 3 found.
    gts = [[1 + 20 * k, 1, 10 + 20 * k, 10] for k in range(10)]
    res = single_class(gts, [(0.9 - 0.1 * k, gts[k]) for k in range(3)])
    assert res["ap"]["c"] == pytest.approx(3 / 11, abs=1e-15)
    # 4 of 10 reaches 0.4 exactly (0.4 is representable as arange builds it).
    res = single_class(gts, [(0.9 - 0.1 * k, gts[k]) for k in range(4)])
    assert res["ap"]["c"] == pytest.approx(5 / 11, abs=1e-15)


def test_voc_ap_hand_computed_both_metrics():
    # tp = [1, 0, 1, 0], npos = 3: recall [1/3, 1/3, 2/3, 2/3], precision [1, 1/2, 2/3, 1/2].
    rec = np.array([1, 1, 2, 2]) / 3
    prec = np.array([1, 1 / 2, 2 / 3, 1 / 2])
    # 11-point: t = 0..0.3 -> 1; t = 0.4, 0.5, 0.6000000000000001 -> 2/3; t >= 0.7 -> 0.
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((4 + 3 * 2 / 3) / 11)
    # area: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 0 (the envelope is 0 past the last detection)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(5 / 9)
    # both equal the devkit's loops
    assert voc_ap(rec, prec, True) == devkit_voc_ap(rec, prec, True)
    assert voc_ap(rec, prec, False) == devkit_voc_ap(rec, prec, False)
    # no detections -> 0
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0


@pytest.mark.parametrize("use_07_metric, expected", [(True, 6 / 11), (False, 5 / 9)])
def test_evaluator_hand_computed_ap(use_07_metric, expected):
    a, b, c = [1, 1, 20, 20], [101, 1, 120, 20], [201, 1, 220, 20]
    miss = [401, 401, 420, 420]
    dets = [(0.9, a), (0.8, miss), (0.7, b), (0.6, miss)]  # TP, FP, TP, FP; c is never found
    res = single_class([a, b, c], dets, use_07_metric=use_07_metric)
    assert res["ap"]["c"] == pytest.approx(expected)
    assert res["map"] == pytest.approx(expected)


def test_map_ignores_classes_without_positives():
    ev = VOCEvaluator(["full", "half", "only_difficult", "absent"])
    ev.add_ground_truth(
        "1",
        [[1, 1, 20, 20], [41, 1, 60, 20], [81, 1, 100, 20]],
        [0, 1, 2],
        [False, False, True],
    )
    ev.add_detections(
        "1",
        [[1, 1, 20, 20], [301, 1, 320, 20], [41, 1, 60, 20], [81, 1, 100, 20], [1, 1, 20, 20]],
        [0.9, 0.8, 0.7, 0.6, 0.5],
        [0, 1, 1, 2, 3],
    )
    res = ev.compute()
    assert res["num_positives"] == {"full": 1, "half": 1, "only_difficult": 0, "absent": 0}
    assert res["ap"]["full"] == pytest.approx(1.0)
    assert res["ap"]["half"] == pytest.approx(0.5)
    assert np.isnan(res["ap"]["only_difficult"]) and np.isnan(res["ap"]["absent"])
    assert res["map"] == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------------
# result files
# ---------------------------------------------------------------------------------------------------
def test_result_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    ev = VOCEvaluator(classes)
    for i in range(20):
        n = int(rng.integers(1, 5))
        xy = rng.integers(1, 200, size=(n, 2)).astype(float)
        boxes = np.concatenate([xy, xy + rng.integers(5, 80, size=(n, 2))], axis=1)
        ev.add_ground_truth(f"{i:06d}", boxes, rng.integers(0, 3, n), rng.random(n) < 0.1)
        # 1-decimal coordinates survive the format; +-2 px keeps every box (>= 5 px) the right way round
        jitter = rng.integers(-4, 5, size=(n, 4)) / 2
        scores = np.round(rng.random(n), 6)
        ev.add_detections(f"{i:06d}", boxes + jitter, scores, rng.integers(0, 3, n))
    paths = ev.write_result_files(tmp_path / "res")
    assert [p.name for p in paths] == [f"comp4_det_test_{c}.txt" for c in classes]
    first = ev.class_detections(0)
    b = first.boxes[0]
    assert paths[0].read_text().splitlines()[0] == (
        f"{first.image_ids[0]} {first.scores[0]:.6f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}"
    )

    read = read_result_files(tmp_path / "res", classes)
    ev2 = VOCEvaluator(classes)
    for image_id, gt in ev._gt.items():
        ev2.add_ground_truth(image_id, *gt)
    for name, dets in read.items():
        ev2.add_class_detections(name, dets.image_ids, dets.scores, dets.boxes)
    r1, r2 = ev.compute(), ev2.compute()
    assert 0.0 < r1["map"] < 1.0
    assert r2["map"] == r1["map"]
    assert r2["ap"] == r1["ap"]


def test_read_result_files_missing_class_file_warns(tmp_path, caplog):
    (tmp_path / "comp4_det_test_a.txt").write_text("000001 0.5 1.0 2.0 30.0 40.0\n\n")
    with caplog.at_level(logging.WARNING):
        read = read_result_files(tmp_path, ["a", "b"])
    assert "comp4_det_test_b.txt" in caplog.text
    assert read["a"].image_ids == ["000001"]
    np.testing.assert_array_equal(read["a"].boxes, [[1, 2, 30, 40]])
    assert len(read["b"].scores) == 0 and read["b"].boxes.shape == (0, 4)


def test_read_result_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_result_files(tmp_path / "nowhere", ["a"])
    with pytest.raises(FileNotFoundError, match="no result files"):
        read_result_files(tmp_path, ["a"])  # exists but holds none of the files: wrong dir or prefix
    (tmp_path / "comp4_det_test_a.txt").write_text("000001 0.5 1 2 30 40\n000002 0.5 1 2 30\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_a.txt:2"):
        read_result_files(tmp_path, ["a"])
    (tmp_path / "comp4_det_test_a.txt").write_text("000001 0.5 1 2 30 40\n000002 high 1 2 30 40\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_a.txt:2: non-numeric"):
        read_result_files(tmp_path, ["a"])


# ---------------------------------------------------------------------------------------------------
# VOC layout, real fixtures and the script
# ---------------------------------------------------------------------------------------------------
def write_xml(path: Path, objects, width=200, height=100):
    """objects: [(name, (xmin, ymin, xmax, ymax), difficult)] in the original devkit layout."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    path.write_text(
        f"<annotation><folder>VOC2007</folder><filename>{path.stem}.jpg</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{objs}</annotation>"
    )


def make_voc_root(root: Path, annotations: dict) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, objects in annotations.items():
        write_xml(root / "Annotations" / f"{image_id}.xml", objects)
    (root / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in annotations))
    return root


@pytest.fixture
def voc_case(tmp_path):
    """3 images; dog: 2 positives, 1 found (+1 FP ranked first); cat: found; person: difficult only."""
    root = make_voc_root(
        tmp_path / "VOC2007",
        {
            "000001": [("dog", (10, 10, 50, 50), 0), ("cat", (60, 10, 90, 40), 0)],
            "000002": [("dog", (20, 20, 80, 90), 0), ("person", (100, 5, 150, 95), 1)],
            "000003": [],
        },
    )
    res = tmp_path / "results"
    res.mkdir()
    (res / "comp4_det_test_dog.txt").write_text(
        "000003 0.950000 1.0 1.0 40.0 40.0\n000001 0.900000 10.0 10.0 50.0 50.0\n"
    )
    (res / "comp4_det_test_cat.txt").write_text("000001 0.800000 61.0 10.0 90.0 41.0\n")
    (res / "comp4_det_test_person.txt").write_text("000002 0.700000 100.0 5.0 150.0 95.0\n")
    return root, res


def test_script_end_to_end(voc_case, tmp_path, capsys):
    root, res = voc_case
    out = tmp_path / "out" / "result.json"
    rc = _load_script().main(
        [
            "--voc-root",
            str(root),
            "--split",
            "test",
            "--results",
            str(res),
            "--out",
            str(out),
            "--classes",
            "dog,cat,person",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "dog" in printed and "n/a" in printed
    data = json.loads(out.read_text())
    # dog: FP then TP, npos 2 -> recall 1/2 at precision 1/2 -> 6 thresholds * 0.5 / 11
    assert data["ap"]["dog"] == pytest.approx(3 / 11)
    assert data["ap"]["cat"] == pytest.approx(1.0)
    assert data["ap"]["person"] is None  # difficult only: no positives
    assert data["map"] == pytest.approx((3 / 11 + 1) / 2)
    assert data["num_positives"] == {"dog": 2, "cat": 1, "person": 0}

    rc = _load_script().main(
        ["--voc-root", str(root), "--results", str(res), "--out", str(out), "--metric", "area"]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert len(data["ap"]) == 20  # --classes voc is the default
    assert data["ap"]["dog"] == pytest.approx(0.25)  # area: 1/2 recall at precision 1/2
    assert data["map"] == pytest.approx((0.25 + 1) / 2)  # only dog and cat have positives


def test_script_errors_name_the_missing_path(voc_case, tmp_path, capsys):
    root, res = voc_case
    script = _load_script()
    assert script.main(["--voc-root", str(root), "--results", str(tmp_path / "no_results")]) == 2
    assert str(tmp_path / "no_results") in capsys.readouterr().err

    assert script.main(["--voc-root", str(root), "--split", "val", "--results", str(res)]) == 2
    assert str(root / "ImageSets" / "Main" / "val.txt") in capsys.readouterr().err

    (root / "Annotations" / "000002.xml").unlink()
    assert script.main(["--voc-root", str(root), "--results", str(res)]) == 2
    assert str(root / "Annotations" / "000002.xml") in capsys.readouterr().err


def test_real_fixture_perfect_detections(tmp_path):
    """Every object of the genuine VOC2012 file detected exactly (the difficult pottedplant too)."""
    root = tmp_path / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    shutil.copy(VOC_XML / "voc2012_native_2008_000041.xml", root / "Annotations" / "2008_000041.xml")
    (root / "ImageSets" / "Main" / "test.txt").write_text("2008_000041\n")

    from bof.data.voc import parse_voc_xml

    ann = parse_voc_xml(root / "Annotations" / "2008_000041.xml")
    producer = VOCEvaluator(VOC)
    producer.add_ground_truth("2008_000041", ann.boxes, ann.labels, ann.difficult)
    producer.add_detections("2008_000041", ann.boxes, np.linspace(0.9, 0.3, len(ann.labels)), ann.labels)
    producer.write_result_files(tmp_path / "results")

    res = build_voc_evaluator(root, "test", tmp_path / "results").compute()
    assert res["num_positives"]["person"] == 7
    assert res["num_positives"]["chair"] == 3
    assert res["num_positives"]["diningtable"] == 1
    assert res["num_positives"]["pottedplant"] == 0  # its only object is difficult
    present = {"person", "chair", "diningtable"}
    for name in present:
        assert res["ap"][name] == pytest.approx(1.0)
    assert all(np.isnan(res["ap"][n]) for n in VOC if n not in present)
    assert res["map"] == pytest.approx(1.0)


def test_all_real_fixtures_perfect_and_jittered():
    """The five genuine files: perfect detections give mAP 1; jittered boxes with duplicates give,
    for every class and both metrics, exactly the AP of the literal devkit port."""
    from bof.data.voc import parse_voc_xml

    rng = np.random.default_rng(0)
    perfect = VOCEvaluator(VOC)
    jittered = {m: VOCEvaluator(VOC, use_07_metric=m) for m in (True, False)}
    gt_per_class = {c: {} for c in range(len(VOC))}
    dets_per_class = {c: [] for c in range(len(VOC))}
    for xml in sorted(VOC_XML.glob("*.xml")):
        ann = parse_voc_xml(xml)
        for ev in (perfect, *jittered.values()):
            ev.add_ground_truth(xml.stem, ann.boxes, ann.labels, ann.difficult)
        perfect.add_detections(xml.stem, ann.boxes, np.full(len(ann.labels), 0.5), ann.labels)
        # two noisy copies of every object: duplicates, misses (IoU <= 0.5) and TPs
        boxes = np.concatenate([ann.boxes, ann.boxes])
        size = np.tile(boxes[:, 2:] - boxes[:, :2] + 1, 2)
        boxes = boxes + np.round(rng.uniform(-0.3, 0.3, boxes.shape) * size)
        scores = np.round(rng.random(len(boxes)), 2)
        labels = np.concatenate([ann.labels, ann.labels])
        for c in range(len(VOC)):
            gt_per_class[c][xml.stem] = (ann.boxes[ann.labels == c], ann.difficult[ann.labels == c])
        for b, s, lab in zip(boxes, scores, labels, strict=True):
            dets_per_class[int(lab)].append((xml.stem, s, b))
        for ev in jittered.values():
            ev.add_detections(xml.stem, boxes, scores, labels)
    assert perfect.compute()["map"] == pytest.approx(1.0)
    for use_07_metric, ev in jittered.items():
        res = ev.compute()
        assert 0.0 < res["map"] < 1.0
        assert metric_under_weights(ev.per_image_record(), np.ones(5))[0] == res["map"]  # the bootstrap's
        for c, name in enumerate(VOC):
            if res["num_positives"][name] > 0:
                assert res["ap"][name] == devkit_voc_eval(
                    gt_per_class[c], dets_per_class[c], 0.5, use_07_metric
                )

"""Around training: bof-eval, bof-predict, fine-tuning from a detection checkpoint, and reruns that never
mix a result with another config's flags."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bof.cli import evaluate, export, predict
from bof.engine.build_model import build_model, load_trained
from bof.evaluation.voc_results import read_result_files
from bof.train import train
from bof.tricks.augment import Resize
from bof.utils import atomic
from bof.utils.boxes import normalize_batch
from bof.utils.fingerprint import RunConflict
from tests.helpers import config_maker, full_disk


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """One finished tiny run (2 epochs) shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("trained")
    make = config_maker(out, cache_dir)
    metrics = train(make("model.postprocess.score_thresh=0.001", output_dir=out / "run"))
    return make, out / "run", metrics


def test_bof_eval_on_the_run_s_own_data_gives_its_final_map(trained, tmp_path, capsys):
    make, run, metrics = trained
    evaluate.main([f"checkpoint={run / 'last.pt'}", f"output={tmp_path / 'eval'}", "trainer.device=cpu"])
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["map"] == metrics["map"] and result["ap"] == metrics["ap"] and result["epochs"] == 2
    assert {"map", "ap", "metric", "config", "fingerprint"} <= set(result)
    assert sorted(p.name for p in (tmp_path / "eval" / "results").iterdir()) == sorted(
        p.name for p in (run / "results").iterdir()
    )
    table = capsys.readouterr().out
    assert "| circle" in table and "| mAP" in table and f"{metrics['map']:6.4f}" in table


def other_val_data(make, cache_dir, tmp_path) -> Path:
    """A copy of the run's synthetic data under another root, with other content: 3 of its 8 val images."""
    year_dir = Path(instantiate(make().data.val).image_path(0)).parents[1]
    other = tmp_path / "other-root"
    shutil.copytree(year_dir, other / year_dir.name)
    val_list = other / year_dir.name / "ImageSets" / "Main" / "val.txt"
    val_list.write_text("".join(val_list.read_text().splitlines(keepends=True)[:3]))
    return other


@pytest.mark.parametrize("stored", ["unresolved", "resolved only"])
def test_bof_eval_data_root_reaches_the_data_sets(trained, tmp_path, cache_dir, stored, caplog):
    """The README's ``bof-eval checkpoint=... data.root=/other`` evaluates the other data, and eval.json
    records the paths it read: from the unresolved config a checkpoint stores (re-resolved), or, for a
    checkpoint of before, with the old root replaced where the data set keys held it (said in a log line)."""
    make, run, _ = trained
    other = other_val_data(make, cache_dir, tmp_path)
    checkpoint = run / "last.pt"
    if stored == "resolved only":  # what checkpoints held before they stored config_source
        state = torch.load(checkpoint, weights_only=True)
        del state["config_source"]
        checkpoint = tmp_path / "old.pt"
        torch.save(state, checkpoint)
    args = [f"checkpoint={checkpoint}", f"output={tmp_path / 'eval'}", "trainer.device=cpu"]
    with caplog.at_level(logging.INFO, logger="bof"):
        result = evaluate.evaluate_checkpoint(checkpoint, [f"data.root={other}", args[-1]], tmp_path / "eval")
    assert result["val_images"] == 3  # the run's own val set has 8
    data = result["config"]["data"]
    assert data["root"] == data["val"]["cache_dir"] == data["train"]["cache_dir"] == str(other)
    assert str(cache_dir) not in json.dumps(result["config"])
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["config"]["data"] == data
    assert ("replaces the old root" in caplog.text) == (stored == "resolved only")


def test_bof_eval_names_an_override_that_matches_no_key(trained, tmp_path):
    make, run, _ = trained
    args = [f"checkpoint={run / 'last.pt'}", f"output={tmp_path / 'eval'}", "trainer.device=cpu"]
    with pytest.raises(ValueError, match=r"'model\.val_sise'.*no such key.*nearest: model\.val_size"):
        evaluate.main([*args, "model.val_sise=128"])
    assert not (tmp_path / "eval").exists()


def test_bof_eval_on_a_full_disk_names_the_file_it_could_not_write(trained, tmp_path, monkeypatch):
    make, run, _ = trained
    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'eval'}/\S+: the disk is full"):
        evaluate.main([f"checkpoint={run / 'last.pt'}", f"output={tmp_path / 'eval'}", "trainer.device=cpu"])


def test_bof_eval_names_a_missing_or_broken_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        evaluate.main([f"checkpoint={tmp_path / 'none.pt'}"])
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"broken.pt is not a readable torch checkpoint"):
        evaluate.main([f"checkpoint={tmp_path / 'broken.pt'}"])
    with pytest.raises(SystemExit, match="missing checkpoint=..."):
        evaluate.main([])


def test_bof_predict_finds_what_evaluation_found_in_each_image_s_own_pixels(trained, tmp_path):
    make, run, _ = trained
    val_set = instantiate(make().data.val)
    (tmp_path / "in").mkdir()
    for i in range(3):
        shutil.copy(val_set.image_path(i), tmp_path / "in")
    predict.main(
        [
            f"checkpoint={run / 'best.pt'}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'out'}",
            "score_thresh=0.001",
            "batch_size=2",
            "trainer.device=cpu",
        ]
    )
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == sorted(
        p.name for p in (tmp_path / "in").iterdir()
    )
    image_id = val_set.image_ids[0]
    mine = [
        (d["category"], d["score"], d["bbox"]) for d in detections if Path(d["image_id"]).stem == image_id
    ]
    found = read_result_files(run / "results", val_set.class_names)  # best.pt's evaluation
    theirs = [
        (name, float(score), [box[0] - 1, box[1] - 1, box[2] - box[0] + 1, box[3] - box[1] + 1])
        for name, dets in found.items()
        for i, score, box in zip(dets.image_ids, dets.scores, dets.boxes, strict=True)
        if i == image_id
    ]  # VOC 1-based inclusive -> COCO x, y, w, h
    assert mine and len(mine) == len(theirs)
    for name, score, box in mine:  # each detection has its twin: same class, score and box (rounding)
        twins = [
            t
            for t in theirs
            if t[0] == name
            and abs(t[1] - score) < 1e-5
            and all(abs(x - y) < 0.2 for x, y in zip(t[2], box, strict=True))
        ]
        assert twins, (name, score, box)
        theirs.remove(twins[0])
    assert {"image_id", "category_id", "bbox", "score"} <= set(detections[0])


def test_bof_predict_keeps_the_users_files_and_goes_on_past_a_bad_one(trained, tmp_path):
    """The drawings never overwrite an input (output=<the input folder> is refused) nor each other (a.jpg
    and a.png); a file that is not an image is said and skipped, the others predicted; bad arguments are
    one line, not a traceback."""
    make, run, _ = trained
    val_set = instantiate(make().data.val)
    (tmp_path / "in").mkdir()
    shutil.copy(val_set.image_path(0), tmp_path / "in" / "a.jpg")
    Image.open(val_set.image_path(1)).save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "notes.jpg").write_text("not an image")
    args = [f"checkpoint={run / 'best.pt'}", f"input={tmp_path / 'in'}", "trainer.device=cpu"]
    with pytest.raises(SystemExit, match="holds input images"):
        predict.main([*args, f"output={tmp_path / 'in'}"])
    for bad in ("score_thresh=abc", "batch_size=0"):
        with pytest.raises(SystemExit, match="score_thresh"):
            predict.main([*args, f"output={tmp_path / 'out'}", bad])
    predict.main([*args, f"output={tmp_path / 'out'}", "score_thresh=0.001"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_jpg.jpg",
        "a_png.jpg",
        "detections.json",
    ]
    found = {d["image_id"] for d in json.loads((tmp_path / "out" / "detections.json").read_text())}
    assert found == {str(tmp_path / "in" / "a.jpg"), str(tmp_path / "in" / "a.png")}


def test_fine_tuning_starts_from_the_checkpoint_and_renews_heads_of_another_shape(trained, caplog):
    make, run, _ = trained
    stored = torch.load(run / "last.pt", weights_only=True)["model"]
    cfg = make(f"model.init_checkpoint={run / 'last.pt'}")
    same = build_model(cfg, 6, torch.device("cpu")).state_dict()
    assert all(torch.equal(same[k], v) for k, v in stored.items())
    with caplog.at_level(logging.INFO, logger="bof"):
        other = build_model(cfg, 3, torch.device("cpu")).state_dict()  # 3 classes: other output layers
    renewed = [k for k in stored if other[k].shape != stored[k].shape]
    assert renewed and all(k in caplog.text for k in renewed)
    assert all(torch.equal(other[k], v) for k, v in stored.items() if k not in renewed)


def test_a_rerun_with_other_flags_is_refused_naming_the_keys_and_changes_nothing(make_cfg, tmp_path):
    run = tmp_path / "run"
    train(make_cfg("trainer.epochs=1", "trainer.resume=auto", "optimizer.lr=0.003"))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("as Hydra rewrote it with the new flags\n")
    before = (run / "metrics.json").read_bytes()
    with pytest.raises(RunConflict, match=r"optimizer.lr: 0.003 -> 0.002.*trainer.resume=false"):
        train(make_cfg("trainer.epochs=1", "trainer.resume=auto", "optimizer.lr=0.002"))
    assert (run / "metrics.json").read_bytes() == before
    assert "lr: 0.003" in (run / ".hydra" / "config.yaml").read_text()  # the finished run's config, back
    # keys that do not change the result do not count
    again = train(
        make_cfg("trainer.epochs=1", "trainer.resume=auto", "optimizer.lr=0.003", "trainer.progress=true")
    )
    assert again["fingerprint"] == json.loads(before)["fingerprint"]


def test_resume_true_on_a_finished_run_changes_nothing_and_with_more_epochs_continues(
    make_cfg, tmp_path, caplog
):
    run = tmp_path / "run"
    train(make_cfg("trainer.epochs=1"))
    before, stamp = (run / "metrics.json").read_bytes(), (run / "last.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="bof"):
        again = train(make_cfg("trainer.epochs=1", "trainer.resume=true"))
    assert "nothing to resume" in caplog.text and again["map"] == json.loads(before)["map"]
    assert (run / "metrics.json").read_bytes() == before and (run / "last.pt").stat().st_mtime_ns == stamp
    with caplog.at_level(logging.INFO, logger="bof"):
        longer = train(make_cfg("trainer.epochs=2", "trainer.resume=true"))
    assert longer["epochs"] == 2 and "under a different config: trainer.epochs: 1 -> 2" in caplog.text


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_bof_export_gives_the_pytorch_model_s_detections(trained, tmp_path, fmt):
    make, run, _ = trained
    path = export.main([f"checkpoint={run / 'best.pt'}", f"format={fmt}", f"output={tmp_path / 'model'}"])
    _, model, _ = load_trained(run / "best.pt", [], torch.device("cpu"))
    val_set = instantiate(make().data.val)
    images = torch.stack([Resize()(*val_set[i], 64)[0] for i in range(3)])  # as bof-eval feeds them
    with torch.no_grad():
        raw = model.postprocess.boxes_and_scores(model.net(normalize_batch(images)), (64, 64))
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path))
        exported = [torch.from_numpy(a) for a in session.run(None, {"images": images.numpy()})]
    else:
        exported = torch.jit.load(str(path))(images)
    for ours, theirs in zip(raw, exported, strict=True):  # boxes (pixels) and scores, everywhere
        assert ours.shape == theirs.shape and (ours - theirs).abs().max() < 1e-4
    # through the same NMS: the same detections (this barely trained model has many near-equal scores, so
    # ties may swap places: compared as sorted scores)
    for ours, theirs in zip(model.postprocess.select(*raw), model.postprocess.select(*exported), strict=True):
        assert len(ours["scores"]) == len(theirs["scores"]) > 0
        assert (ours["scores"].sort().values - theirs["scores"].sort().values).abs().max() < 1e-4


def test_bof_export_of_faster_rcnn_is_torchscript_with_the_pytorch_model_s_detections(tmp_path, cache_dir):
    make = config_maker(tmp_path, cache_dir)
    train(make("model=faster_rcnn_r50_c4", "trainer.epochs=1", "model.net.box_score_thresh=0.0"))
    checkpoint = tmp_path / "run" / "last.pt"
    with pytest.raises(SystemExit, match="export it with format=torchscript"):
        export.main([f"checkpoint={checkpoint}", "format=onnx"])
    path = export.main([f"checkpoint={checkpoint}", "format=torchscript", f"output={tmp_path / 'frcnn.ts'}"])
    _, model, _ = load_trained(checkpoint, [], torch.device("cpu"))
    val_set = instantiate(make("model=faster_rcnn_r50_c4").data.val)
    # at the model's input size (min_size 64): torchvision's scripted resize may round a side one pixel
    # differently from its eager one (86 * 64 / 86 -> 63), which moves the detections of resized images
    images = [val_set[i][0][:, :64, :64] for i in range(3)]
    with torch.no_grad():
        ours = model(normalize_batch(images))
        theirs = torch.jit.load(str(path))(images)
    for a, b in zip(ours, theirs, strict=True):
        assert len(a["scores"]) == len(b["scores"]) > 0 and torch.equal(a["labels"], b["labels"])
        assert (a["boxes"] - b["boxes"]).abs().max() < 1e-4 and (a["scores"] - b["scores"]).abs().max() < 1e-4


def test_bof_export_exits_0_and_never_leaves_a_half_written_file(trained, tmp_path, monkeypatch):
    """The console script's status is 0 on success; an export that dies midway leaves the older good file
    under the name and no temporary file beside it."""
    _, run, _ = trained
    output = tmp_path / "model.ts"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "bof-export"),
            f"checkpoint={run / 'best.pt'}",
            "format=torchscript",
            f"output={output}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    good = output.read_bytes()

    def dies_midway(module, path):
        Path(path).write_bytes(b"half an export")
        raise KeyboardInterrupt  # a kill while writing

    monkeypatch.setattr(torch.jit, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        export.main([f"checkpoint={run / 'best.pt'}", "format=torchscript", f"output={output}"])
    assert output.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["model.ts"]


def test_bof_export_refuses_an_unknown_format(trained):
    _, run, _ = trained
    with pytest.raises(SystemExit, match="format=tflite: one of onnx, torchscript"):
        export.main([f"checkpoint={run / 'best.pt'}", "format=tflite"])


def test_each_evaluation_writes_a_precision_recall_curve_per_class(trained):
    _, run, metrics = trained
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    curves = set(events.PluginTagToContent("pr_curves"))
    # every class with a detection (this barely trained model leaves some classes without any)
    assert curves and curves <= {f"val/PR/{name}" for name in metrics["ap"]}
    assert len(events.Tensors(min(curves))) == 2  # one per evaluation (2 epochs, eval_interval 1)

"""Pretrained backbones: darknet's own weight file (darknet53.conv.74) at full size, and the paper's YOLOv3
experiments refusing to start without one."""

import pytest

from bof.train import train


@pytest.mark.parametrize("experiment", ["yolov3_voc", "yolov3_coco"])
def test_the_papers_yolov3_stops_before_reading_data_without_a_backbone(make_cfg, tmp_path, experiment):
    # data.root does not exist: reaching the data would raise FileNotFoundError instead
    cfg = make_cfg(f"experiment={experiment}", f"data.root={tmp_path / 'nowhere'}", "trainer.dry_run=true")
    with pytest.raises(
        ValueError,
        match=r"darknet53\.conv\.74 \(https://pjreddie.com/.*backbones.darknet53=.*backbone_checkpoint=none",
    ):
        train(cfg)
    assert not (tmp_path / "run" / "train_samples.png").exists()


def test_backbone_checkpoint_none_trains_from_scratch_explicitly(make_cfg):
    scratch = "model.backbone_checkpoint=none"
    cfg = make_cfg("experiment=yolov3_voc", "data=synthetic", scratch, "trainer.dry_run=true")
    assert train(cfg)["dry_run"]

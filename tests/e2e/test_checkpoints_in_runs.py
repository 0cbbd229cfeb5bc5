"""Checkpoints without stalling training: host copy + background write, every N epochs, and on a signal."""

import os
import shutil
import signal

import pytest

import bof.train
from bof.train import train
from bof.utils.checkpoint import CheckpointWriter, load_checkpoint
from tests.helpers import scalar_tags


def test_last_pt_every_checkpoint_interval_epochs_and_after_the_last(make_cfg, monkeypatch):
    saved, real = [], CheckpointWriter.save

    def spy(self, state, path):
        saved.append((path.name, state["epoch"]))
        return real(self, state, path)

    monkeypatch.setattr(CheckpointWriter, "save", spy)
    train(make_cfg("trainer.epochs=3", "trainer.eval_interval=3", "trainer.checkpoint_interval=2"))
    assert [epoch for name, epoch in saved if name == "last.pt"] == [1, 2]  # epochs 2 and 3 (0-based 1, 2)


def test_a_signal_stops_after_the_epoch_with_its_checkpoint_and_the_run_resumes(make_cfg, monkeypatch):
    real = bof.train.train_one_epoch

    def signalled(*args, **kwargs):
        if args[4] == 0:  # the epoch: during the first one, as SLURM's --signal=USR1 would
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(*args, **kwargs)

    monkeypatch.setattr(bof.train, "train_one_epoch", signalled)
    cfg = make_cfg("trainer.epochs=3", "trainer.checkpoint_interval=5")
    with pytest.raises(SystemExit, match="stopped by a signal after epoch 1"):
        train(cfg)
    out_dir = cfg.trainer.output_dir
    assert load_checkpoint(f"{out_dir}/last.pt")["epoch"] == 0 and not os.path.exists(
        f"{out_dir}/metrics.json"
    )
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the run's handler is gone again
    monkeypatch.setattr(bof.train, "train_one_epoch", real)
    metrics = train(make_cfg("trainer.epochs=3", "trainer.resume=true"))
    assert metrics["epochs"] == 3 and load_checkpoint(f"{out_dir}/last.pt")["epoch"] == 2


def test_a_resume_drops_every_tensorboard_point_past_its_checkpoint_validation_included(make_cfg, tmp_path):
    """As a run killed after its second epoch's evaluation, before that epoch's last.pt: resumed from the
    first epoch's checkpoint, it logs the second evaluation again, which TensorBoard shows once."""
    run = tmp_path / "run"
    train(make_cfg("trainer.epochs=1"))
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    train(make_cfg("trainer.epochs=2", "trainer.resume=true"))  # its second epoch, logged
    shutil.copy(tmp_path / "epoch1.pt", run / "last.pt")  # ... but its checkpoint never written
    (run / "metrics.json").unlink()
    train(make_cfg("trainer.epochs=2", "trainer.resume=true"))
    events, iterations = scalar_tags(run), 4  # 16 images, batch 4
    for tag in ("val/mAP", "train/lr", "hparam/mAP"):
        steps = [e.step for e in events.Scalars(tag)]
        assert len(steps) == len(set(steps)), (tag, steps)
    assert [e.step for e in events.Scalars("val/mAP")] == [iterations - 1, 2 * iterations - 1]
    assert [e.step for e in events.Scalars("hparam/mAP")] == [2 * iterations]

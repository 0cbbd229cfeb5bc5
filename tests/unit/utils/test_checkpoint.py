"""Checkpoints without stalling training: host copy + background write, every N epochs, and on a signal."""

import pytest
import torch

from bof.utils.checkpoint import CheckpointWriter, load_checkpoint


def test_the_writer_saves_the_state_of_the_moment_it_was_asked(tmp_path):
    weights = torch.zeros(3)
    writer = CheckpointWriter()
    writer.save({"w": weights, "epoch": 0}, tmp_path / "last.pt")
    weights += 1  # the next training step changes the weights while the thread writes
    writer.wait()
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # written atomically: no temporary left


def test_a_failed_background_write_is_raised_by_wait(tmp_path):
    (tmp_path / "file").write_text("")
    writer = CheckpointWriter()
    writer.save({"epoch": 0}, tmp_path / "file" / "last.pt")  # its directory is a file
    with pytest.raises(OSError):
        writer.wait()

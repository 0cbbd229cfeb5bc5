"""A full disk (ENOSPC) or a folder that is not writable: every write of bof names the file and says why,
where the bare OSError of a write names nothing (checkpoints, metrics, TensorBoard's events written on
a background thread, Hydra's .hydra record)."""

import errno
import os

import hydra.core.utils
import pytest
import torch
from omegaconf import OmegaConf

from bof.cli import train as train_cli
from bof.engine.run_log import EventWriter
from bof.utils import atomic
from bof.utils.atomic import WriteError, atomic_path, write_json_atomically
from bof.utils.checkpoint import CheckpointWriter
from tests.helpers import full_disk


class FullFile:
    """A file on a full disk: small writes are buffered, the first large one fails."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        if len(data) > 64:
            full_disk()
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_checkpoint_on_a_full_disk_names_the_file_not_torch_s_zip_writer(tmp_path, monkeypatch):
    fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: FullFile(fdopen(fd, mode)))
    writer = CheckpointWriter()
    writer.save({"model": torch.zeros(1000)}, tmp_path / "last.pt")
    with pytest.raises(
        WriteError, match=rf"could not write {tmp_path / 'last.pt'}: the disk is full \(ENOSPC\)"
    ):
        writer.wait()  # torch.save alone says "unexpected pos 64 vs 0"
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_metrics_and_exports_on_a_full_disk_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(WriteError, match=rf"{tmp_path / 'metrics.json'}: the disk is full") as error:
        write_json_atomically(tmp_path / "metrics.json", {"map": 0.5})
    assert error.value.errno == errno.ENOSPC
    with pytest.raises(WriteError, match=rf"{tmp_path / 'model.onnx'}: the disk is full"):
        with atomic_path(tmp_path / "model.onnx") as tmp:
            tmp.write_bytes(b"graph")
    monkeypatch.setattr(
        atomic.os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError(errno.EACCES, "no"))
    )
    with pytest.raises(WriteError, match=r"metrics.json: it is not writable"):
        write_json_atomically(tmp_path / "metrics.json", {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its thread's own
def test_tensorboard_s_background_write_failing_names_the_event_folder(tmp_path, monkeypatch):
    writer = EventWriter(str(tmp_path / "tensorboard"))
    monkeypatch.setattr("tensorboard.summary.writer.record_writer.RecordWriter.write", full_disk)
    writer.add_scalar("train/loss", 1.0, 0)
    with pytest.raises(
        WriteError, match=rf"TensorBoard's events in {tmp_path / 'tensorboard'}: the disk is full"
    ):
        writer.flush()


def test_hydra_s_run_record_on_a_full_disk_names_the_run_directory(tmp_path, monkeypatch):
    assert hydra.core.utils._save_config is train_cli.save_config_naming_the_run_dir  # what run_job calls
    monkeypatch.setattr(hydra.core.utils, "open", full_disk, raising=False)
    with pytest.raises(
        WriteError, match=rf"\.hydra/config.yaml \(the run directory: hydra.run.dir.*{tmp_path}\)"
    ):
        hydra.core.utils._save_config(OmegaConf.create({"seed": 0}), "config.yaml", tmp_path / ".hydra")

"""Helpers the tests share (imported from here only: never from conftest or from another test file)."""

from pathlib import Path

import torch

from bof.config import validate_trainer
from bof.engine.run_setup import Run


def cpu_run(cfg, output_dir: Path | None = None) -> Run:
    """The :class:`Run` of a single CPU process for a composed config (what ``start_run`` would give)."""
    return Run(validate_trainer(cfg.trainer), Path(output_dir or cfg.trainer.output_dir), torch.device("cpu"))

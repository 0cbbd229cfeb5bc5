"""bof-train's entry point. It imports Hydra and the config only, so that ``--help``, ``--cfg`` and tab
completion answer at once; the job itself imports :mod:`bof.train` (torch and the rest) when it runs."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import hydra
import hydra.core.utils
from omegaconf import DictConfig

from bof.config import CONFIG_DIR, other_checkout
from bof.utils.atomic import writing

hydra_save_config = hydra.core.utils._save_config


def save_config_naming_the_run_dir(cfg, filename: str, output_dir: Path) -> None:
    """Hydra's ``.hydra/*.yaml`` writer, whose OSError (a full disk) names the file and the run directory:
    Hydra writes them before the job starts, and its own error is a bare ``[Errno 28]``."""
    run_dir = Path(output_dir).parent
    where = f"{Path(output_dir) / filename} (the run directory: hydra.run.dir, or hydra.sweep.dir, {run_dir})"
    with writing(where, "Hydra's record of the run "):
        hydra_save_config(cfg, filename, output_dir)


hydra.core.utils._save_config = save_config_naming_the_run_dir  # Hydra's run_job calls it by this name


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    if warning := other_checkout():
        logging.getLogger("bof.cli.train").warning(warning)
    # deferred on purpose (startup time): the one import of bof not at the top of a module
    return importlib.import_module("bof.train").run_job(cfg)


if __name__ == "__main__":
    main()

"""bof-train's entry point. It imports Hydra and the config only, so that ``--help``, ``--cfg`` and tab
completion answer at once; the job itself imports :mod:`bof.train` (torch and the rest) when it runs."""

from __future__ import annotations

import importlib
import logging

import hydra
from omegaconf import DictConfig

from bof.config import CONFIG_DIR, other_checkout


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    if warning := other_checkout():
        logging.getLogger("bof.cli.train").warning(warning)
    # deferred on purpose (startup time): the one import of bof not at the top of a module
    return importlib.import_module("bof.train").run_job(cfg)


if __name__ == "__main__":
    main()

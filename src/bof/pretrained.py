"""The mini scale's pretrained backbones, built on first use (docs/mini_scale.md "Backbones").

The paper's detectors start from ImageNet-pretrained backbones; the miniature's start from narrow ones
that ``task=classify`` pretrains on synthetic crops with the paper's ImageNet recipe at mini scale. Each
is named under ``mini.pretrained`` (conf/scale/mini.yaml) with its checkpoint ``path`` (in the cache beside
the synthetic data) and its ``recipe`` (bof-train overrides). A run whose ``model.backbone_checkpoint`` is
one of those paths builds it first when it is missing, as the synthetic data is generated on first use:
one build under a file lock (jobs of a sweep launched side by side wait for it), then every later run
reads it. A checkpoint that an earlier recipe built (conf/scale/mini.yaml changed since) stops the run
with RunConflict, naming both recipes and the folder to delete: a table never mixes backbones of two
recipes.
"""

from __future__ import annotations

import fcntl
import gc
import logging
from contextlib import ExitStack
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from bof.classify import train_classifier
from bof.config import CONFIG_DIR, group_options
from bof.utils import distributed
from bof.utils.fingerprint import RunConflict

log = logging.getLogger("bof.pretrained")


def ensure_pretrained(cfg: DictConfig) -> None:
    """Builds the mini-scale backbone that ``model.backbone_checkpoint`` names, when it is one of
    ``mini.pretrained`` and its checkpoint is missing, and checks the recipe of one that exists; nothing
    otherwise (the paper's scale included)."""
    recipes = OmegaConf.select(cfg, "mini.pretrained", default=None)
    wanted = OmegaConf.select(cfg, "model.backbone_checkpoint", default=None, throw_on_missing=False)
    if not recipes or not wanted or cfg.get("task", "detect") != "detect":
        return
    for name, recipe in recipes.items():
        path = Path(recipe.path)
        if Path(wanted) != path:
            continue
        run = run_overrides(cfg, path)
        if path.is_file():
            check_recipe(name, list(recipe.recipe), path, run)
            continue
        if distributed.launched_externally():  # torchrun / SLURM ranks: not one process to build it in
            raise FileNotFoundError(
                f"model.backbone_checkpoint={path}: the mini-scale backbone {name} is not built yet; "
                f"build it once with `bof-train scale=mini task=classify {' '.join(recipe.recipe)} "
                f"trainer.output_dir={path.parent}`, then launch the ranks"
            )
        build(name, [*recipe.recipe, *run], path)


def run_overrides(cfg: DictConfig, path: Path) -> list[str]:
    """What a build adds after its recipe: how and where it runs (the detection run's progress display,
    ``mini.pretrain_overrides``, the data and output folders, resuming an interrupted build), not what
    it trains."""
    return [
        f"trainer.progress={cfg.trainer.get('progress', True)}",
        *cfg.mini.get("pretrain_overrides", []),
        "scale=mini",
        f"data.root={cfg.data.root}",
        f"trainer.output_dir={path.parent}",
        "trainer.resume=auto",
    ]


def check_recipe(name: str, recipe: list[str], path: Path, run: list[str]) -> None:
    """Stops when the checkpoint at ``path`` was built by another recipe than ``mini.pretrained.<name>``'s
    now: its stored overrides are that recipe, then the :func:`run_overrides` of the run that built it
    (which may differ from this run's in value: another display, data folder or device)."""
    stored = torch.load(path, map_location="cpu", weights_only=True).get("config") or {}
    overrides = stored.get("overrides")
    if overrides is None:  # not built by build(): a file the user put there is theirs to vouch for
        return
    cut = max(len(overrides) - len(run), 0)
    built, how = overrides[:cut], overrides[cut:]
    if built != recipe or [override_key(o) for o in how] != [override_key(o) for o in run]:
        raise RunConflict(
            f"model.backbone_checkpoint={path}: the mini-scale backbone {name} there was built by the recipe "
            f"{built} (then {how}), but mini.pretrained.{name}.recipe (conf/scale/mini.yaml) is now {recipe} "
            f"(then {run}); delete {path.parent} and rerun to build it again "
            f'(docs/mini_scale.md "Amendment 2")'
        )


def override_key(override: str) -> str:
    """``a.b=c`` -> ``a.b``."""
    return override.split("=", 1)[0]


def build(name: str, recipe: list[str], path: Path) -> None:
    """Runs ``recipe`` (task=classify at mini scale, with its :func:`run_overrides`) into ``path``'s
    folder, once: a second process waits on the lock and finds it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent.with_name(f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():  # another job built it while this one waited
            return
        log.info("building the mini-scale backbone %s once, into %s: %s", name, path.parent, " ".join(recipe))
        try:
            with ExitStack() as job:  # the classification run's own lock on its folder
                train_classifier(composed(recipe), job)
        finally:  # what the recipe froze can be collected again (bof.train.train does the same)
            gc.unfreeze()


def composed(overrides: list[str]) -> DictConfig:
    """conf/train.yaml with ``overrides``, inside bof-train's Hydra app or outside one (tests, the
    processes of ``trainer.devices=N``), recording its own group options and overrides (not those of the
    detection job that asked for it)."""
    if GlobalHydra.instance().is_initialized():
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.choices = group_options(cfg.hydra.runtime.choices)
        cfg.overrides = list(overrides)
        del cfg["hydra"]
    return cfg

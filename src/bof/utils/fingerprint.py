"""Trustworthy reruns: each run records a fingerprint of its resolved config, and a rerun into a run
directory that finished already either returns its result (the same config) or refuses, naming the keys
that differ, instead of mixing the old result with the new flags."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import OmegaConf
from torch.multiprocessing import ProcessRaisedException

from bof.utils import distributed
from bof.utils.run_lock import RunDirBusy

log = logging.getLogger(__name__)

# where a run is written, how it is resumed or shown: none of them changes its result
NOT_THE_RESULT = (
    "trainer.output_dir",
    "trainer.resume",
    "trainer.dry_run",
    "trainer.progress",
    "trainer.num_workers",
    "trainer.worker_start_method",  # the same batches under every start method (tests/unit/data)
    "trainer.log_interval",
    "trainer.collective_timeout_min",
    "trainer.num_images_logged",
    "trainer.checkpoint_interval",
    "eval.coco_backend",
    "choices",
    "overrides",
)
# a job refused for a run directory (another config's finished run, another live process) leaves its error
# here, not in failed.json: the run in that directory did not fail. It stays until a job gets through.
REFUSED_FILE = "refused.json"


class RunConflict(RuntimeError):
    """A finished run directory holds the result of another config."""


def comparable(resolved: dict) -> dict[str, object]:
    """The resolved config as dotted keys -> values, without the keys that do not change the result."""
    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(resolved, "")
    return {k: v for k, v in flat.items() if not k.startswith(NOT_THE_RESULT)}


def fingerprint(resolved: dict) -> str:
    """A short hash of what determines the run's result (metrics.json's ``fingerprint``)."""
    text = json.dumps(comparable(resolved), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every result-changing key that differs between two resolved configs."""
    old, new = comparable(old), comparable(new)
    missing = "(absent)"
    return [
        f"{key}: {old.get(key, missing)} -> {new.get(key, missing)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]


def finished_run(trainer, resolved: dict, out_dir: Path) -> dict | None:
    """A run directory whose metrics.json exists, met again: its metrics when there is nothing to do (it
    is not trained again), else None.

    ``resume=auto`` (a rerun of a sweep): the stored metrics if the fingerprints match; otherwise
    RunConflict, naming the differing keys, before anything is written (Hydra's .hydra/config.yaml and
    overrides.yaml, already rewritten with the new flags, get the finished run's back). ``resume=true``
    with all ``trainer.epochs`` done: the stored metrics, unchanged (with more epochs asked for, it
    continues). Rank 0 decides, every rank follows; a job that gets through removes an earlier
    refused.json."""
    decision = _decide(trainer, resolved, out_dir) if distributed.is_main() else None
    kind, value = distributed.from_rank0(decision) or (None, None)
    if kind == "conflict":
        raise RunConflict(value)
    if distributed.is_main():  # this job gets through: an earlier refusal is no longer the directory's news
        (out_dir / REFUSED_FILE).unlink(missing_ok=True)
    return value


def _decide(trainer, resolved: dict, out_dir: Path) -> tuple[str, object] | None:
    finished = out_dir / "metrics.json"
    if trainer.resume not in ("auto", True) or not finished.is_file():
        return None
    stored = json.loads(finished.read_text())
    if trainer.resume is True:
        if stored.get("epochs", 0) < trainer.epochs:
            return None  # more epochs asked for: restore() continues from last.pt
        log.info(
            "%s finished all %d epochs already: nothing to resume, metrics.json unchanged",
            out_dir,
            trainer.epochs,
        )
        return "done", stored
    if "config" in stored and stored.get("fingerprint", fingerprint(stored["config"])) != fingerprint(
        resolved
    ):
        changed = differences(stored["config"], resolved)
        restore_hydra_files(out_dir, stored["config"])
        return "conflict", (
            f"{out_dir} holds a finished run of another config (trainer.resume=auto), so it is not "
            f"trained again and not reused; differing keys: {'; '.join(changed)}. Either write the new run "
            "elsewhere (trainer.resume=false and another hydra.sweep.dir / hydra.run.dir), or rerun with "
            "the old values to get the finished result back."
        )
    log.info("%s finished already with this config (trainer.resume=auto): not training again", out_dir)
    return "done", stored


def restore_hydra_files(out_dir: Path, config: dict) -> None:
    """The finished run's config and overrides back into the .hydra/ files Hydra rewrote for a refused
    rerun (bof-report labels a run by its overrides). A run from before configs recorded their overrides
    keeps the rerun's overrides.yaml, which is said."""
    hydra_dir = out_dir / ".hydra"
    if (hydra_dir / "config.yaml").is_file():
        OmegaConf.save(OmegaConf.create(config), hydra_dir / "config.yaml")
    if (hydra_dir / "overrides.yaml").is_file():
        if isinstance(config.get("overrides"), list):
            OmegaConf.save(OmegaConf.create(config["overrides"]), hydra_dir / "overrides.yaml")
        else:
            log.warning(
                "%s now holds this rerun's overrides: the finished run's are not recorded in its "
                "metrics.json (a run from an older bof)",
                hydra_dir / "overrides.yaml",
            )


def warn_if_changed(checkpoint_config: dict | None, resolved: dict, path: Path) -> None:
    """Resuming a checkpoint under another config is allowed (more epochs, a new data root) but said."""
    if checkpoint_config and (changed := differences(checkpoint_config, resolved)):
        log.warning("resuming %s under a different config: %s", path, "; ".join(changed))


def is_refusal(error: Exception) -> bool:
    """A RunConflict or RunDirBusy (the job was refused for its run directory, which it left as it was),
    also from a process of ``trainer.devices=N``: torch raises its traceback as text in the launcher."""
    kinds = (RunConflict, RunDirBusy)
    if isinstance(error, ProcessRaisedException):
        last = (str(error).strip().splitlines() or [""])[-1]
        return last.startswith(tuple(f"{kind.__module__}.{kind.__name__}:" for kind in kinds))
    return isinstance(error, kinds)

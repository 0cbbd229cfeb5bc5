"""Run set-up: seed, device, the process group, the run directory (one :class:`Run`), the data-parallel
model and the tricks of a run; shared by detection (bof.train) and backbone pretraining (bof.classify)."""

from __future__ import annotations

import inspect
import logging
import os
import random
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from bof.config import TrainerConfig, check_config, validate_trainer
from bof.evaluation.coco_eval import BACKENDS as COCO_BACKENDS
from bof.tricks.label_smoothing import LabelSmoothing
from bof.tricks.lr_schedule import CosineSchedule, StepSchedule
from bof.tricks.mixup import DetectionMixup
from bof.tricks.random_shapes import RandomShapes
from bof.tricks.syncbn import SyncBatchNorm
from bof.utils import distributed
from bof.utils.checks import count, require
from bof.utils.run_lock import RunDirBusy, own_run_dir

log = logging.getLogger("bof.engine.run_setup")


@dataclass(frozen=True)
class Run:
    """Where and how this process trains: the validated ``trainer`` config, the run directory, the device
    and this process's place in the group."""

    trainer: TrainerConfig
    out_dir: Path
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main_process(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    @property
    def batch_per_process(self) -> int:
        return self.trainer.batch_size // self.world_size

    @property
    def amp(self) -> torch.dtype | None:
        return autocast_dtype(self.trainer.amp, self.device)

    @property
    def channels_last(self) -> bool:  # NHWC is CUDA-only (a no-op on the CPU)
        return self.trainer.channels_last and self.device.type == "cuda"


def start_run(cfg: DictConfig, job: ExitStack) -> Run:
    """Checks ``trainer``, seeds, picks the device and joins the process group the environment describes;
    rank 0 creates the run directory and owns it until ``job`` closes (:mod:`bof.utils.run_lock`): a
    directory another live process owns stops every rank with RunDirBusy before anything in it changes.
    Only then are the temporary files of a killed write removed (never a live run's)."""
    trainer = validate_trainer(cfg.trainer)
    out_dir = Path(trainer.output_dir)
    seed_everything(cfg.seed, trainer.deterministic)
    device = pick_device(trainer.device)
    rank, world_size, local_rank = distributed.setup(device.type, trainer.collective_timeout_min)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", torch.cuda.current_device())  # local_rank % visible GPUs
    if device.type == "cuda" and not trainer.deterministic:
        torch.backends.cudnn.benchmark = True  # random shapes: one autotuning per input size
    if device.type == "cuda":  # every rank says which GPU it has (warnings reach the log from all ranks)
        log.log(
            logging.INFO if rank == 0 else logging.WARNING,
            "rank %d of %d on %s (%s)",
            rank,
            world_size,
            device,
            torch.cuda.get_device_name(device),
        )
    busy = None
    if rank == 0:
        try:
            job.enter_context(own_run_dir(out_dir))
        except RunDirBusy as error:
            busy = str(error)
        else:
            for stale in out_dir.glob(".*.tmp"):  # a write killed before its rename (bof.utils.atomic)
                stale.unlink(missing_ok=True)
                log.warning("removed %s, left by a write that was killed", stale)
    if (busy := distributed.from_rank0(busy)) is not None:  # every rank stops, not rank 0 alone
        raise RunDirBusy(busy)
    if trainer.batch_size % world_size:
        raise ValueError(
            f"trainer.batch_size={trainer.batch_size} (the global batch) is not divisible by the "
            f"{world_size} processes: pass a multiple of {world_size} (and scale optimizer.lr with it), or "
            f"run on fewer processes (trainer.devices)"
        )
    return Run(trainer, out_dir, device, rank, world_size, local_rank)


def autocast_dtype(amp, device: torch.device) -> torch.dtype | None:
    """``trainer.amp`` on this device: bfloat16 or float16 autocast on CUDA, None (float32) otherwise."""
    if device.type != "cuda" or amp in (False, None):
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seeds every RNG. ``deterministic``: deterministic kernels where torch has them, a warning naming the
    op where it has none (torchvision's RoIAlign backward, some CUDA scatter ops) instead of an error; on
    CUDA, cuBLAS needs its workspace setting before its first call and cuDNN its benchmark off."""
    require("seed", seed, lambda v: count(v) and v < 2**32, "a whole number in [0, 2**32)")  # numpy's range
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={name} but CUDA is not available; use trainer.device=cpu")
    return device


def data_parallel(model, syncbn, device: torch.device, world_size: int, local_rank: int):
    """Synchronized BatchNorm (when on) acts here, before DDP wraps the model. -> (model to train,
    model_without_ddp); both are ``model`` with one process."""
    if world_size == 1:
        if syncbn is not None:
            log.info("syncbn=on changes nothing with one process")
        return model, model
    if syncbn is not None:
        model = syncbn(model, device.type, world_size)
    device_ids = [local_rank] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids), model


def compiled(model, enabled: bool, device: torch.device):
    """``trainer.compile`` on CUDA: ``torch.compile`` of the training model, each random-shapes input size
    compiled once (the recompile limit covers every size of the range); the model itself on a CPU."""
    if not enabled or device.type != "cuda":
        return model
    dynamo = torch._dynamo.config
    for limit in ("recompile_limit", "cache_size_limit"):  # the name changed across torch releases
        if hasattr(dynamo, limit):
            setattr(dynamo, limit, max(getattr(dynamo, limit), 64))
    return torch.compile(model)


class Tricks(NamedTuple):
    """The bag of freebies of one run, each built from its config group; None where a trick is off."""

    augment: Callable  # the training transform: Resize (augment=none), YOLOAugment, FlipResize
    mixup: DetectionMixup | None
    smoothing: LabelSmoothing | None
    lr_schedule: StepSchedule | CosineSchedule
    random_shapes: RandomShapes | None
    syncbn: SyncBatchNorm | None

    def describe(self, epochs: int) -> list[str]:
        return [
            f"augment: {self.augment!r}",
            f"mixup: {'off' if self.mixup is None else self.mixup.describe(epochs)}",
            f"smoothing: {'off' if self.smoothing is None else repr(self.smoothing)}",
            f"lr_schedule: {self.lr_schedule.describe(epochs)}",
            f"random_shapes: {'off' if self.random_shapes is None else repr(self.random_shapes)}",
            f"syncbn: {'off' if self.syncbn is None else repr(self.syncbn)}",
        ]


def build_tricks(cfg: DictConfig) -> Tricks:
    """The job's one start-up pass over its config, before any data is read (the dry run included):
    :func:`bof.config.check_config` (what needs the whole config or no constructor owns), the arguments
    of what is costly to build checked by its class's ``check``, and the tricks built, each constructor
    checking its own arguments (:mod:`bof.utils.checks`). A wrong value fails naming its config key.
    One pass per process: a ``trainer.devices=N`` job's launching process also runs it, before it
    resolves the config for the N processes it starts."""
    check_config(cfg)
    backend = OmegaConf.select(cfg, "eval.coco_backend", default="pycocotools")
    if backend not in COCO_BACKENDS:  # read only when the first COCO evaluation comes: checked now
        raise ValueError(f"eval.coco_backend={backend!r}: must be one of {', '.join(COCO_BACKENDS)}")
    for key in ("model.net", "data.train", "data.val"):
        check_arguments(cfg, key)
    return Tricks(*(built(cfg, key) for key in Tricks._fields))


def built(cfg: DictConfig, key: str):
    """``instantiate(cfg[key])`` (None for a trick that is off), its constructor's error naming the key."""
    try:
        return instantiate(cfg[key])
    except InstantiationException as error:  # Hydra's wrapper around the constructor's own error
        if (named := naming(key, error.__cause__)) is None:
            raise
        raise named from None


def check_arguments(cfg: DictConfig, key: str) -> None:
    """The constructor's rules for the group at ``key`` without building it (a network, a data set): the
    ``check`` of the class or function its ``_target_`` names, given the arguments it takes."""
    node = OmegaConf.select(cfg, key, default=None)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    check = getattr(get_object(node._target_), "check", None)
    if check is None:
        return
    try:
        check(**{name: node[name] for name in inspect.signature(check).parameters if name in node})
    except (ValueError, TypeError) as error:
        raise naming(key, error) from None


def naming(key: str, error: BaseException | None) -> Exception | None:
    """A constructor's ValueError or TypeError, naming config key ``key``'s group where it does not
    already; None for any other error."""
    if not isinstance(error, (ValueError, TypeError)):
        return None
    group = key.split(".")[0]
    return error if re.search(rf"\b{group}[.:=]", str(error)) else type(error)(f"{key}: {error}")


def resume_path(resume, out_dir: Path) -> Path | None:
    """``trainer.resume``: false -> None; true -> <run dir>/last.pt; auto -> <run dir>/last.pt if there is
    one (a rerun of a sweep continues interrupted runs), else None; another string -> that checkpoint.
    Rank 0 decides, every rank follows (nodes must share the run directory's filesystem)."""
    return distributed.from_rank0(_resume_path(resume, out_dir) if distributed.is_main() else None)


def _resume_path(resume, out_dir: Path) -> Path | None:
    if resume is False or resume is None:
        return None
    if resume == "auto":
        return out_dir / "last.pt" if (out_dir / "last.pt").is_file() else None
    path = out_dir / "last.pt" if resume is True else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"trainer.resume={resume}: no checkpoint at {path}"
            + (" (pass the old run directory with hydra.run.dir=<dir>)" if resume is True else "")
        )
    return path


def build_dataset(node):
    """``instantiate(cfg.data.<split>)``, raising the data set's own error (it names the file and the
    problem) instead of Hydra's InstantiationException around it."""
    try:
        return instantiate(node)
    except InstantiationException as error:
        if isinstance(error.__cause__, (ValueError, OSError)):
            raise error.__cause__ from None
        raise

"""The configuration: where it lives (``conf/``), the resolvers that name run and sweep-job
directories, the schema of the scalars no constructor guards (``trainer.*``: a typo or a wrong type fails
loudly), and the start-up checks that need the whole config (the required backbone, the paper's data
parallelism) or that no bof constructor owns (the optimizer's values). Every other key is checked by the
constructor that takes it (:mod:`bof.utils.checks`)."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from bof.utils.checks import nonnegative, require
from bof.utils.published import DARKNET53_CONV74_BYTES, DARKNET53_CONV74_URL

log = logging.getLogger("bof.config")
# a wheel ships conf/ inside the package (bof/conf); an editable install and a source tree read conf/ at
# the repository root
PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent / "conf"
REPOSITORY_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
CONFIG_DIR = PACKAGED_CONFIG_DIR if PACKAGED_CONFIG_DIR.is_dir() else REPOSITORY_CONFIG_DIR


def other_checkout(cwd: Path | None = None) -> str | None:
    """A warning when the working directory lies in a bof checkout other than the one this bof runs
    from (two clones, one environment): its code and configs would silently not be used."""
    installed, here = Path(__file__).resolve().parents[2], (cwd or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "conf" / "train.yaml").is_file() and (folder / "src" / "bof").is_dir():
            if folder == installed:
                return None
            return (
                f"this directory is in the bof checkout {folder}, but bof runs from {installed} (code and "
                f"configs {CONFIG_DIR}): run `pip install -e .` in {folder} to use its own"
            )
    return None


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 64  # global batch over all processes (the paper: 64 = 8 GPUs x 8)
    eval_interval: int = 10  # evaluate every this many epochs, and always after the last
    num_workers: Any = "auto"  # loader workers per process; auto: the process's CPUs / local processes - 1
    worker_start_method: str = "auto"  # auto (fork on Linux) | fork | forkserver | spawn (docs/data.md)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    devices: int = 1  # processes this job starts on its node (one per GPU); torchrun/SLURM set their own
    collective_timeout_min: float = 10.0  # a collective waiting longer fails (a peer died): minutes
    amp: Any = "bf16"  # mixed precision on CUDA: bf16 | fp16 (with loss scaling) | false; a no-op on the CPU
    channels_last: bool = False  # NHWC memory format (CUDA only; a no-op on the CPU)
    compile: bool = False  # torch.compile the model (CUDA only; a no-op on the CPU)
    no_wd: bool = True  # no weight decay on BN parameters and biases (GluonCV --no-wd)
    grad_clip: float | None = None  # max global gradient L2 norm, None = no clipping
    grad_clip_value: float | None = None  # clip every gradient element to [-v, v] (MXNet clip_gradient)
    checkpoint_interval: int = 1  # last.pt every this many epochs (and after the last one, and on a signal)
    resume: Any = False  # false | true (last.pt of this run dir) | auto (true if there is one) | a path
    dry_run: bool = False  # build everything, print the plan, exit without training
    output_dir: str = "."  # the run directory (Hydra's by default)
    num_images_logged: int = 4  # validation images drawn to TensorBoard per evaluation
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; for exact reproducibility)
    progress: bool = True  # progress bars (rank 0 only)
    log_interval: int = 20  # loss terms reach the host (TensorBoard, progress, NaN check) every N iterations
    voc07_metric: bool = True  # VOC2007 11-point AP (the paper's), else the VOC2010+ area AP
    skip_nonfinite: bool = False  # a NaN/inf loss: false stops training, true skips that step (counted)
    max_skipped_steps: int = 50  # skip_nonfinite: this many non-finite steps in a row stop the run

    def __post_init__(self):
        positive = (
            "epochs",
            "batch_size",
            "eval_interval",
            "devices",
            "checkpoint_interval",
            "log_interval",
            "max_skipped_steps",
        )
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"trainer.{key} must be >= 1, got {getattr(self, key)}")
        if self.amp is True:  # the old boolean meant float16
            self.amp = "fp16"
        if self.amp not in (False, None, "bf16", "fp16"):
            raise ValueError(f"trainer.amp must be bf16, fp16 or false, got {self.amp!r}")
        if self.collective_timeout_min <= 0:
            raise ValueError(f"trainer.collective_timeout_min must be > 0, got {self.collective_timeout_min}")
        if self.num_workers == "auto":
            self.num_workers = auto_workers(int(os.environ.get("LOCAL_WORLD_SIZE", self.devices)))
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"trainer.num_workers must be auto or an integer >= 0, got {self.num_workers!r}")
        if self.worker_start_method not in ("auto", "fork", "forkserver", "spawn"):
            raise ValueError(
                "trainer.worker_start_method must be auto, fork, forkserver or spawn, "
                f"got {self.worker_start_method!r}"
            )
        for key in ("grad_clip", "grad_clip_value"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"trainer.{key} must be > 0 or null, got {getattr(self, key)}")


def auto_workers(local_processes: int) -> int:
    """Data loader workers per process: the CPUs this process may use, shared by the node's processes,
    one core left to each training process (at least 1 worker)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // max(local_processes, 1) - 1)


def validate_trainer(trainer: DictConfig) -> TrainerConfig:
    """Merges ``cfg.trainer`` into the schema; unknown keys and wrong types raise with the key's name."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConfig), trainer))


def run_name(timestamp: str) -> str:
    """The name of Hydra's run directory (``hydra.run.dir`` in conf/train.yaml): the timestamp, except
    under torchrun, whose processes each compose the config at slightly different times and would each
    make their own timestamped directory (the known Hydra + DDP problem). There every process takes
    torchrun's run id instead: the ``--rdzv-id`` of a multi-node job or the random id of ``--standalone``."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return timestamp
    if run_id == "none":
        raise ValueError(
            "under torchrun every process needs the same run directory: pass torchrun --standalone "
            "(one node) or --rdzv-id=<name> (several nodes), or bof-train hydra.run.dir=<dir>"
        )
    return f"torchrun-{run_id}"


def check_backbone(cfg: DictConfig) -> None:
    """The paper's YOLOv3 starts from an ImageNet-pretrained Darknet-53: the experiments that reproduce
    it take ``model.backbone_checkpoint`` from the mandatory ``backbones.darknet53``, and a run without
    one stops here, before any data is read, saying where the weights are published and how to pass them."""
    try:
        cfg.model.get("backbone_checkpoint")
    except (MissingMandatoryValue, InterpolationToMissingValueError):  # ???, or ${backbones.darknet53}
        raise ValueError(
            f"model={cfg.model.name} needs its ImageNet-pretrained backbone, as in the paper: download "
            f"darknet's darknet53.conv.74 ({DARKNET53_CONV74_URL}, {DARKNET53_CONV74_BYTES:,} bytes) and "
            "pass "
            "backbones.darknet53=/path/to/darknet53.conv.74 (or model.backbone_checkpoint=<darknet file or "
            "task=classify checkpoint>), or say model.backbone_checkpoint=none to train from scratch (not "
            "the paper's setting)"
        ) from None


def check_scale(choices) -> None:
    """``scale=mini`` without conf/scale_setup/<scale>_<data>_<model>.yaml (an optional default) would
    train the experiment's own model on one CPU process: stop at start-up, naming the setups that exist."""
    scale, setup, folder = choices.get("scale"), choices.get("scale_setup"), CONFIG_DIR / "scale_setup"
    if scale in (None, "paper") or setup is None or (folder / f"{setup}.yaml").is_file():
        return
    existing = ", ".join(sorted(path.stem for path in folder.glob(f"{scale}_*.yaml"))) or "none"
    raise ValueError(
        f"scale={scale} has no setup for data={choices.get('data')} model={choices.get('model')} (no "
        f"conf/scale_setup/{setup}.yaml), so it would train the experiment's own model on one CPU "
        f"process. The setups of scale={scale} (<scale>_<data>_<model>): {existing}. Pick the data set and "
        "model of one of them, or run scale=paper"
    )


def check_random_shapes(cfg: DictConfig) -> None:
    """``random_shapes=on`` draws YOLOv3's square input sizes from ``model.random_shape_range``: say so at
    start-up for a model without one, before anything resolves the config."""
    if cfg.get("random_shapes") is not None and cfg.model.get("random_shape_range") is None:
        raise ValueError(
            f"random_shapes=on draws square YOLOv3 input sizes from model.random_shape_range, which "
            f"model={cfg.model.name} does not have (Faster R-CNN resizes each image itself, as in the "
            "paper's Table 3): use random_shapes=off"
        )


def check_input_sizes(cfg: DictConfig) -> None:
    """YOLOv3's square input sizes are multiples of its stride, 32: say which key is off and what fits,
    at start-up (the dry run included) instead of a tensor-size error at the first forward pass."""
    if cfg.model.get("criterion") is None:  # Faster R-CNN: any size, resized inside the model
        return
    sizes = {"model.train_size": cfg.model.train_size, "model.val_size": cfg.model.val_size}
    sizes |= dict(
        zip(
            ("model.random_shape_range[0]", "model.random_shape_range[1]"),
            cfg.model.get("random_shape_range") or (),
            strict=False,
        )
    )
    for key, size in sizes.items():
        if not isinstance(size, int) or size < 32 or size % 32:
            fits = max(32, round(size / 32) * 32) if isinstance(size, (int, float)) else 416
            raise ValueError(f"{key}={size}: YOLOv3 takes square inputs of a multiple of 32 (e.g. {fits})")


# key: (test, what the value must be), for the keys no bof constructor takes: the optimizer is torch's
# (built after the data; its own checks allow lr = 0 and momentum >= 1). Keys absent or null are not
# checked; trainer.* is checked by TrainerConfig, the sizes above, every other key by its constructor.
TASKS = ("detect", "classify")  # bof.train's recipes
VALUE_RULES = {
    "optimizer.lr": (lambda v: 0 < v < float("inf"), "a finite number > 0"),
    "optimizer.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.weight_decay": (nonnegative, "a number >= 0"),
}


def check_values(cfg: DictConfig) -> None:
    """Types and ranges of the values in :data:`VALUE_RULES`: a wrong one names its key and what it must
    be, at start-up, the dry run included."""
    for key, (ok, expected) in VALUE_RULES.items():
        require(key, OmegaConf.select(cfg, key, default=None, throw_on_missing=False), ok, expected, True)


def check_config(cfg: DictConfig) -> None:
    """What needs the whole config or no constructor owns, checked once per job at start-up (by
    ``bof.engine.run_setup.build_tricks``, which also builds or checks every group)."""
    check_values(cfg)
    if cfg.get("task", "detect") not in TASKS:
        raise ValueError(f"task={cfg.task!r}: must be one of {', '.join(TASKS)}")
    check_random_shapes(cfg)
    check_input_sizes(cfg)


def check_paper_setup(setup, world_size: int, batch_per_process: int) -> None:
    """An experiment's ``paper_setup`` is the paper's data parallelism. Another one still trains, with the
    same global batch and lr, but each process's BatchNorm (and sync BN's) sees another batch: warn."""
    if not setup:
        return
    if (world_size, batch_per_process) != (setup.world_size, setup.batch_per_process):
        log.warning(
            "this run trains on %d process(es) x %d images; the paper's setup is %d x %d (paper_setup): "
            "the global batch and lr are the paper's, but BatchNorm statistics (sync BN's included) come "
            "from another per-process batch, so numbers may differ from the paper's",
            world_size,
            batch_per_process,
            setup.world_size,
            setup.batch_per_process,
        )


def typed_choices() -> dict:
    """The config groups' options as chosen on the command line (Hydra's runtime choices), for the
    HParams tab; empty where the config was composed without bof-train (tests, scripts)."""
    try:
        return group_options(HydraConfig.get().runtime.choices)
    except ValueError:  # no Hydra app around
        return {}


def group_options(choices) -> dict:
    """Hydra's runtime choices without Hydra's own groups and the groups left empty."""
    return {
        group: str(option) for group, option in choices.items() if option and not group.startswith("hydra")
    }


def command_overrides() -> list[str]:
    """The command line's overrides of this job (Hydra's ``overrides.task``), kept in the resolved config
    so that a run's result carries them (a refused rerun puts them back into .hydra/overrides.yaml);
    empty where the config was composed without bof-train."""
    try:
        return [str(o) for o in HydraConfig.get().overrides.task]
    except ValueError:  # no Hydra app around
        return []


def row_name(experiment: str) -> str:
    """A paper table's row, named by its experiment file: ``table2/no_aug`` -> ``no_aug``. The table
    sweeps name each job's folder with it (``multirun/table2/no_aug/seed0``, conf/sweep/), and bof-report
    reads it back from the folder."""
    return str(experiment).rsplit("/", 1)[-1]


OmegaConf.register_new_resolver("bof_run_name", run_name, replace=True)
OmegaConf.register_new_resolver("bof_row", row_name, replace=True)
OmegaConf.register_new_resolver("bof_choices", typed_choices, replace=True)
OmegaConf.register_new_resolver("bof_overrides", command_overrides, replace=True)


@functools.cache
def bof_targets() -> frozenset[str]:
    """Every ``_target_`` that a config composed from conf/ can name: the only callables bof instantiates
    from a config it did not compose itself (a checkpoint's stored config)."""
    found = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.add(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(Path(CONFIG_DIR).rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found)


def check_stored_targets(node, source: str, key: str = "") -> None:
    """Refuses a stored config (a checkpoint's) that names a ``_target_`` conf/ cannot produce, before
    anything is instantiated: a config is code (``_target_`` calls any importable callable), and a
    checkpoint is data from wherever it came from. Walks every dict and list, naming the first key."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and target not in bof_targets():
            raise ValueError(
                f"{source}: its stored config sets {key or '<top>'}._target_={target!r}, which is not one "
                "of bof's own components (those conf/ names): refusing to instantiate it. A checkpoint "
                "written by bof-train never holds one; do not use this file"
            )
        for name, value in node.items():
            check_stored_targets(value, source, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_stored_targets(value, source, f"{key}[{i}]")

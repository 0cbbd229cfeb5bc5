"""Schema of the scalars no constructor guards (``trainer.*``): a typo or a wrong type fails loudly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 64  # global batch over all processes (the paper: 64 = 8 GPUs x 8)
    eval_interval: int = 10  # evaluate every this many epochs, and always after the last
    num_workers: int = 4  # data loader workers per process
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    devices: int = 1  # processes this job starts on its node (one per GPU); torchrun/SLURM set their own
    amp: bool = False  # mixed precision (CUDA only; a no-op on the CPU)
    channels_last: bool = False  # NHWC memory format (CUDA only; a no-op on the CPU)
    no_wd: bool = True  # no weight decay on BN parameters and biases (GluonCV --no-wd)
    grad_clip: float | None = None  # max gradient norm, None = no clipping
    resume: Any = False  # false | true (last.pt of this run dir) | auto (true if there is one) | a path
    dry_run: bool = False  # build everything, print the plan, exit without training
    output_dir: str = "."  # the run directory (Hydra's by default)
    num_images_logged: int = 4  # validation images drawn to TensorBoard per evaluation
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; for exact reproducibility)
    progress: bool = True  # progress bars (rank 0 only)
    voc07_metric: bool = True  # VOC2007 11-point AP (the paper's), else the VOC2010+ area AP
    skip_nonfinite: bool = False  # a NaN/inf loss: false stops training, true skips that step (counted)

    def __post_init__(self):
        for key in ("epochs", "batch_size", "eval_interval", "devices"):
            if getattr(self, key) < 1:
                raise ValueError(f"trainer.{key} must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ValueError(f"trainer.num_workers must be >= 0, got {self.num_workers}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"trainer.grad_clip must be > 0 or null, got {self.grad_clip}")


def validate_trainer(trainer: DictConfig) -> TrainerConfig:
    """Merges ``cfg.trainer`` into the schema; unknown keys and wrong types raise with the key's name."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConfig), trainer))

"""What updates the weights: the optimizer over its parameter groups, the per-iteration LR schedule and
the AMP gradient scaler, built the same way for both recipes."""

from __future__ import annotations

from typing import NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from bof.engine.run_setup import Run
from bof.tricks.lr_schedule import build_lr_scheduler


class Optimization(NamedTuple):
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def build_optimization(cfg: DictConfig, model: nn.Module, run: Run, lr_schedule, iters_per_epoch: int):
    """``cfg.optimizer`` over :func:`param_groups`, the LR schedule stepped every iteration (warmup, then
    step or cosine), and a gradient scaler that is on for float16 autocast only (bf16 needs no scaling)."""
    # _partial_: Hydra would wrap the param-group dicts (holding tensors) into DictConfigs
    optimizer = instantiate(cfg.optimizer, _partial_=True)(
        param_groups(model, cfg.optimizer.weight_decay, run.trainer.no_wd)
    )
    lr_scheduler = build_lr_scheduler(optimizer, lr_schedule, iters_per_epoch, run.trainer.epochs)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp == torch.float16)
    return Optimization(optimizer, lr_scheduler, scaler)


def param_groups(model: nn.Module, weight_decay: float, no_wd: bool = True) -> list[dict]:
    """Two groups: decayed weights, and (with ``no_wd``) BN parameters and biases without weight decay,
    as GluonCV's ``--no-wd`` (``net.collect_params('.*beta|.*gamma|.*bias')`` get ``wd_mult = 0``)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            exempt = no_wd and (name == "bias" or isinstance(module, nn.modules.batchnorm._NormBase))
            (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

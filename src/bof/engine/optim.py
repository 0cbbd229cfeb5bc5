"""Optimizer parameter groups."""

from __future__ import annotations

from torch import nn


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

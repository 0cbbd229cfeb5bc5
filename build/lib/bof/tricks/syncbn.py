"""Synchronized BatchNorm (paper section 3.5; docs/fidelity.md "Synchronized BatchNorm").

Every BatchNorm of backbone and heads normalises with the statistics of the global batch, over all
data-parallel processes, instead of each process's few images. On CUDA this is
``torch.nn.SyncBatchNorm.convert_sync_batchnorm``. torch's SyncBatchNorm refuses CPU tensors, so for
gloo/CPU :class:`AllReduceBatchNorm2d` does the same with two autograd-aware all-reduces (the global
mean, then the global variance around it), which makes the trick testable in CI. With one process
both change nothing, and the caller says so in the log.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum shared by all ranks is the sum of their gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the batch of every process of the default group (CPU/gloo SyncBN).

    In training: mean and biased variance over all processes' N x H x W values normalise; the running
    variance gets the unbiased estimate, as nn.BatchNorm2d. In eval mode, or without a process group,
    it is exactly nn.BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        total = sums[-1]
        mean = sums[:-1] / total
        centred = x - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * total / (total - 1))
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm -> its synchronized version: torch's SyncBatchNorm on CUDA, AllReduceBatchNorm2d
    on the CPU. Weights, biases and running statistics are kept."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    converted = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, AllReduceBatchNorm2d):
        converted = AllReduceBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, device_type))
    return converted


class SyncBatchNorm:
    """The ``syncbn=on`` trick: converts the model's BatchNorms when there is more than one process."""

    def __call__(self, model: nn.Module, device_type: str, world_size: int) -> nn.Module:
        return convert_sync_batchnorm(model, device_type) if world_size > 1 else model

    def __repr__(self) -> str:
        return "synchronized BatchNorm over all processes"

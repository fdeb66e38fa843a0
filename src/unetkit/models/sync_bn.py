"""Batch norm over the global batch of several processes (``--sync-bn``), also on the CPU.

``torch.nn.SyncBatchNorm`` runs on GPUs only; :class:`CpuSyncBatchNorm` computes the same statistics
with gloo. :func:`sync_batchnorm` converts a model's BatchNorm2d layers to whichever fits the device.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """The element-wise sum over ranks; in backward, likewise the sum of the gradients (each rank's loss
    depends on every rank's input through it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, for gloo on the CPU.

    This computes what ``torch.nn.SyncBatchNorm`` does in two passes (the global mean, then the global
    mean squared deviation), each a sum over ranks that also sums the gradients in backward. Evaluation
    uses the running statistics, like BatchNorm2d; the state dict is BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        xf = x.float()  # (N, C, H, W); statistics in fp32 also under bf16 autocast
        local = torch.cat([xf.sum((0, 2, 3)), xf.new_tensor([xf.numel() // xf.shape[1]])])  # (C + 1,) sums, count
        total = all_reduce(local)
        count = total[-1].detach()
        mean = total[:-1] / count  # (C,)
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum((0, 2, 3))) / count  # (C,) biased, as BatchNorm2d normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * count / (count - 1), alpha=factor)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        synced = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        return synced
    for name, child in module.named_children():
        setattr(module, name, _to_cpu_sync(child))
    return module


def sync_batchnorm(model: nn.Module, world_size: int, device: torch.device) -> nn.Module:
    """``model`` with batch norm over the global batch of ``world_size`` processes: torch's SyncBatchNorm
    on CUDA, :class:`CpuSyncBatchNorm` on the CPU; unchanged (with a warning) in a single process."""
    if world_size == 1:
        warnings.warn("sync_bn has no effect in a single process; it shares batch statistics between torchrun processes", stacklevel=2)
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_cpu_sync(model)

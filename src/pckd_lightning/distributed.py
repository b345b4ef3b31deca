"""Collectives that make a k-process run compute what one process computes on the k-times batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from pckd_lightning.errors import ConfigError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGradient(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient of this rank's slice.

    Unlike a gather that keeps only the local gradient, each rank's slice then receives the gradient
    of every rank's loss, so after DDP's gradient averaging the result equals the single-process one.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_gradient(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows in rank order, and the offset of this rank's rows (equal sizes on every rank)."""
    if world_size() == 1:
        return tensor, 0
    return _GatherWithGradient.apply(tensor), dist.get_rank() * tensor.shape[0]


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows in rank order, without gradient (equal sizes on every rank)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def reduced_to_host(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> list:
    """``tensor`` reduced element-wise over every rank (``op``), read back to the host once, as a list.

    For epoch-end values: every rank calls it at the same point, so no rank waits on a lazy reduction.
    """
    if world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=op)
    return tensor.tolist()


@torch.no_grad()
def global_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over every rank's elements (the single-process mean of the k-times batch)."""
    # new_full fills on the device: torch.tensor(..., device=) would copy from the host at every step
    total = torch.stack(
        [tensor.float().sum(), tensor.new_full((), float(tensor.numel()), dtype=torch.float32)]
    )
    if world_size() > 1:
        dist.all_reduce(total)
    return total[0] / total[1]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are taken over every rank's batch, on any device and backend.

    torch's SyncBatchNorm needs CUDA; this one runs on CPU/gloo too (exact two-pass mean and variance,
    differentiable all-reduces), so k CPU processes normalize like one process on the k-times batch.
    Statistics are taken in float32 whatever the input dtype (a bf16 sum over a batch loses digits);
    the output has the input's dtype, as torch's BatchNorm gives under autocast.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        features = x.float()
        count = features.new_full((1,), float(x.numel() // x.shape[1]))
        totals = dist_nn.all_reduce(torch.cat([features.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centered = features - mean.view(shape)
        var = dist_nn.all_reduce(centered.square().sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                )
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
        out = centered / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


class GlobalBatchNormAct(GlobalBatchNorm):
    """:class:`GlobalBatchNorm` followed by the dropout and activation of the timm ``BatchNormAct2d`` it replaces
    (timm's ``SyncBatchNormAct`` for CPU and gloo); the state dict keys stay the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


#: the BatchNorm classes whose forward is the batch norm alone, which GlobalBatchNorm replaces exactly
PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``module`` by :class:`GlobalBatchNorm` (timm's ``BatchNormAct2d`` by
    :class:`GlobalBatchNormAct`), keeping parameters and state; another BatchNorm subclass, whose forward
    may do more, is refused."""
    from timm.layers import BatchNormAct2d

    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        if type(module) not in (*PLAIN_BATCHNORMS, BatchNormAct2d):
            raise ConfigError(
                f"sync_batchnorm cannot convert {type(module).__module__}.{type(module).__name__}: a BatchNorm "
                "subclass whose forward may do more than normalize; set trainer.sync_batchnorm=false"
            )
        cls = GlobalBatchNormAct if isinstance(module, BatchNormAct2d) else GlobalBatchNorm
        synced = cls(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean, synced.running_var = module.running_mean, module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        if isinstance(module, BatchNormAct2d):
            synced.drop, synced.act = module.drop, module.act
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child))
    return module

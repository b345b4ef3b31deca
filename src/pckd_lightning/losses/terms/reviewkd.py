"""ReviewKD (Chen et al., CVPR 2021): student features fused top-down (attention-based fusion, ABF)
and matched to the teacher's with the hierarchical context loss (HCL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import (
    check_count,
    check_input_size,
    per_sample_mean,
    probe_shapes,
)
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability

PYRAMID = (4, 2, 1)


class FusionBlock(nn.Module):
    """One ABF: 1x1 conv + BN, optionally fused with the deeper level's output through two
    sigmoid attention maps, resized to the teacher's size, then 3x3 conv + BN to the teacher's channels."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels)
        )
        self.project = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.project[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, out_size: tuple[int, int], deeper: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (the output matched to the teacher, the fused map passed to the next shallower level)."""
        x = self.reduce(x)
        if self.attention is not None:
            deeper = F.interpolate(deeper, size=x.shape[2:], mode="nearest")
            att = self.attention(torch.cat([x, deeper], dim=1))
            x = x * att[:, 0:1] + deeper * att[:, 1:2]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.project(x), x


def hcl(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Hierarchical context loss per sample, [B].

    MSE at full size plus the MSEs after average pooling to 4x4, 2x2 and 1x1 (the sizes smaller than
    the map), weighted 1, 1/2, 1/4, 1/8 in turn and normalized by the sum of the weights used.
    """
    f_s, f_t = f_s.float(), f_t.float()
    loss = per_sample_mean((f_s - f_t).square())
    weight, total = 1.0, 1.0
    for size in PYRAMID:
        if size >= f_s.shape[2]:
            continue
        weight /= 2
        pooled_s = F.adaptive_avg_pool2d(f_s, (size, size))
        pooled_t = F.adaptive_avg_pool2d(f_t, (size, size))
        loss = loss + weight * per_sample_mean((pooled_s - pooled_t).square())
        total += weight
    return loss / total


def _levels(stages: list[torch.Tensor], pooled: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The deepest ``count`` of: the stage outputs (stem excluded), then the pooled feature as a 1x1 map."""
    return [*stages[1:], pooled[:, :, None, None]][-count:]


class ReviewKDTerm(LossTerm):
    """ReviewKD per image: Σ over levels of HCL(ABF output, teacher feature), times a linear warm-up.

    Levels are the stage outputs after the stem plus the pooled feature (as 1x1 maps), of both models;
    when their counts differ, the deepest levels are paired. Published (mdistiller, CIFAR-100):
    weight 5, warm-up 20 epochs, mid channels min(512, student's last level channels), CE weight 1.
    Deviation: the reference reads the teacher's pre-activation stage outputs; the model zoo exposes
    post-activation ones, which are used here.
    """

    requires = frozenset({Capability.FEATURE_MAPS, Capability.EMBEDDING})

    def __init__(
        self,
        warmup_epochs: int = 20,
        max_mid_channels: int = 512,
        input_size: int = 32,
        weight: float = 5.0,
        preview: bool = False,
    ) -> None:
        super().__init__(warmup_epochs=warmup_epochs, weight=weight, preview=preview)
        name = type(self).__name__
        self.max_mid_channels = check_count(name, "max_mid_channels", max_mid_channels, minimum=1)
        self.input_size = check_input_size(name, input_size)

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        s, t = probe_shapes(pair.student, self.input_size), probe_shapes(pair.teacher, self.input_size)
        s_levels = [*s.stages[1:], (s.pooled, 1, 1)]
        t_levels = [*t.stages[1:], (t.pooled, 1, 1)]
        self.num_levels = min(len(s_levels), len(t_levels))
        s_levels, t_levels = s_levels[-self.num_levels :], t_levels[-self.num_levels :]
        mid = min(self.max_mid_channels, s_levels[-1][0])
        self.fusions = nn.ModuleList(
            FusionBlock(cs[0], mid, ct[0], fuse=i < self.num_levels - 1)
            for i, (cs, ct) in enumerate(zip(s_levels, t_levels, strict=True))
        )
        self.out_sizes = [(h, w) for _, h, w in t_levels]

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        xs = _levels(ctx.student.stages, ctx.student.pooled, self.num_levels)
        ts = _levels(ctx.teacher.stages, ctx.teacher.pooled, self.num_levels)
        loss, deeper = 0, None
        for level in reversed(range(self.num_levels)):
            out, deeper = self.fusions[level](xs[level], self.out_sizes[level], deeper)
            loss = loss + hcl(out, ts[level].detach())
        return loss

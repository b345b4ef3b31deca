"""Variational Information Distillation (Ahn et al., CVPR 2019): Gaussian likelihood of teacher maps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import (
    check_input_size,
    check_positive,
    match_spatial,
    per_sample_mean,
    probe_shapes,
    stage_pairs,
)
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability


class VIDHead(nn.Module):
    """Predicts the mean of the teacher map (three 1x1 convs) and holds a per-channel variance."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, init_var: float, eps: float):
        super().__init__()
        self.mean = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, 1, bias=False),
        )
        # variance = softplus(log_scale) + eps starts at init_var
        self.log_scale = nn.Parameter(torch.full((out_channels,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        """Per-sample mean over (C, H, W) of the negative log-likelihood (constant dropped)."""
        f_s, f_t = match_spatial(f_s, f_t)
        mu = self.mean(f_s).float()
        var = self.variance().float().view(1, -1, 1, 1)
        return per_sample_mean(0.5 * ((mu - f_t.float()).square() / var + var.log()))


class VIDTerm(LossTerm):
    """Per image, Σ over paired stage outputs (the stem excluded) of the VID negative log-likelihood.

    One head per pair, mid channels = teacher channels. Published (CRD benchmark, mdistiller):
    initial variance 5, ε = 1e-5, weight 1, CE weight 1.
    """

    requires = frozenset({Capability.FEATURE_MAPS})

    def __init__(
        self,
        init_var: float = 5.0,
        eps: float = 1e-5,
        input_size: int = 32,
        weight: float = 1.0,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        name = type(self).__name__
        self.eps = check_positive(name, "eps", eps)
        self.init_var = check_positive(name, "init_var", init_var)
        if self.init_var <= self.eps:
            raise ConfigError(f"{name}: init_var must exceed eps, got init_var={init_var}, eps={eps}")
        self.input_size = check_input_size(name, input_size)

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        s = probe_shapes(pair.student, self.input_size).stages
        t = probe_shapes(pair.teacher, self.input_size).stages
        self.heads = nn.ModuleList(
            VIDHead(cs[0], ct[0], ct[0], self.init_var, self.eps) for cs, ct in stage_pairs(s, t)
        )

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        pairs = stage_pairs(ctx.student.stages, ctx.teacher.stages)
        return sum(head(f_s, f_t.detach()) for head, (f_s, f_t) in zip(self.heads, pairs, strict=True))
